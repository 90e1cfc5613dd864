"""Process plumbing: event loops, CPU pinning, stopping children and reading RSS."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing.process
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop when uvloop is installed, else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def pin_current_process(cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)


def pin_pid(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of ``pid`` (threads started later inherit from their creator)."""
    if not cpus:
        return
    for task in _tasks(pid):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(task, cpus)


def _tasks(pid: int) -> list[int]:
    try:
        return [int(name) for name in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return [pid]


@dataclass(frozen=True)
class CpuPlan:
    """Which CPUs the gateway gets and which the load generator and upstream share."""

    gateway: set[int] | None
    helpers: set[int] | None

    def describe(self) -> str:
        if not self.gateway:
            return "not pinned"
        helpers = sorted(self.helpers or [])
        return (
            f"gateway on CPU {sorted(self.gateway)}, load+upstream on CPU {helpers} "
            f"(c=1 runs: everything on CPU {helpers}, then gateway on its own CPU)"
        )

    def place_gateway(self, pid: int | None, shared: bool) -> bool:
        """Move the gateway onto the helpers' CPUs (``shared``) or back to its own one."""
        if not pid or not self.gateway or not self.helpers:
            return False
        pin_pid(pid, self.helpers if shared else self.gateway)
        return True


def plan_cpus(pin: bool, workers: int, external_gateway: bool) -> CpuPlan:
    """Give one worker a CPU of its own when there are at least two."""
    cpus = sorted(os.sched_getaffinity(0))
    if not pin or workers != 1 or external_gateway or len(cpus) < 2:
        return CpuPlan(None, None)
    return CpuPlan({cpus[0]}, set(cpus[1:]))


def stop_process(process: multiprocessing.process.BaseProcess, grace_s: float = 3.0) -> None:
    """Terminate, then kill, a multiprocessing child; always bounded."""
    if process.is_alive():
        process.terminate()
        process.join(grace_s)
    if process.is_alive():
        process.kill()
        process.join(grace_s)


def stop_popen(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> int | None:
    """Terminate, then kill, a subprocess; returns its exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace_s)
    return proc.poll()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in _tasks(pid):
        path = Path(f"/proc/{pid}/task/{task}/children")
        with contextlib.suppress(OSError):
            found.extend(int(child) for child in path.read_text().split())
    return found


def _vm_rss_kib(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rss_mib(pid: int, include_children: bool = True) -> float:
    """VmRSS of ``pid`` (plus its descendants, for multi-worker servers), in MiB."""
    total = _vm_rss_kib(pid)
    if include_children:
        pending = _children(pid)
        seen: set[int] = set()
        while pending and len(seen) < 1024:
            child = pending.pop()
            if child in seen:
                continue
            seen.add(child)
            total += _vm_rss_kib(child)
            pending.extend(_children(child))
    return total / 1024.0

"""Watching the gateway: RSS and friends every few seconds while the soak runs, and the state
it is left in once traffic stops (holds, unsettled entries, concurrency slots, ledger)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from bench import soak_shapes as shapes
from bench.procs import rss_mib
from bench.soak_client import Connection, Request
from bench.soak_setup import LIMITED_CONCURRENT


@dataclass(frozen=True)
class Sample:
    t_s: float  # seconds since traffic started
    rss_mib: float
    fds: int
    threads: int
    wal_mib: float
    requests: int

    def to_json(self) -> dict[str, Any]:
        return {
            "t_s": round(self.t_s, 1),
            "rss_mib": round(self.rss_mib, 3),
            "fds": self.fds,
            "threads": self.threads,
            "wal_mib": round(self.wal_mib, 3),
            "requests": self.requests,
        }


def _threads(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _size_mib(path: Path | None) -> float:
    try:
        return path.stat().st_size / 1048576 if path is not None else 0.0
    except OSError:
        return 0.0


def sample(pid: int, database: Path | None, t_s: float, requests: int) -> Sample:
    wal = database.with_name(database.name + "-wal") if database is not None else None
    return Sample(t_s, rss_mib(pid), _fds(pid), _threads(pid), _size_mib(wal), requests)


async def sampler(
    proc: subprocess.Popen[bytes],
    database: Path | None,
    every_s: float,
    started: float,
    count: Callable[[], int],
    out: list[Sample],
    stop: asyncio.Event,
) -> list[dict[str, float]]:
    """Append a sample every ``every_s`` (on a fixed grid from ``started``) until ``stop``;
    sets ``stop`` itself if the gateway exits. Grid points missed because this process was
    not scheduled are skipped, not made up; each such stall is returned."""
    stalls: list[dict[str, float]] = []
    due = 0.0
    while True:
        if proc.poll() is not None:
            print(f"[soak] gateway exited with code {proc.returncode}", file=sys.stderr)
            stop.set()
            return stalls
        now = time.monotonic() - started
        if now - due > every_s:
            stalls.append({"t_s": round(due, 1), "late_s": round(now - due, 1)})
            print(f"[soak] stalled: sample due at {due:.1f}s taken at {now:.1f}s", file=sys.stderr)
        s = sample(proc.pid, database, now, count())
        out.append(s)
        _progress(s)
        due = (math.floor(now / every_s) + 1) * every_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(started + due - time.monotonic(), 0.0))
        if stop.is_set():
            return stalls


def _progress(s: Sample) -> None:
    print(
        f"[soak] t={s.t_s:7.1f}s rss={s.rss_mib:8.2f} MiB fds={s.fds:4d} "
        f"threads={s.threads:3d} wal={s.wal_mib:7.2f} MiB requests={s.requests}",
        file=sys.stderr,
        flush=True,
    )


# --- after traffic ----------------------------------------------------------------------


def _get(path: str, key: str) -> Request:
    return Request("GET", path, None, (("Authorization", f"Bearer {key}"),))


def _reserved(body: bytes) -> list[dict[str, Any]] | None:
    """The budgets of a /v1/me answer that still hold a reservation (None: unreadable)."""
    try:
        budgets = json.loads(body).get("budgets")
        held = []
        for b in budgets:
            if Decimal(str(b.get("reserved_usd", "0"))) != 0:
                held.append({k: b.get(k) for k in ("scope", "period", "name", "reserved_usd")})
        return held
    except (ValueError, TypeError, AttributeError, InvalidOperation):
        return None


async def settle(port: int, keys: dict[str, str], within_s: float) -> dict[str, Any]:
    """Poll /v1/me for each tenant until no budget holds a reservation, or ``within_s``."""
    conn = Connection("127.0.0.1", port)
    started = time.monotonic()
    last: dict[str, Any] = {}
    try:
        while True:
            for tenant, key in keys.items():
                reply = await conn.send(_get("/v1/me", key), 10.0)
                held = _reserved(reply.body) if reply.status == 200 else None
                last[tenant] = held if held is not None else f"GET /v1/me: {reply.outcome}"
            if all(v == [] for v in last.values()) or time.monotonic() - started > within_s:
                break
            await asyncio.sleep(0.5)  # polling interval, bounded by within_s
    finally:
        await conn.close()
    clear = all(v == [] for v in last.values())
    return {"clear": clear, "waited_s": round(time.monotonic() - started, 2), "held": last}


async def unsettled(port: int, admin_key: str) -> dict[str, Any]:
    conn = Connection("127.0.0.1", port)
    try:
        reply = await conn.send(_get("/admin/v1/unsettled", admin_key), 30.0)
    finally:
        await conn.close()
    try:
        data = json.loads(reply.body)["data"] if reply.status == 200 else None
    except (ValueError, KeyError, TypeError):
        data = None
    if not isinstance(data, list):
        return {"count": None, "error": f"GET /admin/v1/unsettled: {reply.outcome}"}
    return {"count": len(data), "first": data[:5]}


async def slots_free(port: int, key: str, rounds: int = 3) -> dict[str, Any]:
    """Start as many streams at once as the limited key's ``concurrent`` limit: all must be
    served, which they are not if an earlier request kept its slot."""
    outcomes: list[str] = []
    rng = random.Random(0)
    for _ in range(rounds):
        shots = [shapes.stream(key, rng, False) for _ in range(LIMITED_CONCURRENT)]
        conns = [Connection("127.0.0.1", port) for _ in shots]
        try:
            sends = (c.send(s.request, 30.0) for c, s in zip(conns, shots, strict=True))
            replies = await asyncio.gather(*sends)
        finally:
            await asyncio.gather(*(c.close() for c in conns))
        outcomes.extend(r.outcome for r in replies)
    return {"ok": all(o == "200" for o in outcomes), "outcomes": outcomes}


def ledger_statuses(database: Path | None) -> dict[str, int] | str:
    """Ledger entries per status, read straight from SQLite (read-only)."""
    if database is None or not database.exists():
        return "no database file"
    try:
        with contextlib.closing(
            sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
        ) as db:
            rows = db.execute("SELECT status, COUNT(*) FROM ledger GROUP BY status").fetchall()
    except sqlite3.Error as err:
        return f"unreadable: {err}"
    return {str(status): int(n) for status, n in rows}

"""Helpers for end-to-end tests: run the real ``farebox`` process on loopback.

Each server runs as ``python -m farebox ...`` in its own working directory. Its stdout and
stderr are merged into one pipe that a reader thread drains into ``lines``, so the pipe never
fills up and tests can wait for a given line without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import yaml

ADMIN_KEY = "fba_e2e_admin_key_for_tests_only_0123456789"
READY_TIMEOUT_S = 60.0  # a deadline, not a speed claim: workers start slowly on a busy 2-core box
POLL_INTERVAL_S = 0.05
PICO_PER_USD = 10**12
# Pricing of gpt-4o-mini in the catalog, in pico-USD per token (USD 0.15 / 0.60 per 1M tokens).
GPT_4O_MINI_INPUT_PICO = 150_000
GPT_4O_MINI_OUTPUT_PICO = 600_000

# Environment variables that would make a child ignore the test's config or directory.
_SCRUB = (
    "FAREBOX_ADMIN_KEY",
    "FAREBOX_DATABASE",
    "FAREBOX_CONFIG",
    "FAREBOX_OVERRIDES",
    "FAREBOX_SECRET",
)


def free_port() -> int:
    """A free loopback port: bind to port 0, read the port, close the socket."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(admin_key: str | None = ADMIN_KEY, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env["PYTHONUNBUFFERED"] = "1"
    if admin_key is not None:
        env["FAREBOX_ADMIN_KEY"] = admin_key
    env.update(extra)
    return env


def write_config(
    directory: Path,
    *,
    providers: Mapping[str, Any] | None = None,
    plans: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write a ``farebox.yaml`` whose SQLite database lives in ``directory``."""
    data: dict[str, Any] = {
        "database": f"sqlite:///{directory / 'farebox.db'}",
        "providers": dict(providers or {"sim": {"kind": "mock", "seed": 7, "latency_ms": 0}}),
        "plans": dict(plans or {"pro": {"models": ["*"]}, "free": {"models": ["gpt-4o-mini"]}}),
        **extra,
    }
    path = directory / "farebox.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class ServerProcess:
    """A ``python -m farebox`` child process and the lines it printed."""

    def __init__(
        self, args: Sequence[str], *, cwd: Path, env: Mapping[str, str], port: int
    ) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._eof = False
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "farebox", *args],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._reader = threading.Thread(
            target=self._drain, name=f"farebox-{port}-output", daemon=True
        )
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._eof = True
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = READY_TIMEOUT_S) -> re.Match[str]:
        """Block until a printed line matches ``pattern`` (a regex); fail at the deadline or EOF."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self.lines[seen:]:
                    found = regex.search(line)
                    if found:
                        return found
                seen = len(self.lines)
                remaining = deadline - time.monotonic()
                if self._eof or remaining <= 0:
                    raise AssertionError(
                        f"no line matching {pattern!r} (exit code {self.proc.poll()}); output:\n"
                        + "\n".join(self.lines)
                    )
                self._changed.wait(remaining)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Poll ``GET /healthz`` until it answers 200, the process dies, or the deadline passes."""
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    self._join_reader()
                    code = self.proc.returncode
                    raise AssertionError(
                        f"farebox exited with {code} before it was ready:\n{self.output}"
                    )
                try:
                    if client.get("/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"farebox not ready after {timeout} s:\n{self.output}")
                time.sleep(POLL_INTERVAL_S)  # readiness polling interval

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers run."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._join_reader()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time; always reaps and closes the pipe."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._join_reader()

    def _join_reader(self) -> None:
        self._reader.join(timeout=10)
        if self.proc.stdout is not None and not self._reader.is_alive():
            self.proc.stdout.close()


@contextlib.contextmanager
def running(
    args: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    port: int,
    wait: bool = True,
) -> Iterator[ServerProcess]:
    """Start ``python -m farebox ARGS``, optionally wait for /healthz; always stop it afterwards."""
    server = ServerProcess(args, cwd=cwd, env=env, port=port)
    try:
        if wait:
            server.wait_ready()
        yield server
    finally:
        server.stop()


def serve_args(config: Path, port: int, *more: str) -> list[str]:
    """``farebox serve`` on ``port`` of the loopback with ``config`` (``more``: other flags)."""
    return ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port), *more]


@contextlib.contextmanager
def serve(
    config: Path,
    *,
    cwd: Path,
    port: int | None = None,
    admin_key: str = ADMIN_KEY,
) -> Iterator[ServerProcess]:
    """``farebox serve --config CONFIG`` on a loopback port, ready when yielded."""
    port = port if port is not None else free_port()
    with running(serve_args(config, port), cwd=cwd, env=child_env(admin_key), port=port) as server:
        yield server


@contextlib.contextmanager
def running_replicas(
    config: Path, *, cwd: Path, env: Mapping[str, str], count: int = 3
) -> Iterator[list[ServerProcess]]:
    """``count`` replicas of ``farebox serve --config CONFIG`` (sharing the database and Redis
    it names), each on its own loopback port, ready when yielded; all stopped afterwards."""
    ports = [free_port() for _ in range(count)]
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(running(serve_args(config, port), cwd=cwd, env=env, port=port))
            for port in ports
        ]


async def spread_chats(
    urls: Sequence[str], key: str, bodies: Sequence[dict[str, Any]]
) -> list[tuple[int, Any, dict[str, str]]]:
    """POST every body to ``/v1/chat/completions`` at once, round-robin over ``urls``: each
    answer's status, JSON body and headers, in the order of ``bodies``."""
    auth = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=600, max_keepalive_connections=600)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:

        async def one(i: int, body: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
            url = f"{urls[i % len(urls)]}/v1/chat/completions"
            r = await client.post(url, json=body, headers=auth)
            return r.status_code, r.json(), dict(r.headers)

        return list(await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies))))


# --- admin API ----------------------------------------------------------------------


def admin_headers(admin_key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


def create_tenant_key(base_url: str, tenant_id: str, plan: str, admin_key: str = ADMIN_KEY) -> str:
    """Create a tenant on ``plan`` and one key for it; returns the secret key."""
    with httpx.Client(base_url=base_url, headers=admin_headers(admin_key), timeout=10.0) as client:
        r = client.post("/admin/v1/tenants", json={"id": tenant_id, "plan": plan})
        assert r.status_code == 201, r.text
        r = client.post(f"/admin/v1/tenants/{tenant_id}/keys", json={"name": "e2e"})
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["id"]
        key = str(body["key"])
        assert key.startswith("fbx_"), key
        return key


# --- ledger and money ---------------------------------------------------------------


def db_path(directory: Path) -> Path:
    return directory / "farebox.db"


def ledger_rows(
    database: Path, where: str = "", params: Sequence[Any] = ()
) -> list[dict[str, Any]]:
    """Rows of the ``ledger`` table, read with the stdlib driver (read only)."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        sql = "SELECT * FROM ledger" + (f" WHERE {where}" if where else "")
        return [dict(row) for row in conn.execute(sql, tuple(params))]


def ledger_row(database: Path, request_id: str) -> dict[str, Any]:
    rows = ledger_rows(database, "request_id = ?", (request_id,))
    assert len(rows) == 1, f"expected one ledger row for {request_id}, found {len(rows)}"
    return rows[0]


def usd_to_pico(text: str) -> int:
    """An exact decimal USD string (no exponent, no rounding) as integer pico-USD."""
    assert re.fullmatch(r"-?\d+\.\d+", text), f"not a plain decimal string: {text!r}"
    scaled = Decimal(text).scaleb(12)
    assert scaled == scaled.to_integral_value(), f"{text!r} has more than 12 decimal places"
    return int(scaled)


def gpt_4o_mini_cost(input_tokens: int, output_tokens: int) -> int:
    return input_tokens * GPT_4O_MINI_INPUT_PICO + output_tokens * GPT_4O_MINI_OUTPUT_PICO

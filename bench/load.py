"""The load generator: raw asyncio keep-alive HTTP/1.1 clients with pre-built request bytes.

Each client owns one connection and sends the same request bytes again and again; a
response is parsed only as far as needed to find its end (Content-Length or chunked).
It runs in its own process (``LoadWorker``) so it never competes with the caller's GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import multiprocessing
import multiprocessing.connection
import signal
import traceback
from collections import Counter
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import cast
from urllib.parse import urlsplit

from bench import http1
from bench.procs import new_event_loop, pin_current_process, stop_process
from bench.stats import Latency, summarize

SAFETY_CAP_S = 300.0


@dataclass(frozen=True)
class Endpoint:
    """A loopback HTTP endpoint and the path prefix of its OpenAI API (``/v1``)."""

    host: str
    port: int
    prefix: str

    @classmethod
    def from_url(cls, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"need an http://127.0.0.1:PORT URL, got {url!r}")
        host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the benchmark only talks to loopback addresses, got {host!r}")
        path = parts.path.rstrip("/")
        prefix = path if path.endswith("/v1") else path + "/v1"
        return cls(host, parts.port, prefix)

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(self, path: str, body: bytes, key: str | None) -> bytes:
        """Pre-built bytes of one keep-alive POST under the API prefix."""
        lines = [
            f"POST {self.prefix}{path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "User-Agent: farebox-bench",
            "Accept: */*",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        if key:
            lines.append(f"Authorization: Bearer {key}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass(frozen=True)
class Job:
    """One measurement: warm up, then run ``concurrency`` clients until a count or a time."""

    name: str
    host: str
    port: int
    request: bytes
    concurrency: int = 1
    requests: int = 0
    duration_s: float = 0.0
    warmup_requests: int = 0
    warmup_s: float = 0.0
    timeout_s: float = 10.0
    expect_status: int = 200
    # scaled out (bench.fleet): client i connects to ports[i % len(ports)] instead of ``port``,
    # and its n-th request is rotate[(i + n * concurrency) % len(rotate)] instead of ``request``
    ports: tuple[int, ...] = ()
    rotate: tuple[bytes, ...] = ()

    def max_seconds(self) -> float:
        """Upper bound on how long the job may take, warm-up included."""
        return self.warmup_s + (self.duration_s or SAFETY_CAP_S) + 2 * self.timeout_s + 5.0


@dataclass(frozen=True)
class JobResult:
    name: str
    concurrency: int
    ok: int
    errors: int
    elapsed_s: float
    rps: float
    latency: Latency
    ttfb: Latency
    statuses: dict[int, int]
    error_kinds: dict[str, int]
    first_error: str | None


@dataclass(slots=True)
class Reply:
    status: int
    first_ns: int
    done_ns: int


class Conn(asyncio.Protocol):
    """A client connection that carries one request at a time."""

    def __init__(self) -> None:
        self.open = False
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._fut: asyncio.Future[Reply] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self._head_end = -1
        self._status = 0
        self._clen = -1
        self._chunked = False
        self._close = False
        self._pos = 0
        self._first_ns = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.open = True

    def request(self, data: bytes, timeout_s: float) -> asyncio.Future[Reply]:
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        self._buf.clear()
        self._reset()
        fut = self._fut = loop.create_future()
        self._timer = loop.call_later(timeout_s, self._on_timeout)
        self._transport.write(data)
        return fut

    def close(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if self._fut is not None:
            self._advance()

    def _advance(self) -> None:
        buf = self._buf
        if self._head_end < 0 and not self._read_head():
            return
        if not self._first_ns and len(buf) > self._head_end:
            self._first_ns = perf_counter_ns()
        if self._chunked:
            end, self._pos = http1.chunked_end(buf, self._pos)
        elif self._clen >= 0:
            end = self._head_end + self._clen
            if len(buf) < end:
                return
        else:
            return  # delimited by EOF
        if end != http1.INCOMPLETE:
            self._finish(end)

    def _read_head(self) -> bool:
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        lower = bytes(self._buf[:end]).lower()
        status = int(lower[9:12])
        if 100 <= status < 200:  # 100 Continue and friends: skip
            del self._buf[: end + 4]
            return self._read_head()
        self._status = status
        self._clen = http1.content_length(lower)
        self._chunked = http1.is_chunked(lower)
        self._close = http1.header_value(lower, b"connection") == b"close"
        self._head_end = self._pos = end + 4
        return True

    def _finish(self, end: int) -> None:
        now = perf_counter_ns()
        reply = Reply(self._status, self._first_ns or now, now)
        del self._buf[:end]
        fut, self._fut = self._fut, None
        if self._timer is not None:
            self._timer.cancel()
        if self._close:
            self.close()
        self._reset()
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._fut is None or self._fut.done():
            return
        if self._head_end >= 0 and not self._chunked and self._clen < 0:
            self._finish(len(self._buf))
            return
        if self._timer is not None:
            self._timer.cancel()
        self._fut.set_exception(ConnectionError(f"connection closed mid-response: {exc}"))
        self._fut = None

    def _on_timeout(self) -> None:
        if self._fut is not None and not self._fut.done():
            self._fut.set_exception(TimeoutError("request timed out"))
        self._fut = None
        self.open = False
        if self._transport is not None:
            self._transport.abort()


class Gate:
    """Hands out permission for the next request until a count or a deadline is reached."""

    def __init__(self, requests: int, duration_s: float) -> None:
        self.left = requests if requests > 0 else -1
        seconds = duration_s if duration_s > 0 else SAFETY_CAP_S
        self.deadline = perf_counter_ns() + int(seconds * 1e9)

    def take(self) -> bool:
        if self.left == 0 or perf_counter_ns() >= self.deadline:
            return False
        if self.left > 0:
            self.left -= 1
        return True


@dataclass
class Recorder:
    expect: int
    latencies: list[int] = field(default_factory=list)
    ttfbs: list[int] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_error: str | None = None

    def reply(self, started: int, reply: Reply) -> None:
        self.statuses[reply.status] += 1
        if reply.status != self.expect:
            self.error(f"HTTP {reply.status}", f"unexpected status {reply.status}")
            return
        self.latencies.append(reply.done_ns - started)
        self.ttfbs.append(reply.first_ns - started)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if self.first_error is None:
            self.first_error = f"{kind}: {detail}"


async def _connect(job: Job, index: int) -> Conn:
    loop = asyncio.get_running_loop()
    port = job.ports[index % len(job.ports)] if job.ports else job.port
    _, conn = await loop.create_connection(Conn, job.host, port)
    return conn


async def _client(
    job: Job, slots: list[Conn | None], index: int, gate: Gate, rec: Recorder
) -> None:
    turn = index
    while gate.take():
        data = job.rotate[turn % len(job.rotate)] if job.rotate else job.request
        turn += len(slots)
        try:
            conn = slots[index]
            if conn is None or not conn.open:
                conn = slots[index] = await _connect(job, index)
            started = perf_counter_ns()
            reply = await conn.request(data, job.timeout_s)
        except (OSError, TimeoutError) as exc:
            rec.error(type(exc).__name__, str(exc))
            _drop(slots, index)
            await asyncio.sleep(0.01)
            continue
        rec.reply(started, reply)


def _drop(slots: list[Conn | None], index: int) -> None:
    conn = slots[index]
    if conn is not None:
        conn.close()
    slots[index] = None


async def _phase(job: Job, slots: list[Conn | None], gate: Gate, rec: Recorder) -> float:
    started = perf_counter_ns()
    await asyncio.gather(*(_client(job, slots, i, gate, rec) for i in range(len(slots))))
    return (perf_counter_ns() - started) / 1e9


async def run_job(job: Job) -> JobResult:
    """Warm up, then measure, on the same set of connections."""
    slots: list[Conn | None] = [None] * job.concurrency
    try:
        if job.warmup_requests or job.warmup_s:
            warm = Gate(job.warmup_requests, job.warmup_s)
            await _phase(job, slots, warm, Recorder(job.expect_status))
        rec = Recorder(job.expect_status)
        elapsed = await _phase(job, slots, Gate(job.requests, job.duration_s), rec)
    finally:
        for index in range(len(slots)):
            _drop(slots, index)
    return _result(job, rec, elapsed)


def _result(job: Job, rec: Recorder, elapsed: float) -> JobResult:
    ok = len(rec.latencies)
    return JobResult(
        name=job.name,
        concurrency=job.concurrency,
        ok=ok,
        errors=sum(rec.errors.values()),
        elapsed_s=elapsed,
        rps=ok / elapsed if elapsed > 0 else 0.0,
        latency=summarize(rec.latencies),
        ttfb=summarize(rec.ttfbs),
        statuses=dict(rec.statuses),
        error_kinds=dict(rec.errors),
        first_error=rec.first_error,
    )


def _serve_jobs(conn: multiprocessing.connection.Connection, cpus: set[int] | None) -> None:
    """Process body of the load worker: run jobs received over the pipe until ``None``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pin_current_process(cpus)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    while True:
        job = conn.recv()
        if job is None:
            break
        try:
            conn.send(loop.run_until_complete(run_job(job)))
        except Exception:  # noqa: BLE001 - reported to the parent verbatim
            conn.send(traceback.format_exc())
    loop.close()


class LoadWorker:
    """The load generator process; ``run`` sends it a job and waits for the result."""

    def __init__(self, cpus: set[int] | None = None) -> None:
        self._cpus = cpus
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: multiprocessing.connection.Connection | None = None

    def start(self) -> LoadWorker:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._process = ctx.Process(
            target=_serve_jobs, args=(child, self._cpus), name="bench-load", daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent
        return self

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def submit(self, job: Job) -> None:
        assert self._conn is not None
        self._conn.send(job)

    def poll(self, timeout_s: float) -> JobResult | None:
        """The result of the submitted job, or None if it is not ready within ``timeout_s``."""
        assert self._conn is not None
        if not self._conn.poll(timeout_s):
            return None
        try:
            result = self._conn.recv()
        except EOFError:
            raise RuntimeError("load generator process exited unexpectedly") from None
        if isinstance(result, str):
            raise RuntimeError(f"load generator failed:\n{result}")
        assert isinstance(result, JobResult)
        return result

    def run(self, job: Job) -> JobResult:
        self.submit(job)
        result = self.poll(job.max_seconds())
        if result is None:
            raise TimeoutError(f"load job {job.name!r} did not finish in {job.max_seconds():.0f}s")
        return result

    def stop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(2.0)
            stop_process(self._process)
            self._process = None

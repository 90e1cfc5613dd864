"""The access log: one line per metered request on the logger ``farebox.access``.

A line carries who and what (request id, tenant, key id, end user, feature, endpoint, model
asked for and served, provider, plan), how it ended (ledger status, HTTP status, error code),
the tokens, the exact cost (a decimal string of the ledger's pico-USD) and the timings
(latency, upstream, added by the gateway, first token). Never a secret (no key, only its id),
never content (no prompt, no completion, no metadata values).

Off the event loop: ``observe`` only appends the ledger entry to a queue (no ``LogRecord`` is
built there, no thread is woken). A writer thread, in the manner of the standard library's
``QueueListener``, wakes every 100 ms, turns what queued up into records, formats each line
(JSON with orjson, or text for a terminal), hands them to the logger's handlers and flushes
the stream once per batch, so file and stream I/O never block a request and a request never
pays for a thread switch. ``start`` attaches a stream handler to the logger (stdout by
default) and ``stop`` writes what is left and detaches it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any, Literal

import orjson

from farebox.core.money import format_usd
from farebox.core.records import LedgerEntry

LOGGER = "farebox.access"
FLUSH_INTERVAL_S = 0.1  # lines are written at most this long after their request ends
MAX_PENDING = 100_000
STOP_TIMEOUT_S = 2.0  # how long stop waits for a writer stuck on its stream
Format = Literal["auto", "json", "text"]


def access_fields(
    entry: LedgerEntry, plan: str, stamp: Callable[[float], str] | None = None
) -> dict[str, Any]:
    """What one line says about ``entry`` (served under ``plan``); ``stamp`` formats its time
    (``Stamps``, which reuses the formatted second)."""
    added = entry.latency_ms - entry.upstream_ms if entry.upstream_ms > 0 else None
    return {
        "ts": (stamp or iso)(entry.finished_at),
        "request_id": entry.request_id,
        "tenant": entry.tenant_id,
        "key_id": entry.key_id,
        "user": entry.user,
        "feature": entry.feature,
        "endpoint": entry.endpoint,
        "model_requested": entry.model_requested,
        "model": entry.model_served,
        "provider": entry.provider,
        "plan": plan,
        "stream": entry.stream,
        "status": entry.status,
        "http_status": entry.http_status,
        "error_code": entry.error_code,
        "input_tokens": entry.input_tokens,
        "cached_input_tokens": entry.cached_input_tokens,
        "cache_write_tokens": entry.cache_write_5m_tokens + entry.cache_write_1h_tokens,
        "output_tokens": entry.output_tokens,
        "reasoning_tokens": entry.reasoning_tokens,
        "cost_usd": format_usd(entry.cost),
        "revenue_usd": format_usd(entry.revenue),
        "latency_ms": round(entry.latency_ms, 3),
        "upstream_ms": round(entry.upstream_ms, 3),
        "added_ms": round(max(added, 0.0), 3) if added is not None else None,
        "ttft_ms": round(entry.ttft_ms, 3) if entry.ttft_ms is not None else None,
    }


def json_line(fields: dict[str, Any]) -> str:
    return orjson.dumps(fields).decode()


def text_line(f: dict[str, Any]) -> str:
    """For people at a terminal: the same facts, shorter."""
    served = f["model"] if f["model"] == f["model_requested"] else (
        f"{f['model_requested']}->{f['model']}")  # fmt: skip
    who = f"{f['tenant']}/{f['key_id']}" + (f" user={f['user']}" if f["user"] else "")
    added = f"{f['added_ms']:.2f}ms" if f["added_ms"] is not None else "-"
    return (
        f"{f['ts']} {f['request_id']} {who} {f['endpoint']} {served} via {f['provider']} "
        f"{f['status']} {f['http_status']} tokens={f['input_tokens']}/{f['output_tokens']} "
        f"cost=${f['cost_usd']} latency={f['latency_ms']:.2f}ms "
        f"upstream={f['upstream_ms']:.2f}ms added={added}"
    )


def iso(at: float) -> str:
    """``2026-01-31T12:00:00.123Z``"""
    whole = int(at)
    return f"{_second(whole)}.{int((at - whole) * 1000):03d}Z"


def _second(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


class Stamps:
    """``iso``, with the formatted second kept for the lines of the same second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, at: float) -> str:
        whole = int(at)
        if whole != self._second:
            self._second, self._prefix = whole, _second(whole)
        return f"{self._prefix}.{int((at - whole) * 1000):03d}Z"


class _Batched(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes each record but flushes once per batch (``flush_now``):
    one write system call for all the lines of a batch, not one per line."""

    def flush(self) -> None:  # called by ``emit`` after every record
        pass

    def flush_now(self) -> None:
        super().flush()

    def write_lines(self, lines: list[str]) -> None:
        """A batch in one write, as ``emit`` would write each (errors handled alike)."""
        if not lines:
            return
        try:
            with self.lock:  # type: ignore[union-attr]
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": lines[0]}))


def _only_ours(logger: logging.Logger) -> _Batched | None:
    """The access log's own handler, when it is the only one the lines would reach."""
    handlers = logger.handlers
    if len(handlers) != 1 or logger.filters or logger.propagate:
        return None
    handler = handlers[0]
    return handler if isinstance(handler, _Batched) and not handler.filters else None


class _Writer:
    """The thread that turns queued ``(entry, plan)`` pairs into records on the logger, in
    batches: it wakes every ``interval_s`` (like the standard library's ``QueueListener``, but
    a request's put never has to wake a thread) and writes what queued up since."""

    def __init__(self, pending: deque[Any], logger: logging.Logger, text: bool,
                 interval_s: float) -> None:  # fmt: skip
        self._pending = pending
        self._logger = logger
        self._text = text
        self._interval_s = interval_s
        self._stamp = Stamps()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="farebox-access-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float) -> bool:
        """Write every line queued, then end the thread; False when the thread is still stuck
        after ``timeout_s`` (a stream that blocks: a full pipe nobody reads)."""
        self._stopping.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self._drain_logged()
        self._drain_logged()

    def _drain_logged(self) -> None:
        try:
            self._drain()
        except Exception:  # a bug must not end the thread (the lines would pile up)
            logging.getLogger("farebox.observe").exception("the access log failed a batch")

    def _drain(self) -> None:
        pending, logger = self._pending, self._logger
        if not pending:
            return
        if not logger.isEnabledFor(logging.INFO):
            pending.clear()
            return
        direct = _only_ours(logger)
        if direct is not None:  # nobody else listens: the lines go straight to the stream
            lines = [self._line(*pending.popleft())[0] for _ in range(len(pending))]
            direct.write_lines(lines)
            return
        while pending:
            line, fields = self._line(*pending.popleft())
            record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, line, (), None)
            record.access = fields  # for handlers that want the fields, not the line
            logger.handle(record)
        for handler in logger.handlers:
            if isinstance(handler, _Batched):
                handler.flush_now()

    def _line(self, entry: LedgerEntry, plan: str) -> tuple[str, dict[str, Any]]:
        fields = access_fields(entry, plan, self._stamp)
        return (text_line(fields) if self._text else json_line(fields)), fields


class AccessLog:
    """One app's access log; ``observe`` is the per-request hook."""

    def __init__(
        self,
        fmt: Format = "auto",
        stream: IO[str] | None = None,
        *,
        interval_s: float = FLUSH_INTERVAL_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        """``max_pending``: lines kept while the stream cannot take them (a full pipe nobody
        reads); past it the oldest are dropped rather than memory growing without bound."""
        self._stream = stream
        self._format = fmt
        self._interval_s = interval_s
        self._pending: deque[Any] = deque(maxlen=max_pending)
        self._append = self._pending.append
        self._writer: _Writer | None = None
        self._handler: _Batched | None = None
        self._saved: tuple[int, bool] | None = None

    def observe(self, entry: LedgerEntry, plan: str) -> None:
        """Queue one line (the hot path: an append, nothing else)."""
        self._append((entry, plan))

    def start(self) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        text = self._format == "text" or (self._format == "auto" and _isatty(stream))
        logger = logging.getLogger(LOGGER)
        self._handler = _Batched(stream)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._saved = (logger.level, logger.propagate)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        logger.propagate = False  # the lines are written once, by this handler
        logger.addHandler(self._handler)
        self._writer = _Writer(self._pending, logger, text, self._interval_s)
        self._writer.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Write every line queued, then detach; a no-op when not started. A writer stuck on
        its stream for ``timeout_s`` is left behind (a daemon thread), and the lines it had
        not written are counted on ``farebox.observe`` (a count, never their content)."""
        stuck = False
        if self._writer is not None:
            stuck = not self._writer.stop(timeout_s)
            self._writer = None
        logger = logging.getLogger(LOGGER)
        if self._handler is not None:
            logger.removeHandler(self._handler)
            if not stuck:  # a stuck writer holds the handler's lock: flushing would hang too
                self._handler.flush_now()
            self._handler = None
        if stuck:
            dropped = len(self._pending)
            self._pending.clear()
            logging.getLogger("farebox.observe").warning(
                "the access log's stream blocked at shutdown: %d queued lines dropped "
                "(and the batch being written)", dropped,
            )  # fmt: skip
        if self._saved is not None:
            logger.setLevel(self._saved[0])
            logger.propagate = self._saved[1]
            self._saved = None


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

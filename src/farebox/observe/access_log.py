"""The access log: one line per metered request on the logger ``farebox.access``.

A line carries who and what (request id, tenant, key id, end user, feature, endpoint, model
asked for and served, provider, plan), how it ended (ledger status, HTTP status, error code),
the tokens, the exact cost (a decimal string of the ledger's pico-USD) and the timings
(latency, upstream, added by the gateway, first token). Never a secret (no key, only its id),
never content (no prompt, no completion, no metadata values).

Off the event loop: ``observe`` only puts the ledger entry on a queue (no ``LogRecord`` is
built there). A ``logging.handlers.QueueListener`` thread turns it into a record, formats the
line (JSON with orjson, or text for a terminal) and hands it to the logger's handlers, so
file and stream I/O never block a request. ``start`` attaches a stream handler to the logger
(stdout by default) and ``stop`` drains the queue and detaches it.
"""

from __future__ import annotations

import logging
import queue
import sys
import time
from logging.handlers import QueueListener
from typing import IO, Any, Literal

import orjson

from farebox.core.money import format_usd
from farebox.core.records import LedgerEntry

LOGGER = "farebox.access"
Format = Literal["auto", "json", "text"]


def access_fields(entry: LedgerEntry, plan: str) -> dict[str, Any]:
    """What one line says about ``entry`` (served under ``plan``)."""
    added = entry.latency_ms - entry.upstream_ms if entry.upstream_ms > 0 else None
    return {
        "ts": _iso(entry.finished_at),
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


def _iso(at: float) -> str:
    whole = int(at)
    millis = int((at - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


class _Forward(logging.Handler):
    """The listener's one handler: passes each record to the logger's own handlers (in the
    listener's thread), so an operator's handlers on ``farebox.access`` get the lines too."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        if self.logger.isEnabledFor(logging.INFO):
            self.logger.handle(record)


class _Listener(QueueListener):
    """Builds the record of each ``(entry, plan)`` in the listener thread."""

    def __init__(self, q: queue.SimpleQueue[Any], logger: logging.Logger, text: bool) -> None:
        super().__init__(q, _Forward(logger))
        self._logger = logger
        self._text = text

    def prepare(self, record: Any) -> logging.LogRecord:
        entry, plan = record
        fields = access_fields(entry, plan)
        line = text_line(fields) if self._text else json_line(fields)
        made = self._logger.makeRecord(self._logger.name, logging.INFO, __file__, 0, line,
                                       (), None)  # fmt: skip
        made.access = fields  # for handlers that want the fields, not the line
        return made


class AccessLog:
    """One app's access log; ``observe`` is the per-request hook."""

    def __init__(self, fmt: Format = "auto", stream: IO[str] | None = None) -> None:
        self._stream = stream
        self._format = fmt
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._put = self._queue.put
        self._listener: _Listener | None = None
        self._handler: logging.Handler | None = None
        self._saved: tuple[int, bool] | None = None

    def observe(self, entry: LedgerEntry, plan: str) -> None:
        """Queue one line (the hot path: a queue put, nothing else)."""
        self._put((entry, plan))

    def start(self) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        text = self._format == "text" or (self._format == "auto" and _isatty(stream))
        logger = logging.getLogger(LOGGER)
        self._handler = logging.StreamHandler(stream)
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._saved = (logger.level, logger.propagate)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        logger.propagate = False  # the lines are written once, by this handler
        logger.addHandler(self._handler)
        self._listener = _Listener(self._queue, logger, text)
        self._listener.start()

    def stop(self) -> None:
        """Write every line queued, then detach; a no-op when not started."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        logger = logging.getLogger(LOGGER)
        if self._handler is not None:
            logger.removeHandler(self._handler)
            self._handler.flush()
            self._handler = None
        if self._saved is not None:
            logger.setLevel(self._saved[0])
            logger.propagate = self._saved[1]
            self._saved = None


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

"""The access log: one line per metered request on ``farebox.access``, JSON (or text for a
terminal), with the ledger's facts and never a key or a prompt."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from farebox.core.money import format_usd
from farebox.core.records import LedgerEntry
from farebox.observe.access_log import AccessLog, access_fields
from tests.conftest import ADMIN_KEY
from tests.test_observe_metrics import CHAT, PLAN_OF, config, known_run


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def access_lines() -> Iterator[Lines]:
    """An operator's handler on ``farebox.access``."""
    handler = Lines()
    logger = logging.getLogger("farebox.access")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def logged_config(fmt: str) -> dict[str, Any]:
    return {**config(), "logging": {"access_log": True, "format": fmt}}


async def test_one_json_line_per_ledger_entry(make_gateway: Any, access_lines: Lines) -> None:
    async with make_gateway(logged_config("json")) as gw:
        await known_run(gw)
        secrets = await used_keys(gw)
        entries: list[LedgerEntry] = await gw.ledger()
    # the lifespan has ended: every line queued was written
    lines = [r.getMessage() for r in access_lines.records]
    parsed = [orjson.loads(line) for line in lines]
    assert len(parsed) == len(entries) == 7 + 2
    by_id = {p["request_id"]: p for p in parsed}
    for e in entries:
        line = by_id[e.request_id]
        assert line["tenant"] == e.tenant_id and line["key_id"] == e.key_id
        assert line["plan"] == PLAN_OF[e.tenant_id]
        assert line["cost_usd"] == format_usd(e.cost) and line["status"] == e.status
        assert line["input_tokens"] == e.input_tokens and line["model"] == e.model_served
        assert line["latency_ms"] == pytest.approx(e.latency_ms, abs=1e-3)
        if e.upstream_ms > 0:
            assert line["added_ms"] == pytest.approx(e.latency_ms - e.upstream_ms, abs=2e-3)
    for line in lines:
        assert CHAT["messages"][0]["content"] not in line  # no prompt
        assert ADMIN_KEY not in line
        assert all(secret not in line for secret in secrets)  # no API key


async def used_keys(gw: Any) -> list[str]:
    """Keys made here (a key is shown once), each used for a request (a chat, a stream)."""
    made = [await gw.key(t) for t in PLAN_OF]
    for key, stream in zip(made, (False, True), strict=True):
        r = await gw.client.post("/v1/chat/completions", json={**CHAT, "stream": stream},
                                 headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert r.status_code == 200
    return made


async def test_text_lines_for_people(make_gateway: Any, access_lines: Lines) -> None:
    async with make_gateway(logged_config("text")) as gw:
        await known_run(gw)
        entries = await gw.ledger()
    lines = [r.getMessage() for r in access_lines.records]
    assert len(lines) == len(entries)
    for e in entries:
        [line] = [ln for ln in lines if e.request_id in ln]
        assert not line.startswith("{") and f"cost=${format_usd(e.cost)}" in line
        assert e.tenant_id in line and e.status in line


def test_auto_is_text_on_a_terminal_and_json_elsewhere() -> None:
    entry = LedgerEntry("req_1", "acme", "key_1", "chat", "m", "m", "p", "ok", 200, 1.0, 2.0,
                        cost=1, latency_ms=2.5, upstream_ms=2.0)  # fmt: skip

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    written = {}
    for name, stream in (("pipe", io.StringIO()), ("tty", Tty())):
        log = AccessLog("auto", stream)
        log.start()
        try:
            log.observe(entry, "pro")
        finally:
            log.stop()
        written[name] = stream.getvalue()
    assert orjson.loads(written["pipe"]) == orjson.loads(orjson.dumps(access_fields(entry, "pro")))
    assert written["tty"].startswith("1970-01-01T00:00:02.000Z req_1 acme/key_1 ")
    assert "added=0.50ms" in written["tty"]
    assert logging.getLogger("farebox.access").handlers == []  # detached again


class _BlockingStream(io.StringIO):
    """A stream whose write blocks until released (a full pipe nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        self.release.wait()
        return super().write(text)


def test_stop_returns_when_the_stream_blocks(caplog: pytest.LogCaptureFixture) -> None:
    entry = LedgerEntry("req_1", "acme", "key_1", "chat", "m", "m", "p", "ok", 200, 1.0, 2.0,
                        cost=1, latency_ms=2.5, upstream_ms=2.0)  # fmt: skip
    stream = _BlockingStream()
    log = AccessLog("json", stream, interval_s=0.01)
    try:
        log.start()
        log.observe(entry, "pro")
        assert stream.entered.wait(5.0)  # the writer is now stuck in write
        log.observe(entry, "pro")
        log.observe(entry, "pro")
        with caplog.at_level(logging.WARNING, logger="farebox.observe"):
            log.stop(timeout_s=0.2)
        warned = [r.getMessage() for r in caplog.records if r.name == "farebox.observe"]
        assert warned and "2 queued lines dropped" in warned[0]
        assert "req_1" not in warned[0]  # a count, never content
        assert logging.getLogger("farebox.access").handlers == []
    finally:
        stream.release.set()

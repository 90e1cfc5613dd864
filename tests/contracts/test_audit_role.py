"""The ``AuditStore`` contract (``Store.audit``: the append-only, hash-chained audit log) on
every backend that keeps it: appends are numbered from 1 without gaps and chained even when
they race, pages filter and move by cursor, a scan walks the chain oldest first."""

from __future__ import annotations

import asyncio
from typing import Any

from farebox.core.audit import GENESIS, AuditEntry, AuditQuery
from farebox.identity.audit import AuditLog, verify

BACKENDS = ("memory", "sqlite", "sqlite-single-process", "postgres", "postgres+redis")
T0 = 1_793_577_600.25


def entry(actor: str = "env", target: str = "tenant:acme", n: int = 0) -> AuditEntry:
    change = {"before": None, "after": {"id": "acme", "n": n, "big": 10**30, "f": 0.1},
              "request": {"key": "fbx_" + "s" * 40}}  # fmt: skip
    return AuditEntry(actor, "owner", "POST /tenants", target, change, "127.0.0.1",
                      f"req_{n}", "ok", 201)  # fmt: skip


async def test_racing_appends_make_one_unbroken_chain(store: Any) -> None:
    ticks = iter(range(10_000))
    log = AuditLog(store.audit, lambda: T0 + next(ticks))
    first = await log.record(entry())
    assert (first.seq, first.prev_hash, first.at) == (1, GENESIS, T0)
    await asyncio.gather(*(log.record(entry(n=n)) for n in range(1, 40)))
    records = await store.audit.scan(0, 1000)
    assert [r.seq for r in records] == list(range(1, 41))
    assert verify(records) is None
    assert records[0] == first  # read back exactly as written (hash included)
    assert records[0].change["request"]["key"] == "***ssss"  # masked before it was stored
    assert records[0].change["after"]["big"] == str(10**30)
    assert await store.audit.scan(38, 1000) == records[38:]
    assert await store.audit.scan(0, 5) == records[:5]
    assert await log.verify() == (40, None)


async def test_pages_filter_and_move_by_cursor(store: Any) -> None:
    ticks = iter(range(10_000))
    log = AuditLog(store.audit, lambda: T0 + next(ticks))
    for n in range(6):
        await log.record(entry("key_a" if n % 2 else "env", f"tenant:t{n % 3}", n))
    audit = store.audit
    newest = await audit.query(AuditQuery(limit=4))
    assert [r.seq for r in newest] == [6, 5, 4, 3]
    assert [r.seq for r in await audit.query(AuditQuery(limit=4, cursor=3))] == [2, 1]
    oldest = await audit.query(AuditQuery(limit=2, cursor=2, descending=False))
    assert [r.seq for r in oldest] == [3, 4]
    assert [r.seq for r in await audit.query(AuditQuery(actor="key_a"))] == [6, 4, 2]
    assert [r.seq for r in await audit.query(AuditQuery(target="tenant:t0"))] == [4, 1]
    assert [r.seq for r in await audit.query(AuditQuery(action="POST /tenants", actor="env",
                                                        target="tenant:t1"))] == [5]  # fmt: skip
    window = AuditQuery(start=T0 + 1, end=T0 + 3)
    assert [r.seq for r in await audit.query(window)] == [3, 2]
    assert await audit.query(AuditQuery(actor="nobody")) == []
    assert not hasattr(audit, "delete") and not hasattr(audit, "update")


async def test_control_characters_never_make_a_record_unstorable(store: Any) -> None:
    """A NUL (PostgreSQL's TEXT refuses it) or any other control character in a field taken
    from the request is stored escaped as ``\\uXXXX``; the chain still verifies, and the
    escaped value is what a filter finds."""
    log = AuditLog(store.audit, lambda: T0)
    raw = AuditEntry("anon\x00ymous", "\x1b[31m", "DELETE /keys/\x00abc", "key:\x00abc\x7f\x85",
                     {"before": None, "after": {"path": "/\x00"}, "request": None},
                     "10.0.0.1\x00", "req_\n1", "refused", 401)  # fmt: skip
    stored = await log.record(raw)
    assert (stored.actor, stored.role, stored.target) == (
        "anon\\u0000ymous", "\\u001b[31m", "key:\\u0000abc\\u007f\\u0085")  # fmt: skip
    assert (stored.action, stored.ip, stored.request_id) == (
        "DELETE /keys/\\u0000abc", "10.0.0.1\\u0000", "req_\\u000a1")  # fmt: skip
    assert stored.change["after"] == {"path": "/\x00"}  # JSON: escaped by the encoding itself
    assert await store.audit.scan(0, 10) == [stored]
    found = await store.audit.query(AuditQuery(target="key:\\u0000abc\\u007f\\u0085"))
    assert found == [stored]
    assert await log.verify() == (1, None)

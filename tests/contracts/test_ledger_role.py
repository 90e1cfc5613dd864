"""The ``LedgerStore`` contract, on every backend: entries written in one transaction, every
field kept, a repeated request id ignored; the write probe of the ledger's health."""

from __future__ import annotations

from typing import Any

import pytest

from farebox.core.records import UsageQuery
from tests.contracts.backends import EVERY
from tests.contracts.builders import T0, entry, tenant

BACKENDS = EVERY


async def test_ledger_round_trips_every_field(store: Any) -> None:
    full = entry(
        "req_full", user="u1", feature="search", metadata={"a": 1, "b": {"c": [True, None]}},
        stream=True, input_tokens=1500, cached_input_tokens=1024, cache_write_5m_tokens=3,
        cache_write_1h_tokens=4, output_tokens=77, reasoning_tokens=20,
        cost=123_456_789_012_345_678, revenue=-5, latency_ms=12.5, ttft_ms=3.25,
        upstream_ms=10.0, usage_source="estimated", error_code="upstream_timeout",
        http_status=499, status="client_disconnected",
    )  # fmt: skip
    bare = entry("req_bare", started_at=T0 + 1)
    await store.append_ledger([full, bare])
    assert await store.ledger() == [full, bare]


async def test_append_ledger_is_idempotent_on_request_id(store: Any) -> None:
    first = entry("req_1", cost=100)
    await store.append_ledger([first])
    await store.append_ledger([entry("req_1", cost=999, tenant_id="globex")])
    await store.append_ledger([entry("req_2", cost=5), entry("req_2", cost=6)])
    await store.append_ledger([])
    rows = await store.ledger()
    assert [(e.request_id, e.cost, e.tenant_id) for e in rows] == [
        ("req_1", 100, "acme"),
        ("req_2", 5, "acme"),
    ]
    (total,) = await store.usage(UsageQuery())
    assert total.requests == 2 and total.cost == 105
    assert await store.ledger("globex") == []


async def test_many_small_ledger_batches_then_admin_writes(store: Any) -> None:
    """Small batches may commit on the caller's thread with periodic checkpoints; later
    large batches and admin writes must still commit."""
    for i in range(600):
        await store.append_ledger([entry(f"s{i}", started_at=T0 + i)])
    await store.append_ledger([entry(f"b{i}", started_at=T0 + 1000 + i) for i in range(50)])
    await store.create_tenant(tenant("after"))
    assert len(await store.ledger()) == 650
    assert (await store.get_tenant("after")) is not None


async def test_a_healthy_store_passes_its_write_probe(store: Any) -> None:
    """The ledger writer takes the store's own health flag, or keeps one and probes it with
    ``probe_write``: on a store whose database answers, either says so."""
    health = store.ledger_health
    assert health is None or health.up
    assert await store.probe_write() is True


@pytest.mark.backends("memory", "sqlite", "sqlite-single-process")
async def test_the_writer_keeps_the_flag_for_the_embedded_stores(store: Any) -> None:
    """Memory and SQLite hand the health flag to the ledger writer, which probes them with
    ``probe_write`` (for SQLite a write that reaches the disk)."""
    assert store.ledger_health is None


@pytest.mark.backends("postgres", "postgres+redis")
async def test_postgresql_keeps_its_own_flag_and_the_scaled_store_hands_it_over(
    store: Any,
) -> None:
    """PostgreSQL flips its own flag on any connection-level failure and probes it; the
    replicas' store hands over that same flag, not a copy."""
    health = store.ledger_health
    assert health is not None and health.up
    assert health is store.ledger_health  # one flag, read for free per request
    pg = getattr(store, "_pg", store)
    assert health is pg.health

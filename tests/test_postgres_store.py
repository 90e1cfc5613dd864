"""PostgreSQL-only behaviour of ``PostgresStore``: placeholders replaced by late entries,
NUL bytes, one transaction per batch, huge exact sums, UTC grouping and byte order, schema
migrations and quoting. The role contracts run against it from ``tests/contracts/``.

Each test gets a fresh schema. Without a server at 127.0.0.1:5432 the tests skip, unless
``FAREBOX_REQUIRE_SERVICES=1`` (then they fail).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.contracts.builders import T0, entry, key, tenant

asyncpg = pytest.importorskip("asyncpg")

from farebox.core.budgets import Hold  # noqa: E402
from farebox.core.records import UsageQuery  # noqa: E402
from farebox.errors import Conflict  # noqa: E402
from farebox.stores.postgres.schema import MIGRATIONS  # noqa: E402
from farebox.stores.postgres.store import PostgresStore  # noqa: E402

DSN = os.environ.get("FAREBOX_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


async def _admin() -> Any:
    try:
        return await asyncpg.connect(DSN, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        message = f"PostgreSQL at 127.0.0.1:5432 is not running: {exc!r}"
        if os.environ.get("FAREBOX_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A unique schema name, dropped (with everything in it) afterwards."""
    name = f"farebox_test_{uuid.uuid4().hex}"
    conn = await _admin()
    try:
        yield name
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await conn.close()


@pytest.fixture
def make_store(schema: str) -> Callable[[], PostgresStore]:
    return lambda: PostgresStore(DSN, schema=schema, pool_min=1, pool_max=4)


@pytest.fixture
async def store(make_store: Callable[[], PostgresStore]) -> AsyncIterator[PostgresStore]:
    s = make_store()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def _opened(stores: list[PostgresStore], *openers: Awaitable[None]) -> None:
    try:
        await asyncio.gather(*openers)
    finally:
        await asyncio.gather(*(s.close() for s in stores))


# --- ledger: placeholders and reconciliation ------------------------------------------------


async def test_append_ledger_replaces_only_an_unsettled_placeholder(store: PostgresStore) -> None:
    placeholder = entry("r1", status="unsettled", http_status=0, cost=500, reservation_id="res1")
    await store.append_ledger([placeholder, entry("r2", cost=7)])
    real = entry("r1", cost=123, output_tokens=9, metadata={"late": True}, reservation_id="res1")
    await store.append_ledger([real])
    assert await store.ledger() == [real, entry("r2", cost=7)]
    # a real entry is never replaced, neither by another real one nor by a placeholder
    await store.append_ledger([entry("r1", cost=999), dataclasses.replace(placeholder, cost=1)])
    await store.append_ledger([entry("r2", status="unsettled", cost=1)])
    assert await store.ledger() == [real, entry("r2", cost=7)]
    (total,) = await store.usage(UsageQuery())
    assert (total.requests, total.cost) == (2, 130)


async def test_a_nul_from_a_client_never_fails_a_ledger_batch(store: PostgresStore) -> None:
    """Issue 7: PostgreSQL refuses U+0000 in text and jsonb; a client can send one in ``user``
    or its metadata header. The batch is written (the NUL dropped), its neighbours with it."""
    odd = entry("r1", cost=5, user="a\x00b", metadata={"k\x00": ["v\x00", {"x": "\x00"}]})
    await store.append_ledger([odd, entry("r2", cost=7)])
    await store.insert_ledger_if_absent([entry("r3", status="unsettled", user="\x00")])
    rows = {e.request_id: e for e in await store.ledger()}
    assert rows["r1"].user == "ab" and rows["r1"].metadata == {"k": ["v", {"x": ""}]}
    assert (rows["r2"].cost, rows["r3"].user) == (7, "")


async def test_append_ledger_is_one_transaction(store: PostgresStore) -> None:
    await store.append_ledger([entry("r0")])
    bad = entry("r2", metadata={"x": 1}, cost=10**40)  # overflows NUMERIC(38, 0)
    with pytest.raises(asyncpg.NumericValueOutOfRangeError):
        await store.append_ledger([entry("r1"), bad])
    assert [e.request_id for e in await store.ledger()] == ["r0"]


async def test_existing_entries(store: PostgresStore) -> None:
    assert await store.existing_entries([]) == {}
    a = entry("a", cost=1)
    b = entry("b", status="unsettled", started_at=T0 + 1)
    await store.append_ledger([a, b])
    assert await store.existing_entries(["a", "b", "missing"]) == {"a": a, "b": b}
    assert await store.existing_entries(["missing"]) == {}


async def test_insert_ledger_if_absent_never_replaces(store: PostgresStore) -> None:
    await store.insert_ledger_if_absent([])
    await store.append_ledger([entry("r1", cost=5)])
    await store.insert_ledger_if_absent([entry("r1", status="unsettled", cost=50), entry("r2")])
    await store.insert_ledger_if_absent([entry("r2", cost=3)])
    got = {e.request_id: (e.status, e.cost) for e in await store.ledger()}
    assert got == {"r1": ("ok", 5), "r2": ("ok", 0)}


async def test_huge_costs_sum_exactly(store: PostgresStore) -> None:
    costs = [10**25 + i for i in range(7)] + [3 * 10**37]
    await store.append_ledger(
        [entry(f"r{i}", cost=c, revenue=-c, input_tokens=2**40) for i, c in enumerate(costs)]
    )
    (row,) = await store.usage(UsageQuery())
    assert row.cost == sum(costs) and row.revenue == -sum(costs)
    assert row.input_tokens == 2**40 * len(costs)
    assert all(type(v) is int for v in (row.requests, row.input_tokens, row.cost, row.revenue))
    assert [e.cost for e in await store.ledger()] == costs
    (by_day,) = await store.usage(UsageQuery(group_by="day"))
    assert (by_day.group, by_day.cost) == ("2025-06-16", sum(costs))


async def test_usage_day_and_hour_boundaries_are_utc(store: PostgresStore) -> None:
    await store.append_ledger(
        [
            entry("a", started_at=T0 - 0.25),
            entry("b", started_at=T0),
            entry("c", started_at=T0 + 3600.9),
        ]
    )
    days = {r.group: r.requests for r in await store.usage(UsageQuery(group_by="day"))}
    assert days == {"2025-06-15": 1, "2025-06-16": 2}
    hours = [r.group for r in await store.usage(UsageQuery(group_by="hour"))]
    assert hours == ["2025-06-15T23:00:00Z", "2025-06-16T00:00:00Z", "2025-06-16T01:00:00Z"]


async def test_usage_orders_groups_bytewise_with_none_last(store: PostgresStore) -> None:
    await store.append_ledger(
        [entry("1", feature="b"), entry("2", feature=None), entry("3", feature="B"),
         entry("4", feature="a")]
    )  # fmt: skip
    groups = [r.group for r in await store.usage(UsageQuery(group_by="feature"))]
    assert groups == ["B", "a", "b", None]


# --- keys, tenants --------------------------------------------------------------------------


async def test_key_for_unknown_tenant_is_conflict(store: PostgresStore) -> None:
    with pytest.raises(Conflict):
        await store.create_key(key("k1", "ghost"))


async def test_key_hash_collision_on_update_is_conflict(store: PostgresStore) -> None:
    await store.create_tenant(tenant("acme"))
    await store.create_key(key("k1", "acme"))
    await store.create_key(key("k2", "acme"))
    with pytest.raises(Conflict):
        await store.update_key("k2", {"key_hash": "hash-k1"})
    with pytest.raises(ValueError):
        await store.update_key("k2", {"id": "k3"})


async def test_tenant_budgets_and_empty_update(store: PostgresStore) -> None:
    budgets = [{"period": "day", "limit_usd": "1.50"}]
    await store.create_tenant(tenant("acme", budgets=budgets))
    same = await store.update_tenant("acme", {})
    assert same == tenant("acme", budgets=budgets)


# --- alerts ---------------------------------------------------------------------------------


def _hold(bucket: float) -> Hold:
    return Hold(key="tenant:acme:day", scope="tenant", period="day", name=None, limit=100,
                bucket=bucket, buckets_from=bucket, resets_at=bucket + 86_400)  # fmt: skip


async def test_record_alert_once_per_window(store: PostgresStore) -> None:
    assert await store.record_alert(_hold(T0), 80, "acme", T0 + 5, {"spent": 81})
    assert not await store.record_alert(_hold(T0), 80, "acme", T0 + 6, {"spent": 90})
    assert await store.record_alert(_hold(T0), 100, "acme", T0 + 7, {})
    assert await store.record_alert(_hold(T0 + 86_400), 80, None, T0 + 86_401, {"n": [1]})
    assert [a["fired_at"] for a in await store.alerts(None)] == [T0 + 5, T0 + 7, T0 + 86_401]
    first, second = await store.alerts("acme")
    assert first == {"budget": "tenant:acme:day", "window_start": T0, "threshold_percent": 80,
                     "tenant": "acme", "fired_at": T0 + 5, "spent": 81}  # fmt: skip
    assert second["threshold_percent"] == 100
    assert await store.alerts("globex") == []


# --- lifecycle and migrations ---------------------------------------------------------------


async def test_concurrent_migrations_on_a_fresh_schema(
    schema: str, make_store: Callable[[], PostgresStore]
) -> None:
    stores = [make_store() for _ in range(4)]
    await _opened(stores, *(s.open() for s in stores))
    conn = await _admin()
    try:
        versions = await conn.fetch(f'SELECT version FROM "{schema}".schema_version')
        assert sorted(r["version"] for r in versions) == list(range(1, len(MIGRATIONS) + 1))
    finally:
        await conn.close()
    # reopening an up-to-date schema is a no-op, and the data survives
    one, two = make_store(), make_store()
    await asyncio.gather(one.open(), two.open())
    try:
        await one.create_tenant(tenant("acme"))
        await one.append_ledger([entry("r1", cost=42)])
        assert await two.get_tenant("acme") == tenant("acme")
        assert await two.put_meta_if_absent("m", "1") == "1"
        assert await one.put_meta_if_absent("m", "2") == "1"
    finally:
        await one.close()
        await two.close()
    three = make_store()
    await three.open()
    try:
        assert [e.cost for e in await three.ledger()] == [42]
        assert await three.get_meta("m") == "1"
    finally:
        await three.close()


async def test_concurrent_put_meta_if_absent_agrees(store: PostgresStore) -> None:
    got = await asyncio.gather(*(store.put_meta_if_absent("secret", f"v{i}") for i in range(8)))
    assert len(set(got)) == 1 and got[0] == await store.get_meta("secret")


async def test_closed_store_and_unreachable_server(schema: str) -> None:
    s = PostgresStore(DSN, schema=schema)
    with pytest.raises(RuntimeError):
        await s.ping()
    await s.close()  # closing a store never opened is fine
    dead = PostgresStore("postgresql://postgres@127.0.0.1:1/test", schema=schema)
    with pytest.raises(OSError):
        await dead.open()


async def test_schema_names_are_quoted(schema: str) -> None:
    odd = PostgresStore(DSN, schema=schema + '-Odd"Name', pool_min=1, pool_max=2)
    await odd.open()
    conn = await _admin()
    try:
        await odd.create_tenant(tenant("acme"))
        assert [t.id for t in await odd.list_tenants()] == ["acme"]
    finally:
        await odd.close()
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}-Odd""Name" CASCADE')
        await conn.close()

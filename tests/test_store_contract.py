"""One contract suite, run against every Store implementation."""

from __future__ import annotations

import dataclasses
import random
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from farebox.core.records import ApiKey, LedgerEntry, Tenant, UsageQuery, UsageRow
from farebox.errors import Conflict, NotFound
from farebox.stores.memory.store import MemoryStore
from farebox.stores.sqlite.store import SQLiteStore

DAY = 86_400.0
T0 = 1_750_032_000.0  # 2025-06-16T00:00:00Z


def make_memory(tmp_path: Path) -> Any:
    return MemoryStore()


def make_sqlite(tmp_path: Path) -> Any:
    return SQLiteStore(tmp_path / "x.db")


FACTORIES: dict[str, Callable[[Path], Any]] = {"memory": make_memory, "sqlite": make_sqlite}


@pytest.fixture(params=sorted(FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    s = FACTORIES[request.param](tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def tenant(tid: str, **kw: Any) -> Tenant:
    return Tenant(id=tid, name=kw.pop("name", tid.title()), plan=kw.pop("plan", "free"),
                  created_at=kw.pop("created_at", T0), **kw)  # fmt: skip


def key(kid: str, tenant_id: str | None, **kw: Any) -> ApiKey:
    return ApiKey(id=kid, key_hash=kw.pop("key_hash", f"hash-{kid}"),
                  kind=kw.pop("kind", "tenant" if tenant_id else "service"),
                  name=kw.pop("name", kid), created_at=kw.pop("created_at", T0),
                  tenant_id=tenant_id, **kw)  # fmt: skip


def entry(rid: str, **kw: Any) -> LedgerEntry:
    started = kw.pop("started_at", T0)
    base: dict[str, Any] = {
        "request_id": rid, "tenant_id": "acme", "key_id": "k1", "endpoint": "chat.completions",
        "model_requested": "gpt-4o-mini", "model_served": "gpt-4o-mini", "provider": "mock",
        "status": "ok", "http_status": 200, "started_at": started, "finished_at": started + 0.5,
    }  # fmt: skip
    base.update(kw)
    return LedgerEntry(**base)


# --- tenants -------------------------------------------------------------------------------


async def test_ping(store: Any) -> None:
    assert await store.ping() is True


async def test_tenant_create_get_list(store: Any) -> None:
    assert await store.get_tenant("acme") is None
    assert await store.list_tenants() == []
    acme = tenant("acme", billing={"stripe_customer_id": "cus_1"}, metadata={"tier": 2, "x": [1]})
    await store.create_tenant(acme)
    await store.create_tenant(tenant("globex", plan="pro", created_at=T0 + 1))
    assert await store.get_tenant("acme") == acme
    assert {t.id for t in await store.list_tenants()} == {"acme", "globex"}
    assert (await store.get_tenant("globex")).plan == "pro"  # type: ignore[union-attr]


async def test_tenant_create_conflict(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    with pytest.raises(Conflict):
        await store.create_tenant(tenant("acme", name="Other", plan="pro"))
    stored = await store.get_tenant("acme")
    assert stored is not None and stored.name == "Acme" and stored.plan == "free"
    assert len(await store.list_tenants()) == 1


async def test_tenant_update(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    updated = await store.update_tenant(
        "acme", {"plan": "pro", "paused": True, "pause_reason": "spike", "billing": {"a": "b"}}
    )
    assert updated.plan == "pro" and updated.paused is True and updated.pause_reason == "spike"
    assert updated.billing == {"a": "b"}
    assert await store.get_tenant("acme") == updated
    again = await store.update_tenant("acme", {"paused": False, "pause_reason": None})
    assert again.paused is False and again.pause_reason is None and again.plan == "pro"
    assert again.name == "Acme" and again.created_at == T0


async def test_tenant_update_missing_is_not_found(store: Any) -> None:
    with pytest.raises(NotFound):
        await store.update_tenant("ghost", {"plan": "pro"})
    assert await store.get_tenant("ghost") is None


# --- keys --------------------------------------------------------------------------------


async def test_keys_by_id_and_hash(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    k = key("k1", "acme", prefix="fbx_abcdef", expires_at=T0 + 60)
    await store.create_key(k)
    assert await store.get_key("k1") == k
    assert await store.get_key_by_hash("hash-k1") == k
    assert await store.get_key_by_hash("hash-nope") is None
    assert await store.get_key("nope") is None


async def test_key_duplicate_is_conflict(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    await store.create_key(key("k1", "acme"))
    with pytest.raises(Conflict):
        await store.create_key(key("k1", "acme", key_hash="hash-other"))
    with pytest.raises(Conflict):
        await store.create_key(key("k2", "acme", key_hash="hash-k1"))
    assert await store.get_key("k2") is None
    assert (await store.get_key_by_hash("hash-k1")).id == "k1"  # type: ignore[union-attr]


async def test_list_keys_filters(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    await store.create_tenant(tenant("globex"))
    await store.create_key(key("a2", "acme", created_at=T0 + 2))
    await store.create_key(key("a1", "acme", created_at=T0 + 1))
    await store.create_key(key("g1", "globex", created_at=T0 + 3))
    await store.create_key(key("s1", None, created_at=T0 + 4))
    await store.create_key(key("s0", None, created_at=T0 + 0.5))

    async def ids(tenant_id: str | None, kind: str | None = None) -> list[str]:
        return [k.id for k in await store.list_keys(tenant_id, kind)]

    assert await ids("acme") == ["a1", "a2"]
    assert await ids("globex") == ["g1"]
    assert await ids("nobody") == []
    assert await ids(None) == ["s0", "a1", "a2", "g1", "s1"]
    assert await ids(None, "service") == ["s0", "s1"]
    assert await ids(None, "tenant") == ["a1", "a2", "g1"]
    assert await ids("acme", "tenant") == ["a1", "a2"]
    assert await ids("acme", "service") == []


async def test_key_update(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    await store.create_key(key("k1", "acme"))
    revoked = await store.update_key("k1", {"revoked_at": T0 + 10})
    assert revoked.revoked_at == T0 + 10
    assert revoked.usable_at(T0 + 5) and not revoked.usable_at(T0 + 10)
    assert await store.get_key_by_hash("hash-k1") == revoked
    paused = await store.update_key("k1", {"paused": True, "pause_reason": "abuse"})
    assert paused.paused is True and paused.revoked_at == T0 + 10
    assert await store.get_key("k1") == paused
    with pytest.raises(NotFound):
        await store.update_key("ghost", {"paused": True})


# --- auth epoch ------------------------------------------------------------------------------


async def test_auth_epoch_moves_on_every_tenant_and_key_change(store: Any) -> None:
    seen = [await store.auth_epoch()]

    async def bumped() -> None:
        now = await store.auth_epoch()
        assert now > seen[-1], (seen, now)
        seen.append(now)

    async def unchanged() -> None:
        assert await store.auth_epoch() == seen[-1]

    await store.create_tenant(tenant("acme"))
    await bumped()
    await store.update_tenant("acme", {"paused": True})
    await bumped()
    await store.update_tenant("acme", {"paused": False})
    await bumped()
    await store.create_key(key("k1", "acme"))
    await bumped()
    await store.update_key("k1", {"revoked_at": T0})
    await bumped()
    await store.update_key("k1", {"paused": True})
    await bumped()
    # reads, the ledger and meta do not invalidate authentication caches
    await store.get_tenant("acme")
    await store.get_key_by_hash("hash-k1")
    await store.list_keys(None)
    await store.append_ledger([entry("r1"), entry("r2")])
    await store.append_ledger([entry("r1")])
    await store.ledger()
    await store.usage(UsageQuery(group_by="tenant"))
    await store.put_meta_if_absent("x", "1")
    await unchanged()


# --- ledger ------------------------------------------------------------------------------


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


async def test_ledger_order_filter_and_limit(store: Any) -> None:
    rng = random.Random(7)
    entries = [
        entry(f"req_{i:03d}", started_at=T0 + rng.choice([0, 1, 2, 3]), tenant_id=rng.choice("ab"))
        for i in range(40)
    ]
    shuffled = entries[:]
    rng.shuffle(shuffled)
    for i in range(0, 40, 7):
        await store.append_ledger(shuffled[i : i + 7])
    expected = sorted(entries, key=lambda e: (e.started_at, e.request_id))
    assert await store.ledger() == expected
    assert await store.ledger("a") == [e for e in expected if e.tenant_id == "a"]
    assert await store.ledger(limit=5) == expected[-5:]
    only_b = [e for e in expected if e.tenant_id == "b"]
    assert await store.ledger("b", limit=3) == only_b[-3:]
    assert await store.ledger("nobody") == []


async def test_ledger_empty_tenant_id_matches_nothing(store: Any) -> None:
    await store.append_ledger([entry("r1"), entry("r2", started_at=T0 + 1)])
    # an empty tenant id is a tenant id that matches nothing, not "no filter"
    assert await store.ledger("") == []
    assert len(await store.ledger(None)) == 2


async def test_ledger_limit(store: Any) -> None:
    await store.append_ledger([entry("r1"), entry("r2", started_at=T0 + 1)])
    # a limit of zero is zero entries, not all of them
    assert await store.ledger(limit=0) == []
    assert [e.request_id for e in await store.ledger(limit=1)] == ["r2"]
    assert [e.request_id for e in await store.ledger(limit=10)] == ["r1", "r2"]


def day_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def hour_of(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(ts))


GROUPERS: dict[str | None, Callable[[LedgerEntry], str | None]] = {
    None: lambda e: None,
    "tenant": lambda e: e.tenant_id,
    "model": lambda e: e.model_served,
    "day": lambda e: day_of(e.started_at),
    "hour": lambda e: hour_of(e.started_at),
    "feature": lambda e: e.feature,
    "user": lambda e: e.user,
    "key": lambda e: e.key_id,
}


def expected_usage(
    entries: list[LedgerEntry], group_by: str | None, keep: Callable[[LedgerEntry], bool]
) -> dict[str | None, tuple[int, int, int, int, int]]:
    sums: dict[str | None, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for e in entries:
        if keep(e):
            row = sums[GROUPERS[group_by](e)]
            for i, v in enumerate((1, e.input_tokens, e.output_tokens, e.cost, e.revenue)):
                row[i] += v
    return {g: (r[0], r[1], r[2], r[3], r[4]) for g, r in sums.items()}


def as_dict(rows: list[UsageRow]) -> dict[str | None, tuple[int, int, int, int, int]]:
    out = {r.group: (r.requests, r.input_tokens, r.output_tokens, r.cost, r.revenue) for r in rows}
    assert len(out) == len(rows), "a group appears twice"
    for values in out.values():
        assert all(type(v) is int for v in values), values
    return out


@pytest.fixture
def random_entries() -> list[LedgerEntry]:
    rng = random.Random(2024)
    out = []
    for i in range(300):
        # costs above 2**53 in total: a float sum anywhere would lose the last digits
        cost = rng.randrange(10**13, 10**14) * 7 + rng.randrange(10)
        out.append(
            entry(
                f"req_{i:04d}",
                tenant_id=rng.choice(["acme", "globex", "initech"]),
                key_id=rng.choice(["k1", "k2"]),
                model_served=rng.choice(["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5"]),
                started_at=T0 + rng.randrange(0, int(5 * DAY)) + rng.random(),
                feature=rng.choice([None, "search", "chat"]),
                user=rng.choice([None, "u1", "u2", "u3"]),
                input_tokens=rng.randrange(0, 100_000),
                output_tokens=rng.randrange(0, 10_000),
                cost=cost,
                revenue=cost + rng.randrange(-(10**9), 10**12),
            )
        )
    return out


@pytest.mark.parametrize("group_by", list(GROUPERS))
async def test_usage_grouping_exact_sums(
    store: Any, random_entries: list[LedgerEntry], group_by: str | None
) -> None:
    for i in range(0, len(random_entries), 64):
        await store.append_ledger(random_entries[i : i + 64])
    assert sum(e.cost for e in random_entries) > 2**53
    got = as_dict(await store.usage(UsageQuery(group_by=group_by)))
    assert got == expected_usage(random_entries, group_by, lambda e: True)
    # a tenant filter
    got = as_dict(await store.usage(UsageQuery(tenant_id="globex", group_by=group_by)))
    assert got == expected_usage(random_entries, group_by, lambda e: e.tenant_id == "globex")
    # a window: start inclusive, end exclusive
    start, end = T0 + DAY, T0 + 3 * DAY
    got = as_dict(await store.usage(UsageQuery(start=start, end=end, group_by=group_by)))
    assert got == expected_usage(random_entries, group_by, lambda e: start <= e.started_at < end)


async def test_usage_window_bounds(store: Any) -> None:
    await store.append_ledger(
        [entry("at_start", started_at=T0, cost=1), entry("at_end", started_at=T0 + 10, cost=2)]
    )
    (row,) = await store.usage(UsageQuery(start=T0, end=T0 + 10))
    assert (row.requests, row.cost) == (1, 1)
    (row,) = await store.usage(UsageQuery(start=T0 + 0.001))
    assert (row.requests, row.cost) == (1, 2)
    assert await store.usage(UsageQuery(tenant_id="nobody", group_by="model")) == []


async def test_usage_of_empty_ledger(store: Any) -> None:
    for group_by in GROUPERS:
        rows = await store.usage(UsageQuery(group_by=group_by))
        assert sum(r.requests for r in rows) == 0
        assert sum(r.cost for r in rows) == 0


# --- meta --------------------------------------------------------------------------------


async def test_meta(store: Any) -> None:
    assert await store.get_meta("admin_key_hash") is None
    assert await store.put_meta_if_absent("admin_key_hash", "first") == "first"
    assert await store.put_meta_if_absent("admin_key_hash", "second") == "first"
    assert await store.get_meta("admin_key_hash") == "first"
    assert await store.put_meta_if_absent("other", "x") == "x"
    assert await store.get_meta("other") == "x"
    assert await store.get_meta("admin_key_hash") == "first"


# --- durability and sharing (SQLite) ------------------------------------------------------


async def test_sqlite_survives_reopen_and_shares_epoch(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    one, two = SQLiteStore(path), SQLiteStore(path)
    await one.open()
    await two.open()
    try:
        await one.create_tenant(tenant("acme"))
        await one.create_key(key("k1", "acme"))
        await one.append_ledger([entry("r1", cost=42)])
        await one.put_meta_if_absent("m", "1")
        before = await two.auth_epoch()
        assert before == await one.auth_epoch()
        assert await two.get_key_by_hash("hash-k1") is not None
        await two.update_key("k1", {"revoked_at": T0})
        # the other instance sees the change at once, without reopening
        assert await one.auth_epoch() > before
        assert (await one.get_key("k1")).revoked_at == T0  # type: ignore[union-attr]
        assert await two.put_meta_if_absent("m", "2") == "1"
    finally:
        await one.close()
        await two.close()
    three = SQLiteStore(path)
    await three.open()
    try:
        assert (await three.get_tenant("acme")) == tenant("acme")
        assert [e.cost for e in await three.ledger()] == [42]
        assert await three.get_meta("m") == "1"
        revoked = await three.get_key("k1")
        assert revoked is not None and revoked.revoked_at == T0
    finally:
        await three.close()


def test_records_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        tenant("acme").plan = "pro"  # type: ignore[misc]


async def test_many_small_ledger_batches_then_admin_writes(store: Any) -> None:
    """Small batches may commit on the caller's thread with periodic checkpoints; later
    large batches and admin writes must still commit."""
    for i in range(600):
        await store.append_ledger([entry(f"s{i}", started_at=T0 + i)])
    await store.append_ledger([entry(f"b{i}", started_at=T0 + 1000 + i) for i in range(50)])
    await store.create_tenant(tenant("after"))
    assert len(await store.ledger()) == 650
    assert (await store.get_tenant("after")) is not None

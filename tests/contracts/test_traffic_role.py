"""The ``TrafficStore`` contract (``Store.traffic``: minute and hour counters, anomaly
incidents) on every backend; plus races for ``open_incident`` between tasks, store instances
and processes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from farebox.core.anomaly import DAY, HOUR, MINUTE, Incident, TrafficRow
from farebox.stores.sqlite.store import SQLiteStore
from races import race_on_sqlite
from tests.contracts.backends import EVERY, drop_schema, make_postgres

BACKENDS = EVERY


T0 = 1_793_577_600  # 2026-11-02T00:00:00Z


COOLDOWN = 3_600


def row(tenant: str, key: str, start: int, requests: int = 1, spend: int = 0) -> TrafficRow:
    return TrafficRow(tenant, key, start, requests, spend)


def incident(iid: str, tenant: str = "acme", opened_at: float = T0, **kw: Any) -> Incident:
    values: dict[str, Any] = {
        "id": iid, "tenant_id": tenant, "key_id": "", "target": "tenant", "target_key": "",
        "metric": "requests", "observed": 9_000, "baseline": 60, "threshold": 360,
        "opened_at": opened_at, "dedup_key": f"farebox:anomaly:{tenant}:{iid}",
    }  # fmt: skip
    values.update(kw)
    return Incident(**values)


def rows_of(found: list[TrafficRow]) -> list[TrafficRow]:
    return sorted(found, key=lambda r: (r.start, r.tenant_id, r.key_id))


# --- counters ----------------------------------------------------------------------------


async def test_add_increments_the_minute_and_the_hour(store: Any) -> None:
    t = store.traffic
    await t.add([row("acme", "k1", T0 + 5, 2, 1_000), row("acme", "k1", T0 + 59, 3, 500)])
    await t.add([row("acme", "k1", T0 + 61, 1, 7), row("acme", "k2", T0 + 3_599, 4, 0)])
    assert rows_of(await t.since(T0)) == [
        row("acme", "k1", T0, 5, 1_500),  # two rows in one minute: summed
        row("acme", "k1", T0 + MINUTE, 1, 7),
        row("acme", "k2", T0 + 59 * MINUTE, 4, 0),
    ]
    assert rows_of(await t.history("acme", T0)) == [
        row("acme", "k1", T0, 6, 1_507),
        row("acme", "k2", T0, 4, 0),
    ]


async def test_adding_the_same_rows_twice_doubles_them(store: Any) -> None:
    t = store.traffic
    batch = [row("acme", "k1", T0 + 10, 3, 10**15), row("globex", "k9", T0 + HOUR, 1, 2)]
    await t.add(batch)
    await t.add(batch)
    assert rows_of(await t.since(0)) == [
        row("acme", "k1", T0, 6, 2 * 10**15),
        row("globex", "k9", T0 + HOUR, 2, 4),
    ]
    assert rows_of(await t.history("acme", 0)) == [row("acme", "k1", T0, 6, 2 * 10**15)]
    assert rows_of(await t.history("globex", 0)) == [row("globex", "k9", T0 + HOUR, 2, 4)]
    await t.add([])  # nothing to add: no error


async def test_concurrent_adds_lose_nothing(store: Any) -> None:
    t = store.traffic
    batch = [row("acme", "k1", T0 + 1, 1, 10), row("acme", "k2", T0 + 2, 2, 20)]
    await asyncio.gather(*(t.add(batch) for _ in range(20)))
    assert rows_of(await t.history("acme", T0)) == [
        row("acme", "k1", T0, 20, 200),
        row("acme", "k2", T0, 40, 400),
    ]


async def test_since_returns_minute_rows_from_a_start_for_every_tenant(store: Any) -> None:
    t = store.traffic
    await t.add([row("acme", "k1", T0 + m * MINUTE, m + 1) for m in range(5)])
    await t.add([row("globex", "k2", T0 + 3 * MINUTE + 30, 7)])
    found = rows_of(await t.since(T0 + 3 * MINUTE))
    assert found == [
        row("acme", "k1", T0 + 3 * MINUTE, 4),
        row("globex", "k2", T0 + 3 * MINUTE, 7),
        row("acme", "k1", T0 + 4 * MINUTE, 5),
    ]
    assert all(r.start % MINUTE == 0 for r in await t.since(0))
    assert await t.since(T0 + 5 * MINUTE) == []


async def test_totals_since_sums_each_key_over_the_window(store: Any) -> None:
    t = store.traffic
    await t.add([row("acme", "k1", T0 + m * MINUTE, m + 1, 10 * (m + 1)) for m in range(5)])
    await t.add([row("acme", "k2", T0 + 4 * MINUTE, 2, 3)])
    await t.add([row("globex", "k9", T0, 50, 5)])  # before the window: not counted
    start = T0 + 2 * MINUTE
    found = rows_of(await t.totals_since(start))
    assert found == [row("acme", "k1", start, 3 + 4 + 5, 120), row("acme", "k2", start, 2, 3)]
    assert all(type(r.requests) is int and type(r.spend) is int for r in found)
    assert await t.totals_since(T0 + 5 * MINUTE) == []


async def test_history_returns_one_tenants_hour_rows_from_a_start(store: Any) -> None:
    t = store.traffic
    for h in range(4):
        await t.add([row("acme", "k1", T0 + h * HOUR + 17, 10 + h, h)])
        await t.add([row("globex", "k1", T0 + h * HOUR, 100)])
    found = await t.history("acme", T0 + 2 * HOUR)
    assert found == sorted(found, key=lambda r: r.start)  # oldest first
    assert rows_of(found) == [
        row("acme", "k1", T0 + 2 * HOUR, 12, 2),
        row("acme", "k1", T0 + 3 * HOUR, 13, 3),
    ]
    assert await t.history("acme", T0 + 4 * HOUR) == []
    assert await t.history("nobody", 0) == []
    assert {r.tenant_id for r in await t.history("globex", 0)} == {"globex"}
    assert all(r.start % HOUR == 0 for r in await t.history("acme", 0))


async def test_prune_drops_old_rows_per_resolution(store: Any) -> None:
    t = store.traffic
    await t.add([row("acme", "k1", T0 + h * HOUR + m * MINUTE) for h in range(3) for m in (0, 1)])
    await t.add([row("globex", "k2", T0)])
    await t.prune(minutes_before=T0 + 2 * HOUR + MINUTE, hours_before=T0 + HOUR)
    assert rows_of(await t.since(0)) == [row("acme", "k1", T0 + 2 * HOUR + MINUTE)]
    assert rows_of(await t.history("acme", 0)) == [
        row("acme", "k1", T0 + HOUR, 2),
        row("acme", "k1", T0 + 2 * HOUR, 2),
    ]
    assert await t.history("globex", 0) == []  # every tenant's old rows
    await t.prune(minutes_before=0, hours_before=0)  # nothing that old: no change
    assert len(await t.history("acme", 0)) == 2
    await t.prune(minutes_before=T0 + DAY, hours_before=T0 + DAY)
    assert await t.since(0) == [] and await t.history("acme", 0) == []


# --- incidents ---------------------------------------------------------------------------


async def test_open_incident_once_then_cooldown_then_again(store: Any) -> None:
    t = store.traffic
    assert await t.open_incident(incident("i1", opened_at=T0), T0 - COOLDOWN) is True
    # while it is open nothing opens, however long ago it opened
    assert await t.open_incident(incident("i2", opened_at=T0 + 10), T0 + 10 - COOLDOWN) is False
    later = T0 + 10 * COOLDOWN
    assert await t.open_incident(incident("i3", opened_at=later), later - COOLDOWN) is False
    # another tenant is independent
    assert await t.open_incident(incident("g1", "globex", T0 + 20), T0 + 20 - COOLDOWN) is True
    resolved = await t.resolve_incidents(["i1"], T0 + 60)
    assert [(i.id, i.resolved_at) for i in resolved] == [("i1", T0 + 60)]
    # resolved, but opened inside the cooldown: still blocked (also exactly at its edge)
    at = T0 + 120
    assert await t.open_incident(incident("i4", opened_at=at), at - COOLDOWN) is False
    assert await t.open_incident(incident("i5", opened_at=T0 + COOLDOWN), T0) is False
    # past the cooldown: a new one opens
    at = T0 + COOLDOWN + 1
    assert await t.open_incident(incident("i6", opened_at=at), at - COOLDOWN) is True
    ids = [i.id for i in await t.incidents("acme")]
    assert ids == ["i1", "i6"]  # the refused ones were never recorded


async def test_twenty_concurrent_claims_have_one_winner(store: Any) -> None:
    t = store.traffic
    claims = [
        t.open_incident(incident(f"c{n}", opened_at=T0 + n), T0 - COOLDOWN) for n in range(20)
    ]
    won = await asyncio.gather(*claims)
    assert sum(won) == 1
    (only,) = await t.incidents("acme")
    assert only.id == f"c{won.index(True)}"


async def test_resolve_returns_only_what_it_resolved(store: Any) -> None:
    t = store.traffic
    assert await t.open_incident(incident("a1", "acme", T0), T0 - COOLDOWN)
    assert await t.open_incident(incident("g1", "globex", T0 + 1), T0 - COOLDOWN)
    assert await t.open_incident(incident("h1", "hooli", T0 + 2), T0 - COOLDOWN)
    assert [i.id for i in await t.resolve_incidents(["h1"], T0 + 5)] == ["h1"]
    done = await t.resolve_incidents(["g1", "nope", "h1", "a1"], T0 + 10)
    by_id = {i.id: i for i in done}
    assert sorted(by_id) == ["a1", "g1"]  # h1 was already resolved; "nope" does not exist
    assert by_id["a1"] == incident("a1", "acme", T0, resolved_at=T0 + 10)
    assert by_id["g1"].resolved_at == T0 + 10
    assert await t.resolve_incidents(["a1", "g1"], T0 + 20) == []  # a second call: nothing
    assert await t.resolve_incidents([], T0 + 20) == []
    stored = {i.id: i.resolved_at for i in await t.incidents()}
    assert stored == {"a1": T0 + 10, "g1": T0 + 10, "h1": T0 + 5}  # never moved


async def test_incidents_filter_by_tenant_and_open_only(store: Any) -> None:
    t = store.traffic
    assert await t.incidents() == []
    await t.open_incident(incident("a1", "acme", T0 + 5), 0)
    await t.open_incident(incident("g1", "globex", T0 + 1), 0)
    await t.resolve_incidents(["a1"], T0 + 10)
    await t.open_incident(incident("a2", "acme", T0 + 20), T0 + 6)  # a1's cooldown is over
    assert [i.id for i in await t.incidents()] == ["g1", "a1", "a2"]  # by opened_at
    assert [i.id for i in await t.incidents("acme")] == ["a1", "a2"]
    assert [i.id for i in await t.incidents("acme", open_only=True)] == ["a2"]
    assert [i.id for i in await t.incidents(open_only=True)] == ["g1", "a2"]
    assert await t.incidents("nobody") == []


async def test_incident_round_trips_with_its_detail(store: Any) -> None:
    t = store.traffic
    detail = {
        "window_s": 600, "rate": {"requests": 12_000, "spend": 10**15},
        "keys": ["k1", "k2"], "learning": False, "note": "ünïcode ✓", "none": None,
        "ratio": 2.5,
    }  # fmt: skip
    original = incident(
        "d1", "acme", T0 + 0.25, key_id="k1", target="key", target_key="k1", metric="spend",
        observed=10**15, baseline=5 * 10**11, threshold=3 * 10**12, detail=detail,
    )  # fmt: skip
    assert await t.open_incident(original, T0 - COOLDOWN)
    assert await t.open_incident(incident("e1", "empty"), T0 - COOLDOWN)
    (found,) = await t.incidents("acme")
    assert found == original and found.detail == detail
    (empty,) = await t.incidents("empty")
    assert empty.detail == {} and empty.resolved_at is None
    (resolved,) = await t.resolve_incidents(["d1"], T0 + 1)
    assert resolved == dataclasses.replace(found, resolved_at=T0 + 1)
    assert (await t.incidents("acme")) == [resolved]


async def test_a_stored_incident_is_not_the_callers_object(store: Any) -> None:
    t = store.traffic
    original = incident("d1", detail={"keys": ["k1"]})
    assert await t.open_incident(original, T0 - COOLDOWN)
    original.detail["keys"].append("changed after opening")
    (found,) = await t.incidents("acme")
    found.detail["keys"].append("changed by a reader")
    (again,) = await t.incidents("acme")
    assert again.detail == {"keys": ["k1"]}


# --- two stores on one database, and processes on one SQLite file ------------------------


@pytest.fixture(params=["sqlite", "postgres"])
async def two_stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[list[Any]]:
    """Two separately opened stores (two connections) on one SQLite file or PG schema."""
    if request.param == "sqlite":
        stores: list[Any] = [
            SQLiteStore(tmp_path / "shared.db"),
            SQLiteStore(tmp_path / "shared.db"),
        ]
    else:
        first = make_postgres(tmp_path)
        stores = [first, make_postgres(tmp_path, first._schema)]
    opened: list[Any] = []
    try:
        for s in stores:  # one at a time: the first creates the schema
            await s.open()
            opened.append(s)
        yield stores
    finally:
        for s in opened:
            await s.close()
        if request.param == "postgres":
            await drop_schema(stores[0]._schema)


async def test_two_stores_on_one_database_have_one_winner(two_stores: list[Any]) -> None:
    claims = [
        two_stores[n % 2].traffic.open_incident(incident(f"c{n}", opened_at=T0), T0 - COOLDOWN)
        for n in range(20)
    ]
    won = await asyncio.gather(*claims)
    assert sum(won) == 1
    for s in two_stores:
        assert [i.id for i in await s.traffic.incidents("acme")] == [f"c{won.index(True)}"]
    # and they share the counters
    await asyncio.gather(*(s.traffic.add([row("acme", "k1", T0, 1, 1)]) for s in two_stores))
    for s in two_stores:
        assert await s.traffic.history("acme", 0) == [row("acme", "k1", T0, 2, 2)]


PROCS = 4


TRIES = 3


def _claim_worker(path: str, worker: int, barrier: Any, results: Any) -> None:
    async def main() -> list[bool]:
        store = SQLiteStore(Path(path))
        await store.open()
        try:
            barrier.wait(timeout=60)
            won = []
            for n in range(TRIES):
                claim = incident(f"w{worker}-{n}", opened_at=T0 + n)
                won.append(await store.traffic.open_incident(claim, T0 - COOLDOWN))
            return won
        finally:
            await store.close()

    results.put((worker, asyncio.run(main())))


def test_sqlite_processes_race_for_one_incident(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    outcomes = race_on_sqlite(path, _claim_worker, PROCS)
    winners = [f"w{w}-{n}" for w, won in outcomes.items() for n, ok in enumerate(won) if ok]
    assert len(winners) == 1

    async def check() -> list[Incident]:
        s = SQLiteStore(path)
        await s.open()
        try:
            return await s.traffic.incidents()
        finally:
            await s.close()

    assert [i.id for i in asyncio.run(check())] == winners

"""Issue 18: leases of global allowance (``stores.redis.allowance``): the global budget
without a home-slot script per request, and with the same never-overspend guarantee.

- a property test runs random reserves, settles, cancels, extends and expiries on one
  replica with allowance on and on ``MemoryBudgets``: every admission and refusal is the
  same, and every counter read is the same (a drawn hold's state at reserve time is this
  replica's view, so only the other holds' are compared there);
- several replicas racing for one global budget (single Redis and a 3-node cluster) never
  hold more than its limit, and once settled and given back it holds exactly the costs;
- a replica that dies holding chunks: another replica's reclaim gives the chunks back and
  counts exactly the spend of the requests whose ledger entries were committed;
- a thousand requests under a global budget run few scripts in the home slot.

Needs Redis at 127.0.0.1:6379 (and ``redis-server`` for the cluster).
"""

from __future__ import annotations

import asyncio
import random
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import TimeoutError as RedisTimeoutError

from farebox.core.budgets import Hold
from farebox.core.records import ReserveOutcome
from farebox.errors import FareboxError
from farebox.stores.redis.budgets import RedisBudgets
from tests.cluster_fixture import Cluster
from tests.contracts.builders import hold
from tests.test_redis_budgets import connect
from tests.test_redis_sharding import (
    OPS,
    T0,
    Run,
    drop_all,
    pooled,
    reservation,
    run_ops,
    settlement,
)


class AllowanceRun(Run):
    """``Run`` with the global budget drawn on allowance: admissions and reads compared
    exactly, reserve-time states of drawn global holds left out."""

    def same_states(self, got: ReserveOutcome, want: ReserveOutcome) -> None:
        pairs = zip(got.states, want.states, strict=True)
        local = [(g, w) for g, w in pairs if g.hold.scope != "global"]
        assert [(g.used, g.reserved, g.limit) for g, _ in local] == [
            (w.used, w.reserved, w.limit) for _, w in local
        ]

    async def settle(self, pick: int, cost: int, tokens: int) -> bool:
        going = await super().settle(pick, cost, tokens)
        self.overflowed = not going  # a counter past 2^63 - 1: the run ends, part settled
        return going


# every reserve holds the day's global budget, and maybe a rolling one and one with rollover
KINDS = {"cal": "cal", "limits": "limits", "rolling": "global-rolling", "global": "global-rollover"}
GLOBAL_OPS = OPS.map(
    lambda ops: [(op, step, t, {KINDS[k] for k in kinds} | {"global"}, a, b, pick)
                 for op, step, t, kinds, a, b, pick in ops]
)  # fmt: skip


@pytest.mark.parametrize("lease_s", [60.0, 0.0005])  # chunks that never age, and that age at once
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=GLOBAL_OPS)
def test_random_operations_with_allowance_match_the_in_memory_store(
    lease_s: float, ops: list[tuple[Any, ...]]
) -> None:
    async def main() -> None:
        client = await connect()
        prefix = f"fbxalw-{uuid.uuid4().hex[:12]}"
        try:
            run = AllowanceRun(RedisBudgets(client, prefix, global_lease_s=lease_s))
            await run_ops(run, ops)
            if getattr(run, "overflowed", False):
                return
            for rid in list(run.open):  # a clean shutdown: nothing in flight, then give back
                if run.ref._holds[rid].state == "held":
                    await run.redis.cancel(rid)
                    run.ref.cancel(rid)
            try:
                await run.redis.grants.give_back()
            except FareboxError as exc:  # the run ended on a spend past 2^63 - 1 in a bucket
                assert "64-bit" in str(exc)
                return
            await run.check()
            assert not run.redis.allowance.chunks
        finally:
            await drop_all(client, prefix)
            await client.aclose()

    asyncio.run(main())


# --- racing replicas ----------------------------------------------------------------------

LIMIT = 10**15  # $1000 in pico-USD
TENANTS = [f"t{i}" for i in range(20)]


def glob(limit: int = LIMIT) -> Hold:
    return hold("global:day", limit, T0, scope="global", tenant="")


def holds_of(tenant: str) -> list[Hold]:
    return [hold(f"tenant:{tenant}:day", 10**18, T0, tenant=tenant), glob()]


async def race(stores: list[RedisBudgets], seed: int) -> None:
    """600 requests over the replicas at once, each settled by its own replica with a cost at
    most its hold; the global budget never holds more than its limit, and ends exact."""
    rng = random.Random(seed)
    asks = [(f"q{i}", TENANTS[i % 20], rng.randrange(1, LIMIT // 100)) for i in range(600)]
    costs = {rid: rng.randrange(0, amount + 1) for rid, _, amount in asks}
    watch = stores[0]
    peak = 0

    async def one(i: int, rid: str, tenant: str, amount: int) -> int:
        nonlocal peak
        store = stores[i % len(stores)]
        res = reservation(rid, amount, holds_of(tenant), tenant, T0 + 600)
        outcome = await store.reserve(res)
        if not outcome.ok:
            return 0
        [g] = await watch.states([glob()])  # a read mid-race (through Redis)
        peak = max(peak, g.used + g.reserved)
        await store.settle([settlement(rid, tenant, costs[rid])])
        return costs[rid]

    spent = await asyncio.gather(*(one(i, *a) for i, a in enumerate(asks)))
    assert peak <= LIMIT
    for store in stores:
        await store.grants.give_back()
    [g] = await watch.states([glob()])
    assert (g.used, g.reserved) == (sum(spent), 0)
    assert g.used <= LIMIT
    assert sum(1 for s in spent if s) > 0


@pytest.mark.parametrize("seed", [1, 2])
async def test_replicas_never_overspend_the_global_budget(seed: int) -> None:
    prefix = f"fbxalw-{uuid.uuid4().hex[:12]}"
    clients = [pooled() for _ in range(3)]
    try:
        await race([RedisBudgets(c, prefix) for c in clients], seed)
    finally:
        await drop_all(clients[0], prefix)
        for c in clients:
            await c.aclose()


async def test_replicas_never_overspend_the_global_budget_on_a_cluster(
    redis_cluster_nodes: Cluster,
) -> None:
    clients = [RedisCluster.from_url(redis_cluster_nodes.url) for _ in range(2)]
    prefix = f"fbxalwc-{uuid.uuid4().hex[:8]}"
    try:
        await race([RedisBudgets(c, prefix) for c in clients], 3)  # type: ignore[arg-type]
    finally:
        for c in clients:
            await c.aclose()


# --- a replica dies -----------------------------------------------------------------------


async def test_a_dead_replicas_chunks_come_back_and_its_committed_spend_counts() -> None:
    client = await connect()
    prefix = f"fbxalw-{uuid.uuid4().hex[:12]}"
    try:
        dead, alive = RedisBudgets(client, prefix), RedisBudgets(client, prefix)
        made = []
        for i in range(30):
            t = TENANTS[i % 20]
            res = reservation(f"d{i}", 10**9 + i, holds_of(t), t, T0 + 60)
            assert (await dead.reserve(res)).ok
            made.append((res.id, t, 10**9 + i - 7))
        assert dead.allowance.grants >= 1
        settled, committed, lost = made[:10], made[10:20], made[20:]
        await dead.settle([settlement(rid, t, cost) for rid, t, cost in settled])
        # the replica dies: ``committed`` are in the ledger but not settled in Redis, ``lost``
        # never reached the ledger; nothing is given back
        reclaimed = await alive.expired(T0 + 10_000)
        assert {e.reservation_id for e in reclaimed} == {rid for rid, _, _ in committed + lost}
        await alive.settle([settlement(rid, t, cost) for rid, t, cost in committed])
        [g] = await alive.states([glob()])
        want = sum(cost for _, _, cost in settled + committed)
        assert (g.used, g.reserved) == (want, 0)
        assert await alive.expired(T0 + 20_000) == []  # nothing left held
    finally:
        await drop_all(client, prefix)
        await client.aclose()


# --- the home slot is not every request's ----------------------------------------------


async def test_requests_under_a_global_budget_run_few_home_slot_scripts() -> None:
    client = await connect()
    prefix = f"fbxalw-{uuid.uuid4().hex[:12]}"
    budgets = RedisBudgets(client, prefix)
    home = budgets.layout.home
    calls: list[str] = []
    real = budgets._run

    async def counting(script: Any, keys: list[str], args: list[str]) -> Any:
        calls.append(keys[0] if keys else "")
        return await real(script, keys, args)

    budgets._run = counting  # type: ignore[method-assign]
    budgets.grants._run = counting
    try:
        for batch in range(20):
            group = []
            for i in range(50):
                t = TENANTS[i % 20]
                rid = f"h{batch}-{i}"
                assert (await budgets.reserve(reservation(rid, 10**8, holds_of(t), t, T0 + 60))).ok
                group.append(settlement(rid, t, 10**8 - 1))
            await budgets.settle(group)  # as the settler does: one batch
        at_home = sum(1 for k in calls if k.startswith(home + ":"))
        assert at_home <= 1000 // 10, at_home  # grants and one flush per batch
        assert len(calls) - at_home >= 1000  # each request's own tenant slot
        await budgets.grants.give_back()
        [g] = await budgets.states([glob()])
        assert (g.used, g.reserved) == (1000 * (10**8 - 1), 0)
    finally:
        await drop_all(client, prefix)
        await client.aclose()


# --- the scaled store ------------------------------------------------------------------------


async def test_a_clean_shutdown_gives_the_allowance_back() -> None:
    """``ScaledStore.close`` settles what is queued, then gives back every chunk: the global
    budget holds exactly the spend, and nothing is left reserved for a replica that is gone."""
    from tests.contracts.backends import drop_schema, require
    from tests.test_scaled_settle_behind import _make

    require("scaled store", ("PostgreSQL", 5432), ("Redis", 6379))
    tag = uuid.uuid4().hex[:12]
    schema, prefix = f"farebox_alw_{tag}", f"fbxalw{tag}"
    store = _make(schema, prefix)
    await store.open()
    try:
        for i in range(40):
            t = TENANTS[i % 20]
            res = reservation(f"s{i}", 10**9, holds_of(t), t, T0 + 600)
            assert (await store.reserve(res)).ok
            await store.append_ledger([settlement(res.id, t, 10**9 - i)])
        [g] = await store.budget_states([glob()])  # this replica's own view: exact already
        assert (g.used, g.reserved) == (sum(10**9 - i for i in range(40)), 0)
    finally:
        await store.close()
    client = await connect()
    try:
        [g] = await RedisBudgets(client, prefix).states([glob()])  # Redis itself, once closed
        assert (g.used, g.reserved) == (sum(10**9 - i for i in range(40)), 0)
    finally:
        await drop_all(client, prefix)
        await client.aclose()
        await drop_schema(schema)


# --- lost answers ------------------------------------------------------------------------------


def lose_answers(budgets: RedisBudgets, script: Any, times: int, *, ran: bool) -> list[int]:
    """The next ``times`` calls of ``script`` lose their answer: after running in Redis
    (``ran``) or before reaching it. Returns a counter of the calls made."""
    real = budgets.grants._run
    calls = [0]

    async def flaky(s: Any, keys: list[str], args: list[str]) -> Any:
        if s is script and calls[0] < times:
            calls[0] += 1
            if ran:
                await real(s, keys, args)
            raise RedisTimeoutError("the answer was lost")
        return await real(s, keys, args)

    budgets.grants._run = flaky
    return calls


async def totals(budgets: RedisBudgets) -> tuple[int, int]:
    """The global counter as Redis has it (a fresh reader, no chunks of its own)."""
    [g] = await RedisBudgets(budgets._client, budgets.layout.prefix).states([glob()])
    return g.used, g.reserved


@pytest.mark.parametrize("ran", [True, False])
async def test_a_flush_whose_answer_is_lost_is_applied_once(ran: bool) -> None:
    client = await connect()
    prefix = f"fbxalw-{uuid.uuid4().hex[:12]}"
    try:
        budgets = RedisBudgets(client, prefix)
        for i in range(6):
            t = TENANTS[i]
            assert (await budgets.reserve(reservation(f"l{i}", 10**9, holds_of(t), t, T0 + 60))).ok
        batch = [settlement(f"l{i}", TENANTS[i], 10**9 - i) for i in range(3)]
        lost = lose_answers(budgets, budgets.grants._flush, 2, ran=ran)
        for _ in range(2):  # the settler's first try, and its retry: both unconfirmed
            with pytest.raises(RedisTimeoutError):
                await budgets.settle(batch)
        assert lost[0] == 2
        await budgets.settle(batch)  # confirmed now: applied once, then the slots settle
        await budgets.settle([settlement(f"l{i}", TENANTS[i], 10**9 - i) for i in range(3, 6)])
        await budgets.grants.give_back()
        assert await totals(budgets) == (sum(10**9 - i for i in range(6)), 0)
        assert await budgets.expired(T0 + 10_000) == []  # every tenant record was settled
    finally:
        await drop_all(client, prefix)
        await client.aclose()


async def test_an_unconfirmed_flush_keeps_the_records_that_name_the_draws() -> None:
    """The flush never lands and the replica dies: its requests' records are still held, so
    another replica's reclaim counts their committed spend, exactly once."""
    client = await connect()
    prefix = f"fbxalw-{uuid.uuid4().hex[:12]}"
    try:
        dead, alive = RedisBudgets(client, prefix), RedisBudgets(client, prefix)
        for i in range(5):
            t = TENANTS[i]
            assert (await dead.reserve(reservation(f"u{i}", 10**9, holds_of(t), t, T0 + 60))).ok
        batch = [settlement(f"u{i}", TENANTS[i], 10**9 - 10 * i) for i in range(5)]
        lose_answers(dead, dead.grants._flush, 99, ran=False)
        with pytest.raises(RedisTimeoutError):
            await dead.settle(batch)  # the ledger committed; the replica then dies
        reclaimed = await alive.expired(T0 + 10_000)
        assert {e.reservation_id for e in reclaimed} == {f"u{i}" for i in range(5)}
        await alive.settle(batch)  # from the committed ledger entries
        await alive.settle(batch)  # a retry changes nothing
        assert await totals(alive) == (sum(10**9 - 10 * i for i in range(5)), 0)
    finally:
        await drop_all(client, prefix)
        await client.aclose()


async def test_a_chunk_whose_grant_lost_its_answer_is_given_back() -> None:
    client = await connect()
    prefix = f"fbxalw-{uuid.uuid4().hex[:12]}"
    try:
        budgets = RedisBudgets(client, prefix)
        lose_answers(budgets, budgets.grants._reserve, 1, ran=True)
        with pytest.raises(RedisTimeoutError):
            await budgets.reserve(reservation("o1", 10**9, holds_of("t1"), "t1", T0 + 60))
        assert (await totals(budgets))[1] > 0  # a chunk this replica does not know of
        await budgets.cancel("o1")  # what the store does with a reserve it got no answer to
        await budgets.grants.flush()
        assert await totals(budgets) == (0, 0)
    finally:
        await drop_all(client, prefix)
        await client.aclose()

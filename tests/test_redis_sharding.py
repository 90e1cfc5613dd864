"""Issue 18: Redis counters sharded by tenant, with a cheaper exact reserve.

- a property test runs random reserves, settles, cancels, extends and expiries of several
  tenants (rate limits, calendar budgets with rollover, rolling budgets, the global budget;
  amounts up to and beyond 2^63) on ``RedisBudgets`` and on ``MemoryBudgets`` and compares
  every answer and every counter, over a clock that rolls the windows;
- every key one tenant's request touches hashes to that tenant's slot; tenants spread over
  many slots; the global budget lives in the deployment's home slot;
- many concurrent reserves of different tenants against one global budget never overspend
  it, and a refusal leaves nothing held in any slot;
- expired leases are found in every tenant slot; an empty tenant slot is forgotten only when
  no replica registered it lately.

Needs Redis at 127.0.0.1:6379 (skips without it, like ``tests/test_redis_budgets.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from farebox.core.budgets import Hold
from farebox.core.records import LedgerEntry, Reservation, ReserveOutcome
from farebox.errors import FareboxError
from farebox.gateway.rate_limits import LimitSpec
from farebox.gateway.rate_limits import holds as limit_holds
from farebox.stores.memory.budgets import MemoryBudgets
from farebox.stores.redis.budgets import RedisBudgets
from farebox.stores.redis.layout import Layout
from farebox.stores.redis.leases import FORGET_S
from tests.contracts.builders import entry, hold
from tests.test_redis_budgets import connect

T0 = 1_750_032_000.0
INT64_MAX = 2**63 - 1
TENANTS = ("acme", "beta")


async def drop_all(client: aioredis.Redis, prefix: str) -> None:
    """Every key of the deployment: the home slot's and every tenant slot's."""
    for pattern in (f"{{{prefix}}}*", f"{{{prefix}/t/*"):
        keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
        if keys:
            for key in keys:  # one by one: on a cluster they live in different slots
                await client.delete(key)


def pooled() -> aioredis.Redis:
    """A client whose callers wait for a free connection rather than fail (as in production)."""
    pool = aioredis.BlockingConnectionPool(host="127.0.0.1", port=6379, max_connections=32,
                                           timeout=30)  # fmt: skip
    return aioredis.Redis.from_pool(pool)


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    c = await connect()
    try:
        yield c
    finally:
        await c.aclose()


@pytest.fixture
async def budgets(client: aioredis.Redis) -> AsyncIterator[RedisBudgets]:
    prefix = f"fbxshard-{uuid.uuid4().hex[:12]}"
    try:
        yield RedisBudgets(client, prefix)
    finally:
        await drop_all(client, prefix)


def reservation(
    rid: str, amount: int, on: Sequence[Hold], tenant: str, expires_at: float, tokens: int = 0
) -> Reservation:
    placeholder = entry(f"req-{rid}", tenant_id=tenant, status="unsettled", http_status=0,
                        cost=0, reservation_id=rid, metadata={"n": 1})  # fmt: skip
    return Reservation(rid, amount, tuple(on), expires_at, placeholder, tokens)


def settlement(rid: str, tenant: str, cost: int, tokens: int = 0) -> LedgerEntry:
    return entry(f"req-{rid}", tenant_id=tenant, cost=cost, reservation_id=rid,
                 input_tokens=tokens)  # fmt: skip


# --- the property test -------------------------------------------------------------------

LIMITS = LimitSpec("key", requests=5, tokens=2**63 + 10, concurrent=3, model=None, window_s=60)
BIG = st.sampled_from([0, 1, 7, 10**15, 3 * 10**15 + 1, 2**62, INT64_MAX, 2**63, 2**64 + 3])
AMOUNT = st.one_of(st.integers(0, 10**16), BIG)


def tenant_holds(tenant: str, now: float, kinds: Sequence[str]) -> list[Hold]:
    """The counters of one tenant at ``now``, of the kinds asked for."""
    day = T0 + (now - T0) // 600 * 600  # a short "day": windows roll during the test
    minute = T0 + (now - T0) // 60 * 60
    out = []
    if "cal" in kinds:
        out.append(hold(f"tenant:{tenant}:day", 3 * 10**16 if tenant == "acme" else 2**66, day,
                        rollover_cap=10**16, rollover_bucket=day - 600, base_limit=3 * 10**16,
                        tenant=tenant))  # fmt: skip
    if "rolling" in kinds:
        out.append(hold(f"tenant:{tenant}:rolling:10m", 2**64 + 5, minute,
                        buckets_from=minute - 9 * 60, window_s=600, tenant=tenant))  # fmt: skip
    if "limits" in kinds:
        out += limit_holds([LIMITS], tenant=tenant, key=f"k-{tenant}", user=None, ip=None,
                           model="m", now=now)  # fmt: skip
    if "global" in kinds:
        out.append(hold("global:day", 5 * 10**16, day, scope="global", tenant=""))
    if "global-rolling" in kinds:
        out.append(hold("global:rolling:10m", 4 * 10**16, minute, buckets_from=minute - 9 * 60,
                        window_s=600, scope="global", tenant=""))  # fmt: skip
    if "global-rollover" in kinds:
        out.append(hold("global:week", 3 * 10**16, day, rollover_cap=10**16,
                        rollover_bucket=day - 600, base_limit=3 * 10**16, scope="global",
                        tenant=""))  # fmt: skip
    return out


def every_hold(now: float) -> list[Hold]:
    kinds = ("cal", "rolling", "limits")
    globals_ = ("global", "global-rolling", "global-rollover")
    return [*(h for t in TENANTS for h in tenant_holds(t, now, kinds)),
            *tenant_holds("", now, globals_)]  # fmt: skip


def would_overflow(ref: MemoryBudgets, res: Reservation) -> bool:
    """Some counter bucket of ``res`` would pass 2^63 - 1 reserved."""
    for h in res.holds:
        found = ref._counters.get(h.key, {}).get(h.bucket, [0, 0])
        if found[1] + res.held(h) > INT64_MAX:
            return True
    return False


OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["reserve", "reserve", "reserve", "settle", "settle", "cancel", "extend", "expire"]
        ),  # fmt: skip
        st.sampled_from([0.0, 0.5, 3.0, 20.0, 61.0, 700.0]),
        st.sampled_from(TENANTS),
        st.sets(st.sampled_from(["cal", "rolling", "limits", "global"]), min_size=1),
        AMOUNT,
        AMOUNT,
        st.integers(0, 1000),
    ),
    min_size=5,
    max_size=40,
)


class Run:
    """One random run against Redis and the in-memory reference at once."""

    def __init__(self, budgets: RedisBudgets) -> None:
        self.redis, self.ref = budgets, MemoryBudgets()
        self.ledger: dict[str, LedgerEntry] = {}
        self.clock = T0
        self.open: dict[str, str] = {}  # reservation -> tenant, held in the reference

    async def reserve(self, n: int, tenant: str, kinds: Any, amount: int, tokens: int) -> None:
        res = reservation(f"r{n}", amount, tenant_holds(tenant, self.clock, kinds), tenant,
                          self.clock + 90, tokens)  # fmt: skip
        try:
            got = await self.redis.reserve(res)
        except FareboxError as exc:
            assert "64-bit" in str(exc) and would_overflow(self.ref, res)
            return  # nothing changed: the next check compares every counter
        want = self.ref.reserve(res)
        assert got.ok == want.ok, (got, want)
        self.same_states(got, want)
        if not got.ok:
            assert got.failed is not None and want.failed is not None
            assert got.failed.hold == want.failed.hold
        else:
            self.open[res.id] = tenant

    def same_states(self, got: ReserveOutcome, want: ReserveOutcome) -> None:
        assert [(s.used, s.reserved, s.limit) for s in got.states] == [
            (s.used, s.reserved, s.limit) for s in want.states
        ]
        if not got.ok:
            assert got.states == want.states  # as found, oldest bucket included

    async def settle(self, pick: int, cost: int, tokens: int) -> bool:
        if not self.open:
            return True
        rid = sorted(self.open)[pick % len(self.open)]
        batch = [settlement(rid, self.open[rid], cost, tokens)]
        try:
            await self.redis.settle(batch)
        except FareboxError as exc:  # the end of this run: a slot may have settled
            assert "64-bit" in str(exc)
            return False
        self.ref.settle(batch, self.ledger)
        del self.open[rid]
        return True

    async def cancel(self, pick: int) -> None:
        held = [rid for rid in sorted(self.open) if self.ref._holds[rid].state == "held"]
        if held:
            rid = held[pick % len(held)]
            await self.redis.cancel(rid)
            self.ref.cancel(rid)
            del self.open[rid]

    async def expire(self) -> None:
        got, want = await self.redis.expired(self.clock), self.ref.expired(self.clock)
        assert {e.request_id: e for e in got} == {e.request_id: e for e in want}

    async def check(self) -> None:
        probe = every_hold(self.clock)
        assert await self.redis.states(probe) == [self.ref.state(h) for h in probe]


async def run_ops(run: Run, ops: list[tuple[Any, ...]]) -> None:
    """Apply the random operations to ``run`` (Redis and the reference), checking after each."""
    for n, (op, step, tenant, kinds, a, b, pick) in enumerate(ops):
        run.clock += step
        if op == "reserve":
            await run.reserve(n, tenant, kinds, a, b % 2**64)
        elif op == "settle":
            if not await run.settle(pick, a, b % 2**64):
                return
        elif op == "cancel":
            await run.cancel(pick)
        elif op == "extend":
            ids = sorted(run.open)[: pick % 4]
            await run.redis.extend(ids, run.clock + 120)
            run.ref.extend(ids, run.clock + 120)
        else:
            await run.expire()
        await run.check()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_random_operations_match_the_in_memory_store(ops: list[tuple[Any, ...]]) -> None:
    async def main() -> None:
        client = await connect()
        prefix = f"fbxprop-{uuid.uuid4().hex[:12]}"
        try:
            await run_ops(Run(RedisBudgets(client, prefix, global_lease_s=0)), ops)
        finally:
            await drop_all(client, prefix)
            await client.aclose()

    asyncio.run(main())


# --- slots ---------------------------------------------------------------------------------


async def test_a_tenant_request_touches_only_its_tenant_slot(
    budgets: RedisBudgets, client: aioredis.Redis
) -> None:
    on = tenant_holds("acme", T0, ("cal", "rolling", "limits"))
    await budgets.leases.register(budgets.layout.slot("acme"))  # once a minute, not per request
    before = {k async for k in client.scan_iter(match=f"{budgets.key_prefix}*")}
    res = reservation("r1", 10**12, on, "acme", T0 + 60, tokens=10)
    assert (await budgets.reserve(res)).ok
    tenant_keys = [k async for k in client.scan_iter(match=f"{{{budgets.layout.prefix}/t/*")]
    assert len(tenant_keys) >= 4
    assert {key_slot(k) for k in tenant_keys} == {key_slot(budgets.layout.slot("acme").encode())}
    assert {k async for k in client.scan_iter(match=f"{budgets.key_prefix}*")} == before
    await budgets.settle([settlement("r1", "acme", 10**11, 7)])
    assert {k async for k in client.scan_iter(match=f"{budgets.key_prefix}*")} == before
    [s] = await budgets.states(on[:1])
    assert (s.used, s.reserved) == (10**11, 0)


def test_tenants_spread_over_many_slots() -> None:
    layout = Layout("fbx")
    slots = {key_slot(layout.slot(f"tenant-{i}").encode()) for i in range(100)}
    assert len(slots) >= 95  # 100 tenants over 16384 slots: almost never two in one
    assert layout.slot("") == "{fbx}"
    # a tenant id cannot end the hash tag early
    odd = layout.slot("a}b{c")
    assert odd.count("{") == 1 and odd.count("}") == 1 and odd.endswith("}")


# --- the global budget ------------------------------------------------------------------------

RACE = 1_000_000_000_000_003  # about 10^18
WINNERS = 23


async def test_concurrent_tenants_never_overspend_the_global_budget(
    budgets: RedisBudgets, client: aioredis.Redis
) -> None:
    """The direct path (every request holds the global budget in its home slot, as when
    ``global_lease_s`` is 0 or the budget is nearly spent; leases of global allowance are
    tested in tests/test_global_allowance.py)."""
    prefix = budgets.layout.prefix
    glob = hold("global:day", RACE * WINNERS + RACE - 1, T0, scope="global", tenant="")
    tight = {f"t{i}": i % 5 == 0 for i in range(40)}  # every fifth tenant allows one request

    def holds_of(tenant: str) -> list[Hold]:
        limit = RACE if tight[tenant] else 10**19
        return [hold(f"tenant:{tenant}:day", limit, T0, tenant=tenant), glob]

    clients = [pooled() for _ in range(3)]
    try:
        stores = [RedisBudgets(c, prefix, global_lease_s=0) for c in clients]
        tries = [(f"c{i}", f"t{i % 40}") for i in range(240)]
        outcomes = await asyncio.gather(*(
            stores[i % 3].reserve(reservation(rid, RACE, holds_of(t), t, T0 + 60))
            for i, (rid, t) in enumerate(tries)
        ))  # fmt: skip
    finally:
        for c in clients:
            await c.aclose()
    won = [tries[i] for i, o in enumerate(outcomes) if o.ok]
    assert len(won) == WINNERS  # the global budget is full, never over
    [g] = await budgets.states([glob])
    assert (g.used, g.reserved) == (0, WINNERS * RACE)
    for tenant in tight:  # a refusal left nothing held in the tenant's slot either
        [s] = await budgets.states(holds_of(tenant)[:1])
        assert s.reserved == RACE * sum(1 for _, t in won if t == tenant)
        assert s.reserved <= s.limit
    await budgets.settle([settlement(rid, t, RACE - 1) for rid, t in won])
    [g] = await budgets.states([glob])
    assert (g.used, g.reserved) == (WINNERS * (RACE - 1), 0)


async def test_a_request_refused_by_its_tenant_never_touches_the_global_slot(
    budgets: RedisBudgets, client: aioredis.Redis
) -> None:
    budgets.allowance.lease_s = 0  # the direct path (see the test above)
    glob = hold("global:day", 10**18, T0, scope="global", tenant="")
    mine = hold("tenant:acme:day", 10, T0, tenant="acme")
    refused = await budgets.reserve(reservation("r1", 11, [mine, glob], "acme", T0 + 60))
    assert not refused.ok and refused.failed is not None and refused.failed.hold == mine
    assert [(s.used, s.reserved) for s in refused.states] == [(0, 0), (0, 0)]
    assert not [k async for k in client.scan_iter(match=f"{budgets.key_prefix}:c:*")]
    over = await budgets.reserve(reservation("r2", 10, [mine, hold("global:day", 9, T0,
                                 scope="global", tenant="")], "acme", T0 + 60))  # fmt: skip
    assert not over.ok and over.failed is not None and over.failed.hold.scope == "global"
    [s] = await budgets.states([mine])
    assert s.reserved == 0  # held in the tenant slot, then undone


# --- leases across tenants ---------------------------------------------------------------------


async def test_expired_leases_are_found_in_every_tenant_slot(budgets: RedisBudgets) -> None:
    glob = hold("global:day", 10**18, T0, scope="global", tenant="")
    for i, tenant in enumerate(["a", "b", "c"]):
        mine = hold(f"tenant:{tenant}:day", 100, T0, tenant=tenant)
        on = [mine, glob] if tenant == "a" else [mine]
        assert (await budgets.reserve(reservation(f"r{i}", 10, on, tenant, T0 + 10))).ok
    assert await budgets.expired(T0 + 5) == []
    got = await budgets.expired(T0 + 11)
    assert sorted(e.reservation_id or "" for e in got) == ["r0", "r1", "r2"]  # once each
    states = await budgets.states([glob, *(hold(f"tenant:{t}:day", 100, T0, tenant=t)
                                           for t in "abc")])  # fmt: skip
    assert [s.reserved for s in states] == [0, 0, 0, 0]
    assert await budgets.expired(T0 + 100) == []


async def test_a_tenant_slot_is_forgotten_only_when_empty_and_not_registered_lately(
    budgets: RedisBudgets, client: aioredis.Redis
) -> None:
    now = [1_000_000.0]
    budgets.leases._clock = lambda: now[0]
    a, b = budgets.layout.slot("a"), budgets.layout.slot("b")
    assert (await budgets.reserve(reservation("ra", 1, [hold("x", 9, tenant="a")], "a", T0))).ok
    assert (await budgets.reserve(reservation("rb", 1, [hold("y", 9, tenant="b")], "b", T0))).ok
    await budgets.settle([settlement("rb", "b", 1)])
    assert sorted(await budgets.leases.slots()) == sorted([a, b])
    now[0] += FORGET_S / 2
    await budgets.expired(T0 - 1)  # b is empty but was registered lately: kept
    assert sorted(await budgets.leases.slots()) == sorted([a, b])
    now[0] += FORGET_S
    await budgets.expired(T0 - 1)  # a still holds a lease: kept; b is forgotten
    assert await budgets.leases.slots() == [a]
    # a replica whose registration is stale registers again before reserving in b
    assert (await budgets.reserve(reservation("rc", 1, [hold("y", 9, tenant="b")], "b", T0))).ok
    assert sorted(await budgets.leases.slots()) == sorted([a, b])
    got = await budgets.expired(T0 + 1)
    assert sorted(e.reservation_id or "" for e in got) == ["ra", "rc"]


async def test_a_reserve_without_an_answer_in_its_second_slot_is_undone_by_cancel(
    budgets: RedisBudgets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What ``ScaledStore`` does with a reserve that got no answer (``cancel`` once Redis
    answers) undoes it in every slot it may have reached (the direct path)."""
    budgets.allowance.lease_s = 0
    glob = hold("global:day", 100, T0, scope="global", tenant="")
    mine = hold("tenant:acme:day", 100, T0, tenant="acme")
    home_leases = budgets.layout.leases(budgets.layout.home)
    real = budgets._run

    async def no_answer_from_home(script: Any, keys: list[str], args: list[str]) -> Any:
        if script is budgets._reserve and keys[0] == home_leases:
            raise ConnectionError("no answer")
        return await real(script, keys, args)

    with monkeypatch.context() as patch:
        patch.setattr(budgets, "_run", no_answer_from_home)
        with pytest.raises(ConnectionError):
            await budgets.reserve(reservation("r1", 10, [mine, glob], "acme", T0 + 60))
    [s] = await budgets.states([mine])
    assert s.reserved == 10  # held in the tenant slot, outcome unknown in the home slot
    assert await budgets.cancel("r1")
    assert [s.reserved for s in await budgets.states([mine, glob])] == [0, 0]
    assert await budgets.expired(T0 + 1000) == []  # nothing left to reclaim either

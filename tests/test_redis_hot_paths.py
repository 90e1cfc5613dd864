"""The Redis budget store's hot-path scripts (``stores.redis.hot``) against the in-memory store.

- the random-operations property test of ``tests/test_redis_sharding.py``, with settles of
  several reservations (tenants and the global budget) in one call, as the settler makes
  them, and settles by a replica that did not make the reservation (it reads the holds
  from the stored record, where the maker passes them);
- the reserve's quick check (doubles, exact when sure) at limits where doubles cannot tell
  the difference: admitted at exactly the limit, refused one pico-USD over it;
- a rolling window whose reserved sum passes 2^63 - 1 while no bucket does: the bucket is
  checked exactly (the sum only bounds it).

Needs Redis at 127.0.0.1:6379 (skips without it, like ``tests/test_redis_budgets.py``).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from farebox.core.records import Reservation
from farebox.errors import FareboxError
from farebox.gateway.rate_limits import LimitSpec
from farebox.gateway.rate_limits import holds as limit_holds
from farebox.stores.redis.budgets import RedisBudgets
from tests.contracts.builders import entry, hold
from tests.test_redis_budgets import connect
from tests.test_redis_sharding import (
    INT64_MAX,
    OPS,
    T0,
    Run,
    drop_all,
    reservation,
    run_ops,
    settlement,
)


class Replicas(Run):
    """A run whose settles go, in turn, through the replica that made the reservations, one
    that did not (a second ``RedisBudgets`` on the same keys), in batches of up to three."""

    def __init__(self, budgets: RedisBudgets, other: RedisBudgets) -> None:
        super().__init__(budgets)
        self.other = other

    async def settle(self, pick: int, cost: int, tokens: int) -> bool:
        if not self.open:
            return True
        ids = sorted(self.open)
        chosen = [ids[(pick + i) % len(ids)] for i in range(1 + pick % 3)]
        chosen = list(dict.fromkeys(chosen))
        batch = [settlement(rid, self.open[rid], cost + i, tokens) for i, rid in enumerate(chosen)]
        store = self.other if pick % 2 else self.redis
        try:
            await store.settle(batch)
        except FareboxError as exc:  # the end of this run: some entries may have settled
            assert "64-bit" in str(exc)
            return False
        self.ref.settle(batch, self.ledger)
        for rid in chosen:
            del self.open[rid]
        return True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_batched_and_foreign_settles_match_the_in_memory_store(ops: list[tuple[Any, ...]]) -> None:
    async def main() -> None:
        client = await connect()
        prefix = f"fbxhot-{uuid.uuid4().hex[:12]}"
        try:
            run = Replicas(*(RedisBudgets(client, prefix, global_lease_s=0) for _ in range(2)))
            await run_ops(run, ops)
        finally:
            await drop_all(client, prefix)
            await client.aclose()

    asyncio.run(main())


async def test_the_quick_check_is_exact_where_doubles_are_not() -> None:
    client = await connect()
    prefix = f"fbxhot-{uuid.uuid4().hex[:12]}"
    try:
        budgets = RedisBudgets(client, prefix)
        base = 2**62 + 1  # doubles round it (and base + 1) to 2^62
        for n, (limit, amount, ok) in enumerate(
            [
                (base, base, True),  # exactly the limit
                (base, base + 1, False),  # one over
                (2**64 + 5, 2**63 - 1, True),  # a limit beyond 64 bits, a full bucket
            ]
        ):
            on = [hold(f"tenant:acme:day{n}", limit, T0, tenant="acme")]
            res = reservation(f"q{n}", amount, on, "acme", T0 + 60)
            got = await budgets.reserve(res)
            assert got.ok is ok, (limit, amount)
            assert got.states[0].reserved == (amount if ok else 0)
        # what is held is exact: one more pico-USD against the full counter is refused, and
        # settling the exact amount leaves it used, nothing reserved
        res = reservation("q3", 1, [hold("tenant:acme:day0", base, T0, tenant="acme")],
                          "acme", T0 + 60)  # fmt: skip
        assert not (await budgets.reserve(res)).ok
        await budgets.settle([settlement("q0", "acme", base)])
        state = (await budgets.states([hold("tenant:acme:day0", base, T0, tenant="acme")]))[0]
        assert (state.used, state.reserved) == (base, 0)
    finally:
        await drop_all(client, prefix)
        await client.aclose()


async def test_a_window_bucket_is_checked_exactly_when_the_window_sum_passes_64_bits() -> None:
    """The reserve bounds a rolling counter's bucket by the window's reserved sum; a sum past
    2^63 - 1 is no overflow of its own: the bucket itself is read and checked."""
    client = await connect()
    prefix = f"fbxhot-{uuid.uuid4().hex[:12]}"
    spec = LimitSpec("key", requests=None, tokens=2**66, concurrent=None, model=None,
                     window_s=60)  # fmt: skip
    try:
        budgets = RedisBudgets(client, prefix)
        for n, (at, tokens) in enumerate([(0.0, INT64_MAX - 10), (3.0, 2**61), (3.5, 2**61)]):
            on = limit_holds([spec], tenant="acme", key="k", user=None, ip=None, model="m",
                             now=T0 + at)  # fmt: skip
            res = Reservation(f"w{n}", 0, tuple(on), T0 + 60, entry(f"req-w{n}"), tokens)
            got = await budgets.reserve(res)
            assert got.ok
        assert got.states[0].reserved == INT64_MAX - 10 + 2**62  # exact, past 64 bits
        on = limit_holds([spec], tenant="acme", key="k", user=None, ip=None, model="m",
                         now=T0 + 4.0)  # fmt: skip
        over = Reservation("w3", 0, tuple(on), T0 + 60, entry("req-w3"), 2**62)
        with pytest.raises(FareboxError, match="64-bit"):  # this bucket would pass 2^63 - 1
            await budgets.reserve(over)
    finally:
        await drop_all(client, prefix)
        await client.aclose()

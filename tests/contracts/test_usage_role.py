"""The ``UsageStore`` contract, on every backend: the ledger read back in order, filtered
and limited, and its sums grouped every way, exactly."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from farebox.core.records import LedgerEntry, UsageQuery, UsageRow
from tests.contracts.backends import EVERY
from tests.contracts.builders import DAY, T0, entry

BACKENDS = EVERY


# --- entries -----------------------------------------------------------------------------


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


# --- usage -------------------------------------------------------------------------------


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

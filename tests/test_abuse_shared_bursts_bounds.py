"""Batch abuse's shared counts are bounded (review finding 6).

- Redis memory per tenant: the end user may be the body's ``user`` (the client's to choose),
  so a client sending a new ``user`` per request adds a field to its tenant's hash, never a
  key, and the tenant keeps at most ``shared_users`` end users, the least recently seen
  forgotten first; another tenant is untouched, and a user who keeps sending is never the
  one forgotten (the count stays useful: its burst is still caught).
- Users quiet for a whole window are forgotten by the next call of their tenant.
- Both keys of one call are in the tenant's slot (Redis Cluster).
- ``batch_max`` (at most 1000) and ``batch_window_s`` (at most 3600) are bounded at start-up,
  with an error naming the field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from farebox.config.settings import parse_settings
from farebox.core.guardrails import AbusePolicy
from farebox.errors import ConfigError
from farebox.guardrails import abuse
from farebox.guardrails.abuse import BatchWatch, shared_sketch, shared_users
from farebox.stores.bursts import BurstRule
from tests.contracts.backends import opened
from tests.test_abuse_shared_bursts import Clock

TEXT = "summarise the attached meeting notes in five bullet points for the weekly report"


@pytest.fixture
async def scaled(tmp_path: Path) -> AsyncIterator[Any]:
    async with opened("postgres+redis", tmp_path) as store:
        yield store


async def _tenant_keys(scaled: Any, tenant: str) -> list[bytes]:
    pattern = f"{scaled.key_prefix[:-1]}/t/{tenant}}}*"
    return sorted([k async for k in scaled._client.scan_iter(match=pattern)])


async def test_a_new_user_per_request_adds_no_key_and_stays_under_the_cap(scaled: Any) -> None:
    clock = Clock()
    policy = AbusePolicy(batch="block", batch_max=1000, batch_window_s=3600)
    cap = shared_users(policy.batch_max + 1)
    assert cap == 218
    watch = BatchWatch(clock, shared=scaled.bursts)
    assert await watch.check("calm", "u1", TEXT, policy) is None
    for n in range(cap + 80):  # a fresh body ``user`` every request
        clock.now += 0.01
        assert await watch.check("rot", f"user-{n}", TEXT, policy) is None
    rot = await _tenant_keys(scaled, "rot")
    assert len(rot) == 2  # its users' clusters and when each was last seen: no key per user
    clusters, seen = rot
    assert await scaled._client.hlen(clusters) == cap
    assert await scaled._client.zcard(seen) == cap
    for key in rot:
        assert 0 < await scaled._client.ttl(key) <= policy.batch_window_s + 1
    # the oldest users went first; the latest are kept; another tenant's user is untouched
    (calm_clusters, _seen) = await _tenant_keys(scaled, "calm")
    assert await scaled._client.hlen(calm_clusters) == 1
    latest = abuse.BurstRule(3600, 1001, abuse.SIMILAR, abuse.CLUSTERS, abuse.SKETCH, cap)
    count = await scaled.bursts.count("rot", f"user-{cap + 79}", shared_sketch(TEXT),
                                      clock.now + 0.01, latest)  # fmt: skip
    assert count == 2  # still remembered: its second request
    assert await scaled.bursts.count("rot", "user-0", shared_sketch(TEXT), clock.now, latest) == 1


async def test_a_user_who_keeps_sending_is_still_caught_while_others_rotate(
    scaled: Any,
) -> None:
    rule = BurstRule(60, 6, abuse.SIMILAR, abuse.CLUSTERS, abuse.SKETCH, users=5)
    sketch = shared_sketch(TEXT)
    counts = []
    for n in range(12):
        counts.append(await scaled.bursts.count("busy", "steady", sketch, 10.0 + n, rule))
        for r in range(3):  # three fresh users between two of its requests
            await scaled.bursts.count("busy", f"r{n}-{r}", sketch, 10.0 + n + 0.1 * r, rule)
    assert counts == [1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6, 6]  # keep 6: batch_max 5 crossed
    clusters, seen = await _tenant_keys(scaled, "busy")
    assert await scaled._client.hlen(clusters) == 5
    assert await scaled._client.zcard(seen) == 5


async def test_users_quiet_for_a_window_are_forgotten(scaled: Any) -> None:
    rule = BurstRule(60, 6, abuse.SIMILAR, abuse.CLUSTERS, abuse.SKETCH, users=100)
    sketch = shared_sketch(TEXT)
    for n in range(10):
        assert await scaled.bursts.count("quiet", f"u{n}", sketch, 100.0, rule) == 1
    assert await scaled.bursts.count("quiet", "late", sketch, 161.0, rule) == 1
    clusters, seen = await _tenant_keys(scaled, "quiet")
    assert await scaled._client.hlen(clusters) == 1  # only "late" is left
    assert await scaled._client.zcard(seen) == 1


async def test_a_worker_whose_clock_lags_never_forgets_the_user_it_just_counted(
    scaled: Any,
) -> None:
    """At the cap, the least recently seen go; a worker behind the others scores its own user
    oldest, which must still be counted (its burst caught), not dropped by the same call."""
    rule = BurstRule(60, 6, abuse.SIMILAR, abuse.CLUSTERS, abuse.SKETCH, users=3)
    sketch = shared_sketch(TEXT)
    for n in range(3):  # the cap, filled by workers whose clocks are right
        await scaled.bursts.count("lag", f"u{n}", sketch, 100.0 + n, rule)
    counts = [await scaled.bursts.count("lag", "late", sketch, 99.0, rule) for _ in range(3)]
    assert counts == [1, 2, 3]  # 2 s behind: still remembered between its own requests


@given(tenant=st.text(min_size=1, max_size=40))
def test_both_keys_of_a_call_share_the_tenants_slot(tenant: str) -> None:
    from farebox.stores.redis.layout import Layout

    slot = Layout("fbx").slot(tenant)
    assert key_slot(f"{slot}:bursts".encode()) == key_slot(f"{slot}:bursts:seen".encode())


@given(keep=st.integers(2, 1001))
def test_shared_users_bound_the_tenants_bytes(keep: int) -> None:
    users = shared_users(keep)
    assert 100 <= users <= 10_000
    assert users * abuse.CLUSTERS * (abuse.SKETCH + keep) * 9 <= abuse.SHARED_BYTES


@pytest.mark.parametrize(
    ("field", "value", "limit"), [("batch_max", 1001, 1000), ("batch_window_s", 3601, 3600)]
)
def test_the_batch_bounds_are_refused_at_start_naming_the_field(
    tmp_path: Path, field: str, value: int, limit: int
) -> None:
    guard = {"abuse": {"batch": "flag", field: value}}
    data = {"plans": {"free": {"models": ["*"], "guardrails": guard}}, "default_plan": "free"}
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, source="farebox.yaml", env={}, base_dir=tmp_path)
    message = str(caught.value)
    assert f"plans.free.guardrails.abuse.{field}" in message
    assert f"less than or equal to {limit}" in message
    guard["abuse"][field] = limit  # the bound itself is fine
    assert parse_settings(data, source="farebox.yaml", env={}, base_dir=tmp_path) is not None

"""``max_findings_per_hour`` after review (issue 15, review 4.1, 3.4, 3.5).

- 4.1: a tally that fails keeps that subject's count and the other subjects are tallied all
  the same; a pause that fails after the tally crossed the limit is retried on the next flush
  (idempotently, by one flush only), and the background task retries without waiting for a
  new finding.
- 3.4: a JWT caller's findings are counted per end user of the tenant, and crossing the limit
  pauses nothing: a ``guardrail.limit_exceeded`` event and a warning.
- 3.5: a request counts once toward the limit, whatever number of findings it carries.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

import pytest

from farebox.core.guardrails import GuardrailPolicy
from farebox.core.plans import Plan
from farebox.core.records import ApiKey
from farebox.guardrails.findings_watch import FindingsWatch, subject_of
from farebox.stores.findings import FindingsStore, findings_of
from farebox.stores.memory.store import MemoryStore
from tests.contracts.builders import key, tenant
from tests.test_guardrail_findings import LEAK, NOW, entry, finding


def plan_with_limit(limit: int) -> Plan:
    return replace(Plan(name="default", models=("*",)),
                   guardrails=GuardrailPolicy(max_findings_per_hour=limit))  # fmt: skip


class FlakyFindings:
    """The memory store's findings role, whose tally fails for the subjects in ``failing``."""

    def __init__(self, inner: FindingsStore) -> None:
        self.inner = inner
        self.failing: set[str] = set()
        self.failed = asyncio.Event()

    async def tally(self, subject: str, at: float, findings: int) -> tuple[int, int]:
        if subject in self.failing:
            self.failed.set()
            raise RuntimeError("database is locked")
        return await self.inner.tally(subject, at, findings)

    async def prune(self, before: float) -> None:
        await self.inner.prune(before)


class FlakyKeys(MemoryStore):
    """A memory store whose ``update_key`` fails ``failures`` times (``applied``: the failure
    comes after the change was written, as a lost commit acknowledgement would)."""

    def __init__(self, failures: int = 0, applied: bool = False) -> None:
        super().__init__()
        self.failures, self.applied = failures, applied
        self.updates = 0
        self.paused_event = asyncio.Event()

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> ApiKey:
        if self.failures:
            self.failures -= 1
            if self.applied:
                await super().update_key(key_id, changes)
            raise RuntimeError("connection reset")
        self.updates += 1
        out = await super().update_key(key_id, changes)
        self.paused_event.set()
        return out


class Alerts:
    """The alert webhook's double: what was sent, and an empty queue."""

    class _Channel:
        backlog = 0

    def __init__(self) -> None:
        self.channel = self._Channel()
        self.sent: list[dict[str, Any]] = []

    def send(self, event: dict[str, Any]) -> None:
        self.sent.append(event)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.sent if e["type"] == kind]


async def world(store: MemoryStore, *keys: str, limit: int = 2) -> tuple[FindingsWatch, Alerts]:
    await store.create_tenant(tenant("acme", plan="default"))
    for k in keys:
        await store.create_key(key(k, "acme"))
    alerts = Alerts()
    watch = FindingsWatch(store, findings_of(store), alerts, clock=lambda: NOW)  # type: ignore[arg-type]
    watch.plans = lambda name: plan_with_limit(limit)
    return watch, alerts


def observe(watch: FindingsWatch, key_id: str, requests: int, **kw: Any) -> None:
    for _ in range(requests):
        watch.observe(entry("acme", key_id, finding(), **kw), "default")


# 4.1 ------------------------------------------------------------------------------------
async def test_a_failed_tally_keeps_every_subjects_count() -> None:
    store = MemoryStore()
    watch, _ = await world(store, "k1", "k2")
    flaky = FlakyFindings(store.findings)
    watch._findings = flaky  # type: ignore[assignment]
    flaky.failing.add("k1")
    observe(watch, "k1", 3)
    observe(watch, "k2", 3)
    with pytest.raises(RuntimeError, match="locked"):
        await watch.flush()
    # k2 was tallied and paused although k1's tally failed before it
    assert await store.findings.tally("k2", NOW, 0) == (3, 3)
    assert (await store.get_key("k2")).paused  # type: ignore[union-attr]
    assert not (await store.get_key("k1")).paused  # type: ignore[union-attr]
    flaky.failing.clear()
    assert await watch.flush() == ["k1"]  # k1's 3 requests were kept for this flush
    assert await store.findings.tally("k1", NOW, 0) == (3, 3)
    assert (await store.get_key("k1")).paused  # type: ignore[union-attr]
    assert list(watch.paused) == [("key", "k2"), ("key", "k1")]


async def test_a_failed_pause_is_retried_on_the_next_flush() -> None:
    store = FlakyKeys(failures=1)
    watch, alerts = await world(store, "k1")
    observe(watch, "k1", 3)
    with pytest.raises(RuntimeError, match="reset"):
        await watch.flush()  # the tally crossed, the pause failed
    assert not (await store.get_key("k1")).paused  # type: ignore[union-attr]
    assert await watch.flush() == []  # no new finding: the pending pause is retried
    stored = await store.get_key("k1")
    assert stored is not None and stored.paused and "3 requests" in (stored.pause_reason or "")
    assert list(watch.paused) == [("key", "k1")] and len(alerts.of("guardrail.paused")) == 1
    observe(watch, "k1", 1)
    assert await watch.flush() == [] and store.updates == 1  # done: nothing left to retry


async def test_a_retried_pause_that_had_been_written_is_not_written_twice() -> None:
    store = FlakyKeys(failures=1, applied=True)
    watch, alerts = await world(store, "k1")
    observe(watch, "k1", 3)
    with pytest.raises(RuntimeError):
        await watch.flush()
    assert (await store.get_key("k1")).paused  # type: ignore[union-attr]
    assert await asyncio.gather(watch.flush(), watch.flush()) == [[], []]
    assert store.updates == 0 and alerts.of("guardrail.paused") == []  # left alone


async def test_the_background_task_retries_a_failed_pause_without_a_new_finding() -> None:
    store = FlakyKeys(failures=2)
    watch, _ = await world(store, "k1")
    watch._interval = 0.0
    watch.start()
    try:
        observe(watch, "k1", 3)  # the only findings: every retry must come from the watch
        await asyncio.wait_for(store.paused_event.wait(), timeout=10)
    finally:
        await watch.stop()
    assert (await store.get_key("k1")).paused and store.updates == 1  # type: ignore[union-attr]


async def test_the_background_task_retries_a_failed_tally_without_a_new_finding() -> None:
    store = FlakyKeys()
    watch, _ = await world(store, "k1")
    flaky = FlakyFindings(store.findings)
    watch._findings = flaky  # type: ignore[assignment]
    flaky.failing.add("k1")
    watch._interval = 0.0
    watch.start()
    try:
        observe(watch, "k1", 3)  # the only findings: every retry must come from the watch
        await asyncio.wait_for(flaky.failed.wait(), timeout=10)
        flaky.failing.clear()
        await asyncio.wait_for(store.paused_event.wait(), timeout=10)
    finally:
        await watch.stop()
    assert (await store.get_key("k1")).paused  # type: ignore[union-attr]
    assert await store.findings.tally("k1", NOW, 0) == (3, 3)


# 3.4 ------------------------------------------------------------------------------------
async def test_a_jwt_callers_end_users_are_counted_apart_and_never_pause_the_tenant(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryStore()
    watch, alerts = await world(store, "k1")
    observe(watch, "jwt:acme", 3, user="mallory")  # over the limit of 2
    observe(watch, "jwt:acme", 2, user="alice")  # under it: counted apart
    observe(watch, "k1", 1)
    with caplog.at_level(logging.WARNING, logger="farebox.guardrails"):
        crossed = await watch.flush()
    assert crossed == [subject_of(entry("acme", "jwt:acme", user="mallory"))]
    stored = await store.get_tenant("acme")
    assert stored is not None and not stored.paused and list(watch.paused) == []
    assert not (await store.get_key("k1")).paused  # type: ignore[union-attr]
    [event] = alerts.of("guardrail.limit_exceeded")
    assert event["tenant"] == "acme" and event["key"] == "jwt:acme"
    assert event["user"] == "mallory" and event["findings_last_hour"] == 3
    assert event["max_findings_per_hour"] == 2 and "nothing paused" in event["reason"]
    assert alerts.of("guardrail.paused") == []
    assert any("mallory" in r.getMessage() and "nothing paused" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert LEAK not in repr(alerts.sent) and LEAK not in caplog.text
    observe(watch, "jwt:acme", 1, user="alice")  # alice crosses in turn: her own alert
    assert len(await watch.flush()) == 1
    assert [e["user"] for e in alerts.of("guardrail.limit_exceeded")] == ["mallory", "alice"]
    assert not (await store.get_tenant("acme")).paused  # type: ignore[union-attr]


async def test_jwt_callers_without_a_user_are_counted_together_and_alerted_only() -> None:
    store = MemoryStore()
    watch, alerts = await world(store)
    observe(watch, "jwt:acme", 3)
    assert await watch.flush() == ["jwt:acme"]
    assert not (await store.get_tenant("acme")).paused  # type: ignore[union-attr]
    [event] = alerts.of("guardrail.limit_exceeded")
    assert event["user"] is None and "without a user" in event["reason"]


def test_a_jwt_users_subject_is_a_fixed_size_hash_and_a_keys_is_the_key() -> None:
    odd = "a\x00b" * 100 + "\ud800"  # any string a caller may send as its user
    subject = subject_of(entry("acme", "jwt:acme", user=odd))
    assert subject.startswith("jwt:acme:user:") and len(subject) == len("jwt:acme:user:") + 32
    assert "\x00" not in subject and subject != subject_of(entry("acme", "jwt:acme", user="b"))
    assert subject_of(entry("acme", "k1", user=odd)) == "k1"
    assert subject_of(entry("acme", "jwt:acme")) == "jwt:acme"


# 3.5 ------------------------------------------------------------------------------------
async def test_a_request_counts_once_whatever_its_findings() -> None:
    store = MemoryStore()
    watch, _ = await world(store, "k1", limit=5)
    many = [finding("pii", f"CATEGORY_{i}", "redacted") for i in range(8)]
    watch.observe(entry("acme", "k1", *many), "default")
    assert await watch.flush() == []  # 8 findings, 1 request: under 5
    assert await store.findings.tally("k1", NOW, 0) == (1, 1)
    for _ in range(5):
        watch.observe(entry("acme", "k1", finding()), "default")
    assert await watch.flush() == ["k1"]  # the 6th request crosses
    stored = await store.get_key("k1")
    assert stored is not None and stored.paused
    assert "6 requests with findings in the last hour" in (stored.pause_reason or "")

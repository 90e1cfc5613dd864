"""Account multiplication's pauses and resumes are conditional steps of the store
(``Store.pauses``: one UPDATE with its condition; in memory, no ``await`` in between), so an
operator's pause landing at any moment of a round is never overwritten, and resolving the
incident resumes exactly what it paused, on every backend.

The interleaving is deterministic: the watch runs on a store wrapper that lands an operator's
pause (what ``POST /admin/v1/tenants/{id}/pause`` does: ``update_tenant``) right after any
read of that tenant and right before the conditional step, i.e. between whatever steps the
watch takes. A read-then-write pause loses that operator's reason; the conditional one keeps
it. No sleeps.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from farebox.anomaly.multiplication import MultiplicationWatch
from farebox.anomaly.watch import AnomalyWatch
from farebox.config.anomaly import MultiplicationConfig
from farebox.core.anomaly import Incident, Policy
from farebox.core.records import ApiKey, Tenant
from tests.contracts.backends import opened

T0 = 1_800_000_000.0
BACKENDS = ["memory", "sqlite", "sqlite-single-process", "postgres+redis"]
OPERATOR = "operator: chargeback under review"


class Pager:
    def __init__(self) -> None:
        self.triggered_ids: list[str] = []
        self.resolved_ids: list[str] = []

    def triggered(self, incident: Incident) -> None:
        self.triggered_ids.append(incident.id)

    def resolved(self, incident: Incident) -> None:
        self.resolved_ids.append(incident.id)


class Interleaved:
    """The store, with an operator's pause landing on each tenant of ``targets`` once: after
    the watch reads it, or before the watch's conditional pause or resume of it, whichever
    comes first."""

    def __init__(self, inner: Any, targets: set[str]) -> None:
        self._inner = inner
        self.targets = targets
        self.pauses = _Pauses(self, inner.pauses)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def operator(self, tenant_id: str) -> None:
        if tenant_id in self.targets:
            self.targets.discard(tenant_id)
            await self._inner.update_tenant(tenant_id, {"paused": True, "pause_reason": OPERATOR})

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        found = await self._inner.get_tenant(tenant_id)
        await self.operator(tenant_id)  # lands between the read and what follows
        return found  # type: ignore[no-any-return]


class _Pauses:
    def __init__(self, outer: Interleaved, inner: Any) -> None:
        self._outer = outer
        self._inner = inner

    async def pause_unpaused(self, what: str, ident: str, reason: str) -> bool:
        await self._outer.operator(ident)
        return bool(await self._inner.pause_unpaused(what, ident, reason))

    async def resume_paused_by(self, what: str, ident: str, mark: str) -> bool:
        await self._outer.operator(ident)
        return bool(await self._inner.resume_paused_by(what, ident, mark))


async def _seed(store: Any, watch: MultiplicationWatch, count: int = 6) -> list[str]:
    ids = [f"t{i}" for i in range(count)]
    for tid in ids:
        await store.create_tenant(Tenant(id=tid, name=tid, plan="free", created_at=T0))
        await store.create_key(ApiKey(id=f"k-{tid}", key_hash=f"h-{tid}", kind="tenant",
                                      name="k", created_at=T0, tenant_id=tid))  # fmt: skip
        watch.seen_together(["203.0.113.7"], tid, f"k-{tid}", "free")
    return ids


async def _state(store: Any, tid: str) -> tuple[bool, str | None]:
    t = await store.get_tenant(tid)
    return t.paused, t.pause_reason


@pytest.mark.parametrize("backend", BACKENDS)
async def test_an_operators_pause_landing_mid_round_is_kept(backend: str, tmp_path: Path) -> None:
    async with opened(backend, tmp_path) as raw:
        store = Interleaved(raw, {"t2"})
        pager = Pager()
        watch = MultiplicationWatch(store, raw.multiplication, MultiplicationConfig(), pager,
                                    clock=lambda: T0)  # type: ignore[arg-type]  # fmt: skip
        ids = await _seed(raw, watch)
        (incident,) = await watch.check()
        assert store.targets == set(), "the operator's pause did not land"
        assert await _state(raw, "t2") == (True, OPERATOR)  # not overwritten
        assert sorted(incident.detail["paused_tenants"]) == [t for t in ids if t != "t2"]
        for tid in ids:
            assert (await _state(raw, tid))[0] is True
        assert pager.triggered_ids == [incident.id]

        # resolving: the operator pauses t4 again right before its resume
        store.targets = {"t4"}
        anomalies = AnomalyWatch(store, {}, Policy(), pager, clock=lambda: T0 + 60)  # type: ignore[arg-type]
        (done,) = await anomalies.resolve(incident)
        assert done.id == incident.id and pager.resolved_ids == [incident.id]
        assert store.targets == set()
        assert await _state(raw, "t2") == (True, OPERATOR)  # never the incident's
        assert await _state(raw, "t4") == (True, OPERATOR)  # the operator's now: stays
        for tid in ("t0", "t1", "t3", "t5"):
            assert await _state(raw, tid) == (False, None)


@pytest.mark.parametrize("backend", [*BACKENDS, "postgres"])
async def test_the_conditional_pause_and_resume(backend: str, tmp_path: Path) -> None:
    async with opened(backend, tmp_path) as store:
        await store.create_tenant(Tenant(id="t", name="t", plan="free", created_at=T0))
        await store.create_key(ApiKey(id="k", key_hash="h", kind="tenant", name="k",
                                      created_at=T0, tenant_id="t"))  # fmt: skip
        epoch = await store.auth_epoch() if backend != "postgres" else 0
        p = store.pauses
        assert await p.pause_unpaused("tenant", "t", "why (incident anom_1)") is True
        assert await p.pause_unpaused("tenant", "t", "again (incident anom_2)") is False
        assert await p.pause_unpaused("tenant", "gone", "x") is False
        assert (await store.get_tenant("t")).pause_reason == "why (incident anom_1)"
        assert await p.resume_paused_by("tenant", "t", "(incident anom_2)") is False
        assert await p.resume_paused_by("tenant", "t", "(incident anom_1)") is True
        assert await p.resume_paused_by("tenant", "t", "(incident anom_1)") is False
        assert (await store.get_tenant("t")).paused is False
        assert await p.pause_unpaused("key", "k", "key (incident anom_3)") is True
        assert (await store.get_key("k")).paused is True
        assert await p.resume_paused_by("key", "k", "(incident anom_3)") is True
        assert (await store.get_key("k")).pause_reason is None
        if backend != "postgres":  # PostgreSQL alone keeps no auth epoch (the scaled one does)
            assert await store.auth_epoch() > epoch  # cached tenants and keys are read again
        # of many concurrent conditional pauses exactly one wins
        wins = await asyncio.gather(*(p.pause_unpaused("tenant", "t", f"r{i}") for i in range(8)))
        assert sorted(wins) == [False] * 7 + [True]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_traffic_anomalys_resolve_resumes_only_its_own_pause(
    backend: str, tmp_path: Path
) -> None:
    """The wave-1 anomaly incident (one tenant): resolving it resumes the tenant only while
    the pause is still the incident's; an operator's later pause stays."""
    async with opened(backend, tmp_path) as store:
        pager = Pager()
        watch = AnomalyWatch(store, {}, Policy(), pager, clock=lambda: T0)
        for tid in ("a", "b"):
            await store.create_tenant(Tenant(id=tid, name=tid, plan="free", created_at=T0))
        made = []
        for tid in ("a", "b"):
            incident = Incident(f"anom_{tid}", tid, "", "tenant", "", "requests", 600, 10, 60,
                                T0, f"farebox/anomaly/{tid}")  # fmt: skip
            assert await store.traffic.open_incident(incident, T0 - 3600)
            await watch._pause(incident)  # what a round does once the incident is open
            made.append(incident)
        assert (await store.get_tenant("a")).pause_reason.startswith("automatic pause")
        await store.update_tenant("b", {"paused": True, "pause_reason": OPERATOR})
        for incident in made:
            await watch.resolve(incident)
        assert await _state(store, "a") == (False, None)
        assert await _state(store, "b") == (True, OPERATOR)
        assert pager.resolved_ids == ["anom_a", "anom_b"]

"""One helper for the conditional pauses (review finding 9): ``stores.pausing.pauses_of``
gives every watch (account multiplication, the anomaly incidents, the guardrail findings) the
store's own conditional pauses, or, on a store without them (a test double), a read then a
write, with one behaviour: nothing raises outside the ``FareboxError`` tree, a tenant or key
that is gone or paused already is left as it is, and resolving resumes only what carries the
incident's mark.
"""

from __future__ import annotations

from typing import Any

from farebox.anomaly.multiplication import MultiplicationWatch
from farebox.anomaly.watch import AnomalyWatch
from farebox.config.anomaly import MultiplicationConfig
from farebox.core.anomaly import Policy
from farebox.core.records import ApiKey, Tenant
from farebox.stores.memory.store import MemoryStore
from farebox.stores.pausing import ReadThenWrite, pauses_of
from tests.test_account_multiplication_pause_race import OPERATOR, T0, Pager

CLIENT = "203.0.113.7"


class NoPauses:
    """A store double without ``pauses``: everything else is the memory store's."""

    def __init__(self, inner: MemoryStore) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "pauses":
            raise AttributeError(name)
        return getattr(self._inner, name)


async def _seed(store: MemoryStore, count: int) -> list[str]:
    ids = [f"t{i}" for i in range(count)]
    for tid in ids:
        await store.create_tenant(Tenant(id=tid, name=tid, plan="free", created_at=T0))
        await store.create_key(ApiKey(id=f"k-{tid}", key_hash=f"h-{tid}", kind="tenant",
                                      name="k", created_at=T0, tenant_id=tid))  # fmt: skip
    return ids


async def test_a_store_without_conditional_pauses_reads_then_writes() -> None:
    inner = MemoryStore()
    store = NoPauses(inner)
    assert pauses_of(inner) is inner.pauses  # the store's own
    found = pauses_of(store)
    assert isinstance(found, ReadThenWrite)
    ids = await _seed(inner, 6)
    await inner.update_tenant("t2", {"paused": True, "pause_reason": OPERATOR})
    pager = Pager()
    watch = MultiplicationWatch(store, inner.multiplication, MultiplicationConfig(), pager,
                                clock=lambda: T0)  # type: ignore[arg-type]  # fmt: skip
    for tid in ids:
        watch.seen_together([CLIENT], tid, f"k-{tid}", "free")
    (incident,) = await watch.check()  # no TypeError: the fallback paused them
    assert sorted(incident.detail["paused_tenants"]) == [t for t in ids if t != "t2"]
    assert (await inner.get_tenant("t2")).pause_reason == OPERATOR  # type: ignore[union-attr]
    anomalies = AnomalyWatch(store, {}, Policy(), pager, clock=lambda: T0 + 60)  # type: ignore[arg-type]
    (done,) = await anomalies.resolve(incident)
    assert done.id == incident.id
    for tid in ids:
        t = await inner.get_tenant(tid)
        assert t is not None
        assert (t.paused, t.pause_reason) == ((True, OPERATOR) if tid == "t2" else (False, None))
    # gone: nothing to pause or resume, no error
    assert await found.pause_unpaused("tenant", "nobody", "r") is False
    assert await found.pause_unpaused("key", "no-key", "r") is False
    assert await found.resume_paused_by("tenant", "nobody", "(incident x)") is False

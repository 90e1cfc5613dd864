"""Records for the store contracts (and the tests that drive a store directly): tenants, keys,
ledger entries, holds, reservations and their settlements; and ``play_ledger``, drawn ledger
writes as the gateway makes them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from farebox.core.budgets import Hold, HoldState
from farebox.core.records import ApiKey, LedgerEntry, Reservation, Tenant

DAY = 86_400.0
T0 = 1_750_032_000.0  # 2025-06-16T00:00:00Z


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


def hold(key: str, limit: int, bucket: float = T0, **kw: Any) -> Hold:
    return Hold(
        key=key,
        scope=kw.pop("scope", "tenant"),
        period=kw.pop("period", "day"),
        name=kw.pop("name", None),
        limit=limit,
        bucket=bucket,
        buckets_from=kw.pop("buckets_from", bucket),
        resets_at=kw.pop("resets_at", bucket + DAY),
        **kw,
    )


def reservation(
    rid: str, amount: int, on: Sequence[Hold], expires_at: float = T0 + 60, tenant: str = "acme"
) -> Reservation:
    placeholder = entry(
        f"req-{rid}",
        tenant_id=tenant,
        status="unsettled",
        http_status=0,
        cost=0,
        reservation_id=rid,
    )
    return Reservation(rid, amount, tuple(on), expires_at, placeholder)


def settlement(rid: str, cost: int, **kw: Any) -> LedgerEntry:
    return entry(kw.pop("request_id", f"req-{rid}"), cost=cost, reservation_id=rid, **kw)


async def state(store: Any, h: Hold) -> tuple[int, int, int]:
    (s,) = await store.budget_states([h])
    assert isinstance(s, HoldState)
    return s.used, s.reserved, s.limit


async def play_ledger(
    store: Any,
    run: int,
    ops: Sequence[tuple[str, dict[str, Any]]],
    *,
    repeat: Callable[[dict[str, Any]], dict[str, Any]],
    stub: Mapping[str, Any],
) -> None:
    """Each operation (a kind, the entry's fields) as the gateway would do it: a batch entry
    (``append``), a retry of an earlier one (``repeat``: its fields changed by ``repeat``;
    ignored), a ``placeholder`` (``stub`` over the fields) later replaced by its real entry, or
    a ``lease`` that expires, is reclaimed (its placeholder written) and then settles late
    (replacing it). Request ids are ``r<run>-<n>``."""
    written: list[LedgerEntry] = []
    leases = hasattr(store, "reserve")
    for n, (kind, f) in enumerate(ops):
        rid = f"r{run}-{n}"
        if kind == "repeat" and written:
            again = written[n % len(written)]
            await store.append_ledger([entry(again.request_id, **{**f, **repeat(f)})])
        elif kind == "lease" and leases:
            res = reservation(rid, 1, [hold(f"t:{rid}", 10**15)], tenant=f["tenant_id"])
            assert (await store.reserve(res)).ok
            await store.reclaim_expired(T0 + 120)  # its placeholder is written
            if n % 3:  # settles late; else stays a placeholder
                late = {k: v for k, v in f.items() if k != "cost"}
                await store.append_ledger([settlement(rid, f["cost"], **late)])
        elif kind == "placeholder":
            placeholder = {**f, "status": "unsettled", "http_status": 0, **stub}
            await store.append_ledger([entry(rid, **placeholder)])
            if n % 2:  # a real entry of the same request (replaces it where the store does)
                await store.append_ledger([entry(rid, **f)])
        else:
            written.append(entry(rid, **f))
            await store.append_ledger([written[-1]])

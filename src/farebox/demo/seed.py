"""Sample plans and tenants for ``farebox demo``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from farebox.core.anomaly import DAY, HOUR, TrafficRow
from farebox.core.money import parse_usd
from farebox.demo.drive import Profile
from farebox.errors import Conflict
from farebox.identity.tenancy import Tenancy
from farebox.stores.base import HasTraffic, MetaStore

DEMO_PLANS: dict[str, Any] = {
    "free": {
        "models": ["gpt-4o-mini", "text-embedding-3-small"],
        "max_tokens": 1024,
        "budgets": [{"period": "day", "limit_usd": "0.50"}, {"period": "month", "limit_usd": "15"}],
        "rate_limits": [{"scope": "ip", "requests_per_minute": 10}],
        "downgrade": {"gpt-4o": "gpt-4o-mini"},
        "pricing": {"markup": "1.5"},
        # issue 15: the built-in guardrails (no extra): injections and secrets refused, e-mail
        # addresses, phone and card numbers replaced by placeholders upstream, restored after
        "guardrails": {
            "prompt_injection": {"mode": "block", "scan": ["user", "tool"]},
            "secrets": {"mode": "block"},
            "pii": {"mode": "redact", "restore": True, "engine": "builtin"},
        },
    },
    "pro": {
        "models": ["gpt-4o*", "gpt-4.1*", "claude-*", "o4-mini", "text-embedding-*", "smart"],
        "max_tokens": 4096,
        "pricing": {"markup": "1.3", "monthly_fee_usd": "49"},
        # a repeated question is answered from the tenant's own cache, at half its price
        "cache": {"mode": "exact", "hit_price": "0.5"},
    },
    "enterprise": {"models": ["*"], "pricing": {"markup": "1.2", "monthly_fee_usd": "2000"}},
}
# "smart" fails over from a flaky deployment (injected 5xx/529s, 429s, latency spikes and cut
# streams) to a healthy one: watch GET /admin/v1/deployments and its breaker open and close
DEMO_PROVIDERS: dict[str, Any] = {
    "mock": {"kind": "mock"},
    "flaky": {"kind": "mock", "seed": 3, "error_rate": 0.3, "error_statuses": [500, 503, 529],
              "rate_limit_rate": 0.05, "spike_rate": 0.05, "spike_ms": 400,
              "disconnect_rate": 0.02},
}  # fmt: skip
DEMO_MODELS: dict[str, Any] = {
    "smart": [
        {"provider": "flaky", "model": "gpt-4o"},
        {"provider": "mock", "model": "gpt-4o-mini"},
    ]
}
DEMO_TENANTS = (
    ("acme", "Acme Corp", "pro"),
    ("globex", "Globex", "free"),
    ("initech", "Initech", "enterprise"),
    ("umbrella", "Umbrella Ltd", "pro"),
)
# anomaly detection at demo speed: a one-minute window, checked every 5 s
DEMO_ANOMALY: dict[str, Any] = {"window_s": 60, "check_interval_s": 5, "flush_interval_s": 1}
RUNAWAY_AFTER_S = 60.0  # with --traffic, umbrella's CI script starts looping after this


TRAFFIC = {
    "acme": dict(rate_per_s=3.0, models=("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"),
                 features=("chat", "document_analysis"), users=25),
    "globex": dict(rate_per_s=1.0, models=("gpt-4o-mini",), users=5, stream_share=0.0),
    "initech": dict(rate_per_s=4.0,
                    models=("gpt-4.1", "o4-mini", "text-embedding-3-small", "smart"),
                    features=("search", "support_bot"), users=60),
    # a CI pipeline: steady, until its retry loop runs away at 12x (and gets paused)
    "umbrella": dict(rate_per_s=0.5, models=("gpt-4o-mini",), features=("ci",), users=1,
                     stream_share=0.0, runaway_after_s=RUNAWAY_AFTER_S, runaway_factor=12.0),
}  # fmt: skip
# what a request of each tenant's mix typically costs (a little above, to be safe), for history
HISTORY_COST_USD = {"acme": "0.002", "globex": "0.0001", "initech": "0.0015", "umbrella": "0.0001"}


class HistoryStore(MetaStore, HasTraffic, Protocol):
    """Where the demo's traffic history goes, marked done in the store's meta."""


async def seed(
    tenancy: Tenancy,
    store: HistoryStore | None = None,
    done: Callable[[], None] | None = None,
) -> dict[str, str]:
    """Create the demo tenants (once) and a fresh key for each; returns tenant -> key.
    With ``store``, also give each tenant 30 days of hourly traffic history (once), so the
    anomaly detector knows what normal looks like for them. ``done()`` after each tenant."""
    keys = {}
    for tenant_id, name, plan in DEMO_TENANTS:
        try:
            await tenancy.create_tenant(tenant_id, name, plan)
        except Conflict:
            pass
        record, keys[tenant_id] = await tenancy.create_key(tenant_id, "demo")
        if store is not None and tenant_id in TRAFFIC:
            await _history(store, tenant_id, record.id, tenancy.now())
        if done is not None:
            done()
    return keys


async def _history(store: HistoryStore, tenant_id: str, key_id: str, now: float) -> None:
    """Thirty days of this tenant's demo traffic per hour, with a daily swing."""
    if await store.get_meta(f"demo_history:{tenant_id}") is not None:
        return
    per_hour = float(TRAFFIC[tenant_id]["rate_per_s"]) * 3600  # type: ignore[arg-type]
    cost = parse_usd(HISTORY_COST_USD[tenant_id])
    hour = int(now) // HOUR * HOUR
    rows = []
    for h in range(hour - 30 * DAY, hour, HOUR):
        requests = int(per_hour * (1 + 0.3 * math.sin(h / DAY * 2 * math.pi)))
        rows.append(TrafficRow(tenant_id, key_id, h, requests, requests * cost))
    await store.traffic.add(rows)
    await store.put_meta_if_absent(f"demo_history:{tenant_id}", "1")


def traffic_profiles(keys: dict[str, str]) -> list[Profile]:
    return [Profile(tenant=t, key=keys[t], **TRAFFIC[t]) for t in TRAFFIC if t in keys]  # type: ignore[arg-type]

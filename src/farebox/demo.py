"""Sample plans and tenants for ``farebox demo``."""

from __future__ import annotations

from typing import Any

from farebox.errors import Conflict
from farebox.tenancy import Tenancy
from farebox.traffic import Profile

DEMO_PLANS: dict[str, Any] = {
    "free": {
        "models": ["gpt-4o-mini", "text-embedding-3-small"],
        "max_tokens": 1024,
        "budgets": [{"period": "day", "limit_usd": "0.50"}, {"period": "month", "limit_usd": "15"}],
        "rate_limits": [{"scope": "ip", "requests_per_minute": 10}],
        "downgrade": {"gpt-4o": "gpt-4o-mini"},
        "pricing": {"markup": "1.5"},
    },
    "pro": {
        "models": ["gpt-4o*", "gpt-4.1*", "claude-*", "o4-mini", "text-embedding-*", "smart"],
        "max_tokens": 4096,
        "pricing": {"markup": "1.3", "monthly_fee_usd": "49"},
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
)


TRAFFIC = {
    "acme": dict(rate_per_s=3.0, models=("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5"),
                 features=("chat", "document_analysis"), users=25),
    "globex": dict(rate_per_s=1.0, models=("gpt-4o-mini",), users=5, stream_share=0.0),
    "initech": dict(rate_per_s=4.0,
                    models=("gpt-4.1", "o4-mini", "text-embedding-3-small", "smart"),
                    features=("search", "support_bot"), users=60),
}  # fmt: skip


async def seed(tenancy: Tenancy) -> dict[str, str]:
    """Create the demo tenants (once) and a fresh key for each; returns tenant -> key."""
    keys = {}
    for tenant_id, name, plan in DEMO_TENANTS:
        try:
            await tenancy.create_tenant(tenant_id, name, plan)
        except Conflict:
            pass
        _, keys[tenant_id] = await tenancy.create_key(tenant_id, "demo")
    return keys


def traffic_profiles(keys: dict[str, str]) -> list[Profile]:
    return [Profile(tenant=t, key=keys[t], **TRAFFIC[t]) for t in TRAFFIC if t in keys]  # type: ignore[arg-type]

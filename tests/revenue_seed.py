"""A month of revenue for the GraphQL and dashboard tests of issue [13]'s "Seen": tenants on a
prepaid plan (credits granted through the admin API, burned by real requests), a plan with a
monthly fee and one without, traffic through the mock provider, and the admin REST answers the
views must equal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tests.cache_gateway import ask, config, post

PLANS: dict[str, Any] = {
    "prepaid": {"models": ["*"], "pricing": {"markup": "2", "credits": {"per_usd": 1000}}},
    "pro": {"models": ["*"], "pricing": {"markup": "1.5", "monthly_fee_usd": "49"}},
    "basic": {"models": ["*"], "pricing": {"markup": "1.2"}},
    "promo": {"models": ["*"], "pricing": {"markup": "0.5"}},  # sold below cost: a loss
}
CONFIG = config(PLANS, default_plan="basic")
# tenant: (plan, requests sent, credits granted)
TENANTS: dict[str, tuple[str, int, str | None]] = {
    "pp1": ("prepaid", 3, "5000"),
    "pp2": ("prepaid", 1, "800"),
    "pro1": ("pro", 4, None),
    "pro2": ("pro", 0, None),
    "bas1": ("basic", 2, None),
    "promo1": ("promo", 2, None),
}
PREPAID = tuple(t for t, (plan, _, _) in TENANTS.items() if plan == "prepaid")


def this_month() -> str:
    return datetime.now(UTC).strftime("%Y-%m")


async def seed(gw: Any) -> dict[str, str]:
    """The tenants, their grants and their traffic; their keys by tenant."""
    keys = {}
    for tenant, (plan, sent, granted) in TENANTS.items():
        keys[tenant] = await gw.tenant_key(tenant, plan)
        if granted is not None:
            body = {"amount": granted, "idempotency_key": f"order-{tenant}"}
            r = await gw.client.post(
                f"/admin/v1/tenants/{tenant}/credits", json=body, headers=gw.admin
            )
            assert r.status_code == 201, r.text
        for i in range(sent):
            r = await post(gw, keys[tenant], ask(f"{tenant} question {i}", max_tokens=40))
            assert r.status_code == 200, r.text
    return keys


async def rest(gw: Any, path: str, **params: Any) -> Any:
    r = await gw.client.get(path, params=params, headers=gw.admin)
    assert r.status_code == 200, r.text
    return r.json()

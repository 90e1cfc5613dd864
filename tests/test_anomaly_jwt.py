"""Review 14 #10: a flood of JWT callers (a leaked IdP token) is stopped by the anomaly watch.

A JWT caller's key ``jwt:<tenant>`` is never stored, so ``pause_key`` cannot pause it: the
watch escalates to pausing the tenant, and pages (PagerDuty fake on loopback) either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fakes.paging import PagerDutyFake, SlackFake
from farebox.core.anomaly import DAY, HOUR, TrafficRow
from farebox.core.money import parse_usd
from tests.jwt_keys import AUDIENCE, ISSUER, JwksServer, mint, rsa_key
from tests.test_anomaly_gateway import (
    CHAT,
    MINUTE,
    MONDAY,
    NOW,
    ROUTING_KEY,
    Clock,
    config,
    drain,
    gateway,
    new_key,
)


def hours(tenant: str, key_id: str, per_hour: int) -> list[TrafficRow]:
    """Two weeks of steady traffic of one key."""
    return [
        TrafficRow(tenant, key_id, hour, per_hour, per_hour * parse_usd("0.001"))
        for hour in range(MONDAY + 3 * HOUR - 14 * DAY, MONDAY + 3 * HOUR, HOUR)
    ]


@pytest.mark.parametrize("loud", ["tenant", "key"])
async def test_a_jwt_flood_pauses_the_tenant_and_pages(tmp_path: Path, loud: str) -> None:
    """``tenant``: the whole tenant surges and its busiest key is ``jwt:acme``; ``key``: a
    steady stored key keeps the tenant under its line, and ``jwt:acme`` alone surges."""
    key = rsa_key()
    clock = Clock(NOW)
    plans = {"pro": {"models": ["*"], "anomaly": {"action": "pause_key"}}}
    async with PagerDutyFake(ROUTING_KEY) as pd, SlackFake() as slack, JwksServer([key]) as jwks:
        cfg: dict[str, Any] = config(pd, plans)
        cfg["auth"] = {"jwt": {"jwks_url": jwks.url, "issuer": ISSUER, "audience": AUDIENCE,
                               "user_claim": "sub"}}  # fmt: skip
        async with gateway(tmp_path, cfg, clock, slack) as (app, client):
            r = await client.post("/admin/v1/tenants", json={"id": "acme", "plan": "pro"})
            assert r.status_code == 201, r.text
            history = hours("acme", "jwt:acme", 60 if loud == "tenant" else 20)
            if loud == "key":
                stored, _raw = await new_key(client, "acme")
                history += hours("acme", stored, 600)
            await app.state.services.store.traffic.add(history)
            token = {"authorization": f"Bearer {mint(key, clock.now)}"}
            for _ in range(130):
                r = await client.post("/v1/chat/completions", json=CHAT, headers=token)
                assert r.status_code == 200, r.text
            clock.now = NOW + MINUTE
            (incident,) = await app.state.watch.check()
            assert (incident.tenant_id, incident.target) == ("acme", "tenant")
            assert incident.key_id == ("" if loud == "tenant" else "jwt:acme")
            assert incident.detail["escalated"] is True
            r = await client.post("/v1/chat/completions", json=CHAT, headers=token)
            assert r.status_code == 403 and r.json()["error"]["code"] == "tenant_paused", r.text
            await drain(app)
            (trigger,) = pd.triggers()
            assert trigger["dedup_key"] == incident.dedup_key
            r = await client.post("/admin/v1/tenants/acme/resume")
            assert r.status_code == 200 and r.json()["resolved_incidents"] == [incident.id]

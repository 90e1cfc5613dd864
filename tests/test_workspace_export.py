"""Issue 14: exported per-request events carry the request's workspace where the sink's wire
format has free-form properties (Lago and Metronome ``properties``, OpenMeter ``data``, the
signed webhook's ``properties``); Stripe forwards it only when ``workspace`` is one of the
sink's configured ``dimensions`` (its payload is otherwise fixed). Ledger entries and usage
grouped by workspace agree with what was exported."""

from __future__ import annotations

from typing import Any

from tests.test_billing_export import ENV, config, drain, fakes


async def test_exported_events_carry_the_workspace(make_gateway: Any) -> None:
    async with fakes() as sinks, make_gateway(config(sinks), env=ENV) as gw:
        await gw.tenant("acme", "pro")
        billing = {"lago_external_subscription_id": "sub_a", "metronome_customer_id": "m_a",
                   "openmeter_subject": "s_a", "stripe_customer_id": "cus_a"}  # fmt: skip
        await gw.client.patch("/admin/v1/tenants/acme", json={"billing": billing},
                              headers=gw.admin)  # fmt: skip
        await gw.client.post("/admin/v1/tenants/acme/workspaces", json={"id": "ml"},
                             headers=gw.admin)  # fmt: skip
        keys = {"ml": await gw.key("acme", workspace="ml"), "default": await gw.key("acme")}
        for ws, key in keys.items():
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": ws}]}
            r = await gw.client.post("/v1/chat/completions", json=body,
                                     headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            assert r.status_code == 200, r.text
        by_request = {e.request_id: e.workspace for e in await gw.ledger("acme")}
        assert sorted(by_request.values()) == ["default", "ml"]
        for name in ("lago", "metronome", "openmeter", "webhook", "stripe"):
            await drain(gw, name)
        seen: dict[str, set[str]] = {}
        for kind in ("lago", "metronome", "webhook"):
            seen[kind] = {e["properties"].get("workspace") for e in sinks[kind].accepted.values()}
        seen["openmeter"] = {
            e["data"].get("workspace") for e in sinks["openmeter"].accepted.values()
        }
        for kind, found in seen.items():
            assert found == {"default", "ml"}, (kind, found)
        stripe = list(sinks["stripe"].accepted.values())
        assert stripe and all("workspace" not in e["payload"] for e in stripe)

"""Post-merge test (audit x roles), for tests/test_audit_roles.py once wt-roles and wt-audit are
both merged: role refusals and a tenant_admin's 404 are audited under the admin key's id. Verified
passing on a trial merge of wt-audit + wt-roles (/tmp/audit-merge, 07:35 UTC)."""

from __future__ import annotations

from typing import Any

import orjson


async def test_role_refusals_and_actions_are_audited_under_the_admin_key(make_gateway: Any) -> None:
    async with make_gateway({"plans": {"default": {"models": ["*"]}}}) as gw:
        await gw.tenant("acme")
        await gw.tenant("globex")
        c = gw.client
        body = {"name": "t", "role": "tenant_admin", "tenant": "acme"}
        ta = (await c.post("/admin/v1/admin-keys", json=body, headers=gw.admin)).json()
        body = {"name": "v", "role": "viewer"}
        viewer = (await c.post("/admin/v1/admin-keys", json=body, headers=gw.admin)).json()
        tah = {"Authorization": f"Bearer {ta['key']}"}
        vh = {"Authorization": f"Bearer {viewer['key']}"}
        assert (await c.get("/admin/v1/tenants/globex", headers=tah)).status_code == 404
        made = await c.post("/admin/v1/tenants/acme/keys", json={"name": "x"}, headers=tah)
        assert made.status_code == 201
        assert (await c.post("/admin/v1/tenants", json={"id": "z"}, headers=vh)).status_code == 403
        assert (await c.get("/admin/v1/audit", headers=vh)).status_code == 403  # owners only
        records = await gw.store.audit.scan(0, 100)
    got = [(r.actor, r.role, r.action, r.target, r.outcome, r.status) for r in records[4:]]
    assert got == [
        (ta["id"], "tenant_admin", "GET /tenants/{tenant_id}", "tenant:globex", "refused", 404),
        (ta["id"], "tenant_admin", "POST /tenants/{tenant_id}/keys", f"key:{made.json()['id']}",
         "ok", 201),
        (viewer["id"], "viewer", "POST /tenants", "", "refused", 403),
        (viewer["id"], "viewer", "GET /audit", "", "refused", 403),
    ]  # fmt: skip
    assert records[2].actor == "env" and records[2].action == "POST /admin-keys"
    text = orjson.dumps([r.change for r in records]).decode()
    assert ta["key"] not in text and viewer["key"] not in text and made.json()["key"] not in text

"""A workspace is never removed with a live key in it (review of issue 14, finding 14): the
delete's check and removal are one store step, and a key made into (or moved to) a workspace
that a concurrent delete removed after it was looked up is undone with the workspace's 404."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.test_workspaces_api import WS, config, setup

KEYS = "/admin/v1/tenants/acme/keys"


async def live_in_removed_workspaces(gw: Any) -> list[str]:
    """Ids of live keys whose workspace no longer exists."""
    c, admin = gw.client, gw.admin
    spaces = {w["id"] for w in (await c.get(WS, headers=admin)).json()["data"]}
    keys = (await c.get(KEYS, headers=admin)).json()["data"]
    return [k["id"] for k in keys if k["workspace"] not in spaces and not k["revoked"]]


async def test_a_key_made_into_a_workspace_removed_meanwhile_is_undone(make_gateway: Any) -> None:
    async with make_gateway(config()) as gw:
        await setup(gw)
        c, admin, store = gw.client, gw.admin, gw.store
        assert (await c.post(WS, json={"id": "doomed"}, headers=admin)).status_code == 201
        create_key, removed = store.create_key, []

        async def delete_first(key: Any) -> None:  # the delete lands after the lookup
            if key.workspace_id == "doomed" and not removed:
                r = await c.delete(f"{WS}/doomed", headers=admin)
                removed.append(r.status_code)
            await create_key(key)

        store.create_key = delete_first
        r = await c.post(KEYS, json={"workspace": "doomed"}, headers=admin)
        store.create_key = create_key
        assert removed == [200]
        assert r.status_code == 404 and r.json()["error"]["code"] == "workspace_not_found"
        assert await live_in_removed_workspaces(gw) == []
        made = [k for k in (await c.get(KEYS, headers=admin)).json()["data"]
                if k["workspace"] == "doomed"]  # fmt: skip
        assert len(made) == 1 and made[0]["revoked"]


async def test_a_key_moved_to_a_workspace_removed_meanwhile_goes_back(make_gateway: Any) -> None:
    async with make_gateway(config()) as gw:
        await setup(gw)
        c, admin, store = gw.client, gw.admin, gw.store
        for ws in ("home", "doomed"):
            assert (await c.post(WS, json={"id": ws}, headers=admin)).status_code == 201
        key_id = (await c.post(KEYS, json={"workspace": "home"}, headers=admin)).json()["id"]
        update_key, removed = store.update_key, []

        async def delete_first(kid: str, changes: dict[str, Any]) -> Any:
            if changes.get("workspace_id") == "doomed" and not removed:
                r = await c.delete(f"{WS}/doomed", headers=admin)
                removed.append(r.status_code)
            return await update_key(kid, changes)

        store.update_key = delete_first
        r = await c.patch(f"/admin/v1/keys/{key_id}", json={"workspace": "doomed"}, headers=admin)
        store.update_key = update_key
        assert removed == [200]
        assert r.status_code == 404 and r.json()["error"]["code"] == "workspace_not_found"
        [key] = [k for k in (await c.get(KEYS, headers=admin)).json()["data"] if k["id"] == key_id]
        assert key["workspace"] == "home" and not key["revoked"]
        assert await live_in_removed_workspaces(gw) == []


async def test_concurrent_key_creations_and_deletes_leave_no_orphan(make_gateway: Any) -> None:
    """Each round: a key into a workspace and that workspace's delete, at once. Either the key
    is made (and the delete refused, 409) or the workspace goes (and the key is refused, 404,
    or made and revoked): never both made and removed."""
    async with make_gateway(config()) as gw:
        await setup(gw)
        c, admin = gw.client, gw.admin
        outcomes = set()
        for i in range(20):
            ws = f"w{i}"
            assert (await c.post(WS, json={"id": ws}, headers=admin)).status_code == 201
            made, gone = await asyncio.gather(
                c.post(KEYS, json={"workspace": ws}, headers=admin),
                c.delete(f"{WS}/{ws}", headers=admin),
            )
            pair = (made.status_code, gone.status_code)
            assert pair in ((201, 409), (404, 200)), (pair, made.text, gone.text)
            outcomes.add(pair)
        assert await live_in_removed_workspaces(gw) == []

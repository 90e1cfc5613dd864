"""The ``WorkspaceStore`` contract (``Store.workspaces``: tenants' workspaces, the ``default``
one implicit, every change bumping the auth epoch) on every backend; and the issue 14 columns
of keys and ledger entries (workspace, metadata, alert threshold, role; workspace, byok)
round-tripping through each store's account and ledger roles."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from farebox.core.records import DEFAULT_WORKSPACE, Workspace
from farebox.errors import Conflict, NotFound
from tests.contracts.backends import ALL_IN_ONE, EVERY
from tests.contracts.builders import T0, entry, key, tenant

BACKENDS = EVERY


def ws(wid: str, tenant_id: str = "acme", **kw: Any) -> Workspace:
    return Workspace(tenant_id=tenant_id, id=wid, name=kw.pop("name", wid.title()),
                     created_at=kw.pop("created_at", T0 + 1.5), **kw)  # fmt: skip


async def test_every_tenant_has_the_default_workspace_unstored(store: Any) -> None:
    w = store.workspaces
    found = await w.get_workspace("acme", DEFAULT_WORKSPACE)
    assert found is not None and (found.id, found.tenant_id) == (DEFAULT_WORKSPACE, "acme")
    assert (found.budgets, found.rate_limits, found.metadata) == ([], [], {})
    assert [x.id for x in await w.list_workspaces("acme")] == [DEFAULT_WORKSPACE]
    assert await w.get_workspace("acme", "team-a") is None
    with pytest.raises(Conflict):
        await w.create_workspace(ws(DEFAULT_WORKSPACE))
    assert await w.delete_workspace("acme", DEFAULT_WORKSPACE) is False


async def test_create_get_list_per_tenant(store: Any) -> None:
    w = store.workspaces
    budgets = [{"scope": "workspace", "period": "month", "limit_usd": "200"}]
    team = ws("team-a", budgets=budgets, rate_limits=[{"scope": "workspace", "concurrent": 3}],
              metadata={"cost_center": "eng", "n": [1, {"x": None}]})  # fmt: skip
    await w.create_workspace(team)
    await w.create_workspace(ws("beta", name="Beta team"))
    await w.create_workspace(ws("team-a", tenant_id="globex"))  # another tenant's: no clash
    with pytest.raises(Conflict):
        await w.create_workspace(ws("team-a", name="again"))
    assert await w.get_workspace("acme", "team-a") == team
    assert [x.id for x in await w.list_workspaces("acme")] == ["beta", DEFAULT_WORKSPACE, "team-a"]
    assert [x.id for x in await w.list_workspaces("globex")] == [DEFAULT_WORKSPACE, "team-a"]
    assert [x.id for x in await w.list_workspaces("nobody")] == [DEFAULT_WORKSPACE]


async def test_update_changes_and_stores_the_default_on_first_change(store: Any) -> None:
    w = store.workspaces
    await w.create_workspace(ws("team-a"))
    limits = [{"scope": "workspace", "requests_per_minute": 10}]
    updated = await w.update_workspace("acme", "team-a", {"rate_limits": limits, "name": "A"})
    assert (updated.name, updated.rate_limits, updated.created_at) == ("A", limits, T0 + 1.5)
    assert await w.get_workspace("acme", "team-a") == updated
    budgets = [{"scope": "workspace", "period": "day", "limit_usd": "5"}]
    default = await w.update_workspace("acme", DEFAULT_WORKSPACE, {"budgets": budgets})
    assert default.budgets == budgets
    assert await w.get_workspace("acme", DEFAULT_WORKSPACE) == default
    assert [x.id for x in await w.list_workspaces("acme")] == [DEFAULT_WORKSPACE, "team-a"]
    with pytest.raises(NotFound):
        await w.update_workspace("acme", "nope", {"name": "x"})
    assert await w.get_workspace("acme", "nope") is None


async def test_delete_removes_once(store: Any) -> None:
    w = store.workspaces
    await w.create_workspace(ws("team-a"))
    results = await asyncio.gather(*(w.delete_workspace("acme", "team-a") for _ in range(3)))
    assert sorted(results) == [False, False, True]
    assert await w.get_workspace("acme", "team-a") is None
    await w.create_workspace(ws("team-a"))  # its id is free again


@pytest.mark.backends(*ALL_IN_ONE)
async def test_every_workspace_change_bumps_the_auth_epoch(store: Any) -> None:
    w = store.workspaces
    seen = [await store.auth_epoch()]
    for change in (
        w.create_workspace(ws("team-a")),
        w.update_workspace("acme", "team-a", {"name": "A"}),
        w.update_workspace("acme", DEFAULT_WORKSPACE, {"metadata": {"k": 1}}),
        w.delete_workspace("acme", "team-a"),
    ):
        await change
        now = await store.auth_epoch()
        assert now > seen[-1]
        seen.append(now)
    await w.get_workspace("acme", DEFAULT_WORKSPACE)
    await w.list_workspaces("acme")
    assert await w.delete_workspace("acme", "team-a") is False
    assert await store.auth_epoch() == seen[-1]  # reads and no-ops: no bump


async def test_key_workspace_metadata_threshold_and_role_round_trip(store: Any) -> None:
    await store.create_tenant(tenant("acme"))
    meta = {"user_email": "a@example.com", "team": "ml", "nested": {"n": [1, 2.5, None]}}
    await store.create_key(key("k1", "acme", workspace_id="team-a", metadata=meta,
                               alert_threshold=80))  # fmt: skip
    await store.create_key(key("k2", "acme"))
    await store.create_key(key("a1", None, kind="admin", role="operator"))
    k1 = await store.get_key("k1")
    assert (k1.workspace_id, k1.metadata, k1.alert_threshold) == ("team-a", meta, 80)
    k2 = await store.get_key_by_hash("hash-k2")
    assert (k2.workspace_id, k2.metadata, k2.alert_threshold, k2.role) == (
        DEFAULT_WORKSPACE, {}, None, None)  # fmt: skip
    assert (await store.get_key("a1")).role == "operator"
    changed = await store.update_key("k2", {"metadata": {"team": "web"}, "alert_threshold": 50,
                                            "workspace_id": "beta"})  # fmt: skip
    assert (changed.metadata, changed.alert_threshold, changed.workspace_id) == (
        {"team": "web"}, 50, "beta")  # fmt: skip
    listed = {k.id: k for k in await store.list_keys("acme")}
    assert listed["k1"].metadata == meta and listed["k2"].metadata == {"team": "web"}


@pytest.mark.backends(*ALL_IN_ONE)
async def test_ledger_workspace_and_byok_round_trip(store: Any) -> None:
    await store.append_ledger([entry("r1", workspace="team-a", byok=True),
                               entry("r2")])  # fmt: skip
    found = {e.request_id: e for e in await store.ledger("acme")}
    assert (found["r1"].workspace, found["r1"].byok) == ("team-a", True)
    assert (found["r2"].workspace, found["r2"].byok) == (None, False)


async def test_usage_grouped_by_workspace(store: Any) -> None:
    from farebox.core.records import UsageQuery

    await store.append_ledger([
        entry("r1", workspace="team-a", cost=10, revenue=15, started_at=T0),
        entry("r2", workspace="team-a", cost=5, started_at=T0 + 1),
        entry("r3", workspace="default", cost=7, started_at=T0 + 2),
        entry("r4", tenant_id="globex", workspace="team-a", cost=1, started_at=T0 + 3),
        entry("r5", cost=2, started_at=T0 + 4),  # written before workspaces: none
    ])  # fmt: skip
    rows = await store.usage(UsageQuery("acme", None, None, "workspace"))
    assert [(r.group, r.requests, r.cost) for r in rows] == [
        ("default", 1, 7), ("team-a", 2, 15), (None, 1, 2)]  # fmt: skip
    every = await store.usage(UsageQuery(None, T0, T0 + 4, "workspace"))
    assert [(r.group, r.cost) for r in every] == [("default", 7), ("team-a", 16)]


async def test_delete_if_empty_checks_live_keys_in_the_same_step(store: Any) -> None:
    """Only live tenant keys of that very workspace keep it; the ids come back in order and
    nothing is removed; once none is live it goes, once (``default`` never)."""
    w = store.workspaces
    await store.create_tenant(tenant("acme"))
    await store.create_tenant(tenant("globex"))
    await w.create_workspace(ws("team-a"))
    now = T0 + 100
    await store.create_key(key("k-live", "acme", workspace_id="team-a", created_at=T0 + 2))
    await store.create_key(key("k-old", "acme", workspace_id="team-a", created_at=T0 + 1,
                               expires_at=now + 50))  # fmt: skip
    await store.create_key(key("k-expired", "acme", workspace_id="team-a", expires_at=now - 1))
    await store.create_key(key("k-revoked", "acme", workspace_id="team-a", revoked_at=now - 1))
    await store.create_key(key("k-beta", "acme", workspace_id="beta"))
    await store.create_key(key("k-globex", "globex", workspace_id="team-a"))
    assert await w.delete_workspace_if_empty("acme", "team-a", now) == (
        False, ["k-old", "k-live"])  # fmt: skip
    assert await w.get_workspace("acme", "team-a") is not None
    assert await w.delete_workspace_if_empty("acme", "team-a", now + 60) == (False, ["k-live"])
    await store.update_key("k-live", {"workspace_id": "beta"})  # moved out
    results = await asyncio.gather(
        *(w.delete_workspace_if_empty("acme", "team-a", now + 60) for _ in range(3))
    )
    assert sorted(results) == [(False, []), (False, []), (True, [])]
    assert await w.get_workspace("acme", "team-a") is None
    assert await w.delete_workspace_if_empty("acme", DEFAULT_WORKSPACE, now) == (False, [])
    assert await w.delete_workspace_if_empty("acme", "beta", now) == (False, ["k-beta", "k-live"])


@pytest.mark.backends(*ALL_IN_ONE)
async def test_delete_if_empty_bumps_the_auth_epoch_only_when_it_removes(store: Any) -> None:
    w = store.workspaces
    await store.create_tenant(tenant("acme"))
    await w.create_workspace(ws("team-a"))
    await store.create_key(key("k1", "acme", workspace_id="team-a"))
    before = await store.auth_epoch()
    assert (await w.delete_workspace_if_empty("acme", "team-a", T0 + 10))[0] is False
    assert await store.auth_epoch() == before
    await store.update_key("k1", {"revoked_at": T0 + 5})
    before = await store.auth_epoch()
    assert await w.delete_workspace_if_empty("acme", "team-a", T0 + 10) == (True, [])
    assert await store.auth_epoch() > before

"""Acceptance 3 of issue 14, the upgrade: a SQLite database made before the workspaces
migration, with a tenant, a key and a ledger row written the old way, keeps working once the
gateway upgrades it: the key authenticates and lands in the tenant's implicit ``default``
workspace (its requests' ledger entries say so, its workspace budget holds), and old rows
read back with no workspace."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from farebox.core.keys import hash_key
from farebox.stores.sqlite import schema as sqlite_schema

SECRET = "0123456789abcdef" * 4
RAW = "fbx_old_key_made_before_workspaces_0123456789"
MOCK = {"kind": "mock", "seed": 1, "output_tokens": {"distribution": "fixed", "mean": 30}}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 30}
T0 = 1_793_577_600.0


def before_workspaces() -> int:
    """How many migrations come before issue 14's (the one that makes ``workspaces``)."""
    return next(i for i, m in enumerate(sqlite_schema.MIGRATIONS) if "CREATE TABLE workspaces" in m)


def old_database(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    every = sqlite_schema.MIGRATIONS
    with closing(sqlite3.connect(path)) as db:
        db.isolation_level = None
        monkeypatch.setattr(sqlite_schema, "MIGRATIONS", every[: before_workspaces()])
        sqlite_schema.migrate(db)
        cols = [r[1] for r in db.execute("PRAGMA table_info(api_keys)")]
        assert "workspace_id" not in cols  # truly the old schema
        db.execute("INSERT INTO tenants(id, name, plan, created_at) VALUES (?,?,?,?)",
                   ("acme", "Acme", "p", T0))  # fmt: skip
        db.execute(
            "INSERT INTO api_keys(id, key_hash, kind, name, created_at, tenant_id, prefix) "
            "VALUES (?,?,?,?,?,?,?)",
            ("key_old", hash_key(SECRET.encode(), RAW), "tenant", "old", T0, "acme", "fbx_old"),
        )
        db.execute(
            "INSERT INTO ledger(request_id, tenant_id, key_id, endpoint, model_requested, "
            "model_served, provider, status, http_status, started_at, finished_at, cost) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            ("old", "acme", "key_old", "chat.completions", "m", "m", "sim", "ok", 200, T0,
             T0 + 1, 5),
        )  # fmt: skip
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", every)


async def test_an_old_key_keeps_working_in_the_default_workspace(
    make_gateway: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_database(tmp_path / "farebox.db", monkeypatch)
    budgets = [{"scope": "workspace", "period": "day", "limit_usd": "1"}]
    config = {"providers": {"sim": MOCK}, "plans": {"p": {"models": ["*"], "budgets": budgets}}}
    async with make_gateway(config, env={"FAREBOX_SECRET": SECRET}) as gw:
        auth = {"Authorization": f"Bearer {RAW}"}
        r = await gw.client.post("/v1/chat/completions", json=CHAT, headers=auth)
        assert r.status_code == 200, r.text
        entries = {e.request_id: e for e in await gw.ledger("acme")}
        assert entries["old"].workspace is None and entries["old"].byok is False
        [new] = [e for rid, e in entries.items() if rid != "old"]
        assert new.workspace == "default"
        me = (await gw.client.get("/v1/me", headers=auth)).json()
        [held] = [b for b in me["budgets"] if b["scope"] == "workspace"]
        assert held["name"] == "default" and held["used_usd"] != "0.00"
        keys = (await gw.client.get("/admin/v1/keys", params={"tenant": "acme"},
                                    headers=gw.admin)).json()["data"]  # fmt: skip
        assert [(k["id"], k["workspace"], k["metadata"]) for k in keys] == [
            ("key_old", "default", {})]  # fmt: skip
        spaces = (await gw.client.get("/admin/v1/tenants/acme/workspaces",
                                      headers=gw.admin)).json()["data"]  # fmt: skip
        assert [w["id"] for w in spaces] == ["default"]

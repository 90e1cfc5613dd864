"""The CLI mirrors of the admin API, on the local database, and admin API odds and ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from farebox.cli import main


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FAREBOX_ADMIN_KEY", "fba_cli_test_admin_key_0123456789abcdef")
    path = tmp_path / "farebox.yaml"
    path.write_text(
        f'database: "sqlite:///{tmp_path / "cli.db"}"\n'
        "plans:\n  pro: {models: ['*'], pricing: {markup: '2'}}\n"
    )
    return str(path)


def run(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_tenants_keys_and_usage_on_local_database(cfg: str) -> None:
    created = run("tenants", "create", "acme", "--plan", "pro", "--config", cfg)
    assert created.exit_code == 0, created.output
    assert '"plan": "pro"' in created.output
    listed = run("tenants", "list", "--config", cfg)
    assert "acme" in listed.output and "pro" in listed.output
    key = run("keys", "create", "--tenant", "acme", "--config", cfg)
    assert key.exit_code == 0
    assert key.stdout.strip().startswith("fbx_")
    usage = run("usage", "--group-by", "model", "--config", cfg)
    assert usage.exit_code == 0 and "cost_usd" in usage.output


def test_cli_errors_are_clear(cfg: str) -> None:
    dup = run("tenants", "create", "dup", "--plan", "pro", "--config", cfg)
    assert dup.exit_code == 0
    again = run("tenants", "create", "dup", "--plan", "pro", "--config", cfg)
    assert again.exit_code != 0 and "already exists" in again.output
    bad_plan = run("tenants", "create", "x", "--plan", "nope", "--config", cfg)
    assert bad_plan.exit_code != 0 and "Unknown plan 'nope'" in bad_plan.output
    missing = run("keys", "revoke", "key_missing", "--config", cfg)
    assert missing.exit_code != 0 and "not found" in missing.output
    no_tenant = run("keys", "create", "--config", cfg)
    assert no_tenant.exit_code != 0 and "--tenant" in no_tenant.output
    remote = run("tenants", "list", "--url", "http://127.0.0.1:9")
    assert remote.exit_code != 0 and "cannot reach" in remote.output


async def test_usage_group_by_and_openapi(make_gateway: Any) -> None:
    config = {"plans": {"pro": {"models": ["*"], "pricing": {"markup": "1.5"}}}}
    async with make_gateway(config) as gw:
        keys = {t: await gw.tenant_key(t, "pro") for t in ("a", "b")}
        for tenant, model in (("a", "gpt-4o-mini"), ("a", "gpt-4o"), ("b", "gpt-4o-mini")):
            r = await gw.client.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "x"}]},
                headers={"Authorization": f"Bearer {keys[tenant]}", "X-Farebox-Feature": "f1"},
            )
            assert r.status_code == 200
        by_model = await gw.client.get("/admin/v1/usage?tenant=a&group_by=model", headers=gw.admin)
        rows = {row["model"]: row for row in by_model.json()["data"]}
        assert set(rows) == {"gpt-4o-mini", "gpt-4o"}
        assert all(row["requests"] == 1 for row in rows.values())
        by_tenant = await gw.client.get("/admin/v1/usage?group_by=tenant", headers=gw.admin)
        assert [r["tenant"] for r in by_tenant.json()["data"]] == ["a", "b"]
        for group in ("feature", "user", "day", "hour"):
            r = await gw.client.get(f"/admin/v1/usage?group_by={group}", headers=gw.admin)
            assert r.status_code == 200 and sum(x["requests"] for x in r.json()["data"]) == 3
        bad = await gw.client.get("/admin/v1/usage?group_by=color", headers=gw.admin)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
        future = await gw.client.get("/admin/v1/usage?from=2999-01-01", headers=gw.admin)
        assert future.json()["data"] == []
        spec = await gw.client.get("/openapi.json", headers=gw.admin)  # issue 7: behind the key
        assert spec.status_code == 200
        assert "/admin/v1/tenants" in spec.json()["paths"]


async def test_models_and_me_follow_the_plan(make_gateway: Any) -> None:
    limits = [{"scope": "ip", "requests_per_minute": 10}]
    config = {
        "plans": {"free": {"models": ["gpt-4o-mini"], "max_tokens": 256, "rate_limits": limits}}
    }
    async with make_gateway(config) as gw:
        key = await gw.tenant_key("f", "free")
        auth = {"Authorization": f"Bearer {key}"}
        models = (await gw.client.get("/v1/models", headers=auth)).json()
        assert [m["id"] for m in models["data"]] == ["gpt-4o-mini"]
        me = (await gw.client.get("/v1/me", headers=auth)).json()
        assert me["tenant"]["id"] == "f" and me["plan"] == "free"
        assert me["models"] == ["gpt-4o-mini"] and me["max_tokens"] == 256
        assert me["rate_limits"] == [{"scope": "ip", "requests_per_minute": 10, "window_s": 60}]
        assert me["policy"]["max_tokens"] == 256 and me["policy"]["tools"]["deny"] == []
        r = await gw.client.post(
            "/v1/chat/completions",
            json={
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 5000,
            },
            headers=auth,
        )
        assert r.status_code == 200
        [entry] = await gw.ledger("f")
        assert entry.output_tokens <= 256  # clamped to the plan's cap


def test_budgets_set_increase_and_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAREBOX_ADMIN_KEY", raising=False)
    path = tmp_path / "farebox.yaml"
    path.write_text(
        f'database: "sqlite:///{tmp_path / "b.db"}"\n'
        "plans:\n  pro: {models: ['*'], budgets: [{period: day, limit_usd: '1'}]}\n"
    )
    cfg = str(path)
    assert run("tenants", "create", "acme", "--plan", "pro", "--config", cfg).exit_code == 0
    shown = run("budgets", "show", "acme", "--config", cfg)
    assert shown.exit_code == 0, shown.output
    assert "tenant" in shown.output and "1.00" in shown.output
    assert (
        run("budgets", "set", "acme", "--period", "day", "--limit", "5", "--config", cfg).exit_code
        == 0
    )
    increase = ["budgets", "increase", "acme", "--config", cfg]
    raised = run(*increase, "--period", "day", "--amount", "2.5", "--for", "24h")
    assert raised.exit_code == 0, raised.output
    shown = run("budgets", "show", "acme", "--config", cfg)
    assert "7.50" in shown.output, shown.output
    bad = run("budgets", "increase", "acme", "--period", "week", "--amount", "1",
              "--config", cfg)  # fmt: skip
    assert bad.exit_code != 0 and "no tenant week budget" in bad.output
    bad_for = run(*increase, "--period", "day", "--amount", "1", "--for", "soon")
    assert bad_for.exit_code != 0 and "--for" in bad_for.output


def test_margins_reconcile_and_export_commands(cfg: str) -> None:
    import time as _time

    assert run("tenants", "create", "acme", "--plan", "pro", "--config", cfg).exit_code == 0
    month = _time.strftime("%Y-%m", _time.gmtime())
    margins = run("margins", "--month", month, "--config", cfg)
    assert margins.exit_code == 0, margins.output
    assert "acme" in margins.output and "TOTAL" in margins.output and "margin_usd" in margins.output
    bad = run("margins", "--month", "May", "--config", cfg)
    assert bad.exit_code != 0 and "2026-11" in bad.output
    recon = run("reconcile", "--month", month, "--config", cfg)
    assert recon.exit_code == 0 and "delivered" in recon.output
    export = run("export", "--config", cfg)
    assert export.exit_code != 0 and "no billing sinks configured" in export.output

"""``farebox workspaces`` and ``farebox keys create --workspace --metadata --alert-threshold``
on the local database (through the in-process admin API)."""

from __future__ import annotations

import json
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
        f'database: "sqlite:///{tmp_path / "cli.db"}"\nplans:\n  pro: {{models: ["*"]}}\n'
    )
    return str(path)


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_workspaces_and_keys_in_them(cfg: str) -> None:
    assert run("tenants", "create", "acme", "--plan", "pro", "--config", cfg).exit_code == 0
    budgets = '[{"scope": "workspace", "period": "month", "limit_usd": "200"}]'
    made = run("workspaces", "create", "acme", "ml", "--name", "ML", "--budgets", budgets,
               "--config", cfg)  # fmt: skip
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["budgets"][0]["limit_usd"] == "200"
    listed = run("workspaces", "list", "acme", "--json", "--config", cfg)
    assert [w["id"] for w in json.loads(listed.output)["data"]] == ["default", "ml"]
    changed = run(
        "workspaces", "update", "acme", "ml", "--metadata", '{"cc": "7"}', "--config", cfg
    )
    assert json.loads(changed.output)["metadata"] == {"cc": "7"}
    key = run("keys", "create", "--tenant", "acme", "--workspace", "ml", "--metadata",
              '{"user_email": "a@x.io"}', "--alert-threshold", "80", "--config", cfg)  # fmt: skip
    assert key.exit_code == 0, key.output
    assert key.stdout.strip().startswith("fbx_")
    keys = json.loads(run("keys", "list", "--tenant", "acme", "--json", "--config", cfg).output)
    [k] = keys["data"]
    assert (k["workspace"], k["metadata"], k["alert_threshold"]) == (
        "ml",
        {"user_email": "a@x.io"},
        80,
    )
    refused = run("workspaces", "delete", "acme", "ml", "--config", cfg)
    assert refused.exit_code != 0 and "live key" in refused.output
    assert run("keys", "revoke", k["id"], "--config", cfg).exit_code == 0
    gone = run("workspaces", "delete", "acme", "ml", "--config", cfg)
    assert gone.exit_code == 0 and "deleted workspace ml" in gone.output
    missing = run("keys", "create", "--tenant", "acme", "--workspace", "ml", "--config", cfg)
    assert missing.exit_code != 0 and "not found" in missing.output
    bad = run("workspaces", "create", "acme", "x", "--budgets", "{}", "--config", cfg)
    assert bad.exit_code != 0 and "JSON list" in bad.output
    nothing = run("workspaces", "update", "acme", "default", "--config", cfg)
    assert nothing.exit_code != 0 and "Nothing to change" in nothing.output

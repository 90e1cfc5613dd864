"""Issue [13]: ``farebox credits grant`` and ``farebox credits show`` on a local database
(``--config``): the same grants and balance as the admin API, once per key, and the API's
refusals as one line."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from farebox.cli import main

CONFIG = {
    "database": "sqlite:///farebox.db",
    "providers": {"sim": {"kind": "mock"}},
    "plans": {"prepaid": {"models": ["*"], "pricing": {"credits": {"per_usd": 100}}}},
}


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    config = tmp_path / "farebox.yaml"
    if not config.exists():
        config.write_text(yaml.safe_dump(CONFIG))
    env = {"FAREBOX_ADMIN_KEY": "fba_credits_cli_admin_key_0123456789abcdef"}
    result = CliRunner().invoke(main, [*args, "--config", str(config)], env=env)
    return result.exit_code, result.output


def test_credits_are_granted_once_and_shown(tmp_path: Path, monkeypatch: object) -> None:
    import os

    os.chdir(tmp_path)
    code, out = run(tmp_path, "tenants", "create", "acme", "--plan", "prepaid")
    assert code == 0, out
    code, out = run(tmp_path, "credits", "grant", "acme", "--amount", "1500", "--key", "pay-1")
    assert code == 0, out
    assert "pay-1" in out and "1500.00" in out and "top_up" in out
    code, out = run(tmp_path, "credits", "grant", "acme", "--amount", "1500", "--key", "pay-1",
                    "--json")  # fmt: skip
    assert code == 0, out
    assert json.loads(out)["granted"] == "1500.00"  # the same key grants once
    code, out = run(tmp_path, "credits", "grant", "acme", "--amount", "20", "--key", "pay-1")
    assert code != 0 and "409" in out and "pay-1" in out
    code, out = run(tmp_path, "credits", "grant", "acme", "--amount", "-1", "--key", "x")
    assert code != 0 and "400" in out and "amount" in out
    code, out = run(tmp_path, "credits", "show", "acme", "--json")
    shown = json.loads(out)
    assert shown["balance"] == "1500.00" and len(shown["grants"]) == 1
    assert shown["per_usd"] == "100.00"

"""The CLI has what the admin API has (issue 8): ``tenants get|update``, ``keys list``,
``budgets unset``, ``--json`` on every listing, help on every command and option, and errors
as one readable line. On the local database here; ``test_cli_remote`` does it through --url."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from farebox.cli import main
from farebox.cli.output import error_line

# Options another helper's module still has to describe (cli/demo.py); drop them once it does.
PENDING_HELP = {"demo --host", "demo --port"}


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("FAREBOX_ADMIN_KEY", raising=False)
    path = tmp_path / "farebox.yaml"
    path.write_text(
        f'database: "sqlite:///{tmp_path / "cli.db"}"\n'
        "plans:\n  pro: {models: ['*'], budgets: [{period: day, limit_usd: '1'}]}\n"
    )
    return str(path)


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def walk(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        yield path, command
        if isinstance(command, click.Group):
            yield from walk(command, path + " ")


def test_every_command_and_option_has_help() -> None:
    missing = []
    for path, command in walk(main):
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                name = f"{path} {max(param.opts, key=len)}"
                if name not in PENDING_HELP:
                    missing.append(name)
    assert missing == []
    paths = {path for path, _ in walk(main)}
    assert {"tenants get", "tenants update", "keys list", "budgets unset"} <= paths


def test_help_shows_a_sentence_for_each_option() -> None:
    shown = ok("tenants", "update", "--help")
    assert "Change a tenant" in shown
    for option in ("--plan", "--stripe-customer-id", "--metadata", "--budgets"):
        line = next(x for x in shown.splitlines() if x.strip().startswith(option))
        assert len(line.split(option, 1)[1].strip()) > 10, line


def test_tenants_get_and_update(cfg: str) -> None:
    ok("tenants", "create", "acme", "--plan", "pro", "--config", cfg)
    table = ok("tenants", "get", "acme", "--config", cfg)
    assert table.splitlines()[0].split() == ["field", "value"]
    assert any(line.split() == ["plan", "pro"] for line in table.splitlines())
    changed = json.loads(ok("tenants", "update", "acme", "--name", "Acme Inc",
                            "--stripe-customer-id", "cus_1", "--metadata", '{"team": "x"}',
                            "--config", cfg))  # fmt: skip
    assert changed["name"] == "Acme Inc" and changed["billing"] == {"stripe_customer_id": "cus_1"}
    assert changed["metadata"] == {"team": "x"}
    got = json.loads(ok("tenants", "get", "acme", "--json", "--config", cfg))
    assert got == changed
    limits = '[{"scope": "tenant", "requests_per_minute": 5}]'
    got = json.loads(ok("tenants", "update", "acme", "--rate-limits", limits, "--config", cfg))
    assert got["rate_limits"][0]["requests_per_minute"] == 5 and got["name"] == "Acme Inc"


def test_tenants_update_refuses_nothing_and_bad_json(cfg: str) -> None:
    ok("tenants", "create", "acme", "--plan", "pro", "--config", cfg)
    nothing = run("tenants", "update", "acme", "--config", cfg)
    assert nothing.exit_code == 2 and "Nothing to change" in nothing.output
    bad = run("tenants", "update", "acme", "--metadata", "[1]", "--config", cfg)
    assert bad.exit_code == 2 and "--metadata" in bad.output and "JSON object" in bad.output
    plan = run("tenants", "update", "acme", "--plan", "nope", "--config", cfg)
    assert plan.exit_code == 1
    assert plan.stderr.strip().startswith("Error: 400 invalid_request: Unknown plan 'nope'")


def test_keys_list(cfg: str) -> None:
    ok("tenants", "create", "acme", "--plan", "pro", "--config", cfg)
    ok("keys", "create", "--tenant", "acme", "--name", "first", "--config", cfg)
    made = run("keys", "create", "--tenant", "acme", "--name", "second", "--config", cfg)
    key_id = made.stderr.split("key id: ")[1].split()[0]
    ok("keys", "revoke", key_id, "--config", cfg)
    table = ok("keys", "list", "--tenant", "acme", "--config", cfg).splitlines()
    assert table[0].split()[:4] == ["id", "name", "kind", "prefix"]
    assert len(table) == 3 and time.strftime("%Y-%m-%dT", time.gmtime()) in table[1]
    listed = json.loads(ok("keys", "list", "--tenant", "acme", "--json", "--config", cfg))
    assert listed["object"] == "list"
    by_name = {k["name"]: k for k in listed["data"]}
    assert by_name["second"]["revoked"] is True and by_name["first"]["revoked"] is False
    assert all("key" not in k for k in listed["data"])  # never the secret
    missing = run("keys", "list", "--config", cfg)
    assert missing.exit_code == 2 and "--tenant" in missing.output


def test_budgets_unset_brings_back_the_plans_budget(cfg: str) -> None:
    ok("tenants", "create", "acme", "--plan", "pro", "--config", cfg)
    ok("budgets", "set", "acme", "--period", "day", "--limit", "5", "--config", cfg)
    ok("budgets", "set", "acme", "--period", "week", "--limit", "9", "--config", cfg)
    shown = json.loads(ok("budgets", "show", "acme", "--json", "--config", cfg))
    assert {b["period"]: b["limit_usd"] for b in shown["data"]} == {"day": "5.00", "week": "9.00"}
    done = ok("budgets", "unset", "acme", "--period", "day", "--config", cfg)
    assert "unset" in done
    shown = json.loads(ok("budgets", "show", "acme", "--json", "--config", cfg))
    assert {b["period"]: b["limit_usd"] for b in shown["data"]} == {"day": "1.00", "week": "9.00"}
    ok("budgets", "unset", "acme", "--period", "week", "--config", cfg)
    assert json.loads(ok("tenants", "get", "acme", "--json", "--config", cfg))["budgets"] == []
    again = run("budgets", "unset", "acme", "--period", "day", "--config", cfg)
    assert again.exit_code == 1 and "no tenant day budget of its own" in again.output


def test_json_on_every_listing(cfg: str) -> None:
    ok("tenants", "create", "acme", "--plan", "pro", "--config", cfg)
    month = time.strftime("%Y-%m", time.gmtime())
    listings: list[tuple[list[str], str]] = [
        (["tenants", "list"], "list"),
        (["budgets", "show", "acme"], "list"),
        (["usage", "--group-by", "tenant"], "list"),
        (["anomalies", "list"], "list"),
        (["margins", "--month", month], "margins"),
        (["reconcile", "--month", month], "reconciliation"),
    ]
    for args, kind in listings:
        printed: Any = json.loads(ok(*args, "--json", "--config", cfg))
        assert printed["object"] == kind, (args, printed)
        assert isinstance(printed["data"], list)
    tenants = json.loads(ok("tenants", "list", "--json", "--config", cfg))
    assert [t["id"] for t in tenants["data"]] == ["acme"]


def test_local_errors_are_one_readable_line(cfg: str) -> None:
    ok("tenants", "create", "acme", "--plan", "pro", "--config", cfg)
    cases = {
        ("tenants", "get", "nope"): "Error: 404 tenant_not_found: Tenant 'nope' not found.",
        ("keys", "list", "--tenant", "nope"): "Error: 404 tenant_not_found: Tenant 'nope' not",
        ("keys", "revoke", "key_nope"): "Error: 404 key_not_found: Key 'key_nope' not found.",
        ("usage", "--from", "soon"): "Error: 400 invalid_request: 'from' must be unix seconds",
        ("anomalies", "resolve", "inc_x"): "Error: 404 incident_not_found: Incident 'inc_x'",
    }
    for args, line in cases.items():
        result = run(*args, "--config", cfg)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(line), (args, result.stderr)
        assert "{" not in lines[0]


def test_error_line_reads_the_error_format_or_quotes_the_body() -> None:
    openai = b'{"error": {"message": "Tenant \'x\' not found.", "type": "invalid_request_error",'
    openai += b' "code": "tenant_not_found", "param": null}}'
    assert error_line(404, openai) == "404 tenant_not_found: Tenant 'x' not found."
    anthropic = '{"type": "error", "error": {"type": "not_found_error", "message": "gone\\n ok"}}'
    assert error_line(404, anthropic) == "404 not_found_error: gone ok"
    assert error_line(500, '{"error": {"message": "boom"}}') == "500: boom"
    html = "<html>\n<body>" + "x" * 500 + "</body></html>"
    quoted = error_line(502, html)
    assert quoted.startswith("502: <html> <body>xxx") and len(quoted) == len("502: ") + 200
    assert error_line(503, b"") == "503: (empty body)"
    assert error_line(400, b'{"detail": "x"}') == '400: {"detail": "x"}'

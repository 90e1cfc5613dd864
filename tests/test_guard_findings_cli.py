"""Issue 15's findings on the command line: ``farebox guard findings`` reads them through the
admin API (``GET /admin/v1/guardrails/findings``) as ``farebox audit list`` reads the audit
trail: in process on the local database (``--config``) or a running gateway's (``--url``), the
same JSON either way. A table row per finding (never the matched text), filters by tenant,
detector, category, action and time, ``--limit`` over the API's pages; bad input is one clear
line and a non-zero exit, never a traceback."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from farebox.cli import main
from farebox.cli.terminal import Terminal
from farebox.core.records import LedgerEntry
from farebox.stores.sqlite.store import SQLiteStore
from tests.e2e import ADMIN_KEY, child_env, serve, write_config
from tests.test_guardrail_findings import LEAK, NOW, entry, finding

PLANS = {"pro": {"models": ["*"]}}
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BULK = 230  # globex's requests with a finding: more than one page of the API (200)


def cli(*args: str, obj: Terminal | None = None) -> Result:
    env = {"FAREBOX_ADMIN_KEY": ADMIN_KEY, "FAREBOX_DATABASE": None, "FAREBOX_CONFIG": None}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False, obj=obj)


def entries() -> list[LedgerEntry]:
    """acme: three requests with findings (one with two) and one without; globex: many."""
    acme = [
        entry("acme", "key_acme", finding(text=LEAK), started_at=NOW - 300),
        entry(
            "acme",
            "key_acme",
            finding("secrets", "aws_access_key", "blocked"),
            finding("pii", "PHONE_NUMBER", "redacted"),
            started_at=NOW - 200,
        ),  # fmt: skip
        entry("acme", "key_acme", started_at=NOW - 150),
        entry(
            "acme",
            "key_acme",
            finding("injection_rules", "instruction_override", "flagged"),
            started_at=NOW - 100,
        ),  # fmt: skip
    ]
    globex = [entry("globex", "key_globex", finding("abuse", "prompt_stuffing", "flagged"),
                    started_at=NOW - 10_000 - i) for i in range(BULK)]  # fmt: skip
    return acme + globex


async def write_ledger(database: Path, rows: list[LedgerEntry]) -> None:
    store = SQLiteStore(database)  # another process on the file, as the gateway's workers
    await store.open()
    try:
        await store.append_ledger(rows)
    finally:
        await store.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A config whose database holds the findings, and a gateway serving it."""
    directory = tmp_path_factory.mktemp("guard-findings-cli")
    config = write_config(directory, plans=PLANS, server={"single_process": False})
    rows = entries()
    with serve(config, cwd=directory) as server:  # migrates the database as it starts
        asyncio.run(write_ledger(directory / "farebox.db", rows))
        yield {"config": str(config), "url": server.base_url, "rows": rows}


def local(site: dict[str, Any], *args: str) -> Result:
    result = cli("guard", "findings", *args, "--config", site["config"])
    assert result.exit_code == 0, result.output
    return result


def table(result: Result) -> list[list[str]]:
    """The plain table's rows (off a terminal), past its header."""
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["at", "tenant", "request_id", "detector", "category", "action",
                                "score", "where"]  # fmt: skip
    return [line.split() for line in lines[1:]]


def test_a_table_row_per_finding_newest_first(site: dict[str, Any]) -> None:
    rows = site["rows"]
    shown = table(local(site, "--tenant", "acme"))
    assert [(r[2], r[3], r[4], r[5]) for r in shown] == [
        (rows[3].request_id, "injection_rules", "instruction_override", "flagged"),
        (rows[1].request_id, "secrets", "aws_access_key", "blocked"),
        (rows[1].request_id, "pii", "PHONE_NUMBER", "redacted"),
        (rows[0].request_id, "pii", "EMAIL_ADDRESS", "redacted"),
    ]
    assert shown[-1][0] == "2029-12-31T23:55:00.000Z" and shown[-1][6:] == ["0.93", "user"]
    pii = table(local(site, "--tenant", "acme", "--detector", "pii"))  # its findings only
    assert [(r[2], r[4]) for r in pii] == [(rows[1].request_id, "PHONE_NUMBER"),
                                           (rows[0].request_id, "EMAIL_ADDRESS")]  # fmt: skip
    blocked = table(local(site, "--action", "blocked"))
    assert [r[2] for r in blocked] == [rows[1].request_id]
    window = table(local(site, "--from", str(NOW - 250), "--to", "2029-12-31T23:58:20Z"))
    assert [r[2] for r in window] == [rows[1].request_id] * 2  # [from, to)
    assert LEAK not in local(site).output + local(site, "--json").output


def test_a_terminal_gets_a_rich_table(site: dict[str, Any]) -> None:
    terminal = Terminal(force=True, width=200, color=False)
    shown = cli("guard", "findings", "--tenant", "acme", "--config", site["config"], obj=terminal)
    assert shown.exit_code == 0, shown.output
    lines = ANSI.sub("", shown.stdout).splitlines()
    assert lines[0].strip() == "Guardrail findings"
    assert lines[-1].strip() == "4 findings in 3 requests"
    row = next(line for line in lines if site["rows"][0].request_id in line)
    assert row.split()[-4:] == ["EMAIL_ADDRESS", "redacted", "0.93", "user"]
    more = cli("guard", "findings", "--limit", "1", "--config", site["config"], obj=terminal)
    last = ANSI.sub("", more.stdout).splitlines()[-1].strip()
    assert last == "1 finding in 1 request (more: raise --limit)"


def test_json_is_the_admin_apis_and_the_same_through_url(site: dict[str, Any]) -> None:
    rows = site["rows"]
    mine = json.loads(local(site, "--tenant", "acme", "--json").stdout)
    assert [r["request_id"] for r in mine["data"]] == [rows[3].request_id, rows[1].request_id,
                                                       rows[0].request_id]  # fmt: skip
    assert mine["next_cursor"] is None
    assert mine["data"][1]["findings"] == [
        {"detector": "secrets", "category": "aws_access_key", "action": "blocked",
         "score": 0.93, "where": "user"},
        {"detector": "pii", "category": "PHONE_NUMBER", "action": "redacted", "score": 0.93,
         "where": "user"},
    ]  # fmt: skip
    for args in (["--tenant", "acme"], ["--detector", "abuse", "--limit", "5"], []):
        remote = cli("guard", "findings", *args, "--json", "--url", site["url"])
        assert remote.exit_code == 0, remote.output
        assert json.loads(remote.stdout) == json.loads(local(site, *args, "--json").stdout)
        tables = cli("guard", "findings", *args, "--url", site["url"]).stdout
        assert tables == local(site, *args).stdout


def test_limit_reads_past_one_page_of_the_api(site: dict[str, Any]) -> None:
    globex = [r.request_id for r in site["rows"][4:]]
    some = json.loads(local(site, "--tenant", "globex", "--limit", "210", "--json").stdout)
    assert [r["request_id"] for r in some["data"]] == globex[:210]
    assert some["next_cursor"] is not None  # more remain
    every = json.loads(local(site, "--tenant", "globex", "--limit", "1000", "--json").stdout)
    assert [r["request_id"] for r in every["data"]] == globex and every["next_cursor"] is None
    assert len(table(local(site, "--limit", "3"))) == 4  # acme's three: its second has two
    assert len(table(local(site))) == 51  # 50 requests (the default), acme's second has two


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["--from", "yesterday"], 2, "Invalid value for '--from': 'yesterday' is not a time"),
        (["--to", "2026-13-45"], 2, "Invalid value for '--to'"),
        (["--from", "1e400"], 2, "Invalid value for '--from'"),
        (["--limit", "0"], 2, "Invalid value for '--limit'"),
        (["--action", "ignored"], 2, "Invalid value for '--action'"),
        (["--detectr", "pii"], 2, "Did you mean '--detector'?"),
        (["--tenant", "a b"], 1, "Error: 400 invalid_request: tenant: String should match"),
        (["--detector", "x" * 200], 1, "400 invalid_request"),
    ],
)
def test_bad_input_is_one_clear_line(
    site: dict[str, Any], args: list[str], code: int, said: str
) -> None:
    result = cli("guard", "findings", *args, "--config", site["config"])
    assert result.exit_code == code, result.output
    assert said in result.output
    assert "Traceback" not in result.output


def test_the_installed_command_prints_no_traceback(site: dict[str, Any]) -> None:
    ran = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-c", "from farebox.cli import main; main()", "guard", "findings",
         "--from", "not-a-date", "--config", site["config"]],
        capture_output=True, text=True, env=child_env(), timeout=60, check=False,
    )  # fmt: skip
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert "Error: Invalid value for '--from'" in ran.stderr
    ok = subprocess.run(  # noqa: S603
        [sys.executable, "-c", "from farebox.cli import main; main()", "guard", "findings",
         "--tenant", "acme", "--limit", "1", "--config", site["config"]],
        capture_output=True, text=True, env=child_env(), timeout=60, check=False,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert site["rows"][3].request_id in ok.stdout

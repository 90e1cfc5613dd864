"""CLI output for people (issue [11]): on a terminal, ``usage``, ``margins``, ``reconcile``,
``tenants list``, ``keys list``, ``anomalies list`` and ``export`` print rich tables whose
totals equal the ``--json`` numbers; ``--json`` and the plain (piped) output stay as they
were; long commands show a progress bar on a terminal only.

The terminal is forced through the CLI's seam (``Terminal`` as the root context's object);
CliRunner's captured streams are not terminals, so without it the output is the plain one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from fakes.billing import WebhookFake
from farebox.cli import main
from farebox.cli.tables import column_totals, group_digits
from farebox.cli.terminal import Terminal
from farebox.core.money import format_usd, parse_usd
from tests.conftest import ADMIN_KEY

SECRET = "whsec-cli-rich"
TENANTS = ("acme", "globex")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
FORCED = Terminal(force=True, width=220, color=False)
MONTH = time.strftime("%Y-%m", time.gmtime())


@contextlib.contextmanager
def threaded(fake: WebhookFake) -> Iterator[WebhookFake]:
    """The fake on its own event loop in a thread, so that the CLI (which runs its own loop
    in this thread) can reach it."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="webhook-fake", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(fake.start(), loop).result(10)
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def traffic(config: Path) -> None:
    """Tenants with keys and a few metered requests each, through an in-process gateway."""
    from farebox.app import create_app
    from farebox.config.settings import load_settings

    app = create_app(load_settings(str(config)), announce=lambda _m: None)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            for n, tenant in enumerate(TENANTS):
                r = await client.post("/admin/v1/tenants", json={"id": tenant}, headers=admin)
                assert r.status_code in (200, 201), r.text
                r = await client.post(f"/admin/v1/tenants/{tenant}/keys", json={"name": "k"},
                                      headers=admin)  # fmt: skip
                auth = {"Authorization": f"Bearer {r.json()['key']}"}
                for i in range(3 + 2 * n):
                    body = {"model": ("gpt-4o-mini", "gpt-4o")[i % 2],
                            "messages": [{"role": "user", "content": f"hello {i}"}]}  # fmt: skip
                    r = await client.post("/v1/chat/completions", json=body, headers=auth)
                    assert r.status_code == 200, r.text


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A config with a webhook billing sink (a loopback fake), and a ledger with entries."""
    monkeypatch.setenv("FAREBOX_ADMIN_KEY", ADMIN_KEY)
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    with threaded(WebhookFake(SECRET.encode())) as fake:
        data = {
            "database": f"sqlite:///{tmp_path / 'farebox.db'}",
            "plans": {"pro": {"models": ["*"], "pricing": {"markup": "1.25",
                                                           "monthly_fee_usd": "1000"}}},
            "default_plan": "pro",
            "billing": {"in_serve": False, "sinks": {"hook": {
                "kind": "webhook", "base_url": fake.root_url + "/hooks/billing",
                "secret": "env:WEBHOOK_SECRET", "max_attempts": 3}}},
        }  # fmt: skip
        path = tmp_path / "farebox.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        asyncio.run(traffic(path))
        yield str(path)


def run(*args: str, terminal: Terminal | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), obj=terminal, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def rows(output: str) -> list[list[str]]:
    """The cells of a rich table's rows (after the rule under the header), digits
    ungrouped; blank lines (the totals row's section break) and the caption (not indented)
    are skipped."""
    lines = ANSI.sub("", output).splitlines()
    start = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    found = []
    for line in lines[start + 1 :]:
        if line.strip() and line.startswith(" "):
            found.append([c.replace(",", "") for c in re.split(r"\s{2,}", line.strip())])
    return found


def header(output: str) -> list[str]:
    lines = ANSI.sub("", output).splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line.strip()) == {"─"})
    return lines[rule - 1].split()


USAGE = ("requests", "input_tokens", "output_tokens", "cost_usd", "revenue_usd")


def test_usage_table_rows_and_totals_equal_the_json(cfg: str) -> None:
    table = run("usage", "--group-by", "tenant", "--config", cfg, terminal=FORCED).stdout
    grouped = json.loads(run("usage", "--group-by", "tenant", "--json", "--config", cfg).stdout)
    overall = json.loads(run("usage", "--json", "--config", cfg).stdout)["data"][0]
    assert header(table) == ["tenant", *USAGE]
    shown = {r[0]: r[1:] for r in rows(table)}
    assert set(shown) == {*TENANTS, "TOTAL"}
    for row in grouped["data"]:
        assert shown[row["tenant"]] == [str(row[c]) for c in USAGE]
    assert shown["TOTAL"] == [str(overall[c]) for c in USAGE]  # the ledger's own total
    assert overall["requests"] == 3 + 5 and parse_usd(overall["cost_usd"]) > 0
    # money is the exact string: more than cents, never a rounded float
    assert shown["TOTAL"][3] == overall["cost_usd"] and "e" not in shown["TOTAL"][3]


def test_margins_table_totals_equal_the_json(cfg: str) -> None:
    table = run("margins", "--month", MONTH, "--config", cfg, terminal=FORCED).stdout
    report = json.loads(run("margins", "--month", MONTH, "--json", "--config", cfg).stdout)
    numbers = ["requests", "plan_fee_usd", "usage_revenue_usd", "revenue_usd", "cost_usd",
               "margin_usd", "margin_percent"]  # fmt: skip
    shown = {r[0]: r for r in rows(table)}
    assert set(shown) == {*TENANTS, "TOTAL"}
    for row in report["data"]:
        assert shown[row["tenant"]] == [row["tenant"], row["plan"]] + [str(row[c]) for c in numbers]
    assert shown["TOTAL"][-len(numbers) :] == [str(report["total"][c]) for c in numbers]
    assert report["total"]["plan_fee_usd"] == "2000.00"
    assert "2,000.00" in ANSI.sub("", table)  # digits grouped for people, value unchanged


def test_listings_show_their_rows_on_a_terminal(cfg: str) -> None:
    tenants = run("tenants", "list", "--config", cfg, terminal=FORCED).stdout
    assert header(tenants) == ["id", "name", "plan", "paused"]
    assert [r[0] for r in rows(tenants)] == list(TENANTS)
    assert all(r[-1] == "no" for r in rows(tenants)) and "2 tenants" in tenants
    listed = json.loads(run("keys", "list", "--tenant", "acme", "--json", "--config", cfg).stdout)
    keys = run("keys", "list", "--tenant", "acme", "--config", cfg, terminal=FORCED).stdout
    assert [r[0] for r in rows(keys)] == [k["id"] for k in listed["data"]]
    assert "Keys of tenant acme" in keys
    incidents = run("anomalies", "list", "--config", cfg, terminal=FORCED).stdout
    assert header(incidents)[:3] == ["id", "status", "tenant"] and "none" in incidents
    recon = run("reconcile", "--month", MONTH, "--config", cfg, terminal=FORCED).stdout
    report = json.loads(run("reconcile", "--month", MONTH, "--json", "--config", cfg).stdout)
    assert len(rows(recon)) == len(report["data"]) > 0
    for shown, row in zip(rows(recon), report["data"], strict=True):
        assert shown[:6] == [row["sink"], row["tenant"], row["meter"], row["ledger"],
                             row["delivered"], row["dead"]]  # fmt: skip
    assert "NOT matched" in recon  # nothing was exported yet: all of it is pending


LISTINGS = (
    ("usage", "--group-by", "tenant"),
    ("usage",),
    ("margins", "--month", MONTH),
    ("reconcile", "--month", MONTH),
    ("tenants", "list"),
    ("keys", "list", "--tenant", "acme"),
    ("anomalies", "list"),
    ("tenants", "get", "acme"),
)


def test_json_and_plain_output_are_what_scripts_had(cfg: str) -> None:
    for args in LISTINGS:
        plain = run(*args, "--json", "--config", cfg).stdout
        forced = run(*args, "--json", "--config", cfg, terminal=FORCED).stdout
        assert forced == plain == json.dumps(json.loads(plain), indent=2) + "\n", args
        text = run(*args, "--config", cfg).stdout
        assert not ANSI.search(text) and "─" not in text, args
        assert ("TOTAL" in text) == (args[0] == "margins"), args  # as before: margins only
    # the plain tables: a header of the column names, then one line per row (no totals row)
    usage = run("usage", "--group-by", "tenant", "--config", cfg).stdout.splitlines()
    assert usage[0].split() == ["tenant", *USAGE] and len(usage) == 1 + len(TENANTS)
    margins = run("margins", "--month", MONTH, "--config", cfg).stdout.splitlines()
    assert margins[-1].split()[0] == "TOTAL" and len(margins) == 2 + len(TENANTS)


def test_export_replay_table_and_a_bar_only_on_a_terminal(cfg: str) -> None:
    events = json.loads(run("reconcile", "--month", MONTH, "--json", "--config", cfg).stdout)
    plain = run("export", "--sink", "hook", "--from", "0", "--config", cfg)
    match = re.fullmatch(r"hook: replayed (\d+) events \((\d+) delivered, 0 dead\)\n", plain.stdout)
    assert match and int(match.group(1)) == int(match.group(2)) > 0, plain.stdout
    assert plain.stderr == ""  # nothing extra off a terminal
    forced = run("export", "--sink", "hook", "--from", "0", "--config", cfg, terminal=FORCED)
    shown = {r[0]: r[1:] for r in rows(forced.stdout)}
    assert set(shown) == {"hook", "TOTAL"}
    assert shown["TOTAL"][1:] == shown["hook"][1:] == [match.group(1), match.group(1), "0"]
    assert "replaying hook" in ANSI.sub("", forced.stderr) and "1/1" in forced.stderr
    assert events["data"]  # the replay sent the month's entries


def test_export_catch_up_table_equals_the_lines(cfg: str) -> None:
    forced = run("export", "--config", cfg, terminal=FORCED)
    shown = {r[0]: [int(x) for x in r[1:]] for r in rows(forced.stdout)}
    entries = 3 + 5
    assert shown["hook"][0] == shown["TOTAL"][0] == entries
    assert shown["hook"][2] == shown["hook"][1] > 0 and shown["hook"][3] == 0
    assert "exporting hook" in ANSI.sub("", forced.stderr)
    again = run("export", "--config", cfg)  # caught up: no round, no line, no bar
    assert again.stdout == "" and again.stderr == ""
    recon = json.loads(run("reconcile", "--month", MONTH, "--json", "--config", cfg).stdout)
    assert recon["matched"] is True


def test_simulate_progress_bar_only_on_a_terminal() -> None:
    args = ("simulate", "--tenants", "3", "--onboarding", "0", "--days", "2",
            "--history-days", "1", "--anomalies", "none")  # fmt: skip
    plain = run(*args)
    assert plain.stderr == "day 1/2\nday 2/2\n"  # the lines it always printed
    forced = run(*args, terminal=FORCED)
    assert "simulating 2 days" in forced.stderr and "48/48" in forced.stderr
    assert "day 1/2" not in forced.stderr
    assert forced.stdout == plain.stdout  # the report itself is the same
    quiet = run(*args, "--json", terminal=FORCED)
    assert quiet.stderr == "" and json.loads(quiet.stdout)["days"] == 2


@given(st.integers(min_value=-(10**20), max_value=10**20))
def test_grouped_digits_are_the_same_exact_amount(pico: int) -> None:
    text = format_usd(pico)
    shown = group_digits(text)
    assert shown.replace(",", "") == text
    assert parse_usd(shown.replace(",", "")) == pico


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(-(10**15), 10**15)), max_size=20))
def test_column_totals_are_exact(values: list[tuple[int, int]]) -> None:
    table: list[dict[str, Any]] = [{"requests": n, "cost_usd": format_usd(p)} for n, p in values]
    total = column_totals(table, ["requests", "cost_usd"], ("tenant", "TOTAL"))
    assert total["tenant"] == "TOTAL"
    assert total["requests"] == sum(n for n, _ in values)
    assert parse_usd(total["cost_usd"]) == sum(p for _, p in values)


def test_requests_pages_with_totals_equal_to_the_json(cfg: str) -> None:
    page = json.loads(run("requests", "--limit", "5", "--json", "--config", cfg).stdout)
    assert len(page["data"]) == 5 and page["next_cursor"]
    table = run("requests", "--limit", "5", "--config", cfg, terminal=FORCED).stdout
    shown = rows(table)
    assert [r[0] for r in shown] == [e["time"] for e in page["data"]] + ["TOTAL"]
    total = shown[-1]
    assert total[1:4] == [
        str(sum(e["tokens"]["input"] for e in page["data"])),
        str(sum(e["tokens"]["output"] for e in page["data"])),
        format_usd(sum(parse_usd(e["cost_usd"]) for e in page["data"])),
    ]
    assert f"next page: --cursor {page['next_cursor']}" in ANSI.sub("", table).replace("\n", "")
    plain = run("requests", "--limit", "5", "--config", cfg)
    assert plain.stdout.splitlines()[0].split()[:3] == ["time", "tenant", "user"]
    assert plain.stderr == f"next page: --cursor {page['next_cursor']}\n"
    rest = run("requests", "--cursor", page["next_cursor"], "--json", "--config", cfg).stdout
    older = json.loads(rest)
    assert older["next_cursor"] is None and len(older["data"]) == 3 + 5 - 5
    assert rest == json.dumps(older, indent=2) + "\n"
    only = json.loads(run("requests", "--tenant", "globex", "--json", "--config", cfg).stdout)
    assert {e["tenant"] for e in only["data"]} == {"globex"} and len(only["data"]) == 5

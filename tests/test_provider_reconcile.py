"""Issue [13], acceptance 6 (second half): a provider's own cost report set against the
ledger, per UTC day and model; a price change the catalog missed is reported for exactly the
right day and model, with the exact difference, and alerts once (signed webhook).

The providers' admin APIs are loopback fakes in their documented shapes
(``fakes.provider_costs``); the data plane is the loopback OpenAI / Anthropic fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from fakes import serve
from fakes.anthropic_upstream import AnthropicUpstream
from fakes.openai_upstream import OpenAIUpstream, usage
from fakes.provider_costs import AnthropicCostsFake, OpenAICostsFake
from farebox.billing.provider_costs import amount_pico, line_item_model
from farebox.billing.provider_reconcile import Thresholds, model_of
from farebox.core.money import parse_usd
from farebox.sinks.webhook import signature

ADMIN_KEY = "sk-admin-test-0123456789"
HOOK_SECRET = "whsec_reconcile_test_secret_0123456789"
MINI, BIG = "gpt-4o-mini-2024-07-18", "gpt-4o-2024-08-06"
MISSED_DAY = "2026-11-17"
DELIVERY_TIMEOUT_S = 10.0


@dataclass
class Hook:
    """A loopback alert webhook; ``arrived`` is set at each delivery."""

    url: str = ""
    received: list[tuple[str, bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(body) for _, body in self.received]


@contextlib.asynccontextmanager
async def hook() -> AsyncIterator[Hook]:
    found = Hook()

    async def handle(request: web.Request) -> web.Response:
        found.received.append((request.headers["x-farebox-signature"], await request.read()))
        found.arrived.set()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner, port = await serve(app)
    found.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield found
    finally:
        await runner.cleanup()


def at(day: int, hour: int = 12) -> float:
    return datetime(2026, 11, day, hour, tzinfo=UTC).timestamp()


def openai_config(up: OpenAIUpstream, costs: OpenAICostsFake, url: str) -> dict[str, Any]:
    return {
        "providers": {"openai": {"kind": "openai", "base_url": up.base_url,
                                 "api_key": "env:OAI_KEY"},
                      "sim": {"kind": "mock"}},
        "models": {"mini": [{"provider": "openai", "model": "gpt-4o-mini"}],
                   "big": [{"provider": "openai", "model": "gpt-4o"}],
                   "local": [{"provider": "sim", "model": "gpt-4o-mini"}]},
        "budgets": {"alert_webhook_url": url, "alert_webhook_secret": "env:HOOK_SECRET"},
        "reconcile": {"threshold_usd": "0.0001", "threshold_percent": "5",
                      "providers": {"openai": {"admin_api_key": "env:OAI_ADMIN",
                                               "base_url": costs.base_url}}},
    }  # fmt: skip


ENV = {"OAI_KEY": "sk-x", "OAI_ADMIN": ADMIN_KEY, "HOOK_SECRET": HOOK_SECRET}


async def test_a_missed_price_change_shows_for_its_day_and_model_and_alerts_once(
    make_gateway: Any,
) -> None:
    clock = {"now": at(1)}
    async with OpenAIUpstream() as up, OpenAICostsFake(ADMIN_KEY) as costs, hook() as alerts:
        cfg = openai_config(up, costs, alerts.url)
        async with make_gateway(cfg, env=ENV, clock=lambda: clock["now"]) as gw:
            key = await gw.tenant_key("acme")
            recorded: dict[tuple[str, str], str] = {}
            for day in range(1, 31):  # a month: each day one request of each model
                clock["now"] = at(day)
                for alias, model in (("mini", "gpt-4o-mini"), ("big", "gpt-4o")):
                    up.reply_chat("ok", usage=usage(1000, 500))
                    r = await gw.client.post(
                        "/v1/chat/completions",
                        json={"model": alias, "messages": [{"role": "user", "content": "hi"}]},
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    assert r.status_code == 200, r.text
                    recorded[(f"2026-11-{day:02d}", model)] = r.headers["x-farebox-cost-usd"]
            # the ledger's prices: gpt-4o-mini 0.15/0.60, gpt-4o 2.50/10.00 per 1M tokens
            assert recorded[(MISSED_DAY, "gpt-4o-mini")] == "0.00045"
            assert recorded[(MISSED_DAY, "gpt-4o")] == "0.0075"
            for day in range(1, 31):
                date = f"2026-11-{day:02d}"
                # on the 17th the provider charged a new input price the catalog missed
                mini_input = "0.0003" if date == MISSED_DAY else "0.00015"
                costs.charge(date, f"{MINI}, input", mini_input)
                costs.charge(date, f"{MINI}, output", "0.0003")
                costs.charge(date, f"{BIG}, input", "0.0025")
                costs.charge(date, f"{BIG}, output", "0.005")
            costs.charge("2026-11-09", "gpt-image-1, image", "0.04")  # no deployment of ours
            r = await gw.client.get(
                "/admin/v1/providers/openai/reconcile?month=2026-11", headers=gw.admin
            )
            assert r.status_code == 200, r.text
            report = r.json()
            await asyncio.wait_for(alerts.arrived.wait(), DELIVERY_TIMEOUT_S)
            again = await gw.client.get(
                "/admin/v1/providers/openai/reconcile?month=2026-11", headers=gw.admin
            )
            assert again.status_code == 200, again.text
    assert report["mismatches"] == [
        {"day": MISSED_DAY, "model": "gpt-4o-mini", "ledger_usd": "0.00045",
         "provider_usd": "0.0006", "difference_usd": "0.00015", "difference_percent": "25.00",
         "complete": True, "alert": True},
    ]  # fmt: skip
    assert len(report["data"]) == 60 and report["alerts"] == 1 and report["alerts_sent"] == 1
    by_key = {(row["day"], row["model"]): row for row in report["data"]}
    assert {k: row["ledger_usd"] for k, row in by_key.items()} == recorded
    assert report["unmapped"] == [
        {"day": "2026-11-09", "label": "gpt-image-1", "provider_usd": "0.04"}
    ]
    # gpt-4o-mini is also served by the mock: its rollups cannot tell the providers apart
    assert report["shared_models"] == ["gpt-4o-mini"]
    total = report["total"]
    assert total == {"ledger_usd": "0.2385", "provider_usd": "0.23865",
                     "difference_usd": "0.00015", "unmapped_usd": "0.04"}  # fmt: skip
    # the month was read in pages of seven days, each cursor followed
    assert len(costs.queries) == 2 * 5
    first = costs.queries[0]
    assert first["group_by"] == ["line_item"] and first["bucket_width"] == ["1d"]
    assert first["start_time"] == [str(int(at(1, 0)))] and "page" not in first
    assert all("page" in q for q in costs.queries[1:5])
    # the alert: once, signed, for that day and model, with the exact amounts
    assert again.json()["alerts"] == 1 and again.json()["alerts_sent"] == 0
    assert again.json()["mismatches"] == report["mismatches"]
    assert len(alerts.received) == 1
    header, body = alerts.received[0]
    stamp = int(header.split(",")[0][2:])
    assert hmac.compare_digest(header, signature(HOOK_SECRET.encode(), stamp, body))
    event = alerts.events()[0]
    assert event["type"] == "provider.cost_mismatch" and event["provider"] == "openai"
    assert (event["day"], event["model"], event["difference_usd"]) == (
        MISSED_DAY,
        "gpt-4o-mini",
        "0.00015",
    )
    assert event["threshold_usd"] == "0.0001" and event["threshold_percent"] == "5"


async def test_anthropic_cost_report_in_cents_paged(make_gateway: Any) -> None:
    clock = {"now": at(1)}
    async with (
        AnthropicUpstream() as up,
        AnthropicCostsFake("sk-ant-admin-x", page_size=2) as costs,
    ):
        cfg = {
            "providers": {"claude": {"kind": "anthropic", "base_url": up.base_url,
                                     "api_key": "env:ANT_KEY"}},
            "models": {"sonnet": [{"provider": "claude", "model": "claude-sonnet-4-5"}]},
            "reconcile": {"threshold_usd": "0.01",
                          "providers": {"claude": {"admin_api_key": "env:ANT_ADMIN",
                                                   "base_url": costs.base_url}}},
        }  # fmt: skip
        env = {"ANT_KEY": "sk-ant-x", "ANT_ADMIN": "sk-ant-admin-x"}
        async with make_gateway(cfg, env=env, clock=lambda: clock["now"]) as gw:
            key = await gw.tenant_key("acme")
            for day in (1, 2, 3):
                clock["now"] = at(day)
                r = await gw.client.post(
                    "/v1/messages",
                    json={"model": "sonnet", "max_tokens": 50,
                          "messages": [{"role": "user", "content": "hi"}]},
                    headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
                )  # fmt: skip
                assert r.status_code == 200, r.text
            entries = await gw.ledger("acme")
            per_day = {datetime.fromtimestamp(e.started_at, UTC).day: e.cost for e in entries}
            model = "claude-sonnet-4-5-20250929"
            for day, pico in per_day.items():
                cents = Decimal(pico) / Decimal(10**10)
                if day in (2, 3):
                    cents += Decimal("2.5")  # the provider charged USD 0.025 more
                costs.charge(f"2026-11-{day:02d}", model, "output_tokens", f"{cents:f}")
            costs.charge("2026-11-02", "", "web_search", "1")  # a description-only line
            costs.charges["2026-11-02"][-1]["model"] = None
            r = await gw.client.get(
                "/admin/v1/providers/claude/reconcile?month=2026-11", headers=gw.admin
            )
            assert r.status_code == 200, r.text
    report = r.json()
    # the 3rd is today for the gateway: reported, partial, never an alert
    assert [(m["day"], m["model"], m["difference_usd"], m["complete"], m["alert"])
            for m in report["mismatches"]] == [
        ("2026-11-02", "claude-sonnet-4-5", "0.025", True, True),
        ("2026-11-03", "claude-sonnet-4-5", "0.025", False, False),
    ]  # fmt: skip
    assert report["alerts"] == 1
    assert [u["provider_usd"] for u in report["unmapped"]] == ["0.01"]
    headers = costs.requests[0].headers
    assert headers["x-api-key"] == "sk-ant-admin-x" and headers["anthropic-version"]
    assert costs.queries[0]["group_by[]"] == ["description"]
    # the gateway's today is Nov 3: the month so far, in pages of two days
    assert costs.queries[0]["ending_at"] == ["2026-11-04T00:00:00Z"]
    assert len(costs.queries) == 2 and "page" in costs.queries[1]


async def test_bad_input_is_a_clear_400(make_gateway: Any) -> None:
    async with OpenAIUpstream() as up, OpenAICostsFake(ADMIN_KEY) as costs:
        cfg = openai_config(up, costs, "http://127.0.0.1:9/hook")
        cfg["providers"]["plain"] = {"kind": "openai", "base_url": up.base_url}
        async with make_gateway(cfg, env=ENV) as gw:

            async def ask(name: str, month: str) -> tuple[int, str]:
                path = f"/admin/v1/providers/{name}/reconcile?month={month}"
                r = await gw.client.get(path, headers=gw.admin)
                return r.status_code, r.json()["error"]["message"]

            status, message = await ask("openai", "2099-01")
            assert status == 400 and "2099-01 has not started" in message
            status, message = await ask("nope", "2026-11")
            assert status == 400 and "Unknown provider 'nope'" in message and "openai" in message
            status, message = await ask("plain", "2026-11")
            assert status == 400 and "no admin credentials" in message
            assert "reconcile.providers.plain.admin_api_key" in message
            status, message = await ask("sim", "2026-11")
            assert status == 400 and "kind 'mock'" in message
            status, message = await ask("openai", "Nov")
            assert status == 400 and "2026-11" in message
            r = await gw.client.get("/admin/v1/providers/openai/reconcile?month=2026-11")
            assert r.status_code == 401
    assert costs.queries == []  # nothing reached the provider


async def test_a_refused_admin_key_is_an_upstream_error(make_gateway: Any) -> None:
    async with OpenAIUpstream() as up, OpenAICostsFake("sk-admin-other") as costs:
        async with make_gateway(openai_config(up, costs, "http://127.0.0.1:9/h"), env=ENV) as gw:
            r = await gw.client.get(
                "/admin/v1/providers/openai/reconcile?month=2026-11", headers=gw.admin
            )
    assert r.status_code == 502
    assert "HTTP 401" in r.json()["error"]["message"] and ADMIN_KEY not in r.text


async def test_serve_reads_the_bill_on_a_schedule_and_alerts_once_the_day_ends(
    make_gateway: Any,
) -> None:
    clock = {"now": at(17)}
    async with OpenAIUpstream() as up, OpenAICostsFake(ADMIN_KEY) as costs, hook() as alerts:
        cfg = openai_config(up, costs, alerts.url)
        cfg["reconcile"]["interval_s"] = 0.02
        async with make_gateway(cfg, env=ENV, clock=lambda: clock["now"]) as gw:
            key = await gw.tenant_key("acme")
            up.reply_chat("ok", usage=usage(1000, 500))
            r = await gw.client.post(
                "/v1/chat/completions",
                json={"model": "mini", "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.status_code == 200 and r.headers["x-farebox-cost-usd"] == "0.00045"
            costs.charge(MISSED_DAY, f"{MINI}, input", "0.0003")
            costs.charge(MISSED_DAY, f"{MINI}, output", "0.0003")
            ran = len(costs.requests)
            await asyncio.wait_for(costs.wait_requests(ran + 1), DELIVERY_TIMEOUT_S)
            assert alerts.received == []  # the 17th is still running: partial, no alert
            clock["now"] = at(18, 1)  # the 17th has ended
            await asyncio.wait_for(alerts.arrived.wait(), DELIVERY_TIMEOUT_S)
            ran = len(costs.requests)
            await asyncio.wait_for(costs.wait_requests(ran + 3), DELIVERY_TIMEOUT_S)
    events = alerts.events()
    assert len(events) == 1 and events[0]["type"] == "provider.cost_mismatch"
    assert (events[0]["day"], events[0]["model"], events[0]["difference_usd"]) == (
        MISSED_DAY,
        "gpt-4o-mini",
        "0.00015",
    )


def test_the_months_a_scheduled_run_reads() -> None:
    from farebox.billing.provider_watch import months_to_read

    assert months_to_read(at(17)) == ["2026-11"]
    assert months_to_read(datetime(2026, 12, 1, 3, tzinfo=UTC).timestamp()) == [
        "2026-11",
        "2026-12",
    ]


# the money path: exact conversion, the mapping, the thresholds ----------------------------
DECIMALS = st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=12,
                       allow_nan=False, allow_infinity=False)  # fmt: skip


@given(DECIMALS)
def test_usd_amounts_convert_exactly(value: Decimal) -> None:
    text = f"{value:f}"
    assert amount_pico(Decimal(text), 12, "t") == parse_usd(text)
    assert amount_pico(text, 12, "t") == parse_usd(text)


@given(st.decimals(min_value=Decimal("0"), max_value=Decimal("1e11"), places=10,
                   allow_nan=False, allow_infinity=False))  # fmt: skip
def test_cents_convert_exactly(cents: Decimal) -> None:
    assert amount_pico(f"{cents:f}", 10, "t") * 100 == parse_usd(f"{cents:f}")


def test_float_noise_below_a_pico_dollar_rounds_half_even() -> None:
    assert amount_pico(Decimal("0.30000000000000004"), 12, "t") == parse_usd("0.3")
    assert amount_pico(Decimal("0.0000000000005"), 12, "t") == 0
    assert amount_pico(Decimal("0.0000000000015"), 12, "t") == 2


def test_line_items_map_to_our_models() -> None:
    models = frozenset({"gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5"})
    assert line_item_model("gpt-4o-mini-2024-07-18, cached input") == "gpt-4o-mini-2024-07-18"
    assert line_item_model(None) == "(ungrouped)"
    assert model_of("gpt-4o-mini-2024-07-18", models, {}) == "gpt-4o-mini"
    assert model_of("gpt-4o", models, {}) == "gpt-4o"
    assert model_of("claude-sonnet-4-5-20250929", models, {}) == "claude-sonnet-4-5"
    assert model_of("gpt-image-1", models, {}) is None
    assert model_of("ft:gpt-4o:acme", models, {"ft:gpt-4o:acme": "gpt-4o"}) == "gpt-4o"


def test_thresholds() -> None:
    both = Thresholds(parse_usd("1"), "5")
    assert not both.passed(0, 100)
    assert both.passed(parse_usd("1"), parse_usd("20"))  # exactly 5%, exactly USD 1
    assert not both.passed(parse_usd("1"), parse_usd("20.01"))  # under 5%
    assert not both.passed(parse_usd("0.99"), parse_usd("2"))  # under USD 1
    assert both.passed(parse_usd("-2"), 0)  # the provider billed nothing we recorded
    assert Thresholds().passed(1, 10**15)


# the CLI: farebox reconcile --provider ----------------------------------------------------
@contextlib.contextmanager
def costs_in_thread(fake: OpenAICostsFake) -> Iterator[OpenAICostsFake]:
    """The fake served from its own event loop in a thread (the CLI runs its own loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(fake.__aenter__(), loop).result(DELIVERY_TIMEOUT_S)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.__aexit__(), loop).result(DELIVERY_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(DELIVERY_TIMEOUT_S)
        loop.close()


def test_the_cli_reconciles_with_a_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from farebox.cli import main

    for name, value in {**ENV, "FAREBOX_ADMIN_KEY": "fba_cli_reconcile_admin_0123456789"}.items():
        monkeypatch.setenv(name, value)
    with costs_in_thread(OpenAICostsFake(ADMIN_KEY)) as costs:
        costs.charge("2026-11-05", f"{MINI}, input", "0.5")
        config = {
            "database": f"sqlite:///{tmp_path / 'cli.db'}",
            "providers": {"openai": {"kind": "openai", "api_key": "env:OAI_KEY"}},
            "models": {"mini": [{"provider": "openai", "model": "gpt-4o-mini"}]},
            "reconcile": {"providers": {"openai": {"admin_api_key": "env:OAI_ADMIN",
                                                   "base_url": costs.base_url}}},
        }  # fmt: skip
        path = tmp_path / "farebox.yaml"
        path.write_text(orjson.dumps(config).decode())  # JSON is YAML
        cli = ["reconcile", "--provider", "openai", "--month", "2026-11", "--config", str(path)]
        as_json = CliRunner().invoke(main, [*cli, "--json"], catch_exceptions=False)
        table = CliRunner().invoke(main, cli, catch_exceptions=False)
        both = CliRunner().invoke(main, [*cli, "--tenant", "acme"], catch_exceptions=False)
        unknown = CliRunner().invoke(main, [*cli[:2], "nope", *cli[3:]], catch_exceptions=False)
    assert as_json.exit_code == 0, as_json.output
    report = orjson.loads(as_json.stdout)
    assert report["mismatches"] == [
        {"day": "2026-11-05", "model": "gpt-4o-mini", "ledger_usd": "0.00",
         "provider_usd": "0.50", "difference_usd": "0.50", "difference_percent": "100.00",
         "complete": True, "alert": True},
    ]  # fmt: skip
    assert table.exit_code == 0 and "2026-11-05" in table.output and "TOTAL" in table.output
    assert both.exit_code != 0 and "--tenant" in both.output
    assert unknown.exit_code != 0 and "Unknown provider 'nope'" in unknown.output


def test_the_reconcile_section_is_checked_at_start_up(tmp_path: Path) -> None:
    from farebox.config.settings import parse_settings
    from farebox.errors import ConfigError

    def settings(reconcile: dict[str, Any], env: dict[str, str] | None = None) -> Any:
        data = {"providers": {"openai": {"kind": "openai"}, "sim": {"kind": "mock"}},
                "reconcile": reconcile}  # fmt: skip
        return parse_settings(data, source="t.yaml", env=env or {}, base_dir=tmp_path)

    key = {"admin_api_key": "env:OAI_ADMIN"}
    ok = settings({"providers": {"openai": key}}, {"OAI_ADMIN": ADMIN_KEY})
    assert ok.reconcile_keys == {"openai": ADMIN_KEY}
    problems = {
        "no provider named 'nope'": ({"providers": {"nope": key}}, {"OAI_ADMIN": "k"}),
        "kind 'mock' has no cost report": ({"providers": {"sim": key}}, {"OAI_ADMIN": "k"}),
        "OAI_ADMIN is not set": ({"providers": {"openai": key}}, {}),
        "reconcile.threshold_usd": ({"threshold_usd": "0.0000000000001"}, {}),
    }
    for words, (section, env) in problems.items():
        with pytest.raises(ConfigError, match=words):
            settings(section, env)
    with pytest.raises(ConfigError, match="env:NAME"):
        settings({"providers": {"openai": {"admin_api_key": "sk-admin-literal"}}})


ROWS = st.lists(
    st.tuples(st.sampled_from(["2026-11-01", "2026-11-02"]),
              st.sampled_from(["gpt-4o-mini-2024-07-18", "gpt-4o", "gpt-image-1", "(ungrouped)"]),
              st.integers(min_value=-(10**15), max_value=10**15)),
    max_size=30,
)  # fmt: skip
LEDGER = st.dictionaries(
    st.tuples(st.sampled_from(["2026-11-01", "2026-11-03"]), st.sampled_from(["gpt-4o-mini"])),
    st.integers(min_value=0, max_value=10**15),
)


@given(ROWS, LEDGER)
def test_no_amount_is_lost_or_invented(rows: list[tuple[str, str, int]], ledger: Any) -> None:
    from farebox.billing.provider_costs import CostRow
    from farebox.billing.provider_reconcile import lines, provider_costs

    models = frozenset({"gpt-4o-mini", "gpt-4o"})
    bill, unmapped = provider_costs([CostRow(*r) for r in rows], models, {})
    assert sum(bill.values()) + sum(unmapped.values()) == sum(r[2] for r in rows)
    report = lines(ledger, bill)
    assert sum(line.difference for line in report) == sum(bill.values()) - sum(ledger.values())
    assert len({(line.day, line.model) for line in report}) == len(report)

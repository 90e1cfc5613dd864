"""Issue [13], "Seen" (GraphQL): credits, the invoice preview, plan profitability and top
spenders by month on the admin schema, and a tenant's own credits and invoice on the tenant
schema, each equal to the admin REST answer for the same data; bad arguments are errors; the
cost limit counts the new fields."""

from __future__ import annotations

from typing import Any

from graphql import parse

from farebox.api.graphql.limits import MAX_COST, query_cost
from tests.revenue_seed import CONFIG, PREPAID, TENANTS, rest, seed, this_month
from tests.test_graphql_api import camelised, data, gql

GRANT = ("id kind amount remaining burned expired expiresAt createdAt source idempotencyKey "
         "note")  # fmt: skip
CREDITS = f"tenant perUsd balance reserved burned granted expired grants {{ {GRANT} }}"
LINE = "kind description quantity unit amountUsd counted"
INVOICE = f"tenant plan month requests feeUsd usageUsd totalUsd creditsBurned lines {{ {LINE} }}"
USAGE_TENANT = "tenant costUsd revenueUsd marginUsd profitable"
PLAN = ("plan tenants marginP10Usd marginP50Usd marginP90Usd profitableShare revenueUsd costUsd "
        f"marginUsd p90UsageTenant {{ {USAGE_TENANT} }}")  # fmt: skip


def credits_rest(view: dict[str, Any]) -> dict[str, Any]:
    return {**camelised(view), "grants": [camelised(g) for g in view["grants"]]}


def invoice_rest(view: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in view.items() if k != "object"}
    return {**camelised(fields), "lines": [camelised(line) for line in view["lines"]]}


def plan_rest(line: dict[str, Any]) -> dict[str, Any]:
    return {**camelised(line), "p90UsageTenant": camelised(line["p90_usage_tenant"])}


async def test_the_admin_schema_answers_what_rest_answers(make_gateway: Any) -> None:
    month = this_month()
    async with make_gateway(CONFIG) as gw:
        await seed(gw)
        for tenant in PREPAID:
            got = await data(gw, f'{{ credits(tenant: "{tenant}") {{ {CREDITS} }} }}')
            view = await rest(gw, f"/admin/v1/tenants/{tenant}/credits")
            assert got["credits"] == credits_rest(view) and view["burned"] != "0.00"
        for tenant in TENANTS:
            got = await data(gw, f'{{ invoice(tenant: "{tenant}", month: "{month}") '
                                 f"{{ {INVOICE} }} }}")  # fmt: skip
            view = await rest(gw, f"/admin/v1/tenants/{tenant}/invoice", month=month)
            assert got["invoice"] == invoice_rest(view), tenant
            default = await data(gw, f'{{ invoice(tenant: "{tenant}") {{ totalUsd }} }}')
            assert default["invoice"]["totalUsd"] == view["total_usd"]
        got = await data(
            gw, f'{{ planProfitability(month: "{month}") {{ month plans {{ {PLAN} }} }} }}'
        )
        view = await rest(gw, "/admin/v1/plan-profitability", month=month)
        assert got["planProfitability"]["month"] == month
        assert got["planProfitability"]["plans"] == [plan_rest(p) for p in view["data"]]
        assert [p["plan"] for p in view["data"]] == ["basic", "prepaid", "pro", "promo"]


async def test_top_spenders_by_month_equal_rest_over_the_month(make_gateway: Any) -> None:
    from farebox.billing.margins import month_window

    month = this_month()
    start, end = (str(int(x)) for x in month_window(month))
    rows = "rows { tenant amountUsd sharePercent requests costUsd revenueUsd }"
    async with make_gateway(CONFIG) as gw:
        await seed(gw)
        for by, args, params in (("REVENUE", "n: 2", {"n": 2}),
                                 ("COST", "topPercent: 50", {"top_percent": 50})):  # fmt: skip
            q = (f'{{ topSpenders(month: "{month}", by: {by}, {args}) '
                 f"{{ totalUsd tenants {rows} }} }}")  # fmt: skip
            got = (await data(gw, q))["topSpenders"]
            view = await rest(gw, "/admin/v1/top-spenders", start=start, end=end, by=by.lower(),
                              **params)  # fmt: skip
            assert got["totalUsd"] == view["total_usd"] and got["tenants"] == view["tenants"] == 5
            assert got["rows"] == [camelised(r) for r in view["data"]] and got["rows"]
            spans = (
                f'{{ topSpenders(start: "{start}", end: "{end}", by: {by}, {args}) {{ {rows} }} }}'
            )
            assert (await data(gw, spans))["topSpenders"]["rows"] == got["rows"]


async def test_the_tenant_schema_answers_its_own_credits_and_invoice(make_gateway: Any) -> None:
    month = this_month()
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        for tenant, key in keys.items():
            got = await data(gw, f"{{ credits {{ {CREDITS} }} invoice {{ {INVOICE} }} }}", key=key)
            invoice = await rest(gw, f"/admin/v1/tenants/{tenant}/invoice", month=month)
            assert got["invoice"] == invoice_rest(invoice), tenant
            if tenant in PREPAID:
                view = await rest(gw, f"/admin/v1/tenants/{tenant}/credits")
                assert got["credits"] == credits_rest(view)
            else:
                assert got["credits"] is None, tenant
        for query in ('{ credits(tenant: "pp2") { balance } }',
                      '{ invoice(tenant: "pp2") { totalUsd } }',
                      "{ planProfitability { month } }"):  # fmt: skip
            body = await gql(gw, query, key=keys["pp1"])
            assert body["data"] is None and body["errors"], query
        mine = await data(gw, "{ credits { tenant } invoice { tenant } }", key=keys["pp2"])
        assert mine == {"credits": {"tenant": "pp2"}, "invoice": {"tenant": "pp2"}}


async def test_bad_arguments_are_clear_errors(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        await seed(gw)
        asks = {
            '{ credits(tenant: "zz") { balance } }': "not found",
            '{ credits(tenant: "pro1") { balance } }': "not prepaid",
            '{ invoice(tenant: "zz") { totalUsd } }': "not found",
            '{ invoice(tenant: "pp1", month: "2026-13") { totalUsd } }': "month",
            '{ invoice(tenant: "pp1", month: "2999-01") { totalUsd } }': "future",
            '{ planProfitability(month: "nov") { month } }': "month",
            '{ topSpenders(month: "2026/11") { total_usd: totalUsd } }': "month",
            '{ topSpenders(month: "2026-11", start: "2026-11-01") { totalUsd } }': "not both",
            '{ topSpenders(start: "2026-11-01") { totalUsd } }': "'end' is required",
        }
        for query, words in asks.items():
            body = await gql(gw, query)
            assert body["data"] is None, query
            assert words in body["errors"][0]["message"], (query, body["errors"])


async def test_the_cost_limit_counts_the_revenue_fields(make_gateway: Any) -> None:
    assert query_cost(parse("{ upsell { month } }")) == 101
    assert query_cost(parse('{ reprice(plan: "pro", markup: "2") { plan } }')) == 101
    whatifs = " ".join(f'r{i}: reprice(plan: "pro", markup: "{i}") {{ plan }}' for i in range(6))
    assert query_cost(parse(f"{{ {whatifs} }}")) > MAX_COST
    assert query_cost(parse('{ credits(tenant: "a") { balance } }')) == 11
    assert query_cost(parse('{ invoice(tenant: "a") { totalUsd } }')) == 11
    assert query_cost(parse("{ planProfitability { month } }")) == 101
    many = " ".join(f"p{i}: planProfitability {{ month }}" for i in range(6))
    assert query_cost(parse(f"{{ {many} }}")) > MAX_COST
    async with make_gateway(CONFIG) as gw:
        for query in (many, whatifs):
            body = await gql(gw, f"{{ {query} }}")
            assert body.get("data") is None and "costs" in body["errors"][0]["message"]


UPSELL_LINE = ("moments tenantsRefused tenantsConverted conversionRatePercent convertedRevenueUsd "
               "convertedTenants")  # fmt: skip
UPSELL = (f"month windowDays byPlan {{ plan {UPSELL_LINE} }} "
          f"byBudget {{ kind budget {UPSELL_LINE} }} total {{ {UPSELL_LINE} }}")  # fmt: skip
MONEY = ("revenueBeforeUsd revenueAfterUsd revenueChangeUsd marginBeforeUsd marginAfterUsd "
         "marginBeforePercent marginAfterPercent")  # fmt: skip
REPRICE = (f"month plan applied proposed {{ markup perRequest monthlyFeeUsd "
           f"resale {{ input output cachedInput }} }} data {{ tenant requests costUsd {MONEY} }} "
           f"total {{ tenants costUsd {MONEY} }}")  # fmt: skip


def upsell_rest(view: dict[str, Any]) -> dict[str, Any]:
    return {"month": view["month"], "windowDays": view["window_days"],
            "byPlan": [camelised(g) for g in view["by_plan"]],
            "byBudget": [camelised(g) for g in view["by_budget"]],
            "total": camelised(view["total"])}  # fmt: skip


def reprice_rest(view: dict[str, Any]) -> dict[str, Any]:
    proposed = view["proposed"]
    resale = proposed.get("resale")
    return {
        "month": view["month"], "plan": view["plan"], "applied": view["applied"],
        "proposed": {"markup": proposed.get("markup"), "perRequest": proposed.get("per_request"),
                     "monthlyFeeUsd": proposed.get("monthly_fee_usd"),
                     "resale": None if resale is None else camelised(resale)},
        "data": [camelised(d) for d in view["data"]], "total": camelised(view["total"]),
    }  # fmt: skip


async def test_upsell_equals_rest(make_gateway: Any) -> None:
    from tests import test_upsell

    now = [0.0]
    async with make_gateway({"plans": test_upsell.PLANS}, clock=lambda: now[0]) as gw:
        await test_upsell.scripted(gw, now)
        for args, window in (("", 14), (", windowDays: 20", 20)):
            got = await data(gw, f'{{ upsell(month: "2026-11"{args}) {{ {UPSELL} }} }}')
            view = await rest(gw, "/admin/v1/upsell", month="2026-11", window_days=window)
            assert got["upsell"] == upsell_rest(view), window
            assert got["upsell"]["byPlan"] and got["upsell"]["byBudget"]
        assert got["upsell"]["total"]["conversionRatePercent"] == "60.00"
        default = await data(gw, "{ upsell { month total { tenantsRefused } } }")
        assert default["upsell"] == {"month": "2026-12", "total": {"tenantsRefused": 0}}
        for window in (0, 400):
            body = await gql(
                gw, f'{{ upsell(month: "2026-11", windowDays: {window}) {{ month }} }}'
            )
            api = await gw.client.get(f"/admin/v1/upsell?month=2026-11&window_days={window}",
                                      headers=gw.admin)  # fmt: skip
            assert body["data"] is None
            assert body["errors"][0]["message"] == api.json()["error"]["message"], window
        body = await gql(gw, '{ upsell(month: "2099-01") { month } }')
        assert body["data"] is None and "future" in body["errors"][0]["message"]


async def test_reprice_equals_rest_and_changes_nothing(make_gateway: Any) -> None:
    from tests import test_reprice

    now = [0.0]
    async with make_gateway({"plans": test_reprice.PLANS}, clock=lambda: now[0]) as gw:
        await test_reprice.scripted(gw, now)
        margins = await rest(gw, "/admin/v1/margins", month="2026-11")
        for args, body in (
            ('markup: "3.5"', {"markup": "3.5"}),
            ('resale: {input: "2", output: "8"}', {"resale": {"input": "2", "output": "8"}}),
            ('resale: {input: "2", output: "8", cachedInput: "1"}',
             {"resale": {"input": "2", "output": "8", "cached_input": "1"}}),
            ('perRequest: "0.02", monthlyFeeUsd: "0"',
             {"per_request": "0.02", "monthly_fee_usd": "0"}),
        ):  # fmt: skip
            got = await data(gw, f'{{ reprice(month: "2026-11", plan: "pro", {args}) '
                                 f"{{ {REPRICE} }} }}")  # fmt: skip
            api = await test_reprice.what_if(gw, **body)
            assert api.status_code == 200, api.text
            assert got["reprice"] == reprice_rest(api.json()), args
            assert len(got["reprice"]["data"]) == 2
        assert await rest(gw, "/admin/v1/margins", month="2026-11") == margins  # unchanged
        asks = {
            'plan: "enterprise", markup: "3"': {"plan": "enterprise", "markup": "3"},
            'plan: "pro"': {},
            'plan: "pro", markup: "3", perRequest: "0.01"': {"markup": "3", "per_request": "0.01"},
            'plan: "pro", markup: "-1"': {"markup": "-1"},
            'plan: "pro", markup: "lots"': {"markup": "lots"},
            f'plan: "pro", markup: "{"9" * 41}"': {"markup": "9" * 41},
            'plan: "pro", resale: {input: "0.0000001"}': {"resale": {"input": "0.0000001"}},
        }
        for args, body in asks.items():
            found = await gql(gw, f'{{ reprice(month: "2026-11", {args}) {{ plan }} }}')
            api = await test_reprice.what_if(gw, **body)
            assert api.status_code == 400 and found["data"] is None, args
            assert found["errors"][0]["message"] == api.json()["error"]["message"], args
        for month, words in (("2099-01", "future"), ("2026-13", "month")):
            found = await gql(gw, f'{{ reprice(month: "{month}", plan: "pro", markup: "2") '
                                  "{ plan } }")  # fmt: skip
            assert found["data"] is None and words in found["errors"][0]["message"], month


async def test_the_tenant_schema_has_no_upsell_or_reprice(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        for query in ("{ upsell { month } }", '{ reprice(plan: "pro", markup: "2") { plan } }'):
            body = await gql(gw, query, key=keys["pp1"])
            assert body["data"] is None and "Cannot query field" in body["errors"][0]["message"]

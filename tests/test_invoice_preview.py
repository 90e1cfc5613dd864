"""Issue [13], the invoice preview: ``GET /admin/v1/tenants/{id}/invoice?month=`` and
``farebox invoice``. A scripted month with several plans (tiered by tokens, tiered by
requests, per request, prepaid credits, cache hits) matches a hand computation; its total is
the fee plus the month's per-request revenue exactly (a property, acceptance 1); bad months
are a 400, an unknown tenant a 404."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from farebox.billing.invoices import invoice
from farebox.cli import main
from farebox.config.settings import parse_settings
from farebox.core.money import parse_usd
from farebox.core.records import LedgerEntry, Tenant
from farebox.core.tiers import with_schedule
from farebox.gateway.routing_table import build_plans
from farebox.stores.memory.store import MemoryStore
from tests.conftest import ADMIN_KEY
from tests.contracts.builders import entry
from tests.e2e import child_env, free_port, running

NOV = 1_794_700_800.0  # 2026-11-15 00:00 UTC
OCT, DEC = 1_792_000_000.0, 1_796_500_000.0  # 2026-10-11 and 2026-12-05: other months
PLANS: dict[str, Any] = {
    "growth": {"models": ["*"], "cache": {"mode": "exact"}, "pricing": {
        "monthly_fee_usd": "49",
        "tiered": {"metric": "tokens", "included": 2_000_000,
                   "tiers": [{"up_to": 10_000_000, "price": "8"}, {"price": "6"}]}}},
    "calls": {"models": ["*"], "pricing": {
        "monthly_fee_usd": "5",
        "tiered": {"metric": "requests", "included": 2,
                   "tiers": [{"up_to": 4, "price": "0.5"}, {"price": "0.25"}]}}},
    "docs": {"models": ["*"], "pricing": {"monthly_fee_usd": "10", "per_request": {
        "price": "0.02", "tokens": {"input": "1", "output": "2"}}}},
    "prepaid": {"models": ["*"], "pricing": {"markup": "2", "credits": {"per_usd": "1000"}}},
}  # fmt: skip


def _plans(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    data = {"database": f"sqlite:///{tmp_path / 'farebox.db'}", "plans": PLANS}
    cfg = parse_settings(data, source="t.yaml", env={"FAREBOX_ADMIN_KEY": ADMIN_KEY},
                         base_dir=tmp_path)  # fmt: skip
    return cfg, build_plans(cfg)


def scripted(rules: dict[str, Any]) -> list[LedgerEntry]:
    """The month, with each entry's revenue as the gateway computes it (tiered entries carry
    their schedule: the store sets their revenue)."""
    out: list[LedgerEntry] = []

    def add(tenant: str, plan: str, i: int, started: float = NOV, **kw: Any) -> None:
        e = entry(f"{tenant}-{i}", tenant_id=tenant, started_at=started, **kw)
        rule = rules[plan].revenue
        if rule.tiered is not None and e.status != "cache_hit":
            out.append(with_schedule(e, rule.tiered))
        else:
            out.append(e)

    # growth: 1.5M, 1M, 4M, 4M, 1.5M tokens = 12M; a cache hit billed $0.50; other months
    for i, tokens in enumerate((1_500_000, 1_000_000, 4_000_000, 4_000_000, 1_500_000)):
        add("acme", "growth", i, input_tokens=tokens - 1000, output_tokens=1000,
            cost=parse_usd("1"))  # fmt: skip
    add("acme", "growth", 5, status="cache_hit", revenue=parse_usd("0.5"), input_tokens=500)
    add("acme", "growth", 6, started=OCT, input_tokens=9_000_000)
    add("acme", "growth", 7, started=DEC, input_tokens=3_000_000)
    # calls: 5 served requests and one that failed (not counted)
    for i in range(5):
        add("delta", "calls", i, input_tokens=10, output_tokens=10)
    add("delta", "calls", 5, status="error", http_status=502)
    # docs: 3 served (1000 in, 500 out: $0.002 of tokens + $0.02 each), one failed
    for i in range(3):
        add("beta", "docs", i, input_tokens=1000, output_tokens=500,
            revenue=parse_usd("0.022"))  # fmt: skip
    add("beta", "docs", 3, status="error", http_status=502, input_tokens=1000,
        revenue=parse_usd("0.001"))  # fmt: skip
    # prepaid: cost $0.10 and $0.05 at markup 2
    add("gamma", "prepaid", 0, cost=parse_usd("0.10"), revenue=parse_usd("0.20"))
    add("gamma", "prepaid", 1, cost=parse_usd("0.05"), revenue=parse_usd("0.10"))
    return out


async def _script(gw: Any, rules: dict[str, Any]) -> None:
    for tenant, plan in (("acme", "growth"), ("delta", "calls"), ("beta", "docs"),
                         ("gamma", "prepaid")):  # fmt: skip
        await gw.store.create_tenant(Tenant(tenant, tenant, plan, OCT))  # before the month
    for e in scripted(rules):
        await gw.store.append_ledger([e])


def amounts(body: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(x["kind"], x["quantity"], x["amount_usd"]) for x in body["lines"]]


async def test_a_scripted_month_matches_the_hand_computation(
    make_gateway: Any, tmp_path: Path
) -> None:
    _, rules = _plans(tmp_path)
    async with make_gateway({"plans": PLANS, "providers": {"sim": {"kind": "mock"}}}) as gw:
        await _script(gw, rules)
        got = {}
        for tenant in ("acme", "delta", "beta", "gamma"):
            r = await gw.client.get(f"/admin/v1/tenants/{tenant}/invoice?month=2026-11",
                                    headers=gw.admin)  # fmt: skip
            assert r.status_code == 200, r.text
            got[tenant] = r.json()
        nov = [e for e in await gw.ledger("acme") if e.started_at == NOV]
        r = await gw.client.get("/admin/v1/margins?month=2026-11", headers=gw.admin)
        margins = {m["tenant"]: m for m in r.json()["data"]}
    for tenant, body in got.items():  # the margins count the same month the same way
        assert margins[tenant]["revenue_usd"] == body["total_usd"], tenant
        assert margins[tenant]["usage_revenue_usd"] == body["usage_usd"], tenant
    # acme: the allowance takes 2M; 8M tokens at $8/1M = $64; 2M at $6/1M = $12; the cache
    # hit $0.50; the fee $49: 49 + 64 + 12 + 0.5 = $125.50. Per request, in order:
    # 0 (1.5M, in the allowance), $4 (0.5M over), $32 (4M), $28 + $3 (3.5M at 8, 0.5M at 6), $9
    assert sorted(e.revenue for e in nov if e.status == "ok") == sorted(
        parse_usd(x) for x in ("0", "4", "32", "31", "9")
    )
    assert amounts(got["acme"]) == [
        ("monthly_fee", None, "49.00"), ("included_allowance", "2000000", "0.00"),
        ("overage_tier", "8000000", "64.00"), ("overage_tier", "2000000", "12.00"),
        ("cache_hit_charges", "1", "0.50"),
    ]  # fmt: skip
    assert got["acme"]["total_usd"] == "125.50" and got["acme"]["requests"] == 6
    # delta: 5 served, 2 included, 2 at $0.50, 1 at $0.25: 5 + 1.25 = $6.25
    assert amounts(got["delta"]) == [
        ("monthly_fee", None, "5.00"), ("included_allowance", "2", "0.00"),
        ("overage_tier", "2", "1.00"), ("overage_tier", "1", "0.25"),
    ]  # fmt: skip
    assert got["delta"]["total_usd"] == "6.25"
    # beta: tokens 4000 in at $1/1M + 1500 out at $2/1M = $0.007; 3 x $0.02 = $0.06; + $10
    assert amounts(got["beta"]) == [
        ("monthly_fee", None, "10.00"), ("token_usage_charges", "5500", "0.007"),
        ("per_request_charges", "3", "0.06"),
    ]  # fmt: skip
    assert got["beta"]["total_usd"] == "10.067"
    # gamma: $0.30 of usage, burning 0.30 x 1000 = 300 credits (not in the total)
    assert amounts(got["gamma"]) == [
        ("monthly_fee", None, "0.00"), ("token_usage_charges", "0", "0.30"),
        ("credits_burned", "300.00", "0.30"),
    ]  # fmt: skip
    assert got["gamma"]["total_usd"] == "0.30" and got["gamma"]["credits_burned"] == "300.00"
    assert got["gamma"]["lines"][-1]["counted"] is False


async def test_bad_months_are_a_400_and_an_unknown_tenant_a_404(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS}) as gw:
        await gw.tenant("acme", plan="growth")
        for month in ("2026-13", "nope", "", "2999-01"):
            r = await gw.client.get(f"/admin/v1/tenants/acme/invoice?month={month}",
                                    headers=gw.admin)  # fmt: skip
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == "month"
        future = await gw.client.get("/admin/v1/tenants/acme/invoice?month=2999-01",
                                     headers=gw.admin)  # fmt: skip
        assert "future" in future.json()["error"]["message"]
        r = await gw.client.get("/admin/v1/tenants/nobody/invoice?month=2026-11", headers=gw.admin)
        assert r.status_code == 404, r.text
        r = await gw.client.get("/admin/v1/tenants/acme/invoice?month=2020-01", headers=gw.admin)
        assert r.status_code == 200 and r.json()["total_usd"] == "0.00"  # before it existed


@settings(max_examples=40, deadline=None)
@given(
    plan=st.sampled_from(["growth", "calls", "docs", "prepaid"]),
    usage=st.lists(
        st.tuples(st.integers(0, 3_000_000), st.sampled_from(["ok", "ok", "error", "cache_hit"]),
                  st.integers(0, 10**12), st.sampled_from([OCT, NOV, NOV, DEC])),
        max_size=25,
    ),
)  # fmt: skip
def test_the_invoice_total_is_the_fee_plus_the_months_per_request_revenue(
    plan: str, usage: list[tuple[int, str, int, float]], tmp_path_factory: Any
) -> None:
    cfg, rules = _plans(tmp_path_factory.mktemp("p"))
    rule = rules[plan].revenue

    async def run() -> dict[str, Any]:
        store = MemoryStore()
        await store.create_tenant(Tenant("t", "t", plan, OCT))
        for i, (tokens, status, cost, started) in enumerate(usage):
            e = entry(f"r{i}", tenant_id="t", status=status, started_at=started,
                      input_tokens=tokens, cost=cost, revenue=cost // 3)  # fmt: skip
            if rule.tiered is not None and status != "cache_hit":
                e = with_schedule(e, rule.tiered)
            await store.append_ledger([e])
        written = [e for e in await store.ledger("t") if e.started_at == NOV]
        body = await invoice(store, cfg.file.plans, "default", "t", "2026-11", lambda: DEC)
        fee = parse_usd(PLANS[plan]["pricing"].get("monthly_fee_usd", "0"))
        revenue = sum(e.revenue for e in written)
        assert parse_usd(body["total_usd"]) == fee + revenue
        counted = [parse_usd(x["amount_usd"]) for x in body["lines"] if x["counted"]]
        assert sum(counted) == fee + revenue
        assert all(x["kind"] != "other_usage" for x in body["lines"])
        if rule.tiered is not None:
            s = rule.tiered
            units = {"tokens": sum(e.tokens for e in written if e.status != "cache_hit"),
                     "requests": sum(e.status == "ok" for e in written)}[s.metric]  # fmt: skip
            hits = sum(e.revenue for e in written if e.status == "cache_hit")
            assert revenue == s.charge(units) + hits
        return body

    asyncio.run(run())


def test_the_cli_prints_the_invoice_locally_and_remotely(tmp_path: Path) -> None:
    """``farebox invoice --tenant --month`` with ``--config`` (in process, on the database)
    and with ``--url`` (a running gateway): the admin API's lines and total."""
    cfg, rules = _plans(tmp_path)
    config = tmp_path / "farebox.yaml"
    config.write_text(yaml.safe_dump({"database": f"sqlite:///{tmp_path / 'farebox.db'}",
                                      "plans": PLANS}), encoding="utf-8")  # fmt: skip

    async def seed() -> None:
        from farebox.stores.sqlite.store import SQLiteStore

        store = SQLiteStore(tmp_path / "farebox.db")
        await store.open()
        try:
            await store.create_tenant(Tenant("acme", "acme", "growth", OCT))
            for e in scripted(rules):
                if e.tenant_id == "acme":
                    await store.append_ledger([e])
        finally:
            await store.close()

    asyncio.run(seed())
    env = {"FAREBOX_ADMIN_KEY": ADMIN_KEY}
    args = ["invoice", "--tenant", "acme", "--month", "2026-11"]
    local = CliRunner().invoke(main, [*args, "--config", str(config), "--json"], env=env)
    assert local.exit_code == 0, local.output
    body = json.loads(local.output)
    assert body["total_usd"] == "125.50" and len(body["lines"]) == 5
    table = CliRunner().invoke(main, [*args, "--config", str(config)], env=env)
    assert table.exit_code == 0, table.output
    for needle in ("TOTAL", "125.50", "64.00", "12.00", "overage tier 2", "included allowance"):
        assert needle in table.output, table.output
    bad = CliRunner().invoke(main, [*args[:3], "--month", "2999-01", "--config", str(config)],
                             env=env)  # fmt: skip
    assert bad.exit_code != 0 and "future" in bad.output
    port = free_port()
    serve = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with running(serve, cwd=tmp_path, env=child_env(ADMIN_KEY), port=port) as server:
        remote = CliRunner().invoke(main, [*args, "--url", server.base_url, "--json"], env=env)
    assert remote.exit_code == 0, remote.output
    assert json.loads(remote.output) == body


@pytest.mark.parametrize("month", ["2026-11"])
def test_month_window_matches_the_tier_month(month: str) -> None:
    """The invoice's month and the tier counters' month are the same UTC calendar month."""
    from farebox.billing.margins import month_window
    from farebox.core.tiers import month_of

    start, end = month_window(month)
    assert month_of(start) == month and month_of(end - 1) == month and month_of(end) != month

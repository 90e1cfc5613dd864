"""Issue [13], export: the new revenue lines reach the billing sinks exactly, and once.

A prepaid tenant (``pricing.credits``) and a per-request tenant (``pricing.per_request``) send
traffic through the in-process gateway; loopback fakes of every sink kind receive the opt-in
plan meters ``credits_burned`` (a prepaid tenant's revenue in credits) and
``per_request_charges`` (the per-request fee part of a per-request tenant's revenue). Each
fake holds one event per entry and meter under its deterministic key, the values sum exactly
to the ledger (and to the invoice preview and the credit balance), a retry or a replay sends
the same keys, and reconciliation reports no drift. A tenant on neither plan gets neither.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farebox.billing.reconcile import charges
from farebox.core.credits import CreditRate
from farebox.core.meters import (
    BILLED,
    METERS,
    PlanTerms,
    credits_fit,
    parse,
    per_hour,
    per_request,
    raw_value,
    render,
)
from farebox.core.money import PICO_PER_USD, format_usd, parse_usd
from farebox.core.plans import RequestPrice, RevenueRule
from farebox.core.pricing import Price, cost
from farebox.core.records import SeriesPoint
from farebox.core.usage import Usage
from farebox.errors import ConfigError
from farebox.sinks.events import event_key, is_decimal
from tests.cache_gateway import settled
from tests.contracts.builders import entry
from tests.test_billing_export import BILLING_IDS, ENV, drain, fakes, flaky, held

PREPAID, DOCS, PLAIN = "acme", "beta", "gamma"  # the tenants, one per plan
PER_USD = 1000
MICRO = PICO_PER_USD // 10**6  # $1 per 1M tokens, in pico-USD per token
FEES = {"document_analysis": "0.10", "gpt-4o": "0.05", "default": "0.02"}
PLANS: dict[str, Any] = {
    "prepaid": {"models": ["*"], "cache": {"mode": "exact", "hit_price": "0.5"},
                "pricing": {"markup": "2", "credits": {"per_usd": PER_USD}}},
    "docs": {"models": ["*"], "pricing": {"per_request": {
        "price": FEES["default"], "models": {"gpt-4o": FEES["gpt-4o"]},
        "features": {"document_analysis": FEES["document_analysis"]},
        "tokens": {"input": "1", "output": "2"}}}},
    "pro": {"models": ["*"], "pricing": {"markup": "1.25"}},
}  # fmt: skip
TENANTS = {PREPAID: "prepaid", DOCS: "docs", PLAIN: "pro"}
SINK_METERS = ["requests", "revenue_usd", "credits_burned", "per_request_charges"]
PROVIDERS = {
    "providers": {"mock": {"kind": "mock"},
                  "down": {"kind": "mock", "error_rate": 1.0, "error_status": 503}},
    "models": {"broken": [{"provider": "down", "model": "gpt-4o-mini"}]},
}  # fmt: skip


def config(sinks: dict[str, Any], **sink_extra: Any) -> dict[str, Any]:
    keys = {"stripe": "STRIPE_KEY", "lago": "LAGO_KEY", "metronome": "METRONOME_KEY",
            "openmeter": "OPENMETER_KEY"}  # fmt: skip

    def sink(kind: str) -> dict[str, Any]:
        url = sinks[kind].root_url + ("/hooks/billing" if kind == "webhook" else "")
        out: dict[str, Any] = {"kind": kind, "base_url": url, "max_attempts": 30,
                               "meters": SINK_METERS, **sink_extra}  # fmt: skip
        if kind in keys:
            out["api_key"] = f"env:{keys[kind]}"
        else:
            out["secret"] = "env:WEBHOOK_SECRET"
        return out

    return {"plans": PLANS, "default_plan": "pro", **PROVIDERS,
            "billing": {"in_serve": False, "sinks": {k: sink(k) for k in sinks}}}  # fmt: skip


async def onboard(gw: Any, billed: tuple[str, ...] = tuple(TENANTS)) -> dict[str, str]:
    """The three tenants (those ``billed`` with their billing ids), the prepaid one with
    credits."""
    keys = {}
    for tenant, plan in TENANTS.items():
        keys[tenant] = await gw.tenant_key(tenant, plan=plan)
        if tenant in billed:
            ids = {k: v.format(t=tenant) for k, v in BILLING_IDS.items()}
            r = await gw.client.patch(f"/admin/v1/tenants/{tenant}", headers=gw.admin,
                                      json={"billing": ids})  # fmt: skip
            assert r.status_code == 200, r.text
    body = {"amount": "1000000", "idempotency_key": "order-1", "kind": "top_up"}
    r = await gw.client.post(f"/admin/v1/tenants/{PREPAID}/credits", json=body, headers=gw.admin)
    assert r.status_code == 201, r.text
    return keys


async def traffic(gw: Any, keys: dict[str, str], rounds: int = 12) -> None:
    """Chats (streamed or not), embeddings, features, repeats (cache hits for the prepaid
    tenant) and upstream failures (charged no per-request fee), for every tenant."""

    async def one(tenant: str, i: int) -> None:
        headers = {"Authorization": f"Bearer {keys[tenant]}"}
        if i % 4 == 1:
            headers["X-Farebox-Feature"] = "document_analysis"
        if i % 6 == 5:
            body: dict[str, Any] = {"model": "text-embedding-3-small", "input": f"text {i}"}
            r = await gw.client.post("/v1/embeddings", json=body, headers=headers)
        else:
            model = ("gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "broken")[i % 4]
            body = {"model": model, "messages": [{"role": "user", "content": f"q{i % 8}"}],
                    "stream": i % 3 == 0}  # fmt: skip
            r = await gw.client.post("/v1/chat/completions", json=body, headers=headers)
        assert r.status_code in ((502, 503) if body.get("model") == "broken" else (200,)), r.text
        await settled(gw)

    for i in range(rounds):  # in order: the repeated questions are cache hits
        await asyncio.gather(*(one(t, i) for t in TENANTS))


def fee(e: Any) -> int:
    """The per-request fee of a per-request tenant's entry, by hand."""
    if e.feature == "document_analysis":
        return parse_usd(FEES["document_analysis"])
    return parse_usd(FEES["gpt-4o"] if e.model_requested == "gpt-4o" else FEES["default"])


def credits_of(pico: int) -> Decimal:
    return Decimal(pico * PER_USD).scaleb(-12)  # exact


def usd(pico: int) -> Decimal:
    return Decimal(pico).scaleb(-12)


async def expected(gw: Any) -> dict[str, Decimal]:
    """Idempotency key -> value, by hand from the ledger."""
    out: dict[str, Decimal] = {}
    for e in await gw.store.ledger():
        if e.status not in BILLED:
            continue
        out[event_key(e.tenant_id, e.request_id, "requests")] = Decimal(1)
        if e.revenue:
            out[event_key(e.tenant_id, e.request_id, "revenue_usd")] = usd(e.revenue)
        if e.tenant_id == PREPAID and e.revenue:
            out[event_key(e.tenant_id, e.request_id, "credits_burned")] = credits_of(e.revenue)
        if e.tenant_id == DOCS and e.status == "ok":
            # the ledger charged the fee plus $1 per 1M input tokens and $2 per 1M output
            tokens = e.input_tokens * MICRO + e.output_tokens * 2 * MICRO
            assert e.revenue == fee(e) + tokens
            out[event_key(e.tenant_id, e.request_id, "per_request_charges")] = usd(fee(e))
        if e.tenant_id == DOCS and e.status != "ok":
            assert e.revenue == e.input_tokens * MICRO + e.output_tokens * 2 * MICRO
    return out


def values(kind: str, fake: Any) -> dict[str, Decimal]:
    got = held(kind, fake)
    assert all(is_decimal(v) for v in got.values()), kind
    return {k: Decimal(v) for k, v in got.items()}


def total(got: dict[str, Decimal], tenant: str, meter: str) -> Decimal:
    return sum((v for k, v in got.items() if k.startswith(f"fbx:{tenant}:") and
                k.endswith(f":{meter}")), Decimal(0))  # fmt: skip


async def reconciliation(gw: Any) -> dict[str, Any]:
    import time

    month = time.strftime("%Y-%m", time.gmtime())
    r = await gw.client.get(f"/admin/v1/reconciliation?month={month}", headers=gw.admin)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_each_sink_receives_the_revenue_lines_exactly_once(make_gateway: Any) -> None:
    async with fakes() as sinks, make_gateway(config(sinks), env=ENV) as gw:
        await traffic(gw, await onboard(gw))
        entries = await gw.store.ledger()
        statuses = {(e.tenant_id, e.status) for e in entries}
        assert {(PREPAID, "cache_hit"), (DOCS, "error"), (DOCS, "ok")} <= statuses
        want = await expected(gw)
        burned = [k for k in want if k.endswith(":credits_burned")]
        charged = [k for k in want if k.endswith(":per_request_charges")]
        assert burned and charged and not [k for k in burned + charged if f":{PLAIN}:" in k]
        for name, fake in sinks.items():
            await drain(gw, name)
            got = values(name, fake)
            assert got == want, name
            assert not fake.duplicates, name
        # the sums: credits burned = the balance's burn = the invoice's line; the charges =
        # the invoice preview's per-request line, to the last unit
        got = values("lago", sinks["lago"])
        credit = (await gw.client.get(f"/admin/v1/tenants/{PREPAID}/credits",
                                      headers=gw.admin)).json()  # fmt: skip
        prepaid = sum(e.revenue for e in entries if e.tenant_id == PREPAID and e.status in BILLED)
        assert total(got, PREPAID, "credits_burned") == Decimal(credit["burned"])
        assert total(got, PREPAID, "credits_burned") == credits_of(prepaid)
        import time

        month = time.strftime("%Y-%m", time.gmtime())
        invoices = {}
        for tenant in (PREPAID, DOCS):
            r = await gw.client.get(f"/admin/v1/tenants/{tenant}/invoice?month={month}",
                                    headers=gw.admin)  # fmt: skip
            invoices[tenant] = {line["kind"]: line for line in r.json()["lines"]}
        assert Decimal(invoices[PREPAID]["credits_burned"]["quantity"]) == credits_of(prepaid)
        line = invoices[DOCS]["per_request_charges"]
        served = [e for e in entries if e.tenant_id == DOCS and e.status == "ok"]
        assert total(got, DOCS, "per_request_charges") == Decimal(line["amount_usd"])
        assert parse_usd(line["amount_usd"]) == sum(fee(e) for e in served)
        recon = await reconciliation(gw)
        assert recon["matched"], [r for r in recon["data"] if not r["matched"]]
        rows = {(r["sink"], r["tenant"], r["meter"]): r for r in recon["data"]}
        for name in sinks:
            row = rows[(name, PREPAID, "credits_burned")]
            assert row["unit"] == "credits" and row["dead"] == row["pending"] == "0.00"
            assert Decimal(row["ledger"]) == Decimal(row["delivered"]) == credits_of(prepaid)
            row = rows[(name, DOCS, "per_request_charges")]
            assert row["unit"] == "usd" and row["ledger"] == row["delivered"] == line["amount_usd"]
            assert (name, PLAIN, "credits_burned") not in rows
            assert (name, PLAIN, "per_request_charges") not in rows


async def test_retries_and_replays_send_the_same_keys(make_gateway: Any) -> None:
    async with fakes() as sinks, make_gateway(config(sinks), env=ENV) as gw:
        exporter = flaky(sinks, gw, throttled=2)
        await traffic(gw, await onboard(gw), rounds=8)
        want = await expected(gw)
        for name, fake in sinks.items():
            await drain(gw, name)
            assert values(name, fake) == want, name
        for name, fake in sinks.items():  # a replay of everything: the same keys, nothing new
            fake.failure_rate(0.0)
            before = sum(fake.duplicates.values())
            result = await exporter.replay(name, 0, float("inf"))
            assert result.complete and result.dead == 0
            assert values(name, fake) == want, name
            assert sum(fake.duplicates.values()) > before, name  # resent, and deduplicated
        assert (await reconciliation(gw))["matched"]


async def test_refused_lines_are_dead_letters_reconciled_then_retried(make_gateway: Any) -> None:
    async with fakes() as sinks:
        chosen = {"stripe": sinks["stripe"]}
        async with make_gateway(config(chosen), env=ENV) as gw:
            await traffic(gw, await onboard(gw, billed=()), rounds=6)
            await drain(gw, "stripe")
            assert sinks["stripe"].accepted == {}
            recon = await reconciliation(gw)
            assert not recon["matched"]
            lines = [r for r in recon["data"] if r["meter"] in ("credits_burned",
                                                                "per_request_charges")]  # fmt: skip
            assert {r["meter"] for r in lines} == {"credits_burned", "per_request_charges"}
            assert all(r["dead"] == r["ledger"] and r["delivered"] in ("0.00", "0") for r in lines)
            for tenant in TENANTS:
                ids = {k: v.format(t=tenant) for k, v in BILLING_IDS.items()}
                await gw.client.patch(f"/admin/v1/tenants/{tenant}", headers=gw.admin,
                                      json={"billing": ids})  # fmt: skip
            r = await gw.client.post("/admin/v1/dead-letters/retry", headers=gw.admin,
                                     json={"sink": "stripe"})  # fmt: skip
            assert r.status_code == 200 and r.json()["dead"] == 0, r.text
            assert values("stripe", sinks["stripe"]) == await expected(gw)
            assert (await reconciliation(gw))["matched"]


async def test_hourly_aggregates_carry_the_revenue_lines(make_gateway: Any) -> None:
    import time

    now = time.time()
    hour = int(now - now % 3600)
    clock = {"now": hour + 60.0}  # a minute into this hour (this month's reconciliation)
    async with fakes() as sinks:
        chosen = {"lago": sinks["lago"]}
        cfg = config(chosen, granularity="hour")
        async with make_gateway(cfg, env=ENV, clock=lambda: clock["now"]) as gw:
            keys = await onboard(gw, billed=(PREPAID, PLAIN))  # the docs tenant: no ids
            await traffic(gw, keys, rounds=8)
            exporter = gw.app.state.exporter
            clock["now"] += 3600 + 600  # the hour is over, and its grace
            result = await exporter.export_once("lago")
            assert result.complete and result.entries == len(await gw.store.ledger())
            got = values("lago", sinks["lago"])
            per = await expected(gw)
            burned = event_key(PREPAID, f"h{hour}", "credits_burned")
            assert got[burned] == total(per, PREPAID, "credits_burned") > 0
            plain = [e for e in await gw.ledger(PLAIN) if e.status in BILLED]
            assert got[event_key(PLAIN, f"h{hour}", "requests")] == len(plain) > 0
            assert not [k for k in got if k.startswith(f"fbx:{PLAIN}:") and
                        k.endswith(("credits_burned", "per_request_charges"))]  # fmt: skip
            dead = await gw.store.dead_letters("lago")
            charge = [d for d in dead if d["event"]["meter"] == "per_request_charges"]
            assert len(charge) == 1
            assert Decimal(charge[0]["event"]["value"]) == total(per, DOCS, "per_request_charges")
            recon = await reconciliation(gw)
            rows = {(r["tenant"], r["meter"]): r for r in recon["data"]}
            assert rows[(DOCS, "per_request_charges")]["dead"] == charge[0]["event"]["value"]
            assert rows[(PREPAID, "credits_burned")]["matched"]
            assert (await exporter.export_once("lago")).entries == 0  # nothing sent twice


def test_the_plan_meters_are_opt_in_and_checked_at_start_up(tmp_path: Any) -> None:
    from farebox.billing.exporter import build_runners
    from farebox.config.settings import parse_settings

    def load(sink: dict[str, Any], plans: dict[str, Any] = PLANS) -> Any:
        data = {"plans": plans, "billing": {"sinks": {"lago": {
            "kind": "lago", "base_url": "http://127.0.0.1:9", **sink}}}}  # fmt: skip
        return parse_settings(data, source="t.yaml", env={}, base_dir=tmp_path)

    default = load({})
    assert default.file.billing.sinks["lago"].meters == list(METERS)  # unchanged: no plan meter
    assert "credits_burned" not in METERS
    with pytest.raises(ConfigError, match="bogus"):
        load({"meters": ["credits_burned", "bogus"]})
    half = {**PLANS, "halves": {"pricing": {"markup": "2", "credits": {"per_usd": "0.5"}}}}
    assert build_runners(load({"meters": ["requests"]}, half))  # fine: no credits meter
    with pytest.raises(ConfigError, match=r"billing\.sinks\.lago.*plans\.halves"):
        build_runners(load({"meters": ["credits_burned"]}, half))


# -- the meter values, property-tested ------------------------------------------------------

PRICES = st.integers(0, 10**11)  # pico-USD: up to $0.10
TOKEN_PRICE = st.integers(0, 10**8)  # pico-USD per token: up to $100 per 1M


@st.composite
def request_prices(draw: Any) -> RequestPrice:
    tokens = None
    if draw(st.booleans()):
        base, cached, out = draw(TOKEN_PRICE), draw(TOKEN_PRICE), draw(TOKEN_PRICE)
        tokens = Price(input=base, output=out, cached_input=cached, cache_write_5m=base,
                       cache_write_1h=base)  # fmt: skip
    return RequestPrice(
        default=draw(PRICES),
        models=tuple(draw(st.dictionaries(st.sampled_from(["m1", "m2"]), PRICES)).items()),
        features=tuple(draw(st.dictionaries(st.sampled_from(["f1", "f2"]), PRICES)).items()),
        tokens=tokens,
    )


USAGES = st.builds(
    lambda i, c, o: Usage(input_tokens=i + c, cached_input_tokens=c, output_tokens=o),
    st.integers(0, 10**6), st.integers(0, 10**5), st.integers(0, 10**6),
)  # fmt: skip
CALLS = st.tuples(USAGES, st.sampled_from(["m1", "m2", "m3"]),
                  st.sampled_from([None, "f1", "f2", "f3"]),
                  st.sampled_from(["ok", "ok", "error", "upstream_interrupted", "cache_hit"]),
                  st.sampled_from(["t1", "t2"]), st.integers(0, 4 * 3600))  # fmt: skip


def priced(i: int, price: RequestPrice, call: Any) -> Any:
    """A ledger entry with the revenue the gateway computes for it (a cache hit: any)."""
    usage, model, feature, status, tenant, ts = call
    revenue = RevenueRule(per_request=price).revenue(usage, 0, model, feature, status == "ok")
    if status == "cache_hit":
        revenue = revenue // 2
    return entry(f"r{i}", tenant_id=tenant, model_requested=model, feature=feature,
                 status=status, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                 cached_input_tokens=usage.cached_input_tokens, revenue=revenue,
                 started_at=1.8e9 + ts, finished_at=1.8e9 + ts + 1)  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(price=request_prices(), calls=st.lists(CALLS, max_size=20))
def test_per_request_charges_are_exactly_the_fees(price: RequestPrice, calls: list[Any]) -> None:
    entries = [priced(i, price, c) for i, c in enumerate(calls)]
    terms = PlanTerms(per_request=price)
    for e, (usage, model, feature, status, _, _) in zip(entries, calls, strict=True):
        charge = raw_value(e, "per_request_charges", terms)
        assert charge == (price.fee(model, feature) if status == "ok" else 0)
        if status != "cache_hit":  # the rest of the revenue is the per-token part
            tokens = cost(usage, price.tokens) if price.tokens is not None else 0
            assert e.revenue - charge == tokens
    every = {"t1": terms, "t2": terms}
    hourly = per_hour(entries, ["per_request_charges"], every)
    each = per_request(entries, ["per_request_charges"], every)
    for tenant in ("t1", "t2"):
        want = sum(r.raw for r in each if r.tenant == tenant)
        assert sum(r.raw for r in hourly if r.tenant == tenant) == want
        served = [e for e in entries if e.tenant_id == tenant and e.status != "cache_hit"]
        points = [SeriesPoint(0, tenant, input_tokens=e.input_tokens, revenue=e.revenue,
                              cached_input_tokens=e.cached_input_tokens,
                              output_tokens=e.output_tokens) for e in served]  # fmt: skip
        assert charges(points, terms) == want  # reconciliation's total from the rollups
    assert per_request(entries, ["per_request_charges"]) == []  # no plan: no charges


@settings(max_examples=80, deadline=None)
@given(
    per_usd=st.sampled_from([1, 4, 100, 1000, 2500, 10**6, 10**12]),
    revenues=st.lists(st.integers(0, 10**15), max_size=20),
)
def test_credits_burned_render_exactly_and_sum_to_the_revenue(
    per_usd: int, revenues: list[int]
) -> None:
    rate = CreditRate.of(per_usd)
    assert credits_fit(rate)
    terms = PlanTerms(credits=rate)
    entries = [entry(f"r{i}", revenue=r, finished_at=1.8e9 + 900 * i)
               for i, r in enumerate(revenues)]  # fmt: skip
    each = per_request(entries, ["credits_burned"], {"acme": terms})
    assert [r.raw for r in each] == [r for r in revenues if r]
    sent = [render("credits_burned", r.raw, terms) for r in each]
    assert all(is_decimal(s) for s in sent)
    assert [parse("credits_burned", s, terms) for s in sent] == [r.raw for r in each]
    whole = Decimal(sum(revenues) * per_usd).scaleb(-12)
    assert sum((Decimal(s) for s in sent), Decimal(0)) == whole
    hourly = per_hour(entries, ["credits_burned"], {"acme": terms})
    assert sum((Decimal(render(r.meter, r.raw, terms)) for r in hourly), Decimal(0)) == whole
    assert per_request(entries, ["credits_burned"], {"acme": PlanTerms()}) == []
    assert format_usd(sum(revenues)) == render("revenue_usd", sum(revenues), terms)


def test_a_rate_finer_than_the_wire_is_refused() -> None:
    assert not credits_fit(CreditRate.of("0.5")) and not credits_fit(CreditRate.of("2.5"))
    assert credits_fit(CreditRate.of("1")) and credits_fit(CreditRate.of(1000))


@settings(max_examples=200, deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False, places=12, min_value=-(10**9),
                   max_value=10**9))  # fmt: skip
def test_stripe_refuses_before_sending_what_it_would_refuse_after(value: Decimal) -> None:
    """A value Stripe takes is sent; one over its 15 significant digits (refused by v1 with a
    400, by the v2 stream asynchronously, unseen) goes dead before sending, with the rule."""
    from fakes.billing import too_many_digits
    from farebox.sinks.events import MeterEvent
    from farebox.sinks.stripe import StripeV1, StripeV2Stream

    text = format(value, "f")
    event = MeterEvent(key="fbx:acme:h0:credits_burned", tenant="acme",
                       customer={"stripe_customer_id": "cus_1"}, meter="credits_burned",
                       value=text, timestamp=1_800_000_000)  # fmt: skip
    names = {"credits_burned": "farebox_credits_burned"}
    for sink in (StripeV1(names), StripeV2Stream(names)):
        reason = sink.check(event, 1_800_000_000)
        assert (reason is not None) == too_many_digits(text), (text, reason)
        assert reason is None or "Stripe takes at most 15" in reason

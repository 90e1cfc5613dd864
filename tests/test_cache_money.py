"""Issue [12], acceptance 4: after a mixed run of hits and misses, the ledger shows cost 0 and
the right ``saved`` and revenue for every hit (per the plan's ``hit_price``), the billing
export sends the hits in the ``cache_hits`` meter, and the margins reflect them. Every sum is
exact: property tests for the hit price and for the split of a batch's cost over its items."""

from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fakes.billing import WebhookFake
from farebox.core.cache import HIT_STATUS, CachePolicy, HitPrice, Partition
from farebox.core.meters import per_request, render
from farebox.core.records import LedgerEntry
from farebox.gateway.cache import CacheTicket
from farebox.gateway.cache_embed import EmbedBatch, new_answers
from farebox.sinks.events import event_key
from tests.cache_gateway import PLANS, ask, config, post

SECRET = "whsec-cache-test"
METERS = ["requests", "cache_hits", "cost_usd", "revenue_usd"]


def sink_config(fake: WebhookFake) -> dict[str, Any]:
    hook = {"kind": "webhook", "base_url": fake.root_url + "/hooks/billing",
            "secret": "env:WEBHOOK_SECRET", "meters": METERS, "max_attempts": 5}  # fmt: skip
    return {"billing": {"in_serve": False, "sinks": {"hook": hook}}}


async def mixed_run(gw: Any, key: str) -> None:
    """Two questions, each asked four times (streamed once), and an embeddings batch twice."""
    for text in ("first question", "second question"):
        for i in range(4):
            body = ask(text, stream=i == 3, stream_options={"include_usage": True})
            r = await post(gw, key, body if i == 3 else ask(text))
            assert r.status_code == 200, r.text
    for _ in range(2):
        r = await post(gw, key, {"model": "text-embedding-3-small", "input": ["a", "b"]},
                       "/v1/embeddings")  # fmt: skip
        assert r.status_code == 200, r.text


async def test_hits_are_free_for_the_platform_and_billed_per_plan(make_gateway: Any) -> None:
    prices = {"cached": Fraction(1), "free_hits": Fraction(0), "half_hits": Fraction(1, 2)}
    async with (
        WebhookFake(SECRET.encode()) as fake,
        make_gateway(config(PLANS, **sink_config(fake)), env={"WEBHOOK_SECRET": SECRET}) as gw,
    ):
        for plan in prices:
            await mixed_run(gw, await gw.tenant_key(plan, plan=plan))
        entries = await gw.ledger()
        for plan, share in prices.items():
            mine = [e for e in entries if e.tenant_id == plan]
            originals = {(e.endpoint, e.model_requested): e for e in mine if e.status == "ok"}
            hits = [e for e in mine if e.status == HIT_STATUS]
            assert len(hits) == 3 * 2 + 1 and len(mine) == 2 * 4 + 2
            for hit in hits:
                assert hit.cost == 0 and hit.input_tokens == hit.output_tokens == 0
                assert hit.saved > 0
                assert hit.revenue == round_half_up(share * original_revenue(mine, hit))
            assert originals  # misses cost what they cost, and earn by the plan's pricing
        # the billing export: each hit once in cache_hits, revenue and cost as in the ledger
        exporter = gw.app.state.exporter
        while (await exporter.export_once("hook")).entries:
            pass
        sent = {key: event["value"] for key, event in fake.accepted.items()}
        want = {event_key(r.tenant, r.unit, r.meter): render(r.meter, r.raw)
                for r in per_request(entries, METERS)}  # fmt: skip
        assert sent == want
        hit_events = [e for e in fake.accepted.values() if e["meter"] == "cache_hits"]
        assert len(hit_events) == 3 * 7 and {e["value"] for e in hit_events} == {"1"}
        # the margins: hits earn revenue at no cost
        month = time.strftime("%Y-%m", time.gmtime())
        r = await gw.client.get(f"/admin/v1/margins?month={month}", headers=gw.admin)
        rows = {row["tenant"]: row for row in r.json()["data"]}
        for plan in prices:
            mine = [e for e in entries if e.tenant_id == plan]
            assert rows[plan]["requests"] == len(mine)
            assert rows[plan]["cost_usd"] == render("cost_usd", sum(e.cost for e in mine))
            assert rows[plan]["usage_revenue_usd"] == render(
                "revenue_usd", sum(e.revenue for e in mine)
            )
        hit_revenue = sum(e.revenue for e in entries if e.status == HIT_STATUS)
        full = sum(e.revenue for e in entries if e.status == HIT_STATUS and e.tenant_id == "cached")
        assert hit_revenue > full > 0  # the half price plan's hits earn, the free plan's not


def original_revenue(entries: list[LedgerEntry], hit: LedgerEntry) -> int:
    """The revenue of the request a hit repeats: the miss of the same endpoint before it with
    the hit's ``saved`` as its cost (for an embeddings batch, the same batch)."""
    return next(
        e.revenue
        for e in entries
        if e.status == "ok" and e.endpoint == hit.endpoint and e.cost == hit.saved
    )


def round_half_up(value: Fraction) -> int:
    return int(value * 2 + 1) // 2


@given(
    st.integers(min_value=0, max_value=10**18),
    st.integers(min_value=0, max_value=1000),
    st.integers(min_value=1, max_value=1000),
)
def test_a_hit_earns_its_share_of_the_original_rounded_half_up(
    original: int, num: int, den: int
) -> None:
    price = HitPrice(min(num, den), den)
    got = price.revenue(original)
    exact = Fraction(original * price.num, price.den)
    assert abs(got - exact) <= Fraction(1, 2) and got - exact != Fraction(-1, 2)
    assert 0 <= got <= original
    assert HitPrice(0, 1).revenue(original) == 0 and HitPrice(1, 1).revenue(original) == original


ITEMS = st.lists(
    st.one_of(st.text(max_size=200), st.lists(st.integers(0, 50_000), min_size=1, max_size=40)),
    min_size=1,
    max_size=12,
)


@given(ITEMS, st.integers(0, 10**15), st.integers(0, 10**15), st.integers(0, 10**6), st.data())
def test_a_batchs_new_items_share_its_cost_revenue_and_tokens_exactly(
    items: list[Any], cost: int, revenue: int, tokens: int, data: st.DataObject
) -> None:
    known = data.draw(st.lists(st.booleans(), min_size=len(items), max_size=len(items)))
    ticket = CacheTicket(
        Partition("t"), "", "embeddings", CachePolicy(mode="exact"), True, 60, None
    )
    answers: list[Any] = [object() if k else None for k in known]
    batch = EmbedBatch(ticket, items, [f"k{i}" for i in range(len(items))], answers)
    sent = batch.missing
    result = {"data": [{"index": j, "embedding": [0.5]} for j in range(len(sent))]}
    served = LedgerEntry(request_id="r", tenant_id="t", key_id="k", endpoint="embeddings",
                         model_requested="m", model_served="m", provider="p", status="ok",
                         http_status=200, started_at=0.0, finished_at=0.0, cost=cost,
                         revenue=revenue, input_tokens=tokens)  # fmt: skip
    parts = new_answers(batch, result, served, 0.0)
    assert [p.key for p in parts] == [f"k{i}" for i in sent]
    if parts:
        assert sum(p.cost for p in parts) == cost
        assert sum(p.revenue for p in parts) == revenue
        assert sum(p.input_tokens for p in parts) == tokens
        assert all(p.cost >= 0 and p.revenue >= 0 for p in parts)

"""Issue [11], acceptance 2: ``GET /metrics`` after a known run (successes, a failure, a
stream, an embedding) agrees with the ledger; the page parses with prometheus-client's own
text parser; the bearer token guards it; per-tenant labels only when asked for."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import strategies as st
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from farebox.core.records import LedgerEntry
from tests.drawn import draw

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "a secret prompt"}]}
TOKEN = "metrics-token-for-tests-0123456789"
PLANS = {
    "pro": {
        "models": ["*"],
        "budgets": [{"scope": "tenant", "period": "month", "limit_usd": "50"}],
    },
    "free": {"models": ["*"]},
}
PLAN_OF = {"acme": "pro", "beta": "free"}


def config(**metrics: Any) -> dict[str, Any]:
    return {
        "providers": {
            "sim": {"kind": "mock", "seed": 3},
            "bad": {"kind": "mock", "error_rate": 1.0, "error_status": 500},
        },
        "models": {
            "gpt-4o-mini": [{"provider": "sim", "model": "gpt-4o-mini"}],
            "broken": [{"provider": "bad", "model": "gpt-4o"}],
            "text-embedding-3-small": [{"provider": "sim", "model": "text-embedding-3-small"}],
        },
        "plans": PLANS,
        "default_plan": "pro",
        "routing": {"retries": 0},
        "budgets": {"global": [{"scope": "global", "period": "month", "limit_usd": "1000"}]},
        "metrics": metrics,
        "logging": {"access_log": False},
    }


async def known_run(gw: Any) -> None:
    """Chats on two tenants of two plans, a stream, a failure, an embedding."""
    keys = {t: await gw.tenant_key(t, plan) for t, plan in PLAN_OF.items()}
    acme, beta = ({"Authorization": f"Bearer {keys[t]}"} for t in ("acme", "beta"))
    sent = [
        *[await gw.client.post("/v1/chat/completions", json=CHAT, headers=acme) for _ in range(3)],
        await gw.client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=acme),
        await gw.client.post("/v1/chat/completions", json=CHAT, headers=beta),
        await gw.client.post(
            "/v1/chat/completions", json={**CHAT, "model": "broken"}, headers=beta
        ),
        await gw.client.post(
            "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, headers=beta
        ),
    ]
    assert [r.status_code for r in sent] == [200, 200, 200, 200, 200, 502, 200]


def families(page: str) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(page)}


def samples(family: Metric, suffix: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for s in family.samples if s.name == family.name + suffix]


def by_labels(rows: Iterable[tuple[dict[str, str], float]], names: tuple[str, ...]) -> Counter[Any]:
    out: Counter[Any] = Counter()
    for labels, value in rows:
        out[tuple(labels[n] for n in names)] += value
    return out


async def scrape(gw: Any, headers: dict[str, str] | None = None) -> Any:
    return await gw.client.get("/metrics", headers=headers or {})


@pytest.mark.parametrize("tenant_labels", [False, True])
async def test_scrape_agrees_with_the_ledger(make_gateway: Any, tenant_labels: bool) -> None:
    async with make_gateway(config(tenant_labels=tenant_labels)) as gw:
        await known_run(gw)
        r = await scrape(gw)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain")
        got = families(r.text)
        entries: list[LedgerEntry] = await gw.ledger()
        deployments = (await gw.client.get("/admin/v1/deployments", headers=gw.admin)).json()
    assert len(entries) == 7 and {e.status for e in entries} >= {"ok", "error"}
    check_requests(got, entries, tenant_labels)
    check_histograms(got, entries)
    check_money_and_tokens(got, entries)
    breakers = samples(got["farebox_deployment_breaker_state"], "")
    assert {labels["deployment"] for labels, _ in breakers} == {
        d["deployment"] for d in deployments["data"]
    }
    check_budgets(got, entries, tenant_labels)
    assert samples(got["farebox_anomaly_incidents_open"], "") == (
        [] if tenant_labels else [({}, 0.0)]
    )


def check_budgets(got: dict[str, Metric], entries: list[LedgerEntry], tenants: bool) -> None:
    """The global budget always; acme's tenant budget (plan pro) only with tenant labels."""
    used = {
        (lb["scope"], lb.get("tenant")): v for lb, v in samples(got["farebox_budget_used_usd"], "")
    }
    spent = sum(e.cost for e in entries) / 10**12
    acme = sum(e.cost for e in entries if e.tenant_id == "acme") / 10**12
    expected = {("global", "" if tenants else None): spent}
    if tenants:
        expected[("tenant", "acme")] = acme
    assert used == pytest.approx(expected, rel=1e-9)
    ratio = {(lb["scope"], lb.get("tenant")): v
             for lb, v in samples(got["farebox_budget_utilisation_ratio"], "")}  # fmt: skip
    assert ratio[("global", "" if tenants else None)] == pytest.approx(spent / 1000, rel=1e-9)


def check_requests(got: dict[str, Metric], entries: list[LedgerEntry], tenants: bool) -> None:
    names = ("model", "provider", "plan", "status", *(("tenant",) if tenants else ()))
    counted = by_labels(samples(got["farebox_requests"], "_total"), names)
    expected: Counter[Any] = Counter()
    for e in entries:
        extra = (e.tenant_id,) if tenants else ()
        expected[(e.model_served, e.provider, PLAN_OF[e.tenant_id], e.status, *extra)] += 1
    assert counted == expected
    labelled = {k for labels, _ in samples(got["farebox_requests"], "_total") for k in labels}
    assert ("tenant" in labelled) is tenants


def check_histograms(got: dict[str, Metric], entries: list[LedgerEntry]) -> None:
    def count(name: str) -> Counter[Any]:
        return by_labels(samples(got[name], "_count"), ("model", "provider"))

    def expect(chosen: Iterable[LedgerEntry]) -> Counter[Any]:
        return Counter((e.model_served, e.provider) for e in chosen)

    assert +count("farebox_request_duration_seconds") == expect(entries)
    upstream = [e for e in entries if e.upstream_ms > 0]
    assert upstream and +count("farebox_upstream_duration_seconds") == expect(upstream)
    assert +count("farebox_gateway_overhead_seconds") == expect(upstream)
    streamed = [e for e in entries if e.ttft_ms is not None]
    assert len(streamed) == 1 and +count("farebox_time_to_first_token_seconds") == expect(streamed)
    total = sum(v for _, v in samples(got["farebox_request_duration_seconds"], "_sum"))
    assert total == pytest.approx(sum(e.latency_ms for e in entries) / 1000, rel=1e-6)
    inf = by_labels(
        [(lb, v) for lb, v in samples(got["farebox_request_duration_seconds"], "_bucket")
         if lb["le"] == "+Inf"], ("model", "provider"),
    )  # fmt: skip
    assert +inf == expect(entries)


def check_money_and_tokens(got: dict[str, Metric], entries: list[LedgerEntry]) -> None:
    cost = sum(v for _, v in samples(got["farebox_cost_usd"], "_total"))
    revenue = sum(v for _, v in samples(got["farebox_revenue_usd"], "_total"))
    assert cost > 0 and cost == pytest.approx(sum(e.cost for e in entries) / 10**12, rel=1e-9)
    assert revenue == pytest.approx(sum(e.revenue for e in entries) / 10**12, rel=1e-9)
    tokens = by_labels(samples(got["farebox_tokens"], "_total"), ("kind",))
    sums: dict[tuple[str], float] = defaultdict(float)
    for e in entries:
        sums[("input",)] += e.input_tokens
        sums[("cached_input",)] += e.cached_input_tokens
        sums[("cache_write",)] += e.cache_write_5m_tokens + e.cache_write_1h_tokens
        sums[("output",)] += e.output_tokens
        sums[("reasoning",)] += e.reasoning_tokens
    assert sums[("input",)] > 0 and sums[("output",)] > 0
    assert +tokens == +Counter(sums)


async def test_the_token_guards_the_page(make_gateway: Any) -> None:
    env = {"METRICS_TOKEN": TOKEN}
    async with make_gateway(config(token="env:METRICS_TOKEN"), env=env) as gw:
        await known_run(gw)
        right = await scrape(gw, {"Authorization": f"Bearer {TOKEN}"})
        wrong = await scrape(gw, {"Authorization": f"Bearer {TOKEN}x"})
        missing = await scrape(gw)
        admin = await scrape(gw, gw.admin)  # the admin key is not the scraper's token
    assert right.status_code == 200 and "farebox_requests_total" in right.text
    for refused in (wrong, missing, admin):
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_metrics_token"
        assert "Authorization: Bearer" in refused.json()["error"]["message"]
        assert TOKEN not in refused.text
    assert "needs" in missing.json()["error"]["message"]
    assert "wrong" in wrong.json()["error"]["message"]


HEADER_BYTES = st.binary(max_size=120).filter(lambda b: not set(b) & {0, 10, 13})
AUTH_VALUES = st.one_of(
    HEADER_BYTES,
    HEADER_BYTES.map(lambda b: b"Bearer " + b),
    st.text(max_size=60).map(lambda t: ("Bearer " + t).encode()).filter(
        lambda b: not set(b) & {0, 10, 13}
    ),
    st.sampled_from([b"Bearer", b"bearer " + TOKEN.encode(), b"Basic " + TOKEN.encode(),
                     b"Bearer  " + TOKEN.encode() + b"  ", TOKEN.encode()]),
)  # fmt: skip


async def test_any_authorization_header_is_answered_200_or_401(make_gateway: Any) -> None:
    values = draw(AUTH_VALUES, 150)
    env = {"METRICS_TOKEN": TOKEN}
    async with make_gateway(config(token="env:METRICS_TOKEN"), env=env) as gw:
        statuses = Counter()
        for value in values:
            r = await gw.client.get("/metrics", headers=[(b"authorization", value)])
            statuses[r.status_code] += 1
            scheme, _, rest = value.strip().partition(b" ")
            good = scheme.lower() == b"bearer" and rest.strip() == TOKEN.encode()
            assert r.status_code == (200 if good else 401), value
    assert statuses[401] > 100 and statuses[200] >= 2


async def test_disabled_metrics_are_not_served(make_gateway: Any) -> None:
    async with make_gateway(config(enabled=False)) as gw:
        r = await scrape(gw)
        admin = await gw.client.get("/admin/v1/metrics", headers=gw.admin)
    assert r.status_code == 404
    assert admin.status_code == 200 and "farebox_deployment_breaker_state" in admin.text


async def test_the_admin_page_still_parses(make_gateway: Any) -> None:
    async with make_gateway(config()) as gw:
        await known_run(gw)
        page = (await gw.client.get("/admin/v1/metrics", headers=gw.admin)).text
    got = families(page)
    assert "farebox_deployment_calls" in got and "farebox_deployment_breaker_state" in got


def test_the_token_must_be_in_the_environment(tmp_path: Any) -> None:
    from farebox.config.settings import parse_settings
    from farebox.errors import ConfigError

    data = {"database": "memory", "metrics": {"token": "env:FB_METRICS_TOKEN"}}
    with pytest.raises(ConfigError, match=r"metrics\.token: environment variable FB_METRICS_TOKEN"):
        parse_settings(data, source="t.yaml", env={}, base_dir=tmp_path)
    given = parse_settings(
        data, source="t.yaml", env={"FB_METRICS_TOKEN": TOKEN}, base_dir=tmp_path
    )
    assert given.metrics_token == TOKEN and given.metrics_dir is None

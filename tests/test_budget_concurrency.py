"""Acceptance: a hard budget holds under 500 concurrent requests.

Once on ``farebox serve --workers 4`` (four processes sharing one SQLite database), once
in a single process. Either way the recorded spend never exceeds the limit, yet nearly all of
it (>= 95 %) gets used; every answer is a 200 or a contract 429; and once everything has
finished, nothing is left reserved and the budget's figures agree with the ledger exactly.
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from farebox.core.money import parse_usd
from tests.e2e import (
    admin_headers,
    child_env,
    create_tenant_key,
    db_path,
    free_port,
    ledger_rows,
    running,
    write_config,
)

LIMIT = "0.50"
LIMIT_PICO = parse_usd(LIMIT)
REQUESTS = 500
MIN_SHARE_USED = 95  # percent of the budget that must get spent
GPT_4O_OUTPUT_PICO = 10_000_000  # USD 10 per 1M output tokens
MOCK = {
    "kind": "mock",
    "seed": 7,
    "latency_ms": 0,
    "output_tokens": {"distribution": "uniform", "min": 20, "max": 800},
}
PLANS = {"p": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": LIMIT}]}}


def request_bodies(seed: int) -> list[dict[str, Any]]:
    """500 chat requests: mostly gpt-4o, random ``max_tokens`` from 50 to 1500."""
    rng = random.Random(seed)
    bodies = []
    for i in range(REQUESTS):
        model = "gpt-4o" if rng.random() < 0.8 else "gpt-4o-mini"
        bodies.append(
            {
                "model": model,
                "max_tokens": rng.randint(50, 1500),
                "messages": [{"role": "user", "content": f"request {i}: tell me a story"}],
            }
        )
    return bodies


def test_the_bodies_demand_far_more_than_the_budget() -> None:
    """The lower bound below means something only if the load would overspend by far."""
    outputs = range(20, 801)  # the mock's uniform output lengths

    def expected_output_pico(body: dict[str, Any]) -> int:
        tokens = sum(min(n, int(body["max_tokens"])) for n in outputs) // len(outputs)
        return tokens * GPT_4O_OUTPUT_PICO

    demand = sum(expected_output_pico(b) for b in request_bodies(1) if b["model"] == "gpt-4o")
    assert demand > 2 * LIMIT_PICO


async def fire(client: httpx.AsyncClient, key: str, bodies: list[dict[str, Any]]) -> list[Any]:
    auth = {"Authorization": f"Bearer {key}"}

    async def one(body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        r = await client.post("/v1/chat/completions", json=body, headers=auth)
        return r.status_code, r.json(), dict(r.headers)

    return list(await asyncio.gather(*(one(b) for b in bodies)))


def check_answers(answers: list[Any], bodies: list[dict[str, Any]]) -> int:
    """Every answer is a 200 or a contract 429, and the budget bound the load: some requests
    were refused (429) or had their ``max_tokens`` lowered to what still fit (an answer cut
    at a length below what it asked for; the mock cuts only at the limit it was sent). Which
    of the two happens depends on how the requests interleave. Returns how many were 200."""
    statuses: dict[int, int] = {}
    clamped = 0
    for (status, body, headers), sent in zip(answers, bodies, strict=True):
        statuses[status] = statuses.get(status, 0) + 1
        if status == 429:
            error = body["error"]
            assert error["code"] == "budget_exceeded", body
            assert error["budget"] == {"scope": "tenant", "period": "day", "name": None}
            assert error["limit_usd"] == LIMIT
            assert parse_usd(error["used_usd"]) <= LIMIT_PICO
            assert int(headers["retry-after"]) >= 1
        else:
            assert status == 200, (status, body)
            assert parse_usd(headers["x-farebox-cost-usd"]) > 0
            cut = body["choices"][0]["finish_reason"] == "length"
            clamped += cut and body["usage"]["completion_tokens"] < sent["max_tokens"]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.get(429, 0) + clamped > 0, f"the load never hit the budget: {statuses}"
    return statuses.get(200, 0)


def check_budget(budgets: dict[str, Any], spent: int, since: float | None = None) -> None:
    """The day budget holds exactly what the ledger spent: unless ``since`` (when the load
    began) is before the day the budget now counts (a run across UTC midnight: the spend of
    the day before is not this day's), when it holds at most that."""
    [budget] = budgets["data"]
    assert budget["scope"] == "tenant" and budget["period"] == "day"
    assert budget["limit_usd"] == LIMIT
    assert budget["reserved_usd"] == "0.00", budget
    day_began = datetime.fromisoformat(budget["resets_at"]).timestamp() - 86_400
    if since is not None and since < day_began:
        assert 0 <= parse_usd(budget["used_usd"]) <= spent, (budget, spent)
    else:
        assert parse_usd(budget["used_usd"]) == spent, (budget, spent)
    assert parse_usd(budget["remaining_usd"]) == LIMIT_PICO - parse_usd(budget["used_usd"])


def check_spend(spent: int) -> None:
    assert spent <= LIMIT_PICO, f"overspent: {spent} > {LIMIT_PICO} pico-USD"
    assert spent * 100 >= LIMIT_PICO * MIN_SHARE_USED, (
        f"only {spent / LIMIT_PICO:.1%} of the budget was spent under concurrent load"
    )


def test_500_concurrent_requests_on_four_workers(tmp_path: Path) -> None:
    config = write_config(tmp_path, providers={"sim": MOCK}, plans=PLANS)
    port = free_port()
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    started, since = time.monotonic(), time.time()
    with running([*args, "--workers", "4"], cwd=tmp_path, env=child_env(), port=port) as server:
        key = create_tenant_key(server.base_url, "t", "p")

        async def drive() -> list[Any]:
            limits = httpx.Limits(max_connections=REQUESTS, max_keepalive_connections=REQUESTS)
            async with httpx.AsyncClient(
                base_url=server.base_url, limits=limits, timeout=30.0
            ) as client:
                return await fire(client, key, request_bodies(1))

        answers = asyncio.run(drive())
        ok = check_answers(answers, request_bodies(1))
        rows = ledger_rows(db_path(tmp_path), "tenant_id = ?", ("t",))
        assert len(rows) == ok, "one ledger row per 200, nothing else"
        assert {r["status"] for r in rows} == {"ok"}
        spent = sum(int(r["cost"]) for r in rows)
        with httpx.Client(base_url=server.base_url, headers=admin_headers(), timeout=10) as admin:
            r = admin.get("/admin/v1/tenants/t/budgets")
            assert r.status_code == 200, r.text
            check_budget(r.json(), spent, since)
    check_spend(spent)
    assert time.monotonic() - started < 60


async def test_500_concurrent_requests_in_one_process(make_gateway: Any) -> None:
    since = time.time()
    async with make_gateway({"providers": {"sim": MOCK}, "plans": PLANS}) as gw:
        key = await gw.tenant_key("t", "p")
        answers = await fire(gw.client, key, request_bodies(2))
        ok = check_answers(answers, request_bodies(2))
        entries = await gw.ledger("t")
        assert len(entries) == ok and {e.status for e in entries} == {"ok"}
        spent = sum(e.cost for e in entries)
        r = await gw.client.get("/admin/v1/tenants/t/budgets", headers=gw.admin)
        assert r.status_code == 200, r.text
        check_budget(r.json(), spent, since)
        me = await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
        assert me.json()["budgets"] == r.json()["data"]
    check_spend(spent)

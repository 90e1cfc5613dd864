"""Issue 11, acceptance 4 (first part): every GraphQL query answers what the admin REST API
answers for the same data, on the same gateway: budgets, anomalies, deployments, tenants and
keys (never a secret), usage series (each grouping, buckets in a time zone), top spenders and
the request log."""

from __future__ import annotations

import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from farebox.core.anomaly import Incident
from farebox.core.money import format_usd, parse_usd
from tests.outage import dsn, fresh_databases, redis_url, require_services

CONFIG: dict[str, Any] = {
    "providers": {
        "sim": {"kind": "mock", "seed": 1, "output_tokens": {"distribution": "fixed", "mean": 20}}
    },
    "plans": {
        "gold": {
            "models": ["*"],
            "budgets": [
                {"period": "day", "limit_usd": "5"},
                {"period": "month", "limit_usd": "50"},
            ],
        },
        "free": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "1"}]},
    },
}
PLANS = {"a": "gold", "b": "free", "c": "gold"}
# tenant, model, user, feature, metadata
CALLS: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("a", "gpt-4o-mini", "u1", "chat", {"team": "red"}),
    ("a", "gpt-4o", "u2", "search", {"team": "blue"}),
    ("a", "gpt-4o-mini", "u1", "search", {"team": "red", "n": 3}),
    ("b", "gpt-4o-mini", "u3", "chat", {"team": "red"}),
    ("b", "gpt-4o", "u3", "chat", {}),
    ("c", "gpt-4o", "u4", "chat", {"team": "green"}),
]
SERIES_FIELDS = (
    "group requests errors tokens { input cached cacheWrite output reasoning } "
    "costUsd revenueUsd marginUsd"
)


@pytest.fixture(params=["sqlite", "postgres"])
def stored(request: pytest.FixtureRequest, make_gateway: Any) -> Iterator[Callable[[], Any]]:
    """Opens a gateway with ``CONFIG``: on the default SQLite file, or on a fresh PostgreSQL
    database with the shared Redis (its keys under a prefix of their own, deleted after)."""
    if request.param == "sqlite":
        yield lambda: make_gateway(CONFIG)
        return
    require_services()
    with fresh_databases(1) as [name]:
        config = {**CONFIG, "database": dsn(name), "redis": redis_url(), "secret": "env:GQ_SECRET"}
        env = {"GQ_SECRET": secrets.token_hex(32)}
        yield lambda: make_gateway(config, env=env)


async def seed(gw: Any) -> dict[str, str]:
    """Three tenants on two plans, and traffic with users, features and metadata tags."""
    keys = {tenant: await gw.tenant_key(tenant, plan) for tenant, plan in PLANS.items()}
    for tenant, model, user, feature, metadata in CALLS:
        headers = {
            "Authorization": f"Bearer {keys[tenant]}",
            "X-Farebox-User": user,
            "X-Farebox-Feature": feature,
            "X-Farebox-Metadata": orjson.dumps(metadata).decode(),
        }
        body = {"model": model, "messages": [{"role": "user", "content": f"hi from {user}"}]}
        r = await gw.client.post("/v1/chat/completions", json=body, headers=headers)
        assert r.status_code == 200, r.text
    return keys


def span() -> tuple[str, str]:
    now = time.time()
    return str(int(now - 86_400)), str(int(now + 3_600))


async def gql(gw: Any, query: str, variables: dict[str, Any] | None = None,
              key: str | None = None) -> dict[str, Any]:  # fmt: skip
    """POST a query: the admin's with no ``key``, a tenant's with its key."""
    path, headers = ("/admin/graphql", gw.admin) if key is None else (
        "/v1/graphql", {"Authorization": f"Bearer {key}"})  # fmt: skip
    r = await gw.client.post(path, json={"query": query, "variables": variables}, headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def data(gw: Any, query: str, variables: dict[str, Any] | None = None,
               key: str | None = None) -> dict[str, Any]:  # fmt: skip
    body = await gql(gw, query, variables, key)
    assert "errors" not in body, body["errors"]
    result: dict[str, Any] = body["data"]
    return result


async def rest(gw: Any, path: str, **params: Any) -> Any:
    r = await gw.client.get(path, params=params, headers=gw.admin)
    assert r.status_code == 200, r.text
    return r.json()


def camel(name: str) -> str:
    head, *rest_ = name.split("_")
    return head + "".join(p.title() for p in rest_)


def camelised(row: dict[str, Any]) -> dict[str, Any]:
    return {camel(k): v for k, v in row.items()}


# --- budgets, anomalies, deployments, tenants, keys ---------------------------------------------


async def test_budgets_equal_the_admin_rest_budgets(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        fields = "scope period name limitUsd usedUsd reservedUsd remainingUsd resetsAt"
        for tenant in PLANS:
            listed = (await rest(gw, f"/admin/v1/tenants/{tenant}/budgets"))["data"]
            assert listed and any(parse_usd(b["used_usd"]) > 0 for b in listed)
            expected = [camelised(b) for b in listed]
            got = await data(gw, f'{{ budgets(tenant: "{tenant}") {{ {fields} }} }}')
            assert got["budgets"] == expected
            own = await data(gw, f"{{ budgets {{ {fields} }} }}", key=keys[tenant])
            assert own["budgets"] == expected


async def test_anomalies_equal_the_admin_rest_anomalies(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        for n, tenant in enumerate(("a", "b", "b")):
            incident = Incident(
                id=f"inc_{n}", tenant_id=tenant, key_id="", target="none", target_key="",
                metric="spend" if n else "requests", observed=9_000 + n, baseline=60,
                threshold=360, opened_at=time.time() - n, dedup_key=f"d{n}",
            )  # fmt: skip
            await gw.store.traffic.open_incident(incident, 0.0)
        fields = ("id status summary tenant key metric unit observedPerHour baselinePerHour "
                  "thresholdPerHour action pausedKey openedAt resolvedAt")  # fmt: skip

        def shaped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
            names = fields.split()
            out = []
            for row in rows:
                c = camelised(row)
                c["status"] = c["status"].upper()
                out.append({k: str(c[k]) if k.endswith("PerHour") else c[k] for k in names})
            return out

        everything = shaped((await rest(gw, "/admin/v1/anomalies"))["data"])
        assert len(everything) >= 2
        assert (await data(gw, f"{{ anomalies {{ {fields} }} }}"))["anomalies"] == everything
        of_b = shaped((await rest(gw, "/admin/v1/anomalies", tenant="b"))["data"])
        got = await data(gw, f'{{ anomalies(tenant: "b", status: OPEN) {{ {fields} }} }}')
        assert got["anomalies"] == of_b and {a["tenant"] for a in of_b} == {"b"}
        own = await data(gw, f"{{ anomalies {{ {fields} }} }}", key=keys["a"])
        assert own["anomalies"] == [a for a in everything if a["tenant"] == "a"]


async def test_deployments_equal_the_admin_rest_deployments(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        await seed(gw)
        listed = (await rest(gw, "/admin/v1/deployments"))["data"]
        fields = ("deployment provider model weight aliases state openUntil successes failures "
                  "failureStreak")  # fmt: skip
        got = (await data(gw, f"{{ deployments {{ {fields} }} }}"))["deployments"]
        assert got == [{k: d[k] for k in fields.split()} for d in map(camelised, listed)]
        assert sum(d["successes"] for d in got) == len(CALLS)


async def test_tenants_and_keys_equal_rest_and_never_show_a_secret(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        fields = "id name plan paused pauseReason createdAt metadata"
        tenants = [camelised(t) for t in (await rest(gw, "/admin/v1/tenants"))["data"]]
        got = (await data(gw, f"{{ tenants {{ {fields} }} }}"))["tenants"]
        assert got == [{k: t[k] for k in fields.split()} for t in tenants]
        key_fields = "id kind name tenant prefix createdAt expiresAt revoked paused pauseReason"
        body = await gql(gw, f'{{ keys(tenant: "a") {{ {key_fields} }} all: keys {{ id }} }}')
        listed = [camelised(k) for k in (await rest(gw, "/admin/v1/tenants/a/keys"))["data"]]
        assert body["data"]["keys"] == [{k: x[k] for k in key_fields.split()} for x in listed]
        assert {k["id"] for k in listed} < {k["id"] for k in body["data"]["all"]}
        own = await gql(gw, f"{{ keys {{ {key_fields} }} tenant {{ id plan }} }}", key=keys["a"])
        assert own["data"]["keys"] == body["data"]["keys"]
        assert own["data"]["tenant"] == {"id": "a", "plan": "gold"}
        for text in (orjson.dumps(body), orjson.dumps(own)):
            assert not any(raw.encode() in text for raw in keys.values())
            assert b"hash" not in text.lower()


# --- series -----------------------------------------------------------------------------------


def margin(row: dict[str, Any]) -> str:
    return format_usd(parse_usd(row["revenue_usd"]) - parse_usd(row["cost_usd"]))


def _usage_row(row: dict[str, Any], group: str) -> dict[str, Any]:
    return {"group": row.get(group), "requests": row["requests"], "input": row["input_tokens"],
            "output": row["output_tokens"], "cost": row["cost_usd"],
            "revenue": row["revenue_usd"]}  # fmt: skip


def _point_row(p: dict[str, Any]) -> dict[str, Any]:
    return {"group": p["group"], "requests": p["requests"], "input": p["tokens"]["input"],
            "output": p["tokens"]["output"], "cost": p["costUsd"],
            "revenue": p["revenueUsd"]}  # fmt: skip


def _by_group(rows: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {r["group"]: r for r in rows}


async def test_series_in_every_grouping_equals_the_rest_usage(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        await seed(gw)
        start, end = span()
        for group in ("tenant", "model", "feature", "user", "key", "status"):
            usage = await rest(gw, "/admin/v1/usage", group_by=group, **{"from": start, "to": end})
            expected = _by_group([_usage_row(r, group) for r in usage["data"]])
            q = (f'{{ series(start: "{start}", end: "{end}", bucket: ALL, '
                 f"groupBy: {group.upper()}) {{ {SERIES_FIELDS} }} }}")  # fmt: skip
            points = (await data(gw, q))["series"]
            assert _by_group([_point_row(p) for p in points]) == expected, group
            for p in points:
                margin = parse_usd(p["revenueUsd"]) - parse_usd(p["costUsd"])
                assert p["marginUsd"] == format_usd(margin)


async def test_series_equal_the_rest_series(stored: Callable[[], Any]) -> None:
    async with stored() as gw:
        keys = await seed(gw)
        start, end = span()
        fields = "bucket bucketUnix " + SERIES_FIELDS
        cases = [("hour", "model", "UTC"), ("day", "tenant", "America/New_York"),
                 ("month", "feature", "Asia/Tokyo"), ("all", None, "UTC")]  # fmt: skip
        for bucket, group, tz in cases:
            params = {"start": start, "end": end, "bucket": bucket, "tz": tz}
            if group:
                params["group_by"] = group
            listed = (await rest(gw, "/admin/v1/series", **params))["data"]
            expected = [
                {"bucket": p["bucket_start"], "bucketUnix": p["bucket"], "group": p["group"],
                 "requests": p["requests"], "errors": p["errors"],
                 "tokens": {"input": p["input_tokens"], "cached": p["cached_input_tokens"],
                            "cacheWrite": p["cache_write_tokens"], "output": p["output_tokens"],
                            "reasoning": p["reasoning_tokens"]},
                 "costUsd": p["cost_usd"], "revenueUsd": p["revenue_usd"],
                 "marginUsd": p["margin_usd"]}
                for p in listed
            ]  # fmt: skip
            grouping = f", groupBy: {group.upper()}" if group else ""
            q = (f'{{ series(start: "{start}", end: "{end}", bucket: {bucket.upper()}, '
                 f'tz: "{tz}"{grouping}) {{ {fields} }} }}')  # fmt: skip
            assert (await data(gw, q))["series"] == expected and expected
            of_a = await rest(gw, "/admin/v1/series", **params, tenant_id="a")
            own = await data(gw, q, key=keys["a"])
            assert [p["costUsd"] for p in own["series"]] == [p["cost_usd"] for p in of_a["data"]]


async def test_series_by_plan_and_by_tag_sum_the_ledger(
    stored: Callable[[], Any],
) -> None:
    async with stored() as gw:
        await seed(gw)
        start, end = span()
        entries = await gw.ledger()
        by_plan: dict[str, int] = defaultdict(int)
        by_team: dict[str | None, int] = defaultdict(int)
        for e in entries:
            by_plan[PLANS[e.tenant_id]] += e.cost
            team = e.metadata.get("team")
            by_team[team] += e.cost
        q = (f'{{ p: series(start: "{start}", end: "{end}", bucket: ALL, groupBy: PLAN) '
             f"{{ group costUsd requests }} "
             f't: series(start: "{start}", end: "{end}", bucket: ALL, groupBy: TAG, tag: "team") '
             f"{{ group costUsd requests }} }}")  # fmt: skip
        got = await data(gw, q)
        assert {p["group"]: p["costUsd"] for p in got["p"]} == {
            k: format_usd(v) for k, v in by_plan.items()
        }
        assert {p["group"]: p["costUsd"] for p in got["t"]} == {
            k: format_usd(v) for k, v in by_team.items()
        }
        assert sum(p["requests"] for p in got["t"]) == len(entries) == len(CALLS)


async def test_series_buckets_in_a_time_zone_sum_to_the_whole(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        start, end = span()
        whole = f'series(start: "{start}", end: "{end}", bucket: ALL) {{ costUsd requests }}'
        for bucket in ("HOUR", "DAY", "MONTH"):
            q = (f'{{ all: {whole} b: series(start: "{start}", end: "{end}", bucket: {bucket}, '
                 f'tz: "Asia/Kolkata") {{ bucket bucketUnix costUsd requests }} }}')  # fmt: skip
            got = await data(gw, q, key=keys["a"])
            [total] = got["all"]
            assert sum(parse_usd(p["costUsd"]) for p in got["b"]) == parse_usd(total["costUsd"])
            assert sum(p["requests"] for p in got["b"]) == total["requests"] == 3
            assert all(p["bucket"].endswith("+05:30") for p in got["b"])
        body = await gql(gw, f'{{ series(start: "{start}", end: "{end}", tz: "Mars/Olympus") '
                             "{ requests } }")  # fmt: skip
        assert body["data"] is None
        [error] = body["errors"]
        assert "IANA" in error["message"] and "Mars/Olympus" in error["message"]
        assert error["extensions"]["code"] == "invalid_request"


# --- top spenders and the request log ---------------------------------------------------------


async def test_top_spenders_equal_the_rest_top_spenders(
    stored: Callable[[], Any],
) -> None:
    async with stored() as gw:
        await seed(gw)
        start, end = span()
        usage = await rest(gw, "/admin/v1/usage", group_by="tenant", **{"from": start, "to": end})
        rows = "rows { tenant plan amountUsd sharePercent requests costUsd revenueUsd marginUsd }"
        for by in ("cost", "revenue"):
            ranked = sorted(usage["data"], key=lambda r: (-parse_usd(r[f"{by}_usd"]), r["tenant"]))
            cases = [("n: 2", {"n": 2}, 2), ("topPercent: 34", {"top_percent": 34}, 2),
                     ("topPercent: 100", {"top_percent": 100}, 3), ("", {}, 3)]  # fmt: skip
            for args, params, count in cases:
                listed = await rest(gw, "/admin/v1/top-spenders", start=start, end=end, by=by,
                                    **params)  # fmt: skip
                q = (f'{{ topSpenders(start: "{start}", end: "{end}", by: {by.upper()} {args}) '
                     f"{{ by totalUsd tenants {rows} }} }}")  # fmt: skip
                got = (await data(gw, q))["topSpenders"]
                assert got["by"] == by.upper() and got["totalUsd"] == listed["total_usd"]
                assert got["tenants"] == listed["tenants"] == 3
                expected = [
                    {**camelised(r), "plan": PLANS[r["tenant"]], "marginUsd": margin(r)}
                    for r in listed["data"]
                ]
                assert got["rows"] == expected and len(expected) == count
                top = ranked[: len(expected)]  # the REST usage, ranked here
                assert [(r["tenant"], r["costUsd"]) for r in got["rows"]] == [
                    (r["tenant"], r["cost_usd"]) for r in top
                ]


REQUEST_FIELDS = (
    "time startedAt requestId tenant keyId user feature endpoint modelRequested modelServed "
    "provider status httpStatus errorCode stream tokens { input cached cacheWrite output "
    "reasoning } costUsd revenueUsd cache savedUsd latencyMs ttftMs upstreamMs metadata"
)


def request_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row of GET /admin/v1/requests, with GraphQL's names."""
    return {**camelised(row), "tokens": camelised(row["tokens"])}


async def test_the_request_log_equals_the_rest_request_log_page_by_page(
    stored: Callable[[], Any],
) -> None:
    async with stored() as gw:
        keys = await seed(gw)
        q = (f"query($after: String, $f: RequestFilter) {{ requests(first: 2, after: $after, "
             f"filter: $f) {{ nodes {{ {REQUEST_FIELDS} }} nextCursor }} }}")  # fmt: skip
        seen: list[dict[str, Any]] = []
        after: str | None = None
        cursor: dict[str, Any] = {}
        for _ in range(len(CALLS)):
            page = (await data(gw, q, {"after": after}))["requests"]
            listed = await rest(gw, "/admin/v1/requests", limit=2, **cursor)
            assert page["nodes"] == [request_row(r) for r in listed["data"]]
            assert page["nextCursor"] == listed["next_cursor"]
            seen += page["nodes"]
            after = page["nextCursor"]
            if after is None:
                break
            cursor = {"cursor": after}
        ledger = {e.request_id: e for e in await gw.ledger()}
        assert sorted(n["requestId"] for n in seen) == sorted(ledger)
        assert [n["startedAt"] for n in seen] == sorted(
            (n["startedAt"] for n in seen), reverse=True
        )
        for node in seen:
            entry = ledger[node["requestId"]]
            assert node["costUsd"] == format_usd(entry.cost) and node["user"] == entry.user
            assert node["metadata"] == entry.metadata
        own = (await data(gw, "{ requests(first: 50) { nodes { tenant } nextCursor } }",
                          key=keys["b"]))["requests"]  # fmt: skip
        assert [n["tenant"] for n in own["nodes"]] == ["b", "b"] and own["nextCursor"] is None
        tag = {"tag": {"name": "team", "value": "red"}, "user": "u1"}
        tagged = await data(gw, q, {"after": None, "f": tag})
        listed = await rest(gw, "/admin/v1/requests", tag="team:red", user="u1", limit=2)
        assert tagged["requests"]["nodes"] == [request_row(r) for r in listed["data"]]
        expected = {e.request_id for e in ledger.values()
                    if e.user == "u1" and e.metadata.get("team") == "red"}  # fmt: skip
        assert {n["requestId"] for n in tagged["requests"]["nodes"]} == expected and expected
        mine = await data(gw, q, {"after": None, "f": {"model": "gpt-4o"}}, key=keys["a"])
        listed = await rest(gw, "/admin/v1/requests", tenant="a", model="gpt-4o", limit=2)
        assert mine["requests"]["nodes"] == [request_row(r) for r in listed["data"]]
        assert len(listed["data"]) == 1

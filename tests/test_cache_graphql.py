"""Issue 12, "Seen" (GraphQL): cache stats per tenant on the admin schema (``cache(tenant:)``,
and ``caches`` over every tenant) and the tenant's own on the tenant schema (``cache``, no
tenant argument), each equal to the REST answer; the limits on cost hold for them; the request
log's rows carry the ``cache`` value."""

from __future__ import annotations

from typing import Any

from farebox.api.graphql.limits import MAX_COST, query_cost
from farebox.core.cache import CacheUsage
from tests.test_cache_admin import MEMORY, FakeCache, get, seeded
from tests.test_graphql_api import data, gql

FIELDS = "tenant entries bytes hits misses hitRate savedUsd since until"
REST_NAMES = {"hitRate": "hit_rate", "savedUsd": "saved_usd"}


def as_rest(node: dict[str, Any]) -> dict[str, Any]:
    return {REST_NAMES.get(k, k): v for k, v in node.items()}


async def test_the_admin_schema_answers_what_rest_answers(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        await seeded(gw)
        gw.app.state.services.cache = FakeCache(held={"a": CacheUsage(4, 400)})
        for tenant in ("a", "b", "c"):
            got = await data(gw, f'{{ cache(tenant: "{tenant}") {{ {FIELDS} }} }}')
            assert as_rest(got["cache"]) == await get(gw, f"/admin/v1/tenants/{tenant}/cache")
        since, until = "2020-01-01", "2020-02-01T00:00:00Z"
        got = await data(gw, f'{{ cache(tenant: "a", since: "{since}", until: "{until}") '
                             f"{{ {FIELDS} }} }}")  # fmt: skip
        rest = await get(gw, "/admin/v1/tenants/a/cache", since=since, until=until)
        assert as_rest(got["cache"]) == rest and rest["hits"] == 0
        listed = await data(gw, f"{{ caches {{ {FIELDS} }} }}")
        assert [as_rest(n) for n in listed["caches"]] == (await get(gw, "/admin/v1/cache"))["data"]
        assert [n["tenant"] for n in listed["caches"]] == ["a", "b"]


async def test_the_tenant_schema_answers_its_own_cache_only(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        keys = await seeded(gw)
        gw.app.state.services.cache = FakeCache(held={"a": CacheUsage(1, 2), "b": CacheUsage(3, 4)})
        for tenant, key in zip(("a", "b", "c"), keys, strict=True):
            got = await data(gw, f"{{ cache {{ {FIELDS} }} }}", key=key)
            assert as_rest(got["cache"]) == await get(gw, f"/admin/v1/tenants/{tenant}/cache")
        for query in ('{ cache(tenant: "b") { hits } }', "{ caches { tenant hits } }"):
            body = await gql(gw, query, key=keys[0])
            assert body["data"] is None and body["errors"], query
            assert '"b"' not in str(body["data"])


async def test_bad_arguments_and_unknown_tenants_are_errors(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        await seeded(gw)
        asks = {
            '{ cache(tenant: "zz") { hits } }': "not found",
            '{ cache(tenant: "a", since: "soon") { hits } }': "since",
            '{ cache(tenant: "a", since: "2026-02-01", until: "2026-01-01") { hits } }': "until",
            '{ caches(until: "1e400") { hits } }': "until",
        }
        for query, words in asks.items():
            body = await gql(gw, query)
            assert body["data"] is None, query
            assert words in body["errors"][0]["message"], (query, body["errors"])


async def test_the_cost_limit_counts_the_cache_fields(make_gateway: Any) -> None:
    from graphql import parse

    many = " ".join(f"c{i}: caches {{ hits }}" for i in range(7))
    assert query_cost(parse(f"{{ {many} }}")) > MAX_COST
    assert query_cost(parse('{ cache(tenant: "a") { hits } }')) == 11
    async with make_gateway(MEMORY) as gw:
        await seeded(gw)
        body = await gql(gw, f"{{ {many} }}")
        assert body.get("data") is None and "costs" in body["errors"][0]["message"]


async def test_the_request_log_rows_carry_the_cache_value(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        await seeded(gw)
        got = await data(gw, '{ requests(tenant: "a", first: 50) { nodes { requestId cache } } }')
        rows = {n["requestId"]: n["cache"] for n in got["requests"]["nodes"]}
        assert rows["r1"] == "hit-exact"
        rest = await get(gw, "/admin/v1/requests", tenant="a")
        assert rows == {r["request_id"]: r.get("cache") for r in rest["data"]}
        # the cache filter, as REST's ?cache=
        for value in ("hit-exact", "miss"):
            query = (f'{{ requests(tenant: "a", first: 50, filter: {{cache: "{value}"}}) '
                     f"{{ nodes {{ requestId cache }} }} }}")  # fmt: skip
            got = await data(gw, query)
            rest = await get(gw, "/admin/v1/requests", tenant="a", cache=value)
            ids = [n["requestId"] for n in got["requests"]["nodes"]]
            assert ids == [r["request_id"] for r in rest["data"]]
            assert {n["cache"] for n in got["requests"]["nodes"]} <= {value}

"""Issue 11, acceptance 4 (second part): a tenant key on ``/v1/graphql`` reads its own tenant
and nothing else, whatever it sends: a ``tenant`` argument (there is none), filters naming
another tenant's key, aliases, fragments, variables, a cursor from another tenant's page,
introspection and a batch. Each answer holds only its own tenant's numbers, or an error."""

from __future__ import annotations

from typing import Any

from farebox.core.money import format_usd, parse_usd
from tests.test_graphql_api import CONFIG, gql, seed, span

SERIES = "series(start: $s, end: $e, bucket: ALL, groupBy: TENANT) { group requests costUsd }"


async def own_cost(gw: Any, tenant: str) -> str:
    return format_usd(sum(e.cost for e in await gw.ledger(tenant)))


async def key_ids(gw: Any, tenant: str) -> list[str]:
    r = await gw.client.get(f"/admin/v1/tenants/{tenant}/keys", headers=gw.admin)
    return [k["id"] for k in r.json()["data"]]


def tenants_in(value: Any) -> set[str]:
    """Every value of a ``tenant`` or ``group`` field anywhere in an answer."""
    found: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if k in ("tenant", "group") and isinstance(v, str):
                found.add(v)
            found |= tenants_in(v)
    elif isinstance(value, list):
        for v in value:
            found |= tenants_in(v)
    return found


async def test_a_tenant_argument_does_not_exist_in_the_tenant_schema(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        start, end = span()
        asks = [
            f'{{ series(start: "{start}", end: "{end}", tenant: "b") {{ requests }} }}',
            '{ budgets(tenant: "b") { usedUsd } }',
            '{ anomalies(tenant: "b") { id } }',
            '{ requests(tenant: "b") { nodes { tenant } } }',
            '{ keys(tenant: "b") { id } }',
            "{ tenants { id } }",
            '{ topSpenders(start: "0", end: "1", n: 3) { totalUsd } }',
            "{ deployments { deployment } }",
            '{ requests(filter: {tenant: "b"}) { nodes { tenant } } }',
        ]
        for query in asks:
            body = await gql(gw, query, key=keys["a"])
            assert body["data"] is None, query
            assert body["errors"] and all(e["message"] for e in body["errors"])
            assert "b" not in tenants_in(body)


async def test_filters_aliases_fragments_and_variables_read_only_its_own(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        start, end = span()
        b_key = (await key_ids(gw, "b"))[0]
        query = f"""
        query Mine($s: String!, $e: String!, $k: String) {{
          mine: {SERIES}
          theirs: series(start: $s, end: $e, bucket: ALL, filter: {{key: $k}}) {{ requests }}
          ...More
          log: requests(filter: {{key: $k}}) {{ nodes {{ tenant }} }}
          everyone: requests(first: 200) {{ nodes {{ tenant }} }}
        }}
        fragment More on Query {{
          ... on Query {{ byUser: series(start: $s, end: $e, groupBy: TENANT) {{ group }} }}
          keys {{ tenant }}
          anomalies {{ tenant }}
        }}
        """
        variables = {"s": start, "e": end, "k": b_key}
        body = await gql(gw, query, variables, key=keys["a"])
        assert "errors" not in body, body
        got = body["data"]
        assert got["mine"] == [{"group": "a", "requests": 3, "costUsd": await own_cost(gw, "a")}]
        assert got["theirs"] == [] and got["log"]["nodes"] == []
        assert [n["tenant"] for n in got["everyone"]["nodes"]] == ["a"] * 3
        assert tenants_in(got) == {"a"}
        admin = await gql(gw, query, {**variables, "k": None})
        assert {"a", "b", "c"} <= tenants_in(admin["data"])  # the same query, unforced


async def test_another_tenants_cursor_still_pages_its_own(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        page = "requests(first: 1, after: $after) { nodes { tenant requestId } nextCursor }"
        q = f"query($after: String) {{ {page} }}"
        theirs = await gql(gw, q, {"after": None}, key=keys["b"])
        cursor = theirs["data"]["requests"]["nextCursor"]
        assert cursor is not None
        body = await gql(gw, q, {"after": cursor}, key=keys["a"])
        assert "b" not in tenants_in(body) and "c" not in tenants_in(body)


async def test_introspection_shows_no_way_to_name_a_tenant(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        q = """{ __schema { queryType { fields { name args { name } } }
                 types { name inputFields { name } } } }"""
        body = await gql(gw, q, key=keys["a"])
        assert "errors" not in body, body
        fields = body["data"]["__schema"]["queryType"]["fields"]
        names = {f["name"] for f in fields}
        assert names == {"series", "budgets", "anomalies", "requests", "tenant", "keys", "cache",
                         "credits", "invoice", "guardrailFindings"}  # fmt: skip
        assert all(a["name"] != "tenant" for f in fields for a in f["args"])
        inputs = [t for t in body["data"]["__schema"]["types"] if t["inputFields"]]
        assert inputs and all(i["name"] != "tenant" for t in inputs for i in t["inputFields"])
        admin = await gql(gw, q)
        admin_fields = admin["data"]["__schema"]["queryType"]["fields"]
        assert {"topSpenders", "deployments", "tenants"} <= {f["name"] for f in admin_fields}


async def test_a_batch_is_refused_and_keys_do_not_cross_endpoints(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        auth = {"Authorization": f"Bearer {keys['a']}"}
        batch = [{"query": "{ tenant { id } }"}, {"query": '{ budgets(tenant: "b") { scope } }'}]
        r = await gw.client.post("/v1/graphql", json=batch, headers=auth)
        assert r.status_code == 400 and "Batched" in r.json()["errors"][0]["message"]
        assert "data" not in r.json()
        r = await gw.client.post("/admin/graphql", json={"query": "{ tenants { id } }"},
                                 headers=auth)  # fmt: skip
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = await gw.client.post("/v1/graphql", json={"query": "{ tenant { id } }"},
                                 headers=gw.admin)  # fmt: skip
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = await gw.client.post("/v1/graphql", json={"query": "{ tenant { id } }"})
        assert r.status_code == 401 and "error" in r.json()
        r = await gw.client.get("/v1/graphql", params={"query": "{ tenant { id } }"}, headers=auth)
        assert r.status_code == 200 and r.json() == {"data": {"tenant": {"id": "a"}}}


async def test_every_grouping_holds_only_its_own_numbers(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        start, end = span()
        mine = await own_cost(gw, "a")
        for group in ("TENANT", "PLAN", "MODEL", "FEATURE", "USER", "KEY", "STATUS"):
            q = (f'{{ series(start: "{start}", end: "{end}", bucket: ALL, groupBy: {group}) '
                 "{ group requests costUsd } }")  # fmt: skip
            body = await gql(gw, q, key=keys["a"])
            points = body["data"]["series"]
            assert sum(p["requests"] for p in points) == 3, group
            assert format_usd(sum(parse_usd(p["costUsd"]) for p in points)) == mine, group
        plans = await gql(gw, q.replace("STATUS", "PLAN"), key=keys["a"])
        assert [p["group"] for p in plans["data"]["series"]] == ["gold"]

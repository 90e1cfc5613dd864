"""Issue 11, acceptance 4 (third part): no GraphQL query can take the gateway down. Too deep,
too many aliases or tokens, too costly (also a fragment bomb whose expansion is exponential,
and a fragment cycle), a page or a ranking too large, a series range too long for its buckets:
each is refused with a clear error in the standard ``errors`` array, before any store is
read. Malformed requests are 4xx; random query strings and variables never answer 5xx."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import get_introspection_query
from hypothesis import strategies as st

from farebox.api.graphql import limits
from farebox.stores import rollup_rows
from tests.drawn import draw
from tests.test_graphql_api import CONFIG, gql, seed, span

TRACE_MARKERS = ("Traceback", 'File "/', "site-packages")


def fragment_bomb(levels: int) -> str:
    """A document of a few hundred tokens whose expansion holds 2**levels fields."""
    frags = [f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(levels)]
    return (
        "query { ...F0 } " + " ".join(frags) + f" fragment F{levels} on Query {{ keys {{ id }} }}"
    )


def refused(body: dict[str, Any], *words: str) -> str:
    """The one error's message, after checking nothing ran (``data`` is null)."""
    assert body["data"] is None, body
    message = " ".join(e["message"] for e in body["errors"])
    assert all(w in message for w in words), message
    return message


async def test_too_deep_too_many_aliases_or_tokens_is_refused(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        deep = "{ requests { nodes { tokens { input { a { b { c { d } } } } } } } }"
        refused(await gql(gw, deep), "exceeds maximum operation depth", str(limits.MAX_DEPTH))
        refused(await gql(gw, deep, key=keys["a"]), "maximum operation depth")
        aliases = " ".join(f"a{i}: __typename" for i in range(limits.MAX_ALIASES + 1))
        refused(await gql(gw, f"{{ {aliases} }}", key=keys["a"]), "aliases")
        tokens = " ".join("__typename" for _ in range(limits.MAX_TOKENS + 1))
        refused(await gql(gw, f"{{ {tokens} }}"), "tokens")
        ok = await gql(gw, get_introspection_query(descriptions=True), key=keys["a"])
        assert "errors" not in ok and ok["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_a_costly_query_a_fragment_bomb_and_a_cycle_are_refused(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        start, end = span()
        six = " ".join(
            f's{i}: series(start: "{start}", end: "{end}") {{ requests }}' for i in range(6)
        )
        refused(await gql(gw, f"{{ {six} }}", key=keys["a"]), "costs", str(limits.MAX_COST))
        five = six.rsplit(" s5:", 1)[0]
        assert "errors" not in await gql(gw, f"{{ {five} }}", key=keys["a"])
        body = await gql(gw, fragment_bomb(60), key=keys["a"])
        assert body["errors"][0]["extensions"]["code"] == "query_too_costly"
        refused(body, "costs", "over the limit")
        cycle = (
            "query { ...A } fragment A on Query { ...B } fragment B on Query { keys { id } ...A }"
        )
        refused(await gql(gw, cycle), "cycle")


async def test_arguments_over_their_caps_are_refused(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        start, end = span()
        asks = {
            "{ requests(first: 100000) { nextCursor } }": "'first' must be between 1 and 200",
            "{ requests(first: 0) { nextCursor } }": "'first' must be between 1 and 200",
            '{ series(start: "2026-01-01", end: "2026-03-01", bucket: HOUR) { requests } }':
                "at most 31 days",
            '{ series(start: "2025-01-01", end: "2026-03-01", groupBy: USER) { requests } }':
                "at most 31 days",
            f'{{ series(start: "{end}", end: "{start}") {{ requests }} }}': "after 'start'",
            f'{{ series(start: "{start}", end: "{end}", groupBy: TAG) {{ requests }} }}': "'tag'",
            '{ series(start: "yesterday", end: "1") { requests } }': "ISO 8601",
            '{ series(start: "1e300", end: "1e301") { requests } }': "out of range",
            '{ series(start: "0", end: "1", tz: "../../etc/passwd") { requests } }': "IANA",
        }  # fmt: skip
        for query, words in asks.items():
            body = await gql(gw, query, key=keys["a"])
            refused(body, words)
            assert body["errors"][0]["extensions"]["code"] == "invalid_request"
        tops = {
            f'{{ topSpenders(start: "{start}", end: "{end}", n: 5000) {{ totalUsd }} }}': "'n'",
            f'{{ topSpenders(start: "{end}", end: "{start}") {{ totalUsd }} }}': "after 'start'",
            f'{{ topSpenders(start: "{start}", end: "{end}", topPercent: 0) {{ totalUsd }} }}':
                "top_percent",
            f'{{ topSpenders(start: "{start}", end: "{end}", n: 1, topPercent: 5) {{ tenants }} }}':
                "exactly one",
        }  # fmt: skip
        for query, words in tops.items():
            refused(await gql(gw, query), words)
        body = await gql(gw, '{ budgets(tenant: "nope") { scope } }')
        r = await gw.client.get("/admin/v1/tenants/nope/budgets", headers=gw.admin)
        assert r.status_code == 404  # the same error, with the same message and code
        assert refused(body, "nope") == r.json()["error"]["message"]
        assert body["errors"][0]["extensions"]["code"] == r.json()["error"]["code"]
        body = await gql(gw, '{ requests(after: "garbage") { nextCursor } }', key=keys["a"])
        refused(body, "cursor")
        assert body["errors"][0]["extensions"] == {"code": "invalid_request", "param": "cursor"}


async def test_malformed_requests_get_a_clear_4xx(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        auth = {"Authorization": f"Bearer {keys['a']}"}
        post = gw.client.post
        r = await post(
            "/v1/graphql",
            content=b"{not json",
            headers={**auth, "content-type": "application/json"},
        )
        assert r.status_code == 400 and "not valid JSON" in r.json()["errors"][0]["message"]
        r = await post(
            "/v1/graphql", content=b"query=x", headers={**auth, "content-type": "text/plain"}
        )
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
        for body in ({}, {"query": 3}, {"query": "{ tenant { id } }", "variables": [1]},
                     {"query": "{ tenant { id } }", "operationName": 7}, "x", 5):  # fmt: skip
            r = await post("/v1/graphql", json=body, headers=auth)
            assert r.status_code == 400 and r.json()["errors"][0]["message"], body
        r = await post("/v1/graphql", json={"query": "mutation { x }"}, headers=auth)
        assert r.status_code == 200 and r.json()["data"] is None and r.json()["errors"]
        huge = {"query": "{ tenant { id } }", "variables": {"x": "y" * 5_000_000}}
        r = await post("/admin/graphql", json=huge, headers=gw.admin)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
        r = await gw.client.get("/v1/graphql", params={"query": "{ tenant { id } }", "x": "1"},
                                headers=auth)  # fmt: skip
        assert r.status_code == 400 and "'x'" in r.json()["errors"][0]["message"]
        r = await gw.client.put("/v1/graphql", json={"query": "{ tenant { id } }"}, headers=auth)
        assert r.status_code == 405


# --- random queries and variables ---------------------------------------------------------------

WORDS = ["{", "}", "(", ")", ":", "$v", "...", "query", "fragment F on Query", "on", "series",
         "budgets", "requests", "tenant", "keys", "anomalies", "nodes", "tokens", "input",
         "group", "start", "end", '"0"', '"1"', "bucket", "HOUR", "groupBy", "USER", "TAG",
         "first", "after", "100", "-1", "1e999", "null", "true", "[", "]", "@skip", "__schema",
         "__typename", "!", "=", "String", "Int", "topSpenders", "tz", '"Europe/Paris"',
         '"\\u0000"', "filter", "tag", "nextCursor"]  # fmt: skip
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
QUERIES = st.one_of(
    st.lists(st.sampled_from(WORDS), max_size=40).map(" ".join),
    st.text(max_size=200),
    st.sampled_from([
        'query($v: String!) { series(start: $v, end: $v) { group } }',
        'query($v: Int!) { requests(first: $v) { nextCursor } }',
        'query($v: RequestFilter) { requests(filter: $v) { nodes { tenant } } }',
        'query($v: SeriesFilter) { series(start: "0", end: "86400", filter: $v) { group } }',
    ]),
)  # fmt: skip


@pytest.mark.parametrize("path", ["/admin/graphql", "/v1/graphql"])
async def test_random_queries_and_variables_never_answer_5xx(make_gateway: Any, path: str) -> None:
    bodies = draw(
        st.fixed_dictionaries(
            {"query": QUERIES, "variables": st.none() | st.fixed_dictionaries({"v": JSON_VALUES})}
        ),
        250,
    )
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        headers = (
            gw.admin if path.startswith("/admin") else {"Authorization": f"Bearer {keys['a']}"}
        )
        answered = set()
        for body in bodies:
            r = await gw.client.post(path, json=body, headers=headers)
            assert r.status_code in (200, 400), (body, r.status_code, r.text)
            assert not any(marker in r.text for marker in TRACE_MARKERS), r.text
            out = r.json()
            assert "data" in out or "errors" in out
            if out.get("errors"):
                assert all(isinstance(e["message"], str) and e["message"] for e in out["errors"])
                assert "Internal error." not in {e["message"] for e in out["errors"]}, body
            answered.add(r.status_code)
        assert 200 in answered


async def test_a_scanned_series_over_its_caps_is_refused(
    make_gateway: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with make_gateway(CONFIG) as gw:
        keys = await seed(gw)
        start, end = span()
        q = f'{{ series(start: "{start}", end: "{end}", bucket: ALL, groupBy: USER) {{ group }} }}'
        ok = await gql(gw, q, key=keys["a"])
        assert sorted(p["group"] for p in ok["data"]["series"]) == ["u1", "u2"]
        monkeypatch.setattr(limits, "SCAN_PAGE", 1)  # a page per entry: the cap counts pages
        monkeypatch.setattr(limits, "MAX_SCAN", 2)
        refused(await gql(gw, q, key=keys["a"]), "reads each request", "more than 2")
        monkeypatch.setattr(limits, "MAX_SCAN", 100)
        monkeypatch.setattr(limits, "MAX_POINTS", 1)
        refused(await gql(gw, q, key=keys["a"]), "more than 1 points")


@pytest.mark.parametrize(
    ("query", "name"),
    [("input input", None), ("type T { a: Int }", None), ("query Q { __typename }", "Other")],
)
async def test_a_document_with_no_operation_to_run_is_a_clear_error(
    make_gateway: Any, query: str, name: str | None
) -> None:
    async with make_gateway(CONFIG) as gw:
        body = {"query": query, "operationName": name}
        r = await gw.client.post("/admin/graphql", json=body, headers=gw.admin)
    assert r.status_code == 200, r.text
    assert r.json()["data"] is None
    assert "no operation to run" in r.json()["errors"][0]["message"]


def test_the_range_caps_let_the_stores_sum_each_bucket_in_sql() -> None:
    # a rollup series sums days and months in SQL up to MAX_BOUNDARIES of them, and refuses
    # more than MAX_SERIES_POINTS points: the GraphQL caps stay inside both
    assert limits.MAX_POINTS <= rollup_rows.MAX_SERIES_POINTS
    assert limits.RANGE_CAP_S["day"] // limits.DAY_S <= rollup_rows.MAX_BOUNDARIES
    assert limits.RANGE_CAP_S["month"] // (28 * limits.DAY_S) <= rollup_rows.MAX_BOUNDARIES

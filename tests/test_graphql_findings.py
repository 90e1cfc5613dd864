"""Issue 15's guardrail findings in GraphQL: ``guardrailFindings`` answers what
``GET /admin/v1/guardrails/findings`` answers (same rows, same filters, same pages), with the
same access rules: the admin reads every tenant or the one it names; a tenant key on
``/v1/graphql`` and a ``tenant_admin`` on ``/admin/graphql`` read their own tenant only, whatever
they send (no ``tenant`` argument, another tenant's key or cursor). Bad arguments (a bad date,
a page size out of range, a bad cursor, any text) are GraphQL errors naming the argument, never
an internal error or a 500."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.test_guardrail_findings import LEAK, NOW, App, running
from tests.test_guardrail_findings_api import seeded

FIELDS = ("requestId tenant keyId workspace user model modelServed endpoint status httpStatus "
          "time startedAt findings { detector category action score where }")  # fmt: skip
QUERY = f"""
query Findings($tenant: String, $key: String, $detector: String, $category: String,
               $action: String, $from: String, $to: String, $first: Int! = 50, $after: String) {{
  guardrailFindings(tenant: $tenant, key: $key, detector: $detector, category: $category,
                    action: $action, from: $from, to: $to, first: $first, after: $after) {{
    nodes {{ {FIELDS} }}
    nextCursor
  }}
}}"""
OWN = QUERY.replace("$tenant: String, ", "").replace("tenant: $tenant, ", "")


async def post(gw: App, query: str, variables: dict[str, Any], key: str | None = None,
               path: str = "/admin/graphql") -> dict[str, Any]:  # fmt: skip
    headers = gw.admin if key is None else {"Authorization": f"Bearer {key}"}
    r = await gw.client.post(path, json={"query": query, "variables": variables}, headers=headers)
    assert r.status_code == 200, r.text
    assert LEAK not in r.text
    body: dict[str, Any] = r.json()
    return body


async def page(gw: App, variables: dict[str, Any], key: str | None = None,
               path: str = "/admin/graphql") -> dict[str, Any]:  # fmt: skip
    query = QUERY if key is None else OWN
    body = await post(gw, query, variables, key, path)
    assert "errors" not in body, body["errors"]
    found: dict[str, Any] = body["data"]["guardrailFindings"]
    return found


def ids(found: dict[str, Any]) -> list[str]:
    return [n["requestId"] for n in found["nodes"]]


def as_rest(node: dict[str, Any]) -> dict[str, Any]:
    """A node under the REST row's names."""
    names = {"requestId": "request_id", "tenant": "tenant_id", "keyId": "key_id",
             "modelServed": "model_served", "httpStatus": "http_status", "time": "at",
             "startedAt": "started_at"}  # fmt: skip
    return {names.get(k, k): v for k, v in node.items()}


async def test_the_admin_reads_what_the_rest_api_answers(tmp_path: Path) -> None:
    async with running(tmp_path) as gw:
        s = await seeded(gw)
        rows = s["rows"]
        asks: list[dict[str, Any]] = [
            {}, {"tenant": "acme"}, {"detector": "pii"}, {"action": "blocked"},
            {"category": "PHONE_NUMBER"}, {"key": s["acme"]}, {"tenant": "nobody"},
            {"from": str(NOW - 60), "to": "2030-01-01T00:00:00Z"}, {"from": "2030-01-01"},
        ]  # fmt: skip
        for ask in asks:
            rest = await gw.client.get("/admin/v1/guardrails/findings", params=ask,
                                       headers=gw.admin)  # fmt: skip
            found = await page(gw, ask)
            assert rest.status_code == 200, rest.text
            assert [as_rest(n) for n in found["nodes"]] == rest.json()["data"], ask
            assert found["nextCursor"] == rest.json()["next_cursor"]
        every = await page(gw, {})
        assert ids(every) == [rows[3].request_id, rows[1].request_id, rows[0].request_id]
        assert every["nextCursor"] is None
        oldest = every["nodes"][2]
        assert oldest["tenant"] == "acme" and oldest["time"] == "2029-12-31T23:58:20.000Z"
        assert oldest["findings"] == [
            {"detector": "pii", "category": "EMAIL_ADDRESS", "action": "redacted", "score": 0.93,
             "where": "user"}
        ]  # fmt: skip
        assert ids(await page(gw, {"detector": "pii"})) == [rows[3].request_id, rows[0].request_id]
        first = await page(gw, {"first": 2})
        rest = await page(gw, {"first": 2, "after": first["nextCursor"]})
        assert ids(first) + ids(rest) == ids(every) and rest["nextCursor"] is None


async def test_a_tenant_reads_its_own_findings_only(tmp_path: Path) -> None:
    async with running(tmp_path) as gw:
        s = await seeded(gw)
        rows = s["rows"]
        own = [rows[1].request_id, rows[0].request_id]
        globex_key = (await page(gw, {"tenant": "globex"}))["nodes"][0]["keyId"]
        for key, path in ((s["acme_key"], "/v1/graphql"), (s["tenant_admin"], "/admin/graphql")):
            mine = await page(gw, {}, key, path)
            assert ids(mine) == own and {n["tenant"] for n in mine["nodes"]} == {"acme"}
            assert ids(await page(gw, {"detector": "injection_rules"}, key, path)) == []
            assert ids(await page(gw, {"key": globex_key}, key, path)) == []  # not its key
            theirs = await page(gw, {"first": 1})  # the admin's page: globex's row first
            assert theirs["nodes"][0]["tenant"] == "globex"
            after = await page(gw, {"first": 1, "after": theirs["nextCursor"]}, key, path)
            assert {n["tenant"] for n in after["nodes"]} <= {"acme"}
            named = await post(gw, QUERY, {"tenant": "globex"}, key, path)  # no such argument
            assert named["data"] is None and named["errors"]
            assert "globex" not in str(named)
        admin = await page(gw, {"tenant": "globex"})
        assert ids(admin) == [rows[3].request_id]


async def test_bad_arguments_are_errors_naming_them(tmp_path: Path) -> None:
    async with running(tmp_path) as gw:
        await seeded(gw)
        bad = [({"from": "yesterday"}, "from"), ({"to": "2026-13-45"}, "to"),
               ({"from": "1e400"}, "from"), ({"from": "nan"}, "from"), ({"first": 0}, "first"),
               ({"first": 201}, "first"), ({"after": "x"}, None), ({"action": "ignored"}, "action"),
               ({"tenant": "a b"}, "tenant"), ({"detector": ""}, "detector"),
               ({"category": "x" * 200}, "category")]  # fmt: skip
        for ask, param in bad:
            body = await post(gw, QUERY, ask)
            assert body["data"] is None, ask
            [error] = body["errors"]
            assert error["extensions"]["code"] == "invalid_request", (ask, error)
            if param is not None:
                assert error["extensions"]["param"] == param, (ask, error)
        r = await gw.client.get("/admin/graphql", headers=gw.admin, params={
            "query": '{ guardrailFindings(from: "soon") { nextCursor } }'})  # fmt: skip
        assert r.status_code == 200 and r.json()["errors"][0]["extensions"]["param"] == "from"


ARGS = st.fixed_dictionaries({}, optional={
    name: st.one_of(st.none(), st.text(max_size=40),
                    st.sampled_from(["0", "-1", "1e308", "inf", "2030-01-01", "Z", "\x00"]))
    for name in ("tenant", "key", "detector", "category", "action", "from", "to", "after")
} | {"first": st.integers(min_value=-(2**40), max_value=2**40)})  # fmt: skip
TENANTS = itertools.count()


SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=25, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=SLOW_OK)  # fmt: skip
@given(asks=st.lists(ARGS, min_size=1, max_size=8))
async def test_any_arguments_are_answered_never_an_internal_error(
    tmp_path: Path, asks: list[dict[str, Any]]
) -> None:
    async with running(tmp_path) as gw:
        _, tenant_key = await gw.setup(f"t{next(TENANTS)}", plan="open")
        for ask in asks:
            for key in (None, tenant_key):
                query = QUERY if key is None else OWN
                variables = ask if key is None else {k: v for k, v in ask.items() if k != "tenant"}
                path = "/admin/graphql" if key is None else "/v1/graphql"
                body = await post(gw, query, variables, key, path)
                errors = body.get("errors") or []
                assert all(e.get("extensions", {}).get("code") != "internal_error"
                           for e in errors), (ask, errors)  # fmt: skip
                if not errors:
                    assert body["data"]["guardrailFindings"]["nodes"] == []

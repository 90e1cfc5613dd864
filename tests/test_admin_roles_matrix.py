"""Issue 14, acceptance 4: the route-by-role matrix. Every admin operation of the OpenAPI
document is called as every role (owner, operator, billing, viewer, a ``tenant_admin`` of
acme, and no key at all), on acme and on globex:

- the document's operations are exactly ``ROUTES`` (a new one without its row fails), and
  each states its ``need`` and ``tenant_ok`` (``x-farebox-access``) as the table says;
- an allowed role never gets 401, 403 or a role's 404 (it may get a 400 or a real 404);
- a role without the need gets 403 ``insufficient_role`` naming the role that has it;
- a ``tenant_admin`` gets 404 on every operation not ``tenant_ok``, and on every operation
  aimed at globex (by path or by query filter), with exactly the body a missing route,
  tenant or key gets;
- no key: 401.

Then every GraphQL root field and every dashboard page and form, per role."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from graphql import Undefined, is_non_null_type

from farebox.api.graphql.schema import admin_schema, tenant_schema
from tests.roles_world import (
    CALLERS,
    FORM,
    MISSING,
    ROUTES,
    A,
    B,
    World,
    allowed,
    body_for,
    cookie_of,
    csrf_of,
    dash,
    make_world,
    path_for,
    query_for,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("roles"))


def operations(world: World) -> dict[tuple[str, str], dict[str, Any]]:
    doc = world.openapi()
    return {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        if path.startswith("/admin/")
        for method, op in item.items()
    }


def query_names(op: dict[str, Any]) -> set[str]:
    return {p["name"] for p in op.get("parameters", ()) if p["in"] == "query"}


def send(world: World, caller: str, method: str, path: str, op: dict[str, Any],
         tenant: str) -> Any:  # fmt: skip
    url = path_for(path, world, tenant)
    params = query_for(path, query_names(op), tenant)
    return world.call(caller, method, url, params=params, json=body_for(method, path))


def role_404(body: dict[str, Any]) -> bool:
    """A 404 a refused tenant_admin gets: no route, or another tenant's (or key's)."""
    error = body["error"]
    return error["message"].startswith("No route for") or error["code"] in (
        "tenant_not_found", "key_not_found",
    )  # fmt: skip


def test_the_document_lists_exactly_the_role_table(world: World) -> None:
    found = operations(world)
    assert set(found) == set(ROUTES), "add the new operation to tests/roles_world.py ROUTES"
    for key, op in found.items():
        need, tenant_ok = ROUTES[key]
        assert op["x-farebox-access"]["need"] == need, key
        assert op["x-farebox-access"]["tenant_ok"] is tenant_ok, key
        assert {"401", "403", "404"} <= set(op["responses"]), key  # the refusals, documented


@pytest.mark.parametrize("caller", CALLERS)
def test_every_operation_as_every_role(world: World, caller: str) -> None:
    for (method, path), op in operations(world).items():
        need, tenant_ok = ROUTES[(method, path)]
        r = send(world, caller, method, path, op, A)
        where = f"{caller} {method} {path}: {r.status_code} {r.text[:300]}"
        if caller == "anonymous":
            assert r.status_code == 401, where
        elif allowed(caller, need, tenant_ok):
            assert r.status_code not in (401, 403), where
            assert r.status_code < 500, where
            if r.status_code == 404:
                assert not role_404(r.json()) or "missing" in r.text, where
        elif caller == "tenant_admin":
            assert r.status_code == 404, where
            assert r.json()["error"]["message"] == f"No route for {method} {r.request.url.path}."
        else:
            assert r.status_code == 403, where
            assert r.json()["error"]["code"] == "insufficient_role", where
            assert r.json()["error"]["needed_role"] in ("viewer", "operator", "billing", "owner")


def test_a_tenant_admin_learns_nothing_of_another_tenant(world: World) -> None:
    """On globex by any path or filter: exactly what a tenant that does not exist gets."""

    def said(r: Any) -> str:
        text = str(r.json())
        for name in (world.key_ids[B], "key_missing", B, MISSING):
            text = text.replace(name, "?")
        return text

    for (method, path), op in operations(world).items():
        names_tenant = "{" in path or query_names(op) & {"tenant", "tenant_id"}
        if not names_tenant or path.startswith("/admin/v1/admin-keys"):
            continue
        other = send(world, "tenant_admin", method, path, op, B)
        missing = send(world, "tenant_admin", method, path, op, MISSING)
        assert other.status_code == missing.status_code == 404, (method, path, other.text)
        assert said(other) == said(missing), (method, path)


def test_a_tenant_admins_reports_hold_its_tenant_only(world: World) -> None:
    for url, params in (
        ("/admin/v1/usage", {"group_by": "tenant"}),
        ("/admin/v1/usage", {"group_by": "user"}),
        ("/admin/v1/requests", {}),
        ("/admin/v1/budget-alerts", {}),
        ("/admin/v1/anomalies", {}),
    ):
        r = world.call("tenant_admin", "GET", url, params=params)
        assert r.status_code == 200, r.text
        assert B not in r.text and f"user-of-{B}" not in r.text, (url, params)
    r = world.call("tenant_admin", "GET", "/admin/v1/usage", params={"group_by": "tenant"})
    assert [row["tenant"] for row in r.json()["data"]] == [A]
    series = query_for("/admin/v1/series", set(), None)
    r = world.call("tenant_admin", "GET", "/admin/v1/series",
                   params={**series, "group_by": "tenant", "bucket": "all"})  # fmt: skip
    assert r.status_code == 200, r.text
    assert {p["group"] for p in r.json()["data"]} == {A}
    r = world.call("tenant_admin", "GET", "/admin/v1/series",
                   params={**series, "key_id": world.key_ids[B], "bucket": "all"})  # fmt: skip
    assert r.status_code == 200 and r.json()["data"] == []


def test_a_revoked_admin_key_opens_nothing(world: World) -> None:
    made = world.call("owner", "POST", "/admin/v1/admin-keys", json={"name": "v", "role": "viewer"})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert key.startswith("fba_") and made.json()["role"] == "viewer"
    auth = {"Authorization": f"Bearer {key}"}
    assert world.run(world.client.get("/admin/v1/tenants", headers=auth)).status_code == 200
    listed = world.call("owner", "GET", "/admin/v1/admin-keys").json()["data"]
    assert key not in str(listed) and all("key_hash" not in k for k in listed)
    r = world.call("owner", "DELETE", f"/admin/v1/admin-keys/{made.json()['id']}")
    assert r.status_code == 200 and r.json()["revoked"] is True
    assert world.run(world.client.get("/admin/v1/tenants", headers=auth)).status_code == 401


def test_an_admin_key_is_no_data_plane_key(world: World) -> None:
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    for role in ("owner", "tenant_admin", "viewer"):
        r = world.call(role, "POST", "/v1/chat/completions", json=chat)
        assert r.status_code == 401, (role, r.text)


def test_admin_key_creation_checks_role_and_tenant(world: World) -> None:
    for body, status in (
        ({"name": "x", "role": "tenant_admin"}, 400),
        ({"name": "x", "role": "tenant_admin", "tenant": MISSING}, 404),
        ({"name": "x", "role": "viewer", "tenant": A}, 400),
        ({"name": "x", "role": "root"}, 400),
    ):
        r = world.call("owner", "POST", "/admin/v1/admin-keys", json=body)
        assert r.status_code == status, (body, r.text)


def test_a_tenant_admin_stays_within_its_plan(world: World) -> None:
    url = f"/admin/v1/tenants/{A}"
    for body in (
        {"plan": "pro"},
        {"billing": {"stripe_customer_id": "cus_1"}},
        {"budgets": [{"period": "month", "limit_usd": "51"}]},
        {"budgets": [{"period": "month", "limit_usd": "10", "increase_usd": "100"}]},
        {"rate_limits": [{"scope": "key", "requests_per_minute": 601}]},
        {"rate_limits": [{"scope": "key"}]},  # no cap at all, where the plan has one
        {"rate_limits": [{"scope": "key", "requests_per_minute": 600, "window_s": 30}]},
    ):
        r = world.call("tenant_admin", "PATCH", url, json=body)
        assert r.status_code == 403, (body, r.text)
        assert r.json()["error"]["code"] == "insufficient_role"
    ok = {"budgets": [{"period": "month", "limit_usd": "40"}, {"period": "day", "limit_usd": "3"}],
          "rate_limits": [{"scope": "key", "requests_per_minute": 100}]}  # fmt: skip
    r = world.call("tenant_admin", "PATCH", url, json=ok)
    assert r.status_code == 200, r.text
    r = world.call(
        "owner", "PATCH", url, json={"budgets": [{"period": "month", "limit_usd": "900"}]}
    )
    assert r.status_code == 200
    kept = {"name": "kept", "budgets": [{"period": "month", "limit_usd": "900"}]}
    assert world.call("tenant_admin", "PATCH", url, json=kept).status_code == 200  # as granted
    raised = {"scope": "tenant", "period": "month", "amount_usd": "5", "expires_in_s": 3600}
    r = world.call("owner", "POST", f"/admin/v1/tenants/{A}/budget-increases", json=raised)
    assert r.status_code == 200, r.text
    as_read = world.call("tenant_admin", "GET", url).json()["budgets"]
    assert any("increase_usd" in b for b in as_read)
    r = world.call("tenant_admin", "PATCH", url, json={"budgets": as_read})  # sent back as is
    assert r.status_code == 200, r.text
    key = f"/admin/v1/keys/{world.key_ids[A]}"
    r = world.call(
        "tenant_admin", "PATCH", key, json={"rate_limits": [{"requests_per_minute": 9999}]}
    )
    assert r.status_code == 403, r.text
    r = world.call("tenant_admin", "PATCH", key, json={"rate_limits": [{"requests_per_minute": 5}]})
    assert r.status_code == 200, r.text


# GraphQL -----------------------------------------------------------------------------------


def _field_queries(schema: Any) -> dict[str, str]:
    """One query per root field, its required arguments filled in, ``__typename`` selected."""
    values = {"start": '"2020-01-01"', "end": '"2030-01-01"', "tenant": f'"{A}"',
              "plan": '"default"'}  # fmt: skip
    out = {}
    for name, found in schema._schema.query_type.fields.items():
        required = [a for a, arg in found.args.items()
                    if is_non_null_type(arg.type) and arg.default_value is Undefined]  # fmt: skip
        args = [f"{a}: {values[a]}" for a in required]
        call = f"{name}({', '.join(args)})" if args else name
        out[name] = f"{{ {call} {{ __typename }} }}"
    return out


ADMIN_FIELDS = _field_queries(admin_schema())
TENANT_FIELDS = _field_queries(tenant_schema())


def gql(world: World, caller: str, query: str) -> Any:
    return world.call(caller, "POST", "/admin/graphql", json={"query": query})


@pytest.mark.parametrize("caller", CALLERS)
def test_every_graphql_field_as_every_role(world: World, caller: str) -> None:
    """Every role but tenant_admin is served every admin field (GraphQL is read-only: queries
    only); a tenant_admin is served its tenant's fields, and the admin-only ones do not
    exist for it."""
    served = TENANT_FIELDS if caller == "tenant_admin" else ADMIN_FIELDS
    absent = {n: q for n, q in ADMIN_FIELDS.items() if n not in served}
    for name, query in {**served, **absent}.items():
        r = gql(world, caller, query)
        if caller == "anonymous":
            assert r.status_code == 401, (name, r.text)
            continue
        assert r.status_code == 200, (caller, name, r.text)
        errors = r.json().get("errors") or []
        codes = {e.get("extensions", {}).get("code") for e in errors}
        if name in served:  # no error of who may ask (a bad argument may be refused)
            assert not codes & {"insufficient_role", "tenant_not_found"}, (caller, name, errors)
            assert all("Cannot query field" not in e["message"] for e in errors), (name, errors)
        else:
            assert r.json()["data"] is None and errors, (name, r.text)


def test_a_tenant_admins_graphql_holds_its_tenant_only(world: World) -> None:
    query = ('{ series(start: "2020-01-01", end: "2030-01-01", bucket: ALL, groupBy: TENANT) '
             "{ group requests } keys { id tenant } tenant { id } "
             "requests { nodes { tenant } } }")  # fmt: skip
    r = gql(world, "tenant_admin", query)
    body = r.json()
    assert r.status_code == 200 and "errors" not in body, body
    assert {p["group"] for p in body["data"]["series"]} == {A}
    assert {k["tenant"] for k in body["data"]["keys"]} == {A}
    assert body["data"]["tenant"]["id"] == A
    assert {n["tenant"] for n in body["data"]["requests"]["nodes"]} == {A}
    for by in ("KEY", "USER", "MODEL", "PLAN"):
        span = 'start: "2020-01-01", end: "2030-01-01", bucket: ALL'
        q = f"{{ series({span}, groupBy: {by}) {{ group }} }}"
        r = gql(world, "tenant_admin", q)
        assert B not in r.text and world.key_ids[B] not in r.text, (by, r.text)
    r = gql(world, "viewer", query.replace("tenant { id } ", "tenants { id } "))
    assert {t["id"] for t in r.json()["data"]["tenants"]} >= {A, B}


# dashboard ---------------------------------------------------------------------------------

DASHBOARD_ROUTES = {
    ("GET", "/dashboard"), ("GET", "/dashboard/signin"), ("POST", "/dashboard/signin"),
    ("POST", "/dashboard/signout"), ("POST", "/dashboard/sessions/revoke-all"),
    ("GET", "/dashboard/tenants/{tenant_id}"), ("POST", "/dashboard/tenants/{tenant_id}/resume"),
    ("POST", "/dashboard/anomalies/{incident_id}/resolve"), ("GET", "/dashboard/requests"),
    ("GET", "/dashboard/revenue"), ("GET", "/dashboard/data/series"),
    ("GET", "/dashboard/static/{name}"),
    # issue 14's identity pages: a tenant's workspaces and keys (and their forms), the audit log
    ("GET", "/dashboard/tenants/{tenant_id}/workspaces"),
    ("POST", "/dashboard/tenants/{tenant_id}/workspaces"),
    ("POST", "/dashboard/tenants/{tenant_id}/workspaces/{workspace_id}/delete"),
    ("POST", "/dashboard/tenants/{tenant_id}/keys"),
    ("POST", "/dashboard/tenants/{tenant_id}/keys/{key_id}/revoke"),
    ("GET", "/dashboard/audit"),
    ("GET", "/dashboard/guardrails"),  # issue 15: findings (a tenant's session: its own)
}  # fmt: skip
# page -> the callers that see it (200); a tenant_admin elsewhere: 404
PAGES = {
    "/dashboard": set(CALLERS) - {"anonymous"},
    f"/dashboard/tenants/{A}": set(CALLERS) - {"anonymous"},
    f"/dashboard/tenants/{B}": {"owner", "operator", "billing", "viewer"},
    "/dashboard/revenue": {"owner", "operator", "billing", "viewer"},
    "/dashboard/requests": set(CALLERS) - {"anonymous"},
    f"/dashboard/requests?tenant={B}": set(CALLERS) - {"anonymous"},
    "/dashboard/data/series": set(CALLERS) - {"anonymous"},
    f"/dashboard/tenants/{A}/workspaces": set(CALLERS) - {"anonymous"},
    f"/dashboard/tenants/{B}/workspaces": {"owner", "operator", "billing", "viewer"},
    "/dashboard/audit": {"owner"},
    "/dashboard/audit?actor=env": {"owner"},
    "/dashboard/guardrails": set(CALLERS) - {"anonymous"},
    f"/dashboard/guardrails?tenant={B}&hours=168": set(CALLERS) - {"anonymous"},
}
OPERATORS = {"owner", "operator", "tenant_admin"}
# form -> the callers that may post it (those with the need its API operation has)
FORMS = {
    f"/dashboard/tenants/{A}/resume": {"owner", "operator"},
    "/dashboard/anomalies/inc_missing/resolve": {"owner", "operator"},
    # the identity forms need "operate" (as their API operations) and are open to tenant A's
    # tenant_admin on A only; posted with no fields: 400 (no id), a key made (200), or 404
    f"/dashboard/tenants/{A}/workspaces": OPERATORS,
    f"/dashboard/tenants/{A}/workspaces/ws_missing/delete": OPERATORS,
    f"/dashboard/tenants/{A}/keys": OPERATORS,
    f"/dashboard/tenants/{A}/keys/key_missing/revoke": OPERATORS,
    f"/dashboard/tenants/{B}/workspaces": {"owner", "operator"},
    f"/dashboard/tenants/{B}/workspaces/default/delete": {"owner", "operator"},
    f"/dashboard/tenants/{B}/keys": {"owner", "operator"},
}


def routes_of(routes: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Every (method, path) an app serves, through included routers."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from routes_of(inner.routes, prefix + getattr(inner, "prefix", ""))
            continue
        path = getattr(route, "path", "")
        path = path if path.startswith(prefix) else prefix + path
        for method in getattr(route, "methods", None) or ():
            if method != "HEAD":
                yield method, path


def test_the_dashboard_pages_are_the_ones_listed(world: World) -> None:
    found = {(m, p) for m, p in routes_of(world.app.routes) if p.startswith("/dashboard")}
    assert found == DASHBOARD_ROUTES


@pytest.mark.parametrize("caller", CALLERS)
def test_every_dashboard_page_and_form_as_every_role(world: World, caller: str) -> None:
    cookie = cookie_of(world, caller)
    for path, seen_by in PAGES.items():
        r = dash(world, "GET", path, cookie)
        if caller == "anonymous":
            assert r.status_code in (303, 401), (path, r.status_code)
        elif caller in seen_by:
            assert r.status_code == 200, (caller, path, r.status_code)
            if caller == "tenant_admin":
                assert f"tenant {B}" not in r.text and f"user-of-{B}" not in r.text, path
                assert world.key_ids[B] not in r.text, path
        else:
            assert r.status_code == 404, (caller, path, r.status_code)
    token = ""
    if cookie:
        token = csrf_of(world, cookie)
    for path, posting in FORMS.items():
        r = dash(world, "POST", path, cookie, csrf_token=token)
        if caller in posting:
            assert r.status_code in (200, 303, 400, 404, 409), (caller, path, r.status_code)
            assert "Your role cannot" not in r.text and "Not found." not in r.text
        elif caller == "tenant_admin":
            assert r.status_code == 404, (caller, path, r.status_code)
        else:
            assert r.status_code == 403, (caller, path, r.status_code)
    r = dash(world, "POST", "/dashboard/sessions/revoke-all", cookie, csrf_token=token)
    expected = {"owner": 303, "tenant_admin": 404}.get(caller, 403)
    assert r.status_code == expected, (caller, r.status_code)


def test_a_tenant_admin_signs_into_its_tenants_view(world: World) -> None:
    cookie = cookie_of(world, "tenant_admin")
    r = dash(world, "GET", "/dashboard", cookie)
    assert r.status_code == 200 and f"tenant {A}" in r.text and "tenant_admin" in r.text
    r = dash(world, "GET", f"/dashboard/data/series?tenant={B}", cookie)
    assert r.status_code == 200 and B not in r.text


def test_an_admin_key_session_ends_when_the_key_is_revoked(world: World) -> None:
    for role, tenant in (("tenant_admin", A), ("billing", None)):
        body = {"name": "s", "role": role, **({"tenant": tenant} if tenant else {})}
        made = world.call("owner", "POST", "/admin/v1/admin-keys", json=body).json()
        world.keys["session"] = made["key"]
        cookie = cookie_of(world, "session")
        assert dash(world, "GET", "/dashboard", cookie).status_code == 200
        assert (
            world.call("owner", "DELETE", f"/admin/v1/admin-keys/{made['id']}").status_code == 200
        )
        r = dash(world, "GET", "/dashboard", cookie)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/signin", role
        signin = world.run(world.client.post("/dashboard/signin", data={"key": made["key"]},
                                             headers=FORM))  # fmt: skip
        assert signin.status_code == 401, role

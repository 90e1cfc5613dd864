"""Issue 14, acceptance 4 (property): any role, any admin operation, aimed at any tenant (its
own, another, one that does not exist), with any query and body: never a 5xx, and the role is
judged before the input, so a refused caller gets its refusal whatever it sent (401 without a
key, 403 ``insufficient_role`` for a role without the need, 404 for a ``tenant_admin``
outside its tenant), and an allowed one never gets 401 or 403."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.roles_world import (
    CALLERS,
    MISSING,
    ROUTES,
    A,
    B,
    World,
    allowed,
    body_for,
    make_world,
    path_for,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
NAMES = ["tenant", "tenant_id", "month", "group_by", "start", "end", "limit", "key_id", "x"]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),  # fmt: skip
    max_leaves=8,
)
bodies = st.one_of(
    st.none(),
    st.just("good"),  # the operation's own good body
    json_values.map(orjson.dumps),
    st.binary(max_size=40),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("roles-fuzz"))


@settings(max_examples=400, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(
    route=st.sampled_from(sorted(ROUTES)),
    caller=st.sampled_from(CALLERS),
    tenant=st.sampled_from((A, B, MISSING)),
    query=st.dictionaries(st.sampled_from(NAMES), st.text(max_size=20), max_size=3),
    body=bodies,
)
def test_no_combination_is_a_server_error_and_the_role_is_judged_first(
    world: World, route: tuple[str, str], caller: str, tenant: str, query: dict[str, str],
    body: Any,
) -> None:  # fmt: skip
    method, path = route
    need, tenant_ok = ROUTES[route]
    url = path_for(path, world, tenant)
    kw: dict[str, Any] = {"params": query}
    if body == "good":
        kw["json"] = body_for(method, path)
    elif body is not None:
        kw["content"] = body
        kw["headers"] = {"Content-Type": "application/json"}
    headers = {**world.headers(caller), **kw.pop("headers", {})}
    r = world.run(world.client.request(method, url, headers=headers, **kw))
    said = f"{caller} {method} {url} {query} {body!r:.60}: {r.status_code} {r.text[:200]}"
    assert r.status_code < 500, said
    if caller == "anonymous":
        assert r.status_code == 401, said
    elif not allowed(caller, need, tenant_ok):
        expected = 404 if caller == "tenant_admin" else 403
        assert r.status_code == expected, said
    else:
        assert r.status_code not in (401, 403), said
        names_other = tenant != A and "{tenant_id}" in path or "{key_id}" in path and tenant == B
        if caller == "tenant_admin" and (names_other or query.get("tenant") not in (None, A)):
            assert r.status_code in (400, 404), said  # another tenant's: never its data
            assert B not in r.text or r.json()["error"]["code"] in (
                "tenant_not_found",
                "key_not_found",
            ), said

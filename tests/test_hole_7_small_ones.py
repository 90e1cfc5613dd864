"""Issue 7, item 7 (the small ones owned here): no redirect built from ``Host``; API docs and
``/openapi.json`` behind the admin key (docs off by default); upstream error text scrubbed of
credentials, URLs, hosts and addresses; admin validation errors answer what the document says;
405s carry ``Allow``; the schema states formats; rate-limit headers agree with ``Retry-After``.
"""

from __future__ import annotations

import math
import re
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fakes.openai_upstream import OpenAIUpstream
from farebox.core.records import GROUP_BY
from farebox.http.sanitize import TOP_LEVEL_NAMES, identifier, scrub

# --- no redirect reflecting Host --------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/admin/v1/tenants/", 200), ("/admin/v1/tenants", 200), ("/v1/models/", 401),
     ("/healthz/", 200), ("/admin/v1/nothing/", 404)],
)  # fmt: skip
async def test_trailing_slash_is_served_not_redirected_to_host(
    make_gateway: Any, path: str, expected: int
) -> None:
    async with make_gateway() as gw:
        r = await gw.client.get(path, headers={**gw.admin, "Host": "evil.example"})
        assert r.status_code == expected, r.text
        assert "location" not in r.headers
        assert "evil.example" not in r.text


# --- docs and the OpenAPI document ------------------------------------------------------


async def test_openapi_needs_the_admin_key_and_docs_are_off_by_default(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        r = await gw.client.get("/openapi.json")
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        wrong = {"Authorization": "Bearer fbx_not_the_admin_key_0123456789"}
        assert (await gw.client.get("/openapi.json", headers=wrong)).status_code == 401
        assert (await gw.client.get("/openapi.json", headers=gw.admin)).status_code == 200
        assert (await gw.client.get("/docs", headers=gw.admin)).status_code == 404
        assert (await gw.client.get("/docs")).status_code == 401


async def test_docs_when_enabled_need_the_key_and_carry_the_document_inline(
    make_gateway: Any,
) -> None:
    config = {"server": {"docs": True, "docs_assets_url": "/static/swagger"}}
    async with make_gateway(config) as gw:
        assert (await gw.client.get("/docs")).status_code == 401
        r = await gw.client.get("/docs", headers=gw.admin)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert 'src="/static/swagger/swagger-ui-bundle.js"' in r.text
        assert "cdn." not in r.text and "/admin/v1/tenants" in r.text  # the spec, inline
        assert "</script>" not in r.text.split("SwaggerUIBundle(", 1)[1].split(");", 1)[0]


async def _document(gw: Any) -> dict[str, Any]:
    r = await gw.client.get("/openapi.json", headers=gw.admin)
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


async def test_document_states_admin_failures_and_no_422(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        doc = await _document(gw)
        admin_ops = [
            (path, method, op)
            for path, item in doc["paths"].items()
            if path.startswith("/admin/")
            for method, op in item.items()
        ]
        assert len(admin_ops) > 20
        for path, method, op in admin_ops:
            statuses = set(op["responses"])
            assert "422" not in statuses, (method, path)
            assert {"401", "413", "431"} <= statuses, (method, path)
            if "{" in path:
                assert "404" in statuses, (method, path)
            if op.get("requestBody") or op.get("parameters"):
                assert "400" in statuses, (method, path)
            assert op["security"] == [{"adminKey": []}]
        assert doc["components"]["securitySchemes"]["adminKey"]["scheme"] == "bearer"
        assert "HTTPValidationError" not in doc["components"]["schemas"]


async def test_admin_validation_errors_are_the_documented_400(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        doc = await _document(gw)
        create = doc["paths"]["/admin/v1/tenants"]["post"]["responses"]
        error_ref = create["400"]["content"]["application/json"]["schema"]["$ref"]
        error_schema = doc["components"]["schemas"][error_ref.rsplit("/", 1)[1]]
        r = await gw.client.post("/admin/v1/tenants", json={"id": 5}, headers=gw.admin)
        assert r.status_code == 400
        body = r.json()
        assert set(body) == set(error_schema["required"])
        assert set(error_schema["properties"]["error"]["required"]) <= set(body["error"])
        assert body["error"]["param"] == "id"


async def test_schema_states_month_group_by_and_status_formats(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        doc = await _document(gw)

        def param(path: str, name: str) -> dict[str, Any]:
            params = doc["paths"][path]["get"]["parameters"]
            found = next(p for p in params if p["name"] == name)
            schema: dict[str, Any] = found["schema"]
            return schema

        month = param("/admin/v1/margins", "month")
        assert re.fullmatch(month["pattern"], "2026-11")
        assert not re.fullmatch(month["pattern"], "2026-13")
        assert param("/admin/v1/reconciliation", "month")["pattern"] == month["pattern"]
        group_by = param("/admin/v1/usage", "group_by")
        enum = next(s["enum"] for s in group_by["anyOf"] if "enum" in s)
        assert set(enum) == set(GROUP_BY)
        status = param("/admin/v1/anomalies", "status")
        assert set(next(s["enum"] for s in status["anyOf"] if "enum" in s)) == {"open", "resolved"}
        tenant_id = doc["components"]["schemas"]["TenantCreate"]["properties"]["id"]
        assert "pattern" in tenant_id
        # and every value the schema allows is served
        for group in enum:
            r = await gw.client.get(f"/admin/v1/usage?group_by={group}", headers=gw.admin)
            assert r.status_code == 200, (group, r.text)
        r = await gw.client.get("/admin/v1/margins?month=2026-02", headers=gw.admin)
        assert r.status_code == 200
        r = await gw.client.get("/admin/v1/margins?month=2026-2", headers=gw.admin)
        assert r.status_code == 400 and r.json()["error"]["param"] == "month"


# --- 405 carries Allow ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/admin/v1/tenants", "GET, POST"),
        ("DELETE", "/admin/v1/tenants/acme", "GET, PATCH"),
        ("GET", "/admin/v1/keys/k1", "DELETE, PATCH"),
        ("GET", "/v1/chat/completions", "POST"),
        ("POST", "/v1/models", "GET"),
    ],
)
async def test_405_carries_allow_with_every_method_of_the_path(
    make_gateway: Any, method: str, path: str, allow: str
) -> None:
    async with make_gateway() as gw:
        r = await gw.client.request(method, path, headers=gw.admin)
        assert r.status_code == 405, r.text
        assert r.headers["allow"] == allow
        assert r.json()["error"]["code"] == "method_not_allowed"


# --- upstream error text ----------------------------------------------------------------

_ALNUM = string.ascii_letters + string.digits


@st.composite
def secrets_(draw: st.DrawFn) -> str:
    """A credential of no particular shape: 20-64 characters mixing upper case, lower case
    and digits, optionally with a vendor-like prefix; or 32+ hex digits."""
    if draw(st.booleans()):
        return draw(st.text("0123456789abcdef", min_size=32, max_size=64))
    body = draw(st.text(_ALNUM, min_size=17, max_size=60))
    prefix = draw(st.sampled_from(["", "key_", "tok-", "x"]))
    return prefix + draw(st.sampled_from("ABCXYZ")) + draw(st.sampled_from("abcxyz")) + "7" + body


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)
hosts = st.builds(
    lambda labels, tld: ".".join([*labels, tld]),
    st.lists(_LABEL, min_size=1, max_size=3),
    st.sampled_from(TOP_LEVEL_NAMES),  # a bare a.b is a host only under a top-level name
)
ips = st.builds(
    lambda parts: ".".join(map(str, parts)), st.lists(st.integers(0, 255), min_size=4, max_size=4)
)
urls = st.builds(
    lambda scheme, host, port, path: f"{scheme}://{host}{port}/{path}",
    st.sampled_from(["http", "https", "redis", "postgresql"]),
    st.one_of(hosts, ips),
    st.sampled_from(["", ":8000", ":443"]),
    st.from_regex(r"[a-z0-9/_.-]{0,20}", fullmatch=True),
)
# arbitrary text around the sensitive part; a separator keeps it a distinct word at times
around = st.text(max_size=40)
joiner = st.sampled_from(["", " ", ": ", "'", "(", "\n", "/"])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    before=around,
    after=around,
    left=joiner,
    right=joiner,
    sensitive=st.one_of(secrets_(), hosts, ips, urls),
)
def test_scrub_never_lets_a_secret_host_address_or_url_through(
    before: str, after: str, left: str, right: str, sensitive: str
) -> None:
    out = scrub(before + left + sensitive + right + after)
    assert sensitive not in out
    assert len(out) <= 500


@given(st.text(max_size=2000))
def test_scrub_is_bounded_and_idempotent(text: str) -> None:
    once = scrub(text)
    assert len(once) <= 500 and scrub(once) == once


@pytest.mark.parametrize(
    "plain",
    [
        "The model gpt-4o-mini-2024-07-18 does not exist or you do not have access to it.",
        "max_tokens is too large: 100000. This model supports at most 16384 tokens.",
        "Invalid value for 'temperature': must be between 0 and 2.",
        "Invalid type for 'tools[0].function.name': expected a string, but got dict instead.",
        "Invalid type for 'tool_choice.function': expected an object.",
    ],
)
def test_scrub_keeps_ordinary_error_text(plain: str) -> None:
    assert scrub(plain) == plain


def test_identifier_keeps_plain_codes_only() -> None:
    assert identifier("rate_limit_exceeded") == "rate_limit_exceeded"
    assert identifier("invalid_request_error") == "invalid_request_error"
    for bad in ("AbC9xQ2mP0zL7kR1tY5wQ", "api.internal.corp", "x" * 80, "a b", 5, None, {}):
        assert identifier(bad) is None


async def test_upstream_error_reaches_the_tenant_scrubbed(make_gateway: Any) -> None:
    leaked = "Qz7RkP2mX9vL4nB8wT1y"  # an echoed key of no known shape
    message = (
        f"Invalid key {leaked} for project at https://llm-gw.internal.corp:8443/v1 "
        "(routed via 10.20.30.40 and vllm-gpu7.cluster.local)"
    )
    async with OpenAIUpstream() as upstream:
        config = {
            "providers": {"up": {"kind": "openai", "base_url": upstream.base_url}},
            "models": {"gpt-4o-mini": [{"provider": "up", "model": "gpt-4o-mini"}]},
        }
        async with make_gateway(config) as gw:
            key = await gw.tenant_key("acme")
            upstream.reply_error(400, message, type="invalid_request_error", code=leaked)
            r = await gw.client.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            for secret in (leaked, "internal.corp", "10.20.30.40", "vllm-gpu7", "https://"):
                assert secret not in r.text, secret
            assert error["upstream_type"] == "invalid_request_error"
            assert error["upstream_code"] is None  # not a plain identifier: dropped
            assert error["message"].startswith("Invalid key [redacted]")


# --- rate-limit headers agree with Retry-After ----------------------------------------------


def _reset_ms(text: str) -> int:
    found = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?", text)
    assert found and text, text
    minutes, seconds, ms = found.groups()
    return int(minutes or 0) * 60_000 + round(float(seconds or 0) * 1000) + int(ms or 0)


@pytest.mark.parametrize("limit", [{"requests_per_minute": 2}, {"tokens_per_minute": 30}])
async def test_rate_limit_reset_and_retry_after_name_one_instant(
    make_gateway: Any, limit: dict[str, int]
) -> None:
    plans = {"default": {"rate_limits": [{"scope": "key", **limit}]}}
    async with make_gateway({"plans": plans}) as gw:
        key = await gw.tenant_key("acme")
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello " * 5}],
                "max_tokens": 5}  # fmt: skip
        for _ in range(10):
            r = await gw.client.post(
                "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            )
            if r.status_code == 429:
                break
        assert r.status_code == 429, r.text
        unit = "requests" if "requests_per_minute" in limit else "tokens"
        wait_ms = int(r.headers["retry-after-ms"])
        assert _reset_ms(r.headers[f"x-ratelimit-reset-{unit}"]) == wait_ms
        assert int(r.headers["Retry-After"]) == math.ceil(wait_ms / 1000)
        assert r.headers[f"x-ratelimit-remaining-{unit}"] == "0" or unit == "tokens"

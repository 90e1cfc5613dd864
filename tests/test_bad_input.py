"""Acceptance "Bad input": every malformed request is a 4xx in the OpenAI error shape,
never a 500, never a traceback, and never billed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

CHAT_PATH = "/v1/chat/completions"
EMBED_PATH = "/v1/embeddings"
MSGS = [{"role": "user", "content": "hi"}]
OK_CHAT = {"model": "gpt-4o-mini", "messages": MSGS}
OK_EMBED = {"model": "text-embedding-3-small", "input": "hi"}
JSON_CT = {"Content-Type": "application/json"}
TRACE_MARKERS = ("Traceback", 'File "', "farebox/", '.py"', "line ")

BIG = 10 * 1024 * 1024


def js(value: Any) -> bytes:
    return orjson.dumps(value)


def chat(**changes: Any) -> bytes:
    body = {**OK_CHAT, **changes}
    return js({k: v for k, v in body.items() if v is not DROP})


def embed(**changes: Any) -> bytes:
    body = {**OK_EMBED, **changes}
    return js({k: v for k, v in body.items() if v is not DROP})


DROP = object()

# (id, path, raw body, extra headers, expected status or None for "any 4xx", expected code)
Case = tuple[str, str, bytes, dict[str, str], int | None, str | None]

CASES: list[Case] = [
    # --- chat -------------------------------------------------------------------------
    ("chat-malformed-json", CHAT_PATH, b'{"model": "gpt-4o-mini", "messages": [', {}, 400, None),
    ("chat-trailing-garbage", CHAT_PATH, js(OK_CHAT) + b"}}", {}, 400, None),
    ("chat-model-int", CHAT_PATH, chat(model=4), {}, 400, None),
    ("chat-model-null", CHAT_PATH, chat(model=None), {}, 400, None),
    ("chat-model-empty", CHAT_PATH, chat(model=""), {}, 400, None),
    ("chat-model-object", CHAT_PATH, chat(model={"name": "gpt-4o"}), {}, 400, None),
    ("chat-messages-string", CHAT_PATH, chat(messages="hello"), {}, 400, None),
    ("chat-messages-empty", CHAT_PATH, chat(messages=[]), {}, 400, None),
    ("chat-messages-not-objects", CHAT_PATH, chat(messages=["hi", 3]), {}, 400, None),
    ("chat-message-no-role", CHAT_PATH, chat(messages=[{"content": "hi"}]), {}, 400, None),
    (
        "chat-bad-role",
        CHAT_PATH,
        chat(messages=[{"role": "wizard", "content": "hi"}]),
        {},
        400,
        None,
    ),
    ("chat-role-int", CHAT_PATH, chat(messages=[{"role": 1, "content": "hi"}]), {}, 400, None),
    ("chat-content-int", CHAT_PATH, chat(messages=[{"role": "user", "content": 5}]), {}, 400, None),
    ("chat-stream-yes", CHAT_PATH, chat(stream="yes"), {}, 400, None),
    ("chat-stream-int", CHAT_PATH, chat(stream=1), {}, 400, None),
    ("chat-max-tokens-negative", CHAT_PATH, chat(max_tokens=-1), {}, 400, None),
    ("chat-max-tokens-zero", CHAT_PATH, chat(max_tokens=0), {}, 400, None),
    ("chat-max-tokens-string", CHAT_PATH, chat(max_tokens="10"), {}, 400, None),
    ("chat-max-tokens-bool", CHAT_PATH, chat(max_tokens=True), {}, 400, None),
    ("chat-max-tokens-float", CHAT_PATH, chat(max_tokens=10.5), {}, 400, None),
    ("chat-max-completion-tokens-neg", CHAT_PATH, chat(max_completion_tokens=-5), {}, 400, None),
    ("chat-temperature-string", CHAT_PATH, chat(temperature="hot"), {}, 400, None),
    ("chat-n-zero", CHAT_PATH, chat(n=0), {}, 400, None),
    ("chat-tools-object", CHAT_PATH, chat(tools={"type": "function"}), {}, 400, None),
    ("chat-user-int", CHAT_PATH, chat(user=12), {}, 400, None),
    (
        "chat-stream-options-no-stream",
        CHAT_PATH,
        chat(stream_options={"include_usage": True}),
        {},
        400,
        None,
    ),
    ("chat-missing-messages", CHAT_PATH, chat(messages=DROP), {}, 400, None),
    ("chat-missing-model", CHAT_PATH, chat(model=DROP), {}, 400, None),
    ("chat-unknown-model", CHAT_PATH, chat(model="gpt-does-not-exist"), {}, 404, "model_not_found"),
    ("chat-embedding-model", CHAT_PATH, chat(model="text-embedding-3-small"), {}, 400, None),
    ("chat-empty-body", CHAT_PATH, b"", {}, 400, None),
    ("chat-whitespace-body", CHAT_PATH, b"  \n ", {}, 400, None),
    (
        "chat-10mb",
        CHAT_PATH,
        chat(messages=[{"role": "user", "content": "x" * BIG}]),
        {},
        413,
        None,
    ),
    (
        "chat-invalid-utf8",
        CHAT_PATH,
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xff\xfe\x80"}]}',
        {},
        400,
        None,
    ),
    (
        "chat-lone-surrogate",
        CHAT_PATH,
        b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\\ud800"}]}',
        {},
        None,
        None,
    ),
    ("chat-text-plain", CHAT_PATH, js(OK_CHAT), {"Content-Type": "text/plain"}, 415, None),
    (
        "chat-form",
        CHAT_PATH,
        b"model=gpt-4o-mini",
        {"Content-Type": "application/x-www-form-urlencoded"},
        415,
        None,
    ),
    ("chat-json-array", CHAT_PATH, js([OK_CHAT]), {}, 400, None),
    ("chat-json-string", CHAT_PATH, js("hello"), {}, 400, None),
    ("chat-json-null", CHAT_PATH, b"null", {}, 400, None),
    ("chat-json-number", CHAT_PATH, b"42", {}, 400, None),
    (
        "chat-nan",
        CHAT_PATH,
        b'{"model": "gpt-4o-mini", "messages": [], "temperature": NaN}',
        {},
        400,
        None,
    ),
    (
        "chat-deep-nesting",
        CHAT_PATH,
        b'{"model": "gpt-4o-mini", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        {},
        400,
        None,
    ),
    # --- embeddings -------------------------------------------------------------------
    (
        "embed-malformed-json",
        EMBED_PATH,
        b'{"model": "text-embedding-3-small", "input": ',
        {},
        400,
        None,
    ),
    ("embed-model-int", EMBED_PATH, embed(model=7), {}, 400, None),
    ("embed-missing-model", EMBED_PATH, embed(model=DROP), {}, 400, None),
    ("embed-missing-input", EMBED_PATH, embed(input=DROP), {}, 400, None),
    ("embed-input-int", EMBED_PATH, embed(input=5), {}, 400, None),
    ("embed-input-empty-string", EMBED_PATH, embed(input=""), {}, 400, None),
    ("embed-input-empty-list", EMBED_PATH, embed(input=[]), {}, 400, None),
    ("embed-input-mixed", EMBED_PATH, embed(input=["a", 1]), {}, 400, None),
    ("embed-input-objects", EMBED_PATH, embed(input=[{"text": "a"}]), {}, 400, None),
    ("embed-dimensions-negative", EMBED_PATH, embed(dimensions=-1), {}, 400, None),
    ("embed-dimensions-string", EMBED_PATH, embed(dimensions="10"), {}, 400, None),
    ("embed-encoding-int", EMBED_PATH, embed(encoding_format=1), {}, 400, None),
    ("embed-unknown-model", EMBED_PATH, embed(model="embed-nope"), {}, 404, "model_not_found"),
    ("embed-chat-model", EMBED_PATH, embed(model="gpt-4o-mini"), {}, 400, None),
    ("embed-empty-body", EMBED_PATH, b"", {}, 400, None),
    ("embed-10mb", EMBED_PATH, embed(input="y" * BIG), {}, 413, None),
    (
        "embed-invalid-utf8",
        EMBED_PATH,
        b'{"model": "text-embedding-3-small", "input": "\xc3\x28"}',
        {},
        400,
        None,
    ),
    ("embed-text-plain", EMBED_PATH, js(OK_EMBED), {"Content-Type": "text/plain"}, 415, None),
    ("embed-json-array", EMBED_PATH, js([OK_EMBED]), {}, 400, None),
]


def assert_openai_error(r: Any, status: int | None = None) -> dict[str, Any]:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    assert 400 <= r.status_code, (r.status_code, r.text[:500])
    if status is not None:
        assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    for marker in TRACE_MARKERS[:2]:
        assert marker not in r.text, r.text[:2000]
    body = r.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    return dict(error)


@pytest.mark.parametrize(
    ("path", "raw", "headers", "status", "code"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
async def test_bad_request_is_a_clean_4xx_and_unbilled(
    make_gateway: Any,
    path: str,
    raw: bytes,
    headers: dict[str, str],
    status: int | None,
    code: str | None,
) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        sent = {**JSON_CT, "Authorization": f"Bearer {key}", **headers}
        r = await gw.client.post(path, content=raw, headers=sent)
        error = assert_openai_error(r, status)
        if code is not None:
            assert error["code"] == code
        assert "x-farebox-request-id" in r.headers
        assert await gw.ledger() == []
        # the gateway is still healthy afterwards
        good = OK_CHAT if path == CHAT_PATH else OK_EMBED
        r = await gw.client.post(path, json=good, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200, r.text
        assert len(await gw.ledger()) == 1


async def test_param_names_the_offending_field(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        auth = {"Authorization": f"Bearer {key}"}
        for body, param in (
            ({**OK_CHAT, "model": 4}, "model"),
            ({**OK_CHAT, "max_tokens": -1}, "max_tokens"),
            ({**OK_CHAT, "stream": "yes"}, "stream"),
            ({"model": "gpt-4o-mini"}, "messages"),
            ({**OK_CHAT, "model": "nope"}, "model"),
        ):
            r = await gw.client.post(CHAT_PATH, json=body, headers=auth)
            assert assert_openai_error(r)["param"] == param, r.text


async def test_oversized_chunked_body_is_413(make_gateway: Any) -> None:
    """No Content-Length: the limit must hold while reading the stream."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(11):
            yield b"z" * (1024 * 1024)
        yield b'"}]}'

    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        r = await gw.client.post(
            CHAT_PATH, content=chunks(), headers={**JSON_CT, "Authorization": f"Bearer {key}"}
        )
        assert "content-length" not in r.request.headers
        assert_openai_error(r, 413)
        assert await gw.ledger() == []


async def test_lying_content_length_is_not_a_500(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        for declared in ("abc", "-5", str(BIG * 10)):
            r = await gw.client.post(
                CHAT_PATH,
                content=js(OK_CHAT),
                headers={**JSON_CT, "Authorization": f"Bearer {key}", "Content-Length": declared},
            )
            # a non-numeric or over-limit declaration must not crash the gateway
            assert r.status_code < 500, (declared, r.text)
        assert len(await gw.ledger()) <= 3


@pytest.mark.parametrize("path", [CHAT_PATH, EMBED_PATH, "/v1/me", "/v1/models"])
async def test_missing_or_bad_credentials(make_gateway: Any, path: str) -> None:
    async with make_gateway() as gw:
        await gw.tenant_key("acme")
        method = "GET" if path in ("/v1/me", "/v1/models") else "POST"
        body = OK_CHAT if path == CHAT_PATH else OK_EMBED
        for headers in (
            {},
            {"Authorization": "Bearer "},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer fbx_not_a_real_key"},
            {"x-api-key": "fbx_wrong"},
            {"Authorization": "Bearer " + "A" * 5000},
        ):
            r = await gw.client.request(
                method, path, json=body if method == "POST" else None, headers=headers
            )
            error = assert_openai_error(r, 401)
            assert error["type"] == "authentication_error"
        assert await gw.ledger() == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nope"),
        ("POST", "/v1/completions/unknown"),
        ("GET", "/"),
        ("GET", "/admin/v1/nothing-here"),
        ("DELETE", "/v1/chat"),
    ],
)
async def test_unknown_routes_are_json_404(make_gateway: Any, method: str, path: str) -> None:
    async with make_gateway() as gw:
        r = await gw.client.request(method, path, headers=gw.admin)
        error = assert_openai_error(r, 404)
        assert error["type"] == "invalid_request_error"


async def test_wrong_method_is_a_json_4xx(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        r = await gw.client.get(CHAT_PATH, headers={"Authorization": f"Bearer {key}"})
        assert_openai_error(r, 405)
        r = await gw.client.put("/admin/v1/tenants", headers=gw.admin)
        assert_openai_error(r, 405)


ADMIN_CASES: list[tuple[str, str, str, bytes | None, dict[str, str]]] = [
    ("tenant-empty-object", "POST", "/admin/v1/tenants", js({}), {}),
    ("tenant-id-int", "POST", "/admin/v1/tenants", js({"id": 5}), {}),
    ("tenant-id-empty", "POST", "/admin/v1/tenants", js({"id": ""}), {}),
    ("tenant-id-bad-chars", "POST", "/admin/v1/tenants", js({"id": "a b/c"}), {}),
    ("tenant-id-too-long", "POST", "/admin/v1/tenants", js({"id": "x" * 65}), {}),
    ("tenant-unknown-plan", "POST", "/admin/v1/tenants", js({"id": "t2", "plan": "gold"}), {}),
    ("tenant-unknown-field", "POST", "/admin/v1/tenants", js({"id": "t2", "colour": "red"}), {}),
    ("tenant-metadata-list", "POST", "/admin/v1/tenants", js({"id": "t2", "metadata": [1]}), {}),
    ("tenant-malformed-json", "POST", "/admin/v1/tenants", b'{"id": ', {}),
    ("tenant-json-array", "POST", "/admin/v1/tenants", js([{"id": "t2"}]), {}),
    ("tenant-empty-body", "POST", "/admin/v1/tenants", b"", {}),
    ("tenant-invalid-utf8", "POST", "/admin/v1/tenants", b'{"id": "\xff"}', {}),
    ("tenant-text-plain", "POST", "/admin/v1/tenants", b"id=t2", {"Content-Type": "text/plain"}),
    ("tenant-duplicate", "POST", "/admin/v1/tenants", js({"id": "acme"}), {}),
    ("patch-unknown-field", "PATCH", "/admin/v1/tenants/acme", js({"owner": "x"}), {}),
    ("patch-plan-int", "PATCH", "/admin/v1/tenants/acme", js({"plan": 3}), {}),
    ("patch-unknown-plan", "PATCH", "/admin/v1/tenants/acme", js({"plan": "gold"}), {}),
    ("patch-bad-billing", "PATCH", "/admin/v1/tenants/acme", js({"billing": {"paypal": "x"}}), {}),
    ("patch-malformed", "PATCH", "/admin/v1/tenants/acme", b"{{", {}),
    ("patch-missing-tenant", "PATCH", "/admin/v1/tenants/ghost", js({"name": "x"}), {}),
    ("key-name-int", "POST", "/admin/v1/tenants/acme/keys", js({"name": 1}), {}),
    ("key-name-empty", "POST", "/admin/v1/tenants/acme/keys", js({"name": ""}), {}),
    ("key-expires-negative", "POST", "/admin/v1/tenants/acme/keys", js({"expires_in_s": -1}), {}),
    ("key-expires-string", "POST", "/admin/v1/tenants/acme/keys", js({"expires_in_s": "soon"}), {}),
    ("key-unknown-tenant", "POST", "/admin/v1/tenants/ghost/keys", js({"name": "k"}), {}),
    ("key-malformed", "POST", "/admin/v1/tenants/acme/keys", b"[", {}),
    ("service-key-unknown-field", "POST", "/admin/v1/service-keys", js({"tenant": "acme"}), {}),
    ("pause-reason-int", "POST", "/admin/v1/tenants/acme/pause", js({"reason": 5}), {}),
    (
        "pause-reason-too-long",
        "POST",
        "/admin/v1/tenants/acme/pause",
        js({"reason": "r" * 5000}),
        {},
    ),
    ("usage-bad-group", "GET", "/admin/v1/usage?group_by=planet", None, {}),
    ("usage-bad-from", "GET", "/admin/v1/usage?from=yesterday-ish", None, {}),
    ("usage-bad-to", "GET", "/admin/v1/usage?to=2025-13-45", None, {}),
]


@pytest.mark.parametrize(
    ("method", "path", "raw", "headers"),
    [case[1:] for case in ADMIN_CASES],
    ids=[case[0] for case in ADMIN_CASES],
)
async def test_admin_bad_input_is_a_clean_4xx(
    make_gateway: Any, method: str, path: str, raw: bytes | None, headers: dict[str, str]
) -> None:
    async with make_gateway() as gw:
        await gw.tenant("acme")
        sent = {**JSON_CT, **gw.admin, **headers}
        r = await gw.client.request(method, path, content=raw, headers=sent)
        assert_openai_error(r)
        # nothing changed
        r = await gw.client.get("/admin/v1/tenants", headers=gw.admin)
        tenants = r.json()["data"]
        assert [(t["id"], t["plan"], t["paused"], t["billing"]) for t in tenants] == [
            ("acme", "default", False, {})
        ]
        r = await gw.client.get("/admin/v1/tenants/acme/keys", headers=gw.admin)
        assert r.json()["data"] == []


async def test_deeply_nested_body_is_a_400(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("t1")
        content = "[" * 400 + "]" * 400
        raw = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":' + content + "}]}"
        r = await gw.client.post(
            "/v1/chat/completions",
            content=raw.encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        assert r.status_code == 400 and "nested" in r.json()["error"]["message"]
        assert await gw.ledger() == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": "k", "expires_at": NaN}',
        b'{"name": "k", "expires_in_s": Infinity}',
    ],
)
async def test_admin_rejects_non_finite_times(make_gateway: Any, body: bytes) -> None:
    async with make_gateway() as gw:
        await gw.tenant("t1")
        r = await gw.client.post(
            "/admin/v1/tenants/t1/keys",
            content=body,
            headers={**gw.admin, "Content-Type": "application/json"},
        )
        assert r.status_code == 400, r.text
        assert "error" in r.json()


async def test_admin_rejects_unencodable_metadata(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        deep = "{" + '"a":{' * 300 + "}" * 300 + "}"
        raw = '{"id": "t2", "metadata": ' + deep + "}"
        r = await gw.client.post(
            "/admin/v1/tenants",
            content=raw.encode(),
            headers={**gw.admin, "Content-Type": "application/json"},
        )
        assert 400 <= r.status_code < 500, r.text

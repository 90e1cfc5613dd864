"""Issue 15: tool definitions are read as part ``system`` (they come from the SaaS, like its
system prompt): a chat tool's ``function.description`` (and ``custom.description``, legacy
``functions[].description``), every string the model reads in its ``parameters`` schema
(descriptions, titles, ``enum``, ``default``, ``examples``, ``const``, ``pattern``...; not
property names, ``type``, ``$ref`` or ``required``), Anthropic and Responses tool definitions
(which reach the path in chat shape, and the Responses body sent as it is to native
deployments). They are scanned only by checks whose ``scan`` includes ``system``, and
redacted in place."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farebox.core.guardrails import GuardrailPolicy, PiiPolicy, SecretsPolicy
from farebox.gateway.guard_texts import chat_slots, chat_units, responses_slots
from farebox.gateway.guardrails import GuardrailStage
from farebox.providers.translate_responses import responses_request_to_chat
from tests.guard_world import AWS_KEY, EMAIL, INJECTION, MODEL, EchoMock, asgi, config, plan

PLANS: dict[str, Any] = {
    "secrets": plan({"secrets": {"mode": "redact"}}),  # scans user, tool, system by default
    "pii_default": plan({"pii": {"mode": "redact", "engine": "builtin"}}),  # user, tool
    "injection_system": plan({"prompt_injection": {"mode": "block", "scan": ["user", "system"]}}),
    "injection_user": plan({"prompt_injection": {"mode": "block"}}),
    "system_block": plan({"secrets": {"mode": "block", "scan": ["system"]}}),
    "system_redact": plan({"secrets": {"mode": "redact", "scan": ["system"]},
                           "pii": {"mode": "redact", "engine": "builtin", "scan": ["system"]}}),
}  # fmt: skip


def weather(description: str, argument: str = "The city") -> dict[str, Any]:
    city = {"type": "string", "description": argument}
    schema = {"type": "object", "properties": {"city": city}}
    function = {"name": "weather", "description": description, "parameters": schema}
    return {"type": "function", "function": function}


def ask(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "Weather in Oslo?"}], **extra}


def oai(gw: Any, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url="http://gateway/v1", http_client=asgi(gw),
                              max_retries=0)  # fmt: skip


async def test_a_secret_in_a_tool_description_is_redacted_in_place(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="secrets")
        tool = weather(f"Calls our API with key {AWS_KEY}.", f"City; auth {AWS_KEY}")
        await oai(gw, key).chat.completions.create(**ask(tools=[tool]))
        (sent,) = mock.bodies
        function = sent["tools"][0]["function"]
        assert function["description"] == "Calls our API with key <SECRET_1>."
        assert (
            function["parameters"]["properties"]["city"]["description"] == "City; auth <SECRET_1>"
        )
        assert AWS_KEY not in mock.sent()
        (entry,) = await gw.ledger("acme")
        assert [(f["detector"], f["action"], f["where"]) for f in entry.guardrails] == [
            ("secrets", "redacted", "system")]  # fmt: skip


async def test_descriptions_are_read_only_by_checks_that_scan_system(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="pii_default")  # PII: user and tool parts
        await oai(gw, key).chat.completions.create(**ask(tools=[weather(f"Owner: {EMAIL}")]))
        assert EMAIL in mock.sent()
        blocking = await gw.tenant_key("beta", plan="injection_system")
        with pytest.raises(openai.BadRequestError) as caught:
            await oai(gw, blocking).chat.completions.create(**ask(tools=[weather(INJECTION)]))
        assert caught.value.code == "prompt_injection_detected"
        assert "system input" in caught.value.message
        user_only = await gw.tenant_key("gamma", plan="injection_user")
        await oai(gw, user_only).chat.completions.create(**ask(tools=[weather(INJECTION)]))
        assert len(mock.bodies) == 2
        assert [e.status for e in await gw.ledger("beta")] == ["blocked"]


async def test_legacy_functions_and_custom_tools_are_read(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="secrets")
        legacy = {"name": "f", "description": f"uses {AWS_KEY}", "parameters": {"type": "object"}}
        custom = {"type": "custom", "custom": {"name": "c", "description": f"key {AWS_KEY}"}}
        for body in (ask(functions=[legacy]), ask(tools=[custom])):
            r = await gw.client.post("/v1/chat/completions", json=body,
                                     headers={"Authorization": f"Bearer {key}"})  # fmt: skip
            assert r.status_code == 200, r.text
        assert AWS_KEY not in mock.sent() and mock.sent().count("<SECRET_1>") == 2


async def test_anthropic_tool_descriptions_reach_the_path_and_are_redacted(
    make_gateway: Any,
) -> None:
    mock = EchoMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="secrets")
        claude = anthropic.AsyncAnthropic(api_key=key, base_url="http://gateway",
                                          http_client=asgi(gw), max_retries=0)  # fmt: skip
        query = {"type": "string", "description": f"use {AWS_KEY}"}
        schema = {"type": "object", "properties": {"q": query}}
        tools = [
            {"name": "search", "description": f"Search with {AWS_KEY}", "input_schema": schema}
        ]
        await claude.messages.create(model=MODEL, max_tokens=50, tools=tools,  # type: ignore[arg-type]
                                     messages=[{"role": "user", "content": "hi"}])  # fmt: skip
        assert AWS_KEY not in mock.sent()
        function = mock.bodies[0]["tools"][0]["function"]
        assert function["description"] == "Search with <SECRET_1>"


async def test_native_responses_tool_descriptions_are_redacted() -> None:
    native = {"model": MODEL, "input": "hi", "tools": [
        {"type": "function", "name": "lookup", "description": f"key {AWS_KEY}",
         "parameters": {"type": "object", "properties": {
             "who": {"type": "string", "description": f"e.g. {EMAIL}"}}}}]}  # fmt: skip
    chat = responses_request_to_chat(copy.deepcopy(native))
    policy = GuardrailPolicy(
        secrets=SecretsPolicy("redact"),
        pii=PiiPolicy("redact", entities=("EMAIL_ADDRESS",), scan=("system",), engine="builtin"),
    )
    principal = SimpleNamespace(user=None, key=SimpleNamespace(id="k1"),
                                tenant=SimpleNamespace(id="t1"))  # fmt: skip
    call = SimpleNamespace(plan=SimpleNamespace(guardrails=policy), body=chat, responses=native,
                           principal=principal, guard=None)  # fmt: skip
    await GuardrailStage().screen(call, 10)
    for sent in (json.dumps(native), json.dumps(chat)):
        assert AWS_KEY not in sent and EMAIL not in sent
    assert native["tools"][0]["description"] == "key <SECRET_1>"  # type: ignore[index]


def test_the_slots_of_tool_definitions() -> None:
    body = {"tools": [weather("d", "a"), {"type": "custom", "custom": {"name": "c"}}, "junk",
                      {"type": "function", "function": {"name": "n", "parameters": [1, {}]}}],
            "functions": [{"name": "f", "description": "legacy"}],
            "messages": [{"role": "system", "content": "s"}]}  # fmt: skip
    assert [s.text for s in chat_slots(body, frozenset({"system"}))] == ["d", "a", "legacy", "s"]
    assert chat_slots(body, frozenset({"user", "tool"})) == []
    flat = {"tools": [{"type": "function", "name": "x", "description": "flat"},
                      {"type": "web_search"}], "input": "u"}  # fmt: skip
    assert [s.text for s in responses_slots(flat)] == ["flat", "u"]


# --- every string of a schema the model reads (review finding 4) -------------------------
LEAVES: dict[str, Any] = {
    "enum": lambda v: {"enum": ["Oslo", v]},
    "default": lambda v: {"default": v},
    "examples": lambda v: {"examples": [{"city": v}]},
    "title": lambda v: {"title": f"City ({v})"},
    "const": lambda v: {"const": v},
    "pattern": lambda v: {"pattern": f"^{v}$"},
}


def tool_with(extra: dict[str, Any]) -> dict[str, Any]:
    tool = weather("Weather")
    tool["function"]["parameters"]["properties"]["city"].update(extra)
    tool["function"]["parameters"]["required"] = ["city"]
    return tool


async def test_a_key_anywhere_in_a_schema_is_refused_by_a_block(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        client = oai(gw, await gw.tenant_key("acme", plan="system_block"))
        for name, leaf in LEAVES.items():
            with pytest.raises(openai.BadRequestError) as caught:
                await client.chat.completions.create(**ask(tools=[tool_with(leaf(AWS_KEY))]))
            assert caught.value.code == "secret_detected", name
            assert "system input" in caught.value.message
        await client.chat.completions.create(**ask(tools=[tool_with(LEAVES["enum"]("Bergen"))]))
        assert len(mock.bodies) == 1 and AWS_KEY not in mock.sent()


async def test_a_value_anywhere_in_a_schema_is_redacted_in_place(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        client = oai(gw, await gw.tenant_key("acme", plan="system_redact"))
        city: dict[str, Any] = {"type": "string"}
        for leaf in LEAVES.values():
            city.update(leaf(AWS_KEY))
        city["description"] = f"or mail {EMAIL}"
        await client.chat.completions.create(**ask(tools=[tool_with(city)]))
        (sent,) = mock.bodies
        schema = sent["tools"][0]["function"]["parameters"]
        assert AWS_KEY not in mock.sent() and EMAIL not in mock.sent()
        got = schema["properties"]["city"]
        assert got["enum"] == ["Oslo", "<SECRET_1>"] and got["default"] == "<SECRET_1>"
        assert got["examples"] == [{"city": "<SECRET_1>"}] and got["title"] == "City (<SECRET_1>)"
        assert got["pattern"] == "^<SECRET_1>$" and got["const"] == "<SECRET_1>"
        assert got["description"] == "or mail <EMAIL_1>"
        assert got["type"] == "string" and schema["required"] == ["city"]  # the structure
        (entry,) = await gw.ledger("acme")
        assert {(f["detector"], f["where"]) for f in entry.guardrails} == {
            ("secrets", "system"), ("pii", "system")}  # fmt: skip


async def test_legacy_functions_and_responses_tools_are_read_whole(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="system_block")
        auth = {"Authorization": f"Bearer {key}"}
        params = {"type": "object", "properties": {"k": {"type": "string", "enum": [AWS_KEY]}}}
        legacy = {"name": "f", "description": "d", "parameters": params}
        r = await gw.client.post("/v1/chat/completions", json=ask(functions=[legacy]),
                                 headers=auth)  # fmt: skip
        assert r.status_code == 400 and r.json()["error"]["code"] == "secret_detected"
        flat = {"type": "function", "name": "f", "description": "d", "parameters": params}
        r = await gw.client.post("/v1/responses", headers=auth,
                                 json={"model": MODEL, "input": "hi", "tools": [flat]})  # fmt: skip
        assert r.status_code == 400 and r.json()["error"]["code"] == "secret_detected"
        redacting = await gw.tenant_key("beta", plan="system_redact")
        r = await gw.client.post("/v1/responses", headers={"Authorization": f"Bearer {redacting}"},
                                 json={"model": MODEL, "input": "hi", "tools": [flat]})  # fmt: skip
        assert r.status_code == 200, r.text
        assert AWS_KEY not in mock.sent() and "<SECRET_1>" in mock.sent()


def test_what_a_schema_gives_to_read() -> None:
    schema = {
        "type": "object", "title": "T", "required": ["type", "AKIA"], "$ref": "#/$defs/x",
        "properties": {
            "type": {"type": "string", "description": "a property named type", "enum": ["e"]},
            "AKIA": {"type": ["string", "null"], "default": {"deep": ["d1", 2, "d2"]}},
        },
        "$defs": {"x": {"const": "c", "format": "date", "x-note": ["n1", "n2"]}},
    }  # fmt: skip
    body = {"tools": [{"type": "function", "function": {"name": "n", "parameters": schema}}]}
    texts = [u.text for u in chat_units(body, frozenset({"system"}))]
    assert texts == ["T", "a property named type\ne", "d1\nd2", "c\ndate", "n1\nn2"]
    assert [s.text for s in chat_slots(body, frozenset({"system"}))] == [
        "T",
        "a property named type",
        "e",
        "d1",
        "d2",
        "c",
        "date",
        "n1",
        "n2",
    ]  # no gaps


KEYS = st.sampled_from(["type", "enum", "title", "properties", "items", "k", "required", "$ref"])
LEAF = st.one_of(st.sampled_from(["x", "string", "#/a"]), st.integers(), st.booleans())
SCHEMAS = st.recursive(
    st.dictionaries(KEYS, LEAF, max_size=3),
    lambda inner: st.dictionaries(KEYS, inner | st.lists(inner | LEAF, max_size=3), max_size=4),
    max_leaves=25,
)


def _plant(schema: Any, path: list[int]) -> tuple[Any, bool]:
    """``schema`` with one string leaf (chosen by ``path``) replaced by the key: if it is not
    the value of ``type``, ``$ref`` or ``required`` (or in their lists), it must be read."""
    spots: list[tuple[Any, Any, bool]] = []
    stack: list[tuple[Any, bool, bool]] = [(schema, False, False)]
    while stack:
        node, data, structural = stack.pop()
        pairs = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in pairs:
            words = isinstance(node, dict) and not data
            inner_data = data or (words and key in {"enum"})
            fixed = structural or (words and key in {"type", "$ref", "required"}
                                   and not isinstance(value, dict))  # fmt: skip
            if isinstance(value, str):
                spots.append((node, key, not fixed))
            elif isinstance(value, dict | list):
                stack.append((value, inner_data, fixed))
    if not spots:
        return schema, False
    node, key, read = spots[path[0] % len(spots)]
    node[key] = f"id {AWS_KEY}"
    return schema, read


@settings(max_examples=150, deadline=None)
@given(SCHEMAS, st.lists(st.integers(0, 1000), min_size=1, max_size=1))
async def test_a_key_in_any_string_of_a_schema_is_redacted_unless_structural(
    schema: dict[str, Any], path: list[int]
) -> None:
    planted, read = _plant(copy.deepcopy(schema), path)
    tool = {"type": "function", "function": {"name": "f", "parameters": planted}}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": [tool]}
    before = copy.deepcopy(body)
    policy = GuardrailPolicy(secrets=SecretsPolicy("redact", scan=("system",)))
    principal = SimpleNamespace(user=None, key=SimpleNamespace(id="k1"),
                                tenant=SimpleNamespace(id="t1"))  # fmt: skip
    call = SimpleNamespace(plan=SimpleNamespace(guardrails=policy), body=body, responses=None,
                           principal=principal, guard=None)  # fmt: skip
    await GuardrailStage().screen(call, 10)
    sent = json.dumps(body)
    assert (AWS_KEY not in sent) == read or AWS_KEY not in json.dumps(before)
    if read:  # only the planted string changed: the keys and the structure stay
        assert sent == json.dumps(before).replace(AWS_KEY, "<SECRET_1>")

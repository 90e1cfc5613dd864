"""Issue 15: tool definitions are read as part ``system`` (they come from the SaaS, like its
system prompt): a chat tool's ``function.description`` (and ``custom.description``, legacy
``functions[].description``), the descriptions inside its ``parameters``, Anthropic and
Responses tool descriptions (which reach the path in chat shape, and the Responses body sent
as it is to native deployments). They are scanned only by checks whose ``scan`` includes
``system``, and redacted in place."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace
from typing import Any

import anthropic
import openai
import pytest

from farebox.core.guardrails import GuardrailPolicy, PiiPolicy, SecretsPolicy
from farebox.gateway.guard_texts import chat_slots, responses_slots
from farebox.gateway.guardrails import GuardrailStage
from farebox.providers.translate_responses import responses_request_to_chat
from tests.guard_world import AWS_KEY, EMAIL, INJECTION, MODEL, EchoMock, asgi, config, plan

PLANS: dict[str, Any] = {
    "secrets": plan({"secrets": {"mode": "redact"}}),  # scans user, tool, system by default
    "pii_default": plan({"pii": {"mode": "redact", "engine": "builtin"}}),  # user, tool
    "injection_system": plan({"prompt_injection": {"mode": "block", "scan": ["user", "system"]}}),
    "injection_user": plan({"prompt_injection": {"mode": "block"}}),
}


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

"""Issue 15: the counting endpoints and the guardrails. ``/v1/messages/count_tokens`` is
forwarded to the provider's own counting endpoint when the model's first deployment is
Anthropic: then the plan's secrets and PII checks screen it first (a block refuses it with
chat's 400; a value a redaction would replace keeps the count local, by the estimator; a flag
sends it as it is). ``/v1/responses/input_tokens`` is counted locally: nothing goes upstream,
nothing is screened. A count writes no ledger entry, screened or not."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fakes.anthropic_upstream import AnthropicUpstream
from tests.conftest import Gateway
from tests.guard_world import AWS_KEY, EMAIL, INJECTION, plan
from tests.test_counting_api import counting_gateway
from tests.test_messages_api import _anthropic, _openai

PLANS: dict[str, Any] = {
    "block": plan(
        {
            "secrets": {"mode": "block"},
            "pii": {"mode": "block", "engine": "builtin"},
            "prompt_injection": {"mode": "block"},
        }
    ),  # fmt: skip
    "redact": plan({"pii": {"mode": "redact", "engine": "builtin"}}),
    "flag": plan({"pii": {"mode": "flag", "engine": "builtin"}}),
}


def said(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
async def gw(make_gateway: Any, claude: AnthropicUpstream) -> AsyncIterator[Gateway]:
    async with counting_gateway(make_gateway, claude, PLANS) as g:
        yield g


async def test_a_blocked_value_is_refused_before_the_provider_counts(
    gw: Gateway, claude: AnthropicUpstream
) -> None:
    client = _anthropic(gw, await gw.tenant_key("acme", plan="block"))
    with pytest.raises(anthropic.BadRequestError) as refused:
        await client.messages.count_tokens(model="smart", messages=said(f"key {AWS_KEY}"))
    assert refused.value.body["error"]["code"] == "secret_detected"  # type: ignore[index]
    tools = [{"name": "t", "description": f"mail {EMAIL}", "input_schema": {"type": "object"}}]
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.count_tokens(model="smart", messages=said(f"I am {EMAIL}"))
    # PII reads the user and tool parts (not ``system``, where tool descriptions are); an
    # injection does nothing to a count: not checked
    counted = await client.messages.count_tokens(model="smart", tools=tools,  # type: ignore[arg-type]
                                                 messages=said(INJECTION))  # fmt: skip
    assert counted.input_tokens > 0
    assert claude.calls == 1 and AWS_KEY not in repr(claude.last.json)
    assert await gw.ledger("acme") == []


async def test_a_value_to_redact_is_counted_locally(gw: Gateway, claude: AnthropicUpstream) -> None:
    client = _anthropic(gw, await gw.tenant_key("acme", plan="redact"))
    raw = await client.messages.with_raw_response.count_tokens(
        model="smart", messages=said(f"Mail {EMAIL} please")
    )
    assert raw.headers["x-farebox-count-source"] == "estimate"
    assert (await raw.parse()).input_tokens > 0
    assert claude.calls == 0
    clean = await client.messages.with_raw_response.count_tokens(
        model="smart", messages=said("nothing to hide")
    )
    assert clean.headers["x-farebox-count-source"] == "provider" and claude.calls == 1
    assert await gw.ledger("acme") == []


async def test_a_flag_sends_the_count_as_it_is(gw: Gateway, claude: AnthropicUpstream) -> None:
    client = _anthropic(gw, await gw.tenant_key("acme", plan="flag"))
    raw = await client.messages.with_raw_response.count_tokens(
        model="smart", messages=said(f"Mail {EMAIL}")
    )
    assert raw.headers["x-farebox-count-source"] == "provider"
    assert EMAIL in repr(claude.last.json)
    assert await gw.ledger("acme") == []


async def test_responses_input_tokens_is_local_and_not_screened(
    gw: Gateway, claude: AnthropicUpstream
) -> None:
    client = _openai(gw, await gw.tenant_key("acme", plan="block"))
    counted = await client.responses.input_tokens.count(model="smart", input=f"key {AWS_KEY}")
    assert counted.input_tokens > 0 and claude.calls == 0
    with pytest.raises(openai.BadRequestError):  # the request itself would be refused
        await client.responses.create(model="smart", input=f"key {AWS_KEY}")
    assert claude.calls == 0


# --- what is screened is what is sent (review finding 2) ---------------------------------
# Under guardrails a count sends the provider the body's chat form, as a ``/v1/messages``
# request would send it: the texts the checks read, nothing else. What that form drops
# (thinking blocks, images in tool results, fields Farebox does not translate) is dropped from
# the count too, so no value the checks did not read reaches the counting endpoint.

ALL = ["user", "tool", "system", "assistant"]
SCREENS: dict[str, Any] = {
    "all_block": plan({"secrets": {"mode": "block", "scan": ALL},
                       "pii": {"mode": "block", "engine": "builtin", "scan": ALL}}),
    "all_redact": plan({"secrets": {"mode": "redact", "scan": ALL},
                        "pii": {"mode": "redact", "engine": "builtin", "scan": ALL}}),
    "plain": {"models": ["*"]},
}  # fmt: skip
REFUSED = {"secret_detected", "pii_detected"}
TENANTS = itertools.count()


@pytest.fixture
async def sgw(make_gateway: Any, claude: AnthropicUpstream) -> AsyncIterator[Gateway]:
    async with counting_gateway(make_gateway, claude, SCREENS) as g:
        yield g


def thinking_turns(thought: str, text: str = "ok") -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": thought, "signature": "sig"},
            {"type": "text", "text": text}]},
        {"role": "user", "content": "go on"},
    ]  # fmt: skip


async def test_a_thinking_block_never_carries_a_value_to_the_counting_endpoint(
    sgw: Gateway, claude: AnthropicUpstream
) -> None:
    client = _anthropic(sgw, await sgw.tenant_key("acme", plan="all_block"))
    raw = await client.messages.with_raw_response.count_tokens(
        model="smart",
        messages=thinking_turns(f"the key is {AWS_KEY}"),  # type: ignore[arg-type]
    )
    assert (await raw.parse()).input_tokens > 0
    assert raw.headers["x-farebox-count-source"] == "provider"
    sent = claude.last.json
    assert AWS_KEY not in claude.last.raw.decode() and "thinking" not in json.dumps(sent)
    # what a /v1/messages request would send: the text turns, the thinking block dropped
    assert sent["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}
    with pytest.raises(anthropic.BadRequestError) as refused:  # the same key, read: refused
        await client.messages.count_tokens(
            model="smart",
            messages=thinking_turns("hm", f"ok {AWS_KEY}"),  # type: ignore[arg-type]
        )
    assert refused.value.body["error"]["code"] == "secret_detected"  # type: ignore[index]
    assert claude.calls == 1
    plain = _anthropic(sgw, await sgw.tenant_key("beta", plan="plain"))
    await plain.messages.count_tokens(model="smart", messages=thinking_turns("hm"))  # type: ignore[arg-type]
    assert claude.last.json["messages"][1]["content"][0]["type"] == "thinking"  # as given


async def test_a_turn_of_thinking_only_is_counted_locally_not_sent_empty(
    sgw: Gateway, claude: AnthropicUpstream
) -> None:
    """Dropping the thinking blocks would leave an empty assistant turn, which Anthropic
    refuses: such a count is estimated here instead of sent."""
    client = _anthropic(sgw, await sgw.tenant_key("acme", plan="all_block"))
    turns = thinking_turns("hm")
    turns[1]["content"] = turns[1]["content"][:1]  # the thinking block alone
    raw = await client.messages.with_raw_response.count_tokens(
        model="smart",
        messages=turns,  # type: ignore[arg-type]
    )
    assert (await raw.parse()).input_tokens > 0
    assert raw.headers["x-farebox-count-source"] == "estimate"
    assert claude.calls == 0


def conversation() -> dict[str, Any]:
    """A count body with every kind of block, and a tool, holding no value."""
    schema = {"type": "object", "properties": {"city": {"type": "string", "description": "c"}}}
    return {
        "model": "smart",
        "system": [{"type": "text", "text": "Be brief."}],
        "tools": [{"name": "weather", "description": "Weather", "input_schema": schema}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Checking"},
                {"type": "tool_use", "id": "toolu_1", "name": "weather",
                 "input": {"city": "Oslo"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                    {"type": "text", "text": "sunny"},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}]},
                {"type": "text", "text": "thanks"}]},
        ],
    }  # fmt: skip


def _blocks(body: dict[str, Any], i: int) -> list[dict[str, Any]]:
    content: list[dict[str, Any]] = body["messages"][i]["content"]
    return content


def _schema(body: dict[str, Any]) -> dict[str, Any]:
    city: dict[str, Any] = body["tools"][0]["input_schema"]["properties"]["city"]
    return city


# where a value may sit: every string a count body holds but ids, tool names and the sources
# of a user's images, which no check reads on any path (a request forwards them unread too)
PLACES: dict[str, Any] = {
    "user_string": lambda b, v: b["messages"][0].update(content=v),
    "user_text": lambda b, v: _blocks(b, 0)[0].update(text=v),
    "user_text_extra": lambda b, v: _blocks(b, 0)[0].update(note=v),
    "system_string": lambda b, v: b.update(system=v),
    "system_block": lambda b, v: b["system"][0].update(text=v),
    "system_block_extra": lambda b, v: b["system"][0].update(citations=[{"cited_text": v}]),
    "assistant_text": lambda b, v: _blocks(b, 1)[2].update(text=v),
    "thinking": lambda b, v: _blocks(b, 1)[0].update(thinking=v),
    "signature": lambda b, v: _blocks(b, 1)[0].update(signature=v),
    "redacted_thinking": lambda b, v: _blocks(b, 1)[1].update(data=v),
    "tool_input": lambda b, v: _blocks(b, 1)[3].update(input={"city": {"deep": [v]}}),
    "tool_use_extra": lambda b, v: _blocks(b, 1)[3].update(caller={"note": v}),
    "tool_result_string": lambda b, v: _blocks(b, 2)[0].update(content=v),
    "tool_result_text": lambda b, v: _blocks(b, 2)[0]["content"][0].update(text=v),
    "tool_result_image": lambda b, v: _blocks(b, 2)[0]["content"][1]["source"].update(
        url=f"https://x.test/?q={v}"),
    "tool_result_extra": lambda b, v: _blocks(b, 2)[0].update(note=v),
    "tool_description": lambda b, v: b["tools"][0].update(description=v),
    "schema_description": lambda b, v: _schema(b).update(description=v),
    "schema_enum": lambda b, v: _schema(b).update(enum=["Oslo", v]),
    "schema_default": lambda b, v: _schema(b).update(default=v),
    "schema_examples": lambda b, v: _schema(b).update(examples=[{"x": v}]),
    "schema_title": lambda b, v: _schema(b).update(title=v),
    "schema_const": lambda b, v: _schema(b).update(const=v),
    "schema_pattern": lambda b, v: _schema(b).update(pattern=v),
    "tool_extra": lambda b, v: b["tools"][0].update(allowed_domains=[v]),
    "thinking_config": lambda b, v: b.update(thinking={"type": "enabled", "budget_tokens": 1024,
                                                       "note": v}),
    "top_level_extra": lambda b, v: b.update(context_management={"edits": [v]}),
    "metadata": lambda b, v: b.update(metadata={"user_id": v.strip("xy \n")}),
}  # fmt: skip
# the places the chat form keeps (and the checks read); it drops the others
READ = frozenset({"user_string", "user_text", "system_string", "system_block", "assistant_text",
                  "tool_input", "tool_result_string", "tool_result_text", "tool_description",
                  "schema_description", "schema_enum", "schema_default", "schema_examples",
                  "schema_title", "schema_const", "schema_pattern"})  # fmt: skip
BEFORE = st.sampled_from(["", "see ", "x" * 300 + " ", "\n"])
AFTER = st.sampled_from(["", " please", "\n", " " + "y" * 300])


SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=SLOW_OK)  # fmt: skip
@given(
    st.lists(st.sampled_from(sorted(PLACES)), min_size=1, max_size=3, unique=True),
    st.sampled_from([AWS_KEY, EMAIL]),
    st.tuples(BEFORE, AFTER),
    st.sampled_from(["all_block", "all_redact"]),
)
async def test_no_count_body_carries_a_value_upstream_unread(
    sgw: Gateway, claude: AnthropicUpstream, places: list[str], value: str,
    filler: tuple[str, str], plan_name: str,
) -> None:  # fmt: skip
    key = await sgw.tenant_key(f"h{next(TENANTS)}", plan=plan_name)
    body = conversation()
    for place in sorted(places, key=lambda p: p.endswith("_string")):  # blocks first
        PLACES[place](body, filler[0] + value + filler[1])
    before = claude.calls
    r = await sgw.client.post("/v1/messages/count_tokens", json=body,
                              headers={"x-api-key": key})  # fmt: skip
    leaks = [rec.raw for rec in claude.requests[before:] if value.encode() in rec.raw]
    assert not leaks, (places, plan_name, leaks)
    read = READ.intersection(places)  # else the chat form drops the value: nothing to read
    if read and plan_name == "all_block":
        assert r.status_code == 400 and r.json()["error"]["code"] in REFUSED, r.text
        return
    assert r.status_code == 200, r.text
    assert r.json()["input_tokens"] > 0
    local = bool(read)  # a value a redaction would replace: counted here
    assert r.headers["x-farebox-count-source"] == ("estimate" if local else "provider")
    assert claude.calls == before + (not local)

"""Issue [10]: a field a deployment cannot honour gets a 400 naming it, never a silent drop.

Three models over two loopback fakes speaking the real wire formats: ``claude`` (an Anthropic
deployment only), ``gpt`` (an OpenAI-compatible one only) and ``both`` (Anthropic first, then
OpenAI). A request an Anthropic deployment cannot honour (``text.format`` json_schema,
``reasoning.effort``, ``temperature`` above 1, ...) skips it: ``both`` serves it from the OpenAI
deployment, failover never falls back to Anthropic, and ``claude`` refuses it with a 400
``invalid_request_error`` naming the client's field and the deployment kind; nothing reaches
the upstream. What is served, the upstream received, field by field (a hypothesis property over
field combinations). The official ``openai`` SDK drives the gateway over an ASGI transport.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest
from hypothesis import strategies as st

from fakes import openai_upstream as oa
from fakes.anthropic_upstream import AnthropicUpstream
from tests.test_fuzz_data_plane import draw
from tests.test_responses_api import _openai

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:schemathesis.*")

CLAUDE_MODEL = "claude-sonnet-4-5"
SCHEMA = {"type": "object", "properties": {"answer": {"type": "integer"}}}
JSON_SCHEMA = {"type": "json_schema", "name": "answer", "schema": SCHEMA}
ENV = {"CLAUDE_KEY": "sk-ant-test"}


def _config(claude: AnthropicUpstream, gpt: oa.OpenAIUpstream) -> dict[str, Any]:
    anthropic = {"provider": "claude", "model": CLAUDE_MODEL}
    openai_ = {"provider": "gpt", "model": "gpt-4o-mini"}
    return {
        "providers": {
            "claude": {"kind": "anthropic", "base_url": claude.base_url,
                       "api_key": "env:CLAUDE_KEY"},
            "gpt": {"kind": "openai", "base_url": gpt.base_url},
        },
        "models": {"claude": [anthropic], "gpt": [openai_], "both": [anthropic, openai_]},
        "routing": {"retries": 0},
    }  # fmt: skip


async def _refused(call: Any, param: str) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        await call
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert param in error["message"] and "anthropic" in error["message"]
    assert error["deployment_kind"] == "anthropic"
    return caught.value


async def test_anthropic_only_model_refuses_what_it_cannot_honour(
    make_gateway: Any, ups: Any
) -> None:
    claude, gpt = ups
    async with make_gateway(_config(claude, gpt), env=ENV) as gw:
        client = _openai(gw, await gw.tenant_key("acme"))
        create = client.responses.create
        await _refused(create(model="claude", input="6 x 7?", text={"format": JSON_SCHEMA}),
                       "text.format")  # fmt: skip
        await _refused(create(model="claude", input="hi", reasoning={"effort": "high"}),
                       "reasoning.effort")  # fmt: skip
        await _refused(create(model="claude", input="hi", temperature=1.5), "temperature")
        await _refused(create(model="claude", input="hi", text={"verbosity": "low"}),
                       "text.verbosity")  # fmt: skip
        await _refused(create(model="claude", input="hi", service_tier="flex"), "service_tier")
        assert claude.calls == 0 and gpt.calls == 0
        assert await gw.ledger("acme") == []  # refused before anything was reserved


async def test_chat_clients_get_the_chat_field_names(make_gateway: Any, ups: Any) -> None:
    claude, gpt = ups
    async with make_gateway(_config(claude, gpt), env=ENV) as gw:
        client = _openai(gw, await gw.tenant_key("acme"))
        hi = [{"role": "user", "content": "hi"}]
        fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": SCHEMA}}
        refused = {"response_format": fmt, "reasoning_effort": "low", "n": 2, "seed": 7,
                   "logprobs": True, "presence_penalty": 0.5, "store": True}  # fmt: skip
        for name, value in refused.items():
            asked = {name: value}
            await _refused(client.chat.completions.create(model="claude", messages=hi, **asked),
                           name)  # fmt: skip
        assert claude.calls == 0


async def test_a_model_with_both_kinds_is_served_by_the_one_that_honours(
    make_gateway: Any, ups: Any
) -> None:
    claude, gpt = ups
    async with make_gateway(_config(claude, gpt), env=ENV) as gw:
        client = _openai(gw, await gw.tenant_key("acme"))
        gpt.reply_chat('{"answer": 42}')
        raw = await client.responses.with_raw_response.create(
            model="both", input="6 x 7?", text={"format": JSON_SCHEMA}, reasoning={"effort": "low"}
        )
        assert raw.headers["x-farebox-model"] == "gpt-4o-mini" and claude.calls == 0
        sent = gpt.last.json
        assert sent["response_format"]["json_schema"]["schema"] == SCHEMA
        assert sent["reasoning_effort"] == "low"
        assert raw.parse().output_text == '{"answer": 42}'
        # without the field, the first deployment (Anthropic) serves as configured
        plain = await client.responses.with_raw_response.create(model="both", input="hi")
        assert plain.headers["x-farebox-model"] == CLAUDE_MODEL and claude.calls == 1


async def test_failover_never_falls_back_to_a_deployment_that_cannot_honour(
    make_gateway: Any, ups: Any
) -> None:
    claude, gpt = ups
    config = _config(claude, gpt)
    config["models"]["both"].reverse()  # OpenAI first, then Anthropic
    async with make_gateway(config, env=ENV) as gw:
        client = _openai(gw, await gw.tenant_key("acme"))
        gpt.reply_error(503, "overloaded", type="server_error")
        with pytest.raises(openai.APIStatusError) as caught:
            await client.responses.create(model="both", input="hi", text={"format": JSON_SCHEMA})
        assert caught.value.status_code >= 500 and claude.calls == 0  # the upstream's failure
        gpt.reply_error(503, "overloaded", type="server_error")
        served = await client.responses.with_raw_response.create(model="both", input="hi")
        assert served.headers["x-farebox-model"] == CLAUDE_MODEL  # it fails over as before


async def test_effort_none_is_honoured_as_thinking_disabled(make_gateway: Any, ups: Any) -> None:
    claude, gpt = ups
    async with make_gateway(_config(claude, gpt), env=ENV) as gw:
        client = _openai(gw, await gw.tenant_key("acme"))
        await client.responses.create(
            model="claude", input="hi", reasoning={"effort": "none"}, safety_identifier="seat-9"
        )
        sent = claude.last.json
        assert sent["thinking"] == {"type": "disabled"}
        assert sent["metadata"] == {"user_id": "seat-9"}


async def test_responses_options_no_chat_deployment_honours(make_gateway: Any, ups: Any) -> None:
    claude, gpt = ups
    async with make_gateway(_config(claude, gpt), env=ENV) as gw:
        client = _openai(gw, await gw.tenant_key("acme"))
        for model in ("gpt", "claude"):
            with pytest.raises(openai.BadRequestError) as caught:
                await client.responses.create(
                    model=model, input="hi", include=["reasoning.encrypted_content"]
                )
            assert caught.value.param == "include[0]"  # type: ignore[attr-defined]
            with pytest.raises(openai.BadRequestError) as caught:
                await client.responses.create(
                    model=model, input="hi", reasoning={"summary": "detailed"}
                )
            assert caught.value.param == "reasoning.summary"  # type: ignore[attr-defined]
        assert claude.calls == 0 and gpt.calls == 0


# --- a property over field combinations ---------------------------------------------------

# each optional field with values Anthropic honours and values it cannot; ``None``: left out
FIELDS: dict[str, list[Any]] = {
    "text.format": [None, {"type": "text"}, {"type": "json_object"}, JSON_SCHEMA],
    "reasoning.effort": [None, "none", "low", "high"],
    "text.verbosity": [None, "medium"],
    "temperature": [None, 0.0, 0.7, 1.0, 1.3, 2.0],
    "top_p": [None, 0.5],
    "service_tier": [None, "auto", "default", "flex", "priority"],
    "max_output_tokens": [None, 64],
    "user": [None, "seat-1"],
}


def _anthropic_cannot(fields: dict[str, Any]) -> set[str]:
    """The fields an Anthropic deployment cannot honour, restated from its documentation."""
    fmt = fields.get("text.format")
    return {
        name
        for name, bad in (
            ("text.format", fmt is not None and fmt["type"] != "text"),
            ("reasoning.effort", fields.get("reasoning.effort") not in (None, "none")),
            ("text.verbosity", fields.get("text.verbosity") is not None),
            ("temperature", (fields.get("temperature") or 0) > 1),
            ("service_tier", fields.get("service_tier") in ("flex", "priority")),
        )
        if bad
    }


def _request(model: str, fields: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": "6 x 7?"}
    for name, value in fields.items():
        outer, _, inner = name.partition(".")
        if inner:
            body.setdefault(outer, {})[inner] = value
        else:
            body[outer] = value
    return body


def _check_openai_got(sent: dict[str, Any], fields: dict[str, Any]) -> None:
    fmt = fields.get("text.format")
    if fmt is not None and fmt["type"] != "text":
        assert sent["response_format"]["type"] == fmt["type"]
    expect = {"reasoning_effort": "reasoning.effort", "verbosity": "text.verbosity",
              "temperature": "temperature", "top_p": "top_p", "service_tier": "service_tier",
              "max_completion_tokens": "max_output_tokens", "user": "user"}  # fmt: skip
    for chat_name, name in expect.items():
        assert sent.get(chat_name) == fields.get(name), chat_name


def _check_anthropic_got(sent: dict[str, Any], fields: dict[str, Any]) -> None:
    for name in ("temperature", "top_p"):
        assert sent.get(name) == fields.get(name), name
    if fields.get("max_output_tokens") is not None:
        assert sent["max_tokens"] == fields["max_output_tokens"]
    assert sent.get("metadata", {}).get("user_id") == fields.get("user")
    effort = fields.get("reasoning.effort")
    assert sent.get("thinking") == ({"type": "disabled"} if effort == "none" else None)


CASES = st.tuples(
    st.sampled_from(["claude", "gpt", "both"]),
    st.fixed_dictionaries(  # each field left out half the time
        {name: st.one_of(st.none(), st.sampled_from(values)) for name, values in FIELDS.items()}
    ),
)


async def test_field_combinations_are_served_as_asked_or_refused_by_name(
    make_gateway: Any, ups: Any
) -> None:
    claude, gpt = ups
    async with make_gateway(_config(claude, gpt), env=ENV) as gw:
        key = await gw.tenant_key("acme")
        for model, drawn in draw(CASES, 120):
            fields = {k: v for k, v in drawn.items() if v is not None}
            before = (claude.calls, gpt.calls)
            r = await gw.client.post(
                "/v1/responses", json=_request(model, fields),
                headers={"Authorization": f"Bearer {key}"},
            )  # fmt: skip
            cannot = _anthropic_cannot(fields)
            if model == "claude" and cannot:
                assert r.status_code == 400, r.text
                error = r.json()["error"]
                assert error["param"] in cannot and error["deployment_kind"] == "anthropic"
                assert (claude.calls, gpt.calls) == before
                continue
            assert r.status_code == 200, (model, fields, r.text)
            to_claude = model == "claude" or (model == "both" and not cannot)
            if to_claude:
                assert (claude.calls, gpt.calls) == (before[0] + 1, before[1])
                _check_anthropic_got(claude.last.json, fields)
            else:
                assert (claude.calls, gpt.calls) == (before[0], before[1] + 1)
                _check_openai_got(gpt.last.json, fields)

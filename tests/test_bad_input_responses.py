"""Bad input on ``/v1/responses``: a clean OpenAI-format 4xx naming the field, never a 5xx or a
traceback, and nothing billed. Named cases (what is refused for now, and wrong shapes), then
hypothesis-drawn mutations of valid bodies against the mock and an Anthropic-format
deployment."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import strategies as st

from fakes.anthropic_upstream import AnthropicUpstream
from tests.test_fuzz_data_plane import BAD_VALUES, MUTATIONS, Mutation, _get, _paths, _retyped, draw
from tests.test_fuzz_data_plane import _set as set_at

PATH = "/v1/responses"
OK = {"model": "gpt-4o-mini", "input": "hi"}
TRACE_MARKERS = ("Traceback", 'File "', "farebox/", '.py"')
DROP = object()
TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}


def body(**changes: Any) -> bytes:
    data = {**OK, **changes}
    return orjson.dumps({k: v for k, v in data.items() if v is not DROP})


CASES: list[tuple[str, bytes, int, str | None]] = [
    ("not json", b"{nope", 400, None),
    ("array body", b"[1, 2]", 400, None),
    ("no model", body(model=DROP), 400, "model"),
    ("unknown model", body(model="no-such-model"), 404, "model"),
    ("no input", body(input=DROP), 400, "input"),
    ("input empty list", body(input=[]), 400, "input"),
    ("input a number", body(input=5), 400, "input"),
    ("unknown item type", body(input=[{"type": "mystery_call", "id": "x"}]), 400,
     "input[0].type"),
    ("item_reference", body(input=[{"type": "item_reference", "id": "msg_1"}]), 400,
     "input[0].type"),
    ("message without role", body(input=[{"type": "message", "content": "x"}]), 400,
     "input[0].role"),
    ("tool role message", body(input=[{"role": "tool", "content": "x"}]), 400, "input[0].role"),
    ("unknown part type", body(input=[{"role": "user", "content": [{"type": "input_x"}]}]),
     400, "input[0].content[0].type"),
    ("image in system message", body(input=[{"role": "system", "content": [
        {"type": "input_image", "image_url": "https://x.test/a.png"}]}]), 400, "input"),
    ("image by file id", body(input=[{"role": "user", "content": [
        {"type": "input_image", "file_id": "file_1"}]}]), 400, None),
    ("function_call without call_id", body(input=[{"type": "function_call", "name": "f",
                                                   "arguments": "{}"}]), 400, None),
    ("function_call_output a number", body(input=[{"type": "function_call_output",
                                                   "call_id": "c", "output": 5}]), 400, None),
    ("unknown previous_response_id", body(previous_response_id="resp_123"), 404,
     "previous_response_id"),
    ("previous_response_id a number", body(previous_response_id=5), 400,
     "previous_response_id"),
    ("previous_response_id empty", body(previous_response_id=""), 400,
     "previous_response_id"),
    ("background", body(background=True), 400, "background"),
    ("built-in tool", body(tools=[{"type": "web_search"}]), 400, "tools[0].type"),
    ("file_search tool", body(tools=[TOOL, {"type": "file_search"}]), 400, "tools[1].type"),
    ("tool without name", body(tools=[{"type": "function", "parameters": {}}]), 400, None),
    ("tool name with spaces", body(tools=[{**TOOL, "name": "a b"}]), 400, None),
    ("tools not a list", body(tools={"type": "function"}), 400, "tools"),
    ("tool_choice unknown", body(tool_choice="sometimes"), 400, "tool_choice"),
    ("max_output_tokens zero", body(max_output_tokens=0), 400, "max_output_tokens"),
    ("max_output_tokens too large", body(max_output_tokens=10**9), 400, "max_output_tokens"),
    ("temperature a string", body(temperature="hot"), 400, "temperature"),
    ("json_schema without schema", body(text={"format": {"type": "json_schema", "name": "x"}}),
     400, None),
    ("reasoning effort unknown", body(reasoning={"effort": "extreme"}), 400, None),
    ("metadata not strings", body(metadata={"a": 1}), 400, None),
    ("stream not a boolean", body(stream="yes"), 400, "stream"),
    ("conversation", body(conversation="conv_1"), 400, "conversation"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "raw", "status", "param"), CASES, ids=[c[0] for c in CASES])
async def test_bad_responses_request_is_a_clean_openai_error(
    make_gateway: Any, name: str, raw: bytes, status: int, param: str | None
) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
        r = await gw.client.post(PATH, content=raw, headers=headers)
        assert r.status_code == status, (name, r.text)
        error = r.json()["error"]
        assert error["message"], error
        if param is not None:
            assert error["param"] == param, error
        assert not any(m in r.text for m in TRACE_MARKERS), r.text
        assert await gw.ledger("acme") == []


async def test_a_10_mb_input_is_refused_before_anything_is_reserved(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        raw = body(input="x" * (10 * 1024 * 1024))
        headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
        r = await gw.client.post(PATH, content=raw, headers=headers)
        assert r.status_code == 413, r.text
        assert r.json()["error"]["code"] == "request_too_large"
        assert await gw.ledger("acme") == []


# --- hypothesis: mutations of valid bodies -------------------------------------------------

MOCK, CLAUDE = "gpt-4o-mini", "claude-sonnet-4-5"
EXAMPLES = 120
RESPONSES_BAD = st.one_of(
    BAD_VALUES,
    st.sampled_from(
        [
            [{"type": "function_call"}],
            [{"type": "function_call_output", "call_id": "c", "output": [{"type": "x"}]}],
            [{"role": "assistant", "content": [{"type": "input_image", "image_url": "x"}]}],
            [{"role": "user", "content": [{"type": "input_file"}]}],
            {"format": {"type": "json_schema"}},
            {"type": "function", "name": {}},
            [{"type": "reasoning", "summary": None}],
        ]
    ),
)
RESPONSES_MUTATIONS = st.one_of(
    MUTATIONS,
    st.builds(Mutation, st.integers(0, 10**6), st.just("set"), RESPONSES_BAD),
)
INTERESTING: list[tuple[str | int, ...]] = [
    ("model",), ("input",), ("input", 0), ("input", 0, "type"), ("input", 0, "role"),
    ("input", 0, "content"), ("input", 0, "content", 0), ("input", 0, "content", 0, "type"),
    ("input", 1, "arguments"), ("input", 2, "output"), ("instructions",), ("tools",),
    ("tools", 0), ("tools", 0, "name"), ("tools", 0, "parameters"), ("tool_choice",),
    ("text",), ("text", "format"), ("reasoning",), ("max_output_tokens",), ("stream",),
    ("metadata",), ("temperature",), ("parallel_tool_calls",), ("user",),
]  # fmt: skip


def templates(model: str) -> list[dict[str, Any]]:
    image = {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}
    return [
        {"model": model, "input": "hi"},
        {"model": model, "input": "hi", "stream": True, "instructions": "be brief"},
        {"model": model, "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "look"}, image]}], "max_output_tokens": 32},
        {"model": model, "tools": [TOOL], "tool_choice": "auto", "input": [
            {"role": "user", "content": "find x"},
            {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "found"}]},
        {"model": model, "input": "json please", "text": {"format": {
            "type": "json_schema", "name": "answer", "schema": {"type": "object"}}},
         "reasoning": {"effort": "low"}, "metadata": {"k": "v"}, "temperature": 0.5},
    ]  # fmt: skip


def mutated(body: dict[str, Any], mutations: list[Mutation]) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    for m in mutations:
        candidates = _paths(body) + INTERESTING
        path = candidates[m.where % len(candidates)]
        if m.op == "drop":
            set_at(body, path, None, drop=True)
        elif m.op == "retype":
            set_at(body, path, json.loads(json.dumps(_retyped(_get(body, path)))))
        else:
            set_at(body, path, json.loads(json.dumps(m.value)))
    return body


def bodies(model: str) -> Iterator[dict[str, Any]]:
    valid = st.sampled_from(templates(model))
    broken = st.builds(mutated, valid, st.lists(RESPONSES_MUTATIONS, min_size=1, max_size=3))
    yield from draw(st.one_of(broken, broken, valid), EXAMPLES)


async def test_mutated_bodies_never_answer_5xx(
    make_gateway: Any, claude: AnthropicUpstream
) -> None:
    config = {
        "providers": {
            "mock": {"kind": "mock", "output_tokens": {"distribution": "fixed", "mean": 8}},
            "claude": {"kind": "anthropic", "base_url": claude.base_url, "api_key": "env:K"},
        },
        "models": {
            MOCK: [{"provider": "mock", "model": MOCK}],
            CLAUDE: [{"provider": "claude", "model": CLAUDE}],
        },
    }
    async with make_gateway(config, env={"K": "sk-ant-fuzz"}) as gw:
        key = await gw.tenant_key("acme")
        headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
        statuses: dict[int, int] = {}
        for model in (MOCK, CLAUDE):
            for sent in bodies(model):
                raw = json.dumps(sent, ensure_ascii=False).encode("utf-8", "replace")
                r = await gw.client.post(PATH, content=raw, headers=headers)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                assert r.status_code < 500, (sent, r.text)
                assert not any(m in r.text for m in TRACE_MARKERS[:2]), r.text
                if r.status_code >= 400:
                    assert r.json()["error"]["message"], r.text
                elif sent.get("stream") is True:
                    assert "event: response.failed" not in r.text, (sent, r.text)
                    assert r.text.rstrip().split("\n")[-1].startswith("data: "), r.text
        assert statuses.get(200, 0) > 20 and statuses.get(400, 0) > 20, statuses

"""Issue [10], acceptance 6 for ``/v1/completions``, ``/v1/messages/count_tokens`` and
``/v1/responses/input_tokens``: malformed bodies are a clear 4xx, never a 5xx, and never pin
money or slots.

Bodies are drawn by hypothesis from the gateway's own ``/openapi.json`` (the request models the
edge validates with: schemathesis' valid and negative bodies), from hand-written valid ones,
and from those with up to three mutations (the mutations of ``test_fuzz_data_plane``), against
the built-in mock and an Anthropic-format deployment (a loopback fake speaking the real wire
format, counting endpoint included), on a key with ``concurrent: 2`` and a global budget.
Afterwards no budget holds a reservation, the counts left no ledger entry, and two valid
completions are still served at once. Derandomized: the same bodies every run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

from fakes.anthropic_upstream import AnthropicUpstream
from tests.test_fuzz_data_plane import (
    MUTATIONS,
    Mutation,
    Outcome,
    _get,
    _paths,
    _retyped,
    _set,
    draw,
    encoded,
    problems_in,
    reserved,
    send,
    tally,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:schemathesis.*"),
    pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning"),
]

JSON = dict[str, Any]
MOCK, CLAUDE = "gpt-4o-mini", "smart"
COMPLETIONS, COUNT, INPUT = (
    "/v1/completions",
    "/v1/messages/count_tokens",
    "/v1/responses/input_tokens",
)
EXAMPLES = {COMPLETIONS: 90, COUNT: 90, INPUT: 70}
HELLO = [{"role": "user", "content": "hi"}]

TEMPLATES: dict[str, Callable[[str], list[JSON]]] = {
    COMPLETIONS: lambda m: [
        {"model": m, "prompt": "Say hi", "max_tokens": 8},
        {"model": m, "prompt": ["Say hi"], "stream": True,
         "stream_options": {"include_usage": True}, "stop": ["\n"], "temperature": 0.5},
    ],
    COUNT: lambda m: [
        {"model": m, "messages": HELLO, "system": "Be brief."},
        {"model": m, "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
         "tools": [{"name": "f", "input_schema": {"type": "object"}}]},
    ],
    INPUT: lambda m: [
        {"model": m, "input": "hi", "instructions": "Be brief."},
        {"model": m, "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "x"}]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c", "output": "ok"}],
         "tools": [{"type": "function", "name": "f"}]},
    ],
}  # fmt: skip
INTERESTING: dict[str, list[tuple[str | int, ...]]] = {
    COMPLETIONS: [("prompt",), ("prompt", 0), ("max_tokens",), ("n",), ("stream",),
                  ("stream_options",), ("stop",), ("logit_bias",), ("echo",), ("user",)],
    COUNT: [("messages",), ("messages", 0, "content"), ("messages", 0, "role"), ("system",),
            ("tools",), ("tools", 0), ("tool_choice",), ("max_tokens",)],
    INPUT: [("input",), ("input", 0), ("input", 0, "type"), ("input", 0, "content"),
            ("instructions",), ("tools",), ("previous_response_id",), ("model",)],
}  # fmt: skip


def gateway_config(anthropic_url: str) -> JSON:
    return {
        "providers": {
            "mock": {"kind": "mock", "output_tokens": {"distribution": "fixed", "mean": 8}},
            "claude": {"kind": "anthropic", "base_url": anthropic_url, "api_key": "env:FUZZ_KEY"},
        },
        "models": {
            MOCK: [{"provider": "mock", "model": "gpt-4o-mini"}],
            CLAUDE: [{"provider": "claude", "model": "claude-sonnet-4-5"}],
        },
        "plans": {"default": {"rate_limits": [{"scope": "key", "concurrent": 2}]}},
        "budgets": {
            "global": [{"scope": "global", "period": "day", "limit_usd": "0.50"}],
            "wait_for_room_s": 0,
        },
    }


def mutated(endpoint: str, body: JSON, mutations: list[Mutation]) -> JSON:
    body = json.loads(json.dumps(body))
    for m in mutations:
        candidates = _paths(body) + INTERESTING[endpoint]
        path = candidates[m.where % len(candidates)]
        if m.op == "drop":
            _set(body, path, None, drop=True)
        elif m.op == "retype":
            _set(body, path, _retyped(_get(body, path)))
        else:
            _set(body, path, json.loads(json.dumps(m.value)))
    return body


def body_strategy(document: JSON, endpoint: str, model: str) -> st.SearchStrategy[Any]:
    operation = schemathesis.openapi.from_dict(document)[endpoint]["POST"]

    def bodies(mode: GenerationMode) -> st.SearchStrategy[Any]:
        cases = operation.as_strategy(generation_mode=mode)
        return cases.map(
            lambda c: {**c.body, "model": model} if isinstance(c.body, dict) else c.body
        )

    valid = st.one_of(st.sampled_from(TEMPLATES[endpoint](model)), bodies(GenerationMode.POSITIVE))
    broken = st.builds(
        lambda body, changes: mutated(endpoint, body, changes),
        valid.filter(lambda b: isinstance(b, dict)),
        st.lists(MUTATIONS, min_size=1, max_size=3),
    )
    return st.one_of(broken, broken, valid, bodies(GenerationMode.NEGATIVE))


async def test_malformed_bodies_never_5xx_nor_pin_holds(make_gateway: Any) -> None:
    async with (
        AnthropicUpstream() as upstream,
        make_gateway(gateway_config(upstream.base_url), env={"FUZZ_KEY": "sk-ant-fuzz"}) as gw,
    ):
        document = (await gw.client.get("/openapi.json", headers=gw.admin)).json()
        key = await gw.tenant_key("fuzz")
        outcomes: list[Outcome] = []
        for endpoint, models in ((COMPLETIONS, (MOCK, CLAUDE)), (COUNT, (MOCK, CLAUDE)),
                                 (INPUT, (MOCK,))):  # fmt: skip
            for model in models:
                for body in draw(body_strategy(document, endpoint, model), EXAMPLES[endpoint]):
                    outcomes.append(await send(gw, key, endpoint, encoded(body)))
        problems = problems_in(outcomes)
        assert not problems, "\n".join(problems[:20])
        summary = tally(outcomes)
        for endpoint in (COMPLETIONS, COUNT, INPUT):
            assert f"{endpoint} 200" in summary, summary  # valid bodies were served
            assert f"{endpoint} 400" in summary, summary  # and broken ones refused
        assert await reserved(gw, key, "fuzz") == []
        counted = [e for e in await gw.ledger("fuzz") if e.endpoint != "completions"]
        assert counted == []
        assert any(r.path == "/v1/messages/count_tokens" for r in upstream.requests)

"""Issue [7] item 6 (the edge half): every size a client chooses is capped and checked before
anything is reserved, and a request over a cap is a 400 naming the ``param``, as OpenAI
answers it.

The properties run against one in-process gateway per test (driven from a sync test on its
own event loop, so hypothesis can call it once per example).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.core.caps import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    DEFAULT_MAX_OUTPUT_TOKENS,
    embedding_dimensions,
    max_output_tokens,
)
from farebox.core.money import parse_usd
from farebox.providers.base import ChatRequest, ChatResult
from farebox.providers.mock import MockOptions, MockProvider

CHAT = "/v1/chat/completions"
EMBED = "/v1/embeddings"
MESSAGES = "/v1/messages"
MSGS = [{"role": "user", "content": "hi"}]
OK_CHAT = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": MSGS}
OK_EMBED = {"model": "text-embedding-3-small", "input": "hi", "dimensions": 4}
OK_MESSAGES = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": MSGS}
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,64}$")
CONFIG = {"providers": {"sim": {"kind": "mock", "seed": 5}}}
EXAMPLES = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


class Driver:
    """A gateway running on a private event loop, called synchronously."""

    def __init__(self, loop: asyncio.AbstractEventLoop, gw: Any, key: str) -> None:
        self.loop, self.gw, self.key = loop, gw, key

    def post(self, path: str, body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.key}"}
        sent = self.gw.client.post(path, json=body, headers=headers)
        return self.loop.run_until_complete(sent)

    def ledger(self) -> list[Any]:
        return list(self.loop.run_until_complete(self.gw.ledger()))


@pytest.fixture
def drive(make_gateway: Any) -> Iterator[Callable[..., Driver]]:
    loop = asyncio.new_event_loop()
    opened: list[Any] = []

    def start(config: dict[str, Any] | None = None, plan: str = "default", **kwargs: Any) -> Driver:
        manager = make_gateway(config or CONFIG, **kwargs)
        gw = loop.run_until_complete(manager.__aenter__())
        opened.append(manager)
        key = loop.run_until_complete(gw.tenant_key("t", plan))
        return Driver(loop, gw, key)

    yield start
    for manager in reversed(opened):
        loop.run_until_complete(manager.__aexit__(None, None, None))
    loop.close()


def refused(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, r.text[:500]
    error = r.json()["error"]
    assert error["param"] == param, error
    assert param in error["message"]


# embeddings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size"),
    [("text-embedding-3-small", 1536), ("text-embedding-3-large", 3072)],
)  # fmt: skip
def test_dimensions_are_capped_at_the_models_size(
    drive: Callable[..., Driver], model: str, size: int
) -> None:
    d = drive()
    r = d.post(EMBED, {"model": model, "input": "hi", "dimensions": size})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"][0]["embedding"]) == size
    r = d.post(EMBED, {"model": model, "input": "hi", "dimensions": size + 1})
    refused(r, "dimensions")
    assert f"at most {size}" in r.json()["error"]["message"]


def test_a_model_without_dimensions_refuses_them_at_the_edge(
    drive: Callable[..., Driver],
) -> None:
    d = drive()
    r = d.post(EMBED, {"model": "text-embedding-ada-002", "input": "hi", "dimensions": 1536})
    refused(r, "dimensions")
    assert "does not support" in r.json()["error"]["message"]
    assert d.ledger() == []  # refused before admission: nothing recorded
    r = d.post(EMBED, {"model": "text-embedding-ada-002", "input": "hi"})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 1536


def test_millions_of_dimensions_are_refused_before_any_work(drive: Callable[..., Driver]) -> None:
    d = drive()
    for dims in (5_000_000, 29_761_378):
        r = d.post(EMBED, {**OK_EMBED, "input": ["a", "b", "c", "d", "e"], "dimensions": dims})
        refused(r, "dimensions")
    assert d.ledger() == []


def test_dimensions_property(drive: Callable[..., Driver]) -> None:
    d = drive()

    @EXAMPLES
    @given(dims=st.integers(-5, 10**9))
    def check(dims: int) -> None:
        r = d.post(EMBED, {**OK_EMBED, "dimensions": dims})
        if 1 <= dims <= 1536:
            assert r.status_code == 200, r.text
        else:
            refused(r, "dimensions")

    check()


def test_at_most_2048_embedding_inputs(drive: Callable[..., Driver]) -> None:
    d = drive()
    assert d.post(EMBED, {**OK_EMBED, "input": ["a"] * 2048, "dimensions": 1}).status_code == 200
    refused(d.post(EMBED, {**OK_EMBED, "input": ["a"] * 2049}), "input")
    refused(d.post(EMBED, {**OK_EMBED, "input": [[1, 2]] * 2049}), "input")
    refused(d.post(EMBED, {**OK_EMBED, "input": list(range(2049))}), "input")


def test_embedding_fields_of_the_wrong_shape(drive: Callable[..., Driver]) -> None:
    d = drive()
    refused(d.post(EMBED, {**OK_EMBED, "user": {}}), "user")
    refused(d.post(EMBED, {**OK_EMBED, "encoding_format": "nope"}), "encoding_format")
    refused(d.post(EMBED, {**OK_EMBED, "dimensions": 0}), "dimensions")
    refused(d.post(EMBED, {**OK_EMBED, "unknown": 1}), "unknown")
    assert d.ledger() == []


# chat ------------------------------------------------------------------------------------


def test_n_property(drive: Callable[..., Driver]) -> None:
    d = drive()

    @EXAMPLES
    @given(n=st.integers(-3, 10_000))
    def check(n: int) -> None:
        r = d.post(CHAT, {**OK_CHAT, "n": n})
        if 1 <= n <= 128:
            assert r.status_code == 200, r.text
        else:
            refused(r, "n")

    check()


def test_max_tokens_property(drive: Callable[..., Driver]) -> None:
    d = drive()
    cap = max_output_tokens(["gpt-4o-mini"])
    assert cap == 16_384

    @EXAMPLES
    @given(
        field=st.sampled_from(["max_tokens", "max_completion_tokens"]),
        tokens=st.one_of(st.integers(cap - 2, cap + 2), st.integers(-2, 10**12)),
    )
    def check(field: str, tokens: int) -> None:
        body = {"model": "gpt-4o-mini", "messages": MSGS, field: tokens}
        r = d.post(CHAT, body)
        if 1 <= tokens <= cap:
            assert r.status_code == 200, r.text
        else:
            refused(r, field)

    check()


def test_max_tokens_over_the_cap_on_v1_messages(drive: Callable[..., Driver]) -> None:
    d = drive()
    r = d.post(MESSAGES, {**OK_MESSAGES, "max_tokens": 16_385})
    assert r.status_code == 400, r.text[:500]
    assert r.json()["type"] == "error" and "max_tokens" in r.json()["error"]["message"]
    assert d.post(MESSAGES, {**OK_MESSAGES, "max_tokens": 16_384}).status_code == 200


def test_stop_property(drive: Callable[..., Driver]) -> None:
    d = drive()

    @EXAMPLES
    @given(stop=st.lists(st.text(min_size=1, max_size=5), max_size=8))
    def check(stop: list[str]) -> None:
        r = d.post(CHAT, {**OK_CHAT, "stop": stop})
        if len(stop) <= 4:
            assert r.status_code == 200, r.text
        else:
            refused(r, "stop")

    check()


def test_anthropic_stop_sequences_are_capped(drive: Callable[..., Driver]) -> None:
    d = drive()
    assert d.post(MESSAGES, {**OK_MESSAGES, "stop_sequences": ["x"] * 16}).status_code == 200
    r = d.post(MESSAGES, {**OK_MESSAGES, "stop_sequences": ["x"] * 17})
    assert r.status_code == 400 and "stop_sequences" in r.json()["error"]["message"]


def tool(name: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def test_at_most_128_tools_and_functions(drive: Callable[..., Driver]) -> None:
    d = drive()
    assert (
        d.post(CHAT, {**OK_CHAT, "tools": [tool(f"t{i}") for i in range(128)]}).status_code == 200
    )
    refused(d.post(CHAT, {**OK_CHAT, "tools": [tool(f"t{i}") for i in range(129)]}), "tools")
    functions = [{"name": f"f{i}"} for i in range(129)]
    refused(d.post(CHAT, {**OK_CHAT, "functions": functions}), "functions")
    many = [{"name": f"t{i}", "input_schema": {}} for i in range(129)]
    r = d.post(MESSAGES, {**OK_MESSAGES, "tools": many})
    assert r.status_code == 400 and "tools" in r.json()["error"]["message"]


def test_tool_name_property(drive: Callable[..., Driver]) -> None:
    d = drive()

    @EXAMPLES
    @given(name=st.one_of(st.text(max_size=70), st.from_regex(TOOL_NAME, fullmatch=True)))
    def check(name: str) -> None:
        r = d.post(CHAT, {**OK_CHAT, "tools": [tool(name)]})
        if TOOL_NAME.fullmatch(name):
            assert r.status_code == 200, r.text
        else:
            refused(r, "tools[0].function.name")

    check()


def test_tool_and_function_names_of_the_wrong_type(drive: Callable[..., Driver]) -> None:
    d = drive()
    refused(d.post(CHAT, {**OK_CHAT, "tools": [tool({})]}), "tools[0].function.name")
    refused(d.post(CHAT, {**OK_CHAT, "functions": [{"parameters": {}}]}), "functions[0].name")
    assert d.ledger() == []


def test_logprobs_property(drive: Callable[..., Driver]) -> None:
    d = drive()

    @EXAMPLES
    @given(top=st.integers(-5, 100))
    def check(top: int) -> None:
        r = d.post(CHAT, {**OK_CHAT, "logprobs": True, "top_logprobs": top})
        if 0 <= top <= 20:
            assert r.status_code == 200, r.text
        else:
            refused(r, "top_logprobs")

    check()
    refused(d.post(CHAT, {**OK_CHAT, "logprobs": "yes"}), "logprobs")
    refused(d.post(CHAT, {**OK_CHAT, "top_logprobs": 2}), "top_logprobs")  # needs logprobs


def test_metadata_is_capped(drive: Callable[..., Driver]) -> None:
    d = drive()
    keys = {f"k{i}": "v" for i in range(16)}
    assert d.post(CHAT, {**OK_CHAT, "metadata": keys}).status_code == 200
    refused(d.post(CHAT, {**OK_CHAT, "metadata": {**keys, "k16": "v"}}), "metadata")


# reservations count every choice -------------------------------------------------------------


class Recording(MockProvider):
    def __init__(self) -> None:
        super().__init__("sim", MockOptions(seed=5))
        self.bodies: list[dict[str, Any]] = []

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.bodies.append(request.body)
        return await super().chat(request)


def test_n_choices_are_reserved_as_n_times_max_tokens(drive: Callable[..., Driver]) -> None:
    """gpt-4o-mini output is USD 0.60 per 1M tokens: a USD 0.001 budget fits one choice of
    1000 tokens, not four; with ``n: 4`` each choice is clamped so that all four fit."""
    recording = Recording()
    limit = "0.001"
    plans = {"p": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": limit}]}}
    d = drive({**CONFIG, "plans": plans}, plan="p", providers={"sim": recording})
    assert d.post(CHAT, {**OK_CHAT, "max_tokens": 1000}).status_code == 200
    assert recording.bodies[-1]["max_tokens"] == 1000
    assert d.post(CHAT, {**OK_CHAT, "max_tokens": 1000, "n": 4}).status_code == 200
    per_choice = recording.bodies[-1]["max_tokens"]
    assert 1 <= per_choice < 1000
    worst = 4 * per_choice * parse_usd("0.60") // 1_000_000
    assert worst <= parse_usd(limit)


def test_n_choices_the_budget_cannot_give_a_token_each_are_refused_and_released(
    drive: Callable[..., Driver],
) -> None:
    """USD 0.00005 fits about 80 output tokens: enough to clamp one request, not to give each
    of 128 choices a token. That is a 429 naming ``n`` and holds nothing afterwards."""
    recording = Recording()
    plans = {"p": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "0.00005"}]}}
    d = drive({**CONFIG, "plans": plans}, plan="p", providers={"sim": recording})
    r = d.post(CHAT, {**OK_CHAT, "max_tokens": 1000, "n": 128})
    assert r.status_code == 429, r.text
    assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("budget_exceeded", "n")
    assert recording.bodies == []  # never sent upstream
    me = d.loop.run_until_complete(
        d.gw.client.get("/v1/me", headers={"Authorization": f"Bearer {d.key}"})
    ).json()
    assert {parse_usd(b["reserved_usd"]) for b in me["budgets"]} == {0}
    ok = d.post(CHAT, {**OK_CHAT, "max_tokens": 1000, "n": 2})
    assert ok.status_code == 200, ok.text
    assert 1 <= recording.bodies[-1]["max_tokens"] < 1000


def test_one_output_field_reaches_the_upstream_and_it_is_the_clamped_one(
    drive: Callable[..., Driver],
) -> None:
    """A null ``max_completion_tokens`` beside ``max_tokens`` (or both set) must not leave an
    unclamped field for an upstream that reads the other one."""
    recording = Recording()
    plans = {"p": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "0.001"}]}}
    d = drive({**CONFIG, "plans": plans}, plan="p", providers={"sim": recording})
    for fields in (
        {"max_completion_tokens": None, "max_tokens": 16000},
        {"max_completion_tokens": 16000, "max_tokens": 12000},
    ):
        r = d.post(CHAT, {"model": "gpt-4o-mini", "messages": MSGS, **fields})
        assert r.status_code == 200, r.text
        sent = {k: v for k, v in recording.bodies[-1].items() if k.startswith("max_")}
        assert len(sent) == 1, sent
        [value] = sent.values()
        assert 1 <= value < 12000  # clamped by the budget, whichever field carries it


def test_a_plan_max_tokens_is_clamped_to_the_models_cap(drive: Callable[..., Driver]) -> None:
    recording = Recording()
    plans = {"p": {"models": ["*"], "max_tokens": 100_000}}
    d = drive({**CONFIG, "plans": plans}, plan="p", providers={"sim": recording})
    assert d.post(CHAT, {"model": "gpt-4o-mini", "messages": MSGS}).status_code == 200
    assert recording.bodies[-1]["max_tokens"] == 16_384


# the caps table ----------------------------------------------------------------------------


def test_caps_table() -> None:
    assert embedding_dimensions(["text-embedding-3-large"]) == 3072
    assert embedding_dimensions(["text-embedding-3-large", "text-embedding-3-small"]) == 1536
    assert embedding_dimensions(["someone-elses-embedder"]) == DEFAULT_EMBEDDING_DIMENSIONS
    assert max_output_tokens(["gpt-4.1", "gpt-4o"]) == 16_384  # the strictest deployment
    assert max_output_tokens(["a-model-we-do-not-know"]) == DEFAULT_MAX_OUTPUT_TOKENS
    assert max_output_tokens([]) == DEFAULT_MAX_OUTPUT_TOKENS

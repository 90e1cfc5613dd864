"""Issue [12], acceptance 2: the exact cache keys on the whole canonical request. Changing any
field that can change the answer (the system prompt, an earlier turn, a tool, the tool choice,
``temperature``, ``response_format``, any generation parameter) misses; changing only what
cannot (``user``, ``stream``, ``stream_options``, attribution headers) hits. The mutations and
their values are drawn by hypothesis."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from farebox.core.cache import HIT_EXACT, MISS
from tests.cache_gateway import MODEL, auth, config, settled
from tests.drawn import draw

BASE: dict[str, Any] = {
    "model": MODEL,
    "messages": [
        {"role": "system", "content": "You are a support agent."},
        {"role": "user", "content": "My invoice is wrong."},
        {"role": "assistant", "content": "Which invoice?"},
        {"role": "user", "content": "The one from March."},
    ],
    "tools": [{"type": "function", "function": {
        "name": "lookup_invoice", "description": "Find an invoice",
        "parameters": {"type": "object", "properties": {"month": {"type": "string"}}}}}],
    "tool_choice": "auto",
    "temperature": 0.2,
    "top_p": 0.9,
    "max_tokens": 60,
    "response_format": {"type": "text"},
    "user": "end-user-1",
}  # fmt: skip
Mutation = Callable[[dict[str, Any], Any], None]


def _set(path: tuple[Any, ...]) -> Mutation:
    def apply(body: dict[str, Any], value: Any) -> None:
        target = body
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return apply


def _streamed(body: dict[str, Any], options: Any) -> None:
    body.update(stream=True, stream_options=options)


def _add_tool(body: dict[str, Any], name: Any) -> None:
    body["tools"].append({"type": "function", "function": {"name": name, "parameters": {}}})


# name -> (how, the values drawn for it, whether the answer may change)
MUTATIONS: dict[str, tuple[Mutation, st.SearchStrategy[Any], bool]] = {
    "system prompt": (_set(("messages", 0, "content")), st.text(min_size=1, max_size=30), True),
    "earlier user turn": (_set(("messages", 1, "content")), st.text(max_size=30), True),
    "earlier answer": (_set(("messages", 2, "content")), st.text(max_size=30), True),
    "tool description": (
        _set(("tools", 0, "function", "description")),
        st.text(max_size=20),
        True,
    ),
    "another tool": (_add_tool, st.from_regex(r"[a-z_]{1,20}", fullmatch=True), True),
    "tool choice": (_set(("tool_choice",)), st.sampled_from(["none", "required"]), True),
    "temperature": (_set(("temperature",)), st.floats(0, 2, allow_nan=False), True),
    "top_p": (_set(("top_p",)), st.floats(0.01, 1, allow_nan=False), True),
    "max_tokens": (_set(("max_tokens",)), st.integers(1, 59), True),
    "seed": (_set(("seed",)), st.integers(0, 2**31), True),
    "response_format": (
        _set(("response_format",)),
        st.sampled_from(
            [
                {"type": "json_object"},
                {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            ]
        ),
        True,
    ),
    "user": (_set(("user",)), st.text(min_size=1, max_size=30), False),
    "stream": (_set(("stream",)), st.booleans(), False),
    "stream_options": (
        _streamed,
        st.fixed_dictionaries({"include_usage": st.booleans()}),
        False,
    ),
}
HEADERS = ["X-Farebox-User", "X-Farebox-Feature"]  # attribution: never part of the key


async def test_any_change_that_can_change_the_answer_misses(make_gateway: Any) -> None:
    drawn = [
        example
        for name, (_how, values, _changes) in sorted(MUTATIONS.items())
        for example in draw(st.tuples(st.just(name), values), 4)
    ]
    attribution = st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True)
    drawn += draw(st.tuples(st.sampled_from(HEADERS), attribution), 8)
    async with make_gateway(config()) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        for i, (name, value) in enumerate(drawn):
            space = {"X-Farebox-Cache-Namespace": f"example-{i}"}  # each example on its own
            r = await gw.client.post("/v1/chat/completions", json=BASE, headers=auth(key, **space))
            assert r.headers["x-farebox-cache"] == MISS, r.text
            await settled(gw)
            body, headers = copy.deepcopy(BASE), dict(space)
            if name in MUTATIONS:
                how, _values, changes = MUTATIONS[name]
                how(body, value)
                changes = changes and body != BASE
            else:
                headers[name], changes = value, False
            r = await gw.client.post(
                "/v1/chat/completions", json=body, headers=auth(key, **headers)
            )
            assert r.status_code == 200, (name, value, r.text)
            want = MISS if changes else HIT_EXACT
            assert r.headers["x-farebox-cache"] == want, (name, value)

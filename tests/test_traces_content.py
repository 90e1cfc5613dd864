"""The recorded content of a trace (``observe.traces_content``): the GenAI conventions' message
shapes, media by type only, and a bound that holds whatever a client sends."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from farebox.observe.traces_content import StreamText, input_messages, output_messages


def test_input_messages_follow_the_conventions_shapes() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": "{\"q\": 1}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "42"},
    ]  # fmt: skip
    text, cut = input_messages(messages)
    assert not cut
    assert orjson.loads(text) == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {"role": "user", "parts": [{"type": "text", "content": "what is this?"},
                                   {"type": "image_url"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "lookup",
                                         "arguments": "{\"q\": 1}"}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1",
                                    "result": "42"}]},
    ]  # fmt: skip
    assert "AAAA" not in text  # media by its type only, never its data


def test_output_messages_of_chat_and_responses_answers() -> None:
    chat = {"choices": [{"index": 0, "finish_reason": "length",
                         "message": {"role": "assistant", "content": "hel"}}]}  # fmt: skip
    assert orjson.loads(output_messages(chat)[0]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hel"}],
         "finish_reason": "length"}
    ]  # fmt: skip
    responses = {"output": [
        {"type": "reasoning", "summary": []},
        {"type": "message", "content": [{"type": "output_text", "text": "hi there"}]},
    ]}  # fmt: skip
    assert orjson.loads(output_messages(responses)[0]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hi there"}]}
    ]


def test_a_stream_text_is_gathered_per_choice_and_bounded() -> None:
    text = StreamText(chars=8)
    for piece in ("Hel", "lo, ", "world"):
        text.see({"choices": [{"index": 0, "delta": {"content": piece}}]})
    text.see({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    recorded, cut = text.messages()
    assert cut
    assert orjson.loads(recorded) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Hello, w"}],
         "finish_reason": "stop"}
    ]  # fmt: skip


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=30,
)  # fmt: skip
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "tool", "system", 3])},
    optional={
        "content": st.text(max_size=300) | st.lists(json_values, max_size=4) | json_values,
        "tool_calls": st.lists(json_values, max_size=3) | json_values,
        "tool_call_id": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(message, max_size=8) | json_values, chars=st.integers(0, 200))
def test_any_client_body_is_recorded_within_the_bound(messages: Any, chars: int) -> None:
    text, cut = input_messages(messages, chars)
    recorded = orjson.loads(text)
    assert isinstance(recorded, list)
    contents = [
        part.get("content") or part.get("arguments") or part.get("result") or ""
        for entry in recorded
        for part in entry["parts"]
    ]
    assert sum(len(c) for c in contents) <= chars
    sent = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    everything = sum(len(m["content"]) for m in sent if isinstance(m.get("content"), str))
    if everything > chars:
        assert cut


@settings(max_examples=300, deadline=None)
@given(
    choices=st.lists(json_values | st.fixed_dictionaries({}, optional={
        "index": json_values, "finish_reason": json_values,
        "message": message | json_values, "delta": message | json_values}), max_size=4),
    output=json_values,
)  # fmt: skip
def test_any_upstream_answer_is_recorded_without_error(choices: Any, output: Any) -> None:
    for body in (
        {"choices": choices},
        {"output": [output, {"type": "message", "content": output}]},
    ):
        text, _ = output_messages(body, 50)
        assert isinstance(orjson.loads(text), list)
    stream = StreamText(chars=50)
    for chunk in ({"choices": choices}, {"type": "response.output_text.delta", "delta": "x"}):
        stream.see(chunk)
    recorded, _ = stream.messages()
    assert sum(len(p["content"]) for m in orjson.loads(recorded) for p in m["parts"]) <= 50

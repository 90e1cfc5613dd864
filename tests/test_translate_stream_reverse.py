"""OpenAI chunk stream -> Anthropic stream events, checked against the official SDK's parser."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2  # the anthropic SDK's own httpx fork; plain httpx clients are rejected
import orjson
import pytest

from farebox.core.usage import Usage
from farebox.providers.translate_stream_reverse import OpenAIStreamToAnthropic, encode

JSON = dict[str, Any]
Event = tuple[str, JSON]


# --- realistic OpenAI chunks --------------------------------------------------------------


def chunk(delta: JSON | None = None, finish: str | None = None) -> JSON:
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1763800000,
        "model": "gpt-4o-2024-08-06",
        "system_fingerprint": "fp_1",
        "choices": [choice],
    }


def usage_chunk(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> JSON:
    out = chunk()
    out["choices"] = []
    out["usage"] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
    }
    return out


ROLE = chunk({"role": "assistant", "content": "", "refusal": None})


def text(content: str) -> JSON:
    return chunk({"content": content})


def call_start(index: int, call_id: str, name: str) -> JSON:
    function = {"name": name, "arguments": ""}
    call = {"index": index, "id": call_id, "type": "function", "function": function}
    return chunk({"tool_calls": [call]})


def call_args(index: int, arguments: str) -> JSON:
    return chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})


# --- expected Anthropic events ------------------------------------------------------------


def message_start(input_tokens: int = 0) -> Event:
    usage = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 0,
    }
    message: JSON = {
        "id": "msg_gw_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-compatible",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return ("message_start", {"type": "message_start", "message": message})


def block_start(index: int, block: JSON) -> Event:
    return (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def text_start(index: int) -> Event:
    return block_start(index, {"type": "text", "text": ""})


def tool_start(index: int, call_id: str, name: str) -> Event:
    return block_start(index, {"type": "tool_use", "id": call_id, "name": name, "input": {}})


def text_delta(index: int, content: str) -> Event:
    delta = {"type": "text_delta", "text": content}
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def json_delta(index: int, partial: str) -> Event:
    delta = {"type": "input_json_delta", "partial_json": partial}
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def block_stop(index: int) -> Event:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def message_end(stop_reason: str, usage: JSON) -> list[Event]:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return [
        ("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}),
        ("message_stop", {"type": "message_stop"}),
    ]


def counts(input_tokens: int, output: int, read: int = 0, written: int = 0) -> JSON:
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
        "output_tokens": output,
    }


# --- driving the translator and the SDK ---------------------------------------------------


def translate(
    chunks: list[JSON], *, input_tokens: int = 0, usage: Usage | None = None
) -> list[Event]:
    translator = OpenAIStreamToAnthropic(
        model="claude-compatible", message_id="msg_gw_1", input_tokens=input_tokens
    )
    events = translator.start()
    for item in chunks:
        events.extend(translator.feed(item))
    events.extend(translator.finish(usage))
    return events


def sdk_client(
    events: list[Event], requests: list[httpx2.Request] | None = None
) -> anthropic.Anthropic:
    """An SDK client whose every request gets ``events`` encoded as the SSE response body."""
    body = b"".join(encode(name, data) for name, data in events)

    def handler(request: httpx2.Request) -> httpx2.Response:
        if requests is not None:
            requests.append(request)
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    http_client = httpx2.Client(transport=httpx2.MockTransport(handler))
    return anthropic.Anthropic(
        api_key="x", base_url="http://test", http_client=http_client, max_retries=0
    )


REQUEST: JSON = {
    "model": "claude-compatible",
    "max_tokens": 256,
    "messages": [{"role": "user", "content": "What is the weather in Paris and Rome?"}],
}


def final_message(events: list[Event]) -> anthropic.types.Message:
    requests: list[httpx2.Request] = []
    client = sdk_client(events, requests)
    with client.messages.stream(**REQUEST) as stream:
        message = stream.get_final_message()
    assert [r.url.path for r in requests] == ["/v1/messages"]
    return message


# --- exact event sequences ----------------------------------------------------------------


def test_text_only_stream() -> None:
    chunks = [ROLE, text("Hello"), text(", world"), chunk({}, "stop"), usage_chunk(12, 3)]
    events = translate(chunks, input_tokens=12)
    assert events == [
        message_start(12),
        text_start(0),
        text_delta(0, "Hello"),
        text_delta(0, ", world"),
        block_stop(0),
        *message_end("end_turn", counts(12, 3)),
    ]
    message = final_message(events)
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].type == "text" and message.content[0].text == "Hello, world"
    assert message.id == "msg_gw_1" and message.model == "claude-compatible"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert (message.usage.input_tokens, message.usage.output_tokens) == (12, 3)


def test_two_tool_calls_with_split_arguments() -> None:
    chunks = [
        chunk({"role": "assistant", "content": None, "refusal": None}),
        call_start(0, "call_paris", "get_weather"),
        call_args(0, '{"ci'),
        call_args(0, 'ty": "Par'),
        call_args(0, 'is"}'),
        call_start(1, "call_rome", "get_weather"),
        call_args(1, '{"city": '),
        call_args(1, '"Rome", "unit": "c"}'),
        chunk({}, "tool_calls"),
        usage_chunk(40, 35),
    ]
    events = translate(chunks, input_tokens=40)
    assert events == [
        message_start(40),
        tool_start(0, "call_paris", "get_weather"),
        json_delta(0, '{"ci'),
        json_delta(0, 'ty": "Par'),
        json_delta(0, 'is"}'),
        block_stop(0),
        tool_start(1, "call_rome", "get_weather"),
        json_delta(1, '{"city": '),
        json_delta(1, '"Rome", "unit": "c"}'),
        block_stop(1),
        *message_end("tool_use", counts(40, 35)),
    ]
    message = final_message(events)
    assert message.stop_reason == "tool_use"
    calls = [b for b in message.content if b.type == "tool_use"]
    assert [(c.id, c.name, c.input) for c in calls] == [
        ("call_paris", "get_weather", {"city": "Paris"}),
        ("call_rome", "get_weather", {"city": "Rome", "unit": "c"}),
    ]


def test_text_then_tool_call() -> None:
    chunks = [
        ROLE,
        text("Let me check."),
        call_start(0, "call_1", "get_weather"),
        call_args(0, '{"city":"Paris"}'),
        chunk({}, "tool_calls"),
        usage_chunk(20, 9),
    ]
    events = translate(chunks)
    assert events == [
        message_start(),
        text_start(0),
        text_delta(0, "Let me check."),
        block_stop(0),
        tool_start(1, "call_1", "get_weather"),
        json_delta(1, '{"city":"Paris"}'),
        block_stop(1),
        *message_end("tool_use", counts(20, 9)),
    ]
    message = final_message(events)
    assert [b.type for b in message.content] == ["text", "tool_use"]
    first, second = message.content
    assert first.type == "text" and first.text == "Let me check."
    assert second.type == "tool_use" and second.input == {"city": "Paris"}


def test_length_finish_maps_to_max_tokens() -> None:
    events = translate([ROLE, text("Once upon a"), chunk({}, "length"), usage_chunk(5, 3)])
    assert events[-2:] == message_end("max_tokens", counts(5, 3))
    message = final_message(events)
    assert message.stop_reason == "max_tokens"
    assert message.content[0].type == "text" and message.content[0].text == "Once upon a"


def test_usage_chunk_with_cached_tokens() -> None:
    chunks = [ROLE, text("Hi"), chunk({}, "stop"), usage_chunk(2000, 7, cached=1536)]
    events = translate(chunks, input_tokens=2000)
    # OpenAI's prompt_tokens includes the cached tokens; Anthropic's input_tokens does not.
    assert events[-2:] == message_end("end_turn", counts(464, 7, read=1536))
    message = final_message(events)
    usage = message.usage
    assert usage.input_tokens == 464 and usage.cache_read_input_tokens == 1536
    assert usage.cache_creation_input_tokens == 0 and usage.output_tokens == 7


def test_reasoning_tokens_are_reported_as_thinking_tokens() -> None:
    events = translate([text("42"), chunk({}, "stop"), usage_chunk(10, 50, reasoning=48)])
    usage = {**counts(10, 50), "output_tokens_details": {"thinking_tokens": 48}}
    assert events[-2:] == message_end("end_turn", usage)
    details = final_message(events).usage.output_tokens_details
    assert details is not None and details.thinking_tokens == 48


def test_metered_usage_wins_over_the_chunks() -> None:
    metered = Usage(
        input_tokens=100, cached_input_tokens=60, cache_write_5m_tokens=10, output_tokens=4
    )
    events = translate([text("ok"), chunk({}, "stop"), usage_chunk(1, 1)], usage=metered)
    assert events[-2:] == message_end("end_turn", counts(30, 4, read=60, written=10))
    usage = final_message(events).usage
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (30, 60)
    assert (usage.cache_creation_input_tokens, usage.output_tokens) == (10, 4)


def test_no_usage_anywhere_reports_zero_output_only() -> None:
    events = translate([text("ok"), chunk({}, "stop")], input_tokens=9)
    assert events[-2:] == message_end("end_turn", {"output_tokens": 0})
    assert final_message(events).usage.input_tokens == 9  # from message_start


def test_usage_on_the_finish_chunk_itself() -> None:
    last = chunk({}, "stop")
    last["usage"] = usage_chunk(8, 2)["usage"]
    events = translate([text("ok"), last])
    assert events[-2:] == message_end("end_turn", counts(8, 2))


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_stop_reason_mapping(finish: str | None, stop_reason: str) -> None:
    events = translate([text("x"), chunk({}, finish)])
    assert events[-2][1]["delta"] == {"stop_reason": stop_reason, "stop_sequence": None}
    assert final_message(events).stop_reason == stop_reason


def test_empty_stream_has_no_blocks() -> None:
    events = translate([ROLE, chunk({}, "stop"), usage_chunk(3, 1)])
    assert events == [message_start(), *message_end("end_turn", counts(3, 1))]
    message = final_message(events)
    assert message.content == [] and message.usage.output_tokens == 1


def test_tool_call_without_arguments_keeps_empty_input() -> None:
    events = translate([call_start(0, "call_1", "now"), chunk({}, "tool_calls")])
    assert events[1:3] == [tool_start(0, "call_1", "now"), block_stop(0)]
    block = final_message(events).content[0]
    assert block.type == "tool_use" and block.input == {}


def test_whole_tool_call_in_one_chunk() -> None:
    call = {
        "index": 0,
        "id": "call_9",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q": "x"}'},
    }
    events = translate([chunk({"tool_calls": [call]}, "tool_calls")])
    assert events[1:4] == [
        tool_start(0, "call_9", "lookup"),
        json_delta(0, '{"q": "x"}'),
        block_stop(0),
    ]
    block = final_message(events).content[0]
    assert block.type == "tool_use" and block.input == {"q": "x"}


def test_text_after_a_tool_call_opens_a_new_text_block() -> None:
    chunks = [text("a"), call_start(0, "c", "f"), call_args(0, "{}"), text("b")]
    events = translate(chunks)
    assert events[1:9] == [
        text_start(0),
        text_delta(0, "a"),
        block_stop(0),
        tool_start(1, "c", "f"),
        json_delta(1, "{}"),
        block_stop(1),
        text_start(2),
        text_delta(2, "b"),
    ]
    assert [b.type for b in final_message(events).content] == ["text", "tool_use", "text"]


def test_ignores_other_choices_and_unknown_shapes() -> None:
    other = chunk({"content": "ignored"})
    other["choices"][0]["index"] = 1
    weird = chunk()
    weird["choices"] = None
    events = translate([other, weird, {"choices": []}, text("kept")])
    assert events[1:3] == [text_start(0), text_delta(0, "kept")]


def test_feed_starts_the_message_and_finish_is_idempotent() -> None:
    translator = OpenAIStreamToAnthropic(model="claude-compatible", message_id="msg_gw_1")
    assert translator.feed(text("hi"))[:2] == [message_start(), text_start(0)]
    assert translator.start() == []
    assert [name for name, _ in translator.finish()] == [
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert translator.finish() == [] and translator.feed(text("late")) == []


def test_events_carry_their_own_type() -> None:
    translator = OpenAIStreamToAnthropic(model="claude-compatible", message_id="msg_gw_1")
    events = translate([text("a"), call_start(0, "c", "f"), call_args(0, "{}")])
    events.append(translator.error("boom"))
    events.append(translator.ping())
    assert all(data["type"] == name for name, data in events)


# --- framing and the SDK's other entry points ---------------------------------------------


def test_encode_frames_one_sse_event() -> None:
    raw = encode("content_block_delta", text_delta(0, 'say "hé"\n')[1])
    assert raw.startswith(b"event: content_block_delta\ndata: {")
    assert raw.endswith(b"}\n\n") and raw.count(b"\n") == 3
    payload = raw.split(b"data: ", 1)[1]
    assert orjson.loads(payload) == text_delta(0, 'say "hé"\n')[1]


def test_raw_sdk_stream_parses_every_event() -> None:
    chunks = [ROLE, text("Hi"), call_start(0, "call_1", "f"), call_args(0, '{"a": 1}')]
    events = translate([*chunks, chunk({}, "tool_calls"), usage_chunk(4, 6, cached=2)])
    events.insert(2, OpenAIStreamToAnthropic.ping())  # the API sends a ping after the first block
    client = sdk_client(events)
    parsed = list(client.messages.create(**REQUEST, stream=True))
    assert [e.type for e in parsed] == [name for name, _ in events if name != "ping"]
    assert parsed[-2].type == "message_delta"
    assert parsed[-2].usage.cache_read_input_tokens == 2
    assert parsed[-2].usage.input_tokens == 2


def test_sdk_text_stream_helper() -> None:
    events = translate([ROLE, text("Hel"), text("lo"), chunk({}, "stop")])
    with sdk_client(events).messages.stream(**REQUEST) as stream:
        assert "".join(stream.text_stream) == "Hello"


def test_error_event_raises_in_the_sdk() -> None:
    translator = OpenAIStreamToAnthropic(model="claude-compatible", message_id="msg_gw_1")
    events = translator.start() + translator.feed(text("partial"))
    events.append(translator.error("upstream went away", "overloaded_error"))
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "upstream went away"}},
    )
    assert translator.finish() == []  # nothing follows an error
    with pytest.raises(anthropic.APIStatusError) as caught:
        with sdk_client(events).messages.stream(**REQUEST) as stream:
            stream.get_final_message()
    assert "upstream went away" in str(caught.value)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "overloaded_error"

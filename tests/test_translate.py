from __future__ import annotations

from typing import Any

import orjson
import pytest

from fakes.anthropic_upstream import message, stream_events, text_block, tool_use_block, usage
from farebox.errors import InvalidRequest
from farebox.providers.translate import (
    DEFAULT_MAX_TOKENS,
    AnthropicStreamTranslator,
    anthropic_response_to_openai,
    openai_request_to_anthropic,
)
from farebox.providers.translate_reverse import (
    anthropic_request_to_openai,
    openai_response_to_anthropic,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}


def test_system_messages_become_system_and_defaults_are_filled() -> None:
    out = openai_request_to_anthropic(
        {
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Be kind."}]},
                {"role": "user", "content": "Hi"},
            ],
        }
    )
    assert out == {
        "model": "claude-sonnet-4-5",
        "system": "Be brief.\n\nBe kind.",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": DEFAULT_MAX_TOKENS,
    }


def test_sampling_parameters() -> None:
    out = openai_request_to_anthropic(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_completion_tokens": 77,
            "max_tokens": 5,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "user": "seat-42",
            "stream": True,
            "stream_options": {"include_usage": True},
            "frequency_penalty": 0,
        }
    )
    assert out["max_tokens"] == 77
    assert out["temperature"] == 0.5
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "seat-42"}
    assert out["stream"] is True
    assert "stream_options" not in out and "frequency_penalty" not in out


def test_max_tokens_and_stop_list() -> None:
    out = openai_request_to_anthropic(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 12,
            "stop": ["a", "b"],
        }
    )
    assert out["max_tokens"] == 12 and out["stop_sequences"] == ["a", "b"]


def test_tools_tool_choice_and_tool_round_trip_messages() -> None:
    out = openai_request_to_anthropic(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        TOOL_CALL,
                        {
                            **TOOL_CALL,
                            "id": "call_2",
                            "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "21C"}],
                },
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [WEATHER_TOOL],
            "tool_choice": "required",
            "parallel_tool_calls": False,
        }
    )
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assistant, results = out["messages"][1], out["messages"][2]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    }
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
            {
                "type": "tool_result",
                "tool_use_id": "call_2",
                "content": [{"type": "text", "text": "21C"}],
            },
            {"type": "text", "text": "Thanks"},
        ],
    }
    assert len(out["messages"]) == 3


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "tool", "name": "get_weather"},
        ),
    ],
)
def test_tool_choice_mapping(choice: object, expected: dict[str, Any]) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": choice,
    }
    assert openai_request_to_anthropic(body)["tool_choice"] == expected


def test_consecutive_user_messages_merge() -> None:
    out = openai_request_to_anthropic(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        }
    )
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


def test_image_parts() -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
    ]
    out = openai_request_to_anthropic(
        {"model": "m", "messages": [{"role": "user", "content": content}]}
    )
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"},
        },
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_invalid_tool_arguments_and_n_are_refused() -> None:
    bad = {**TOOL_CALL, "function": {"name": "f", "arguments": "[1, 2]"}}
    body = {"model": "m", "messages": [{"role": "assistant", "content": "", "tool_calls": [bad]}]}
    with pytest.raises(InvalidRequest):
        openai_request_to_anthropic(body)
    with pytest.raises(InvalidRequest):
        openai_request_to_anthropic({"model": "m", "messages": [], "n": 2})


def test_response_text_and_usage_with_cache_split() -> None:
    msg = message(
        [text_block("Hello "), text_block("world")],
        usage_=usage(25, 120, read=12000, write_5m=1000, write_1h=3000),
    )
    out = anthropic_response_to_openai(msg, created=1700000000)
    assert out["object"] == "chat.completion" and out["created"] == 1700000000
    assert out["model"] == "claude-sonnet-4-5"
    choice = out["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hello world", "refusal": None}
    assert choice["finish_reason"] == "stop"
    assert out["usage"]["prompt_tokens"] == 25 + 12000 + 1000 + 3000
    assert out["usage"]["completion_tokens"] == 120
    assert out["usage"]["total_tokens"] == 16145
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == 12000


def test_response_tool_calls_have_json_string_arguments() -> None:
    msg = message(
        [text_block("Checking."), tool_use_block("toolu_1", "get_weather", {"city": "Paris"})],
        stop_reason="tool_use",
    )
    choice = anthropic_response_to_openai(msg, created=0)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_1" and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert isinstance(call["function"]["arguments"], str)


def test_tool_only_response_has_null_content() -> None:
    msg = message([tool_use_block("t", "f", {})], stop_reason="tool_use")
    assert anthropic_response_to_openai(msg, created=0)["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_finish_reason_mapping(stop_reason: str, finish: str) -> None:
    out = anthropic_response_to_openai(message(stop_reason=stop_reason), created=0)
    assert out["choices"][0]["finish_reason"] == finish


def run_stream(
    events: list[tuple[str, dict[str, Any]]],
) -> tuple[list[dict[str, Any]], AnthropicStreamTranslator]:
    translator = AnthropicStreamTranslator(created=123, model="fallback")
    chunks = [chunk for _, data in events for chunk in translator.feed(data)]
    return chunks, translator


def test_stream_text_chunks_finish_and_usage() -> None:
    chunks, translator = run_stream(
        stream_events(
            ["Hel", "lo"],
            start_usage=usage(25, 1, read=12000),
            delta_usages=[{"output_tokens": 120}],
        )
    )
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_01" for c in chunks)
    assert all(c["model"] == "claude-sonnet-4-5" and c["created"] == 123 for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Hello"
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert translator.finished
    final = translator.usage_chunk()
    assert final["choices"] == []
    assert final["usage"]["prompt_tokens"] == 12025
    assert final["usage"]["completion_tokens"] == 120
    assert final["usage"]["prompt_tokens_details"]["cached_tokens"] == 12000


def test_stream_usage_is_cumulative_last_value_wins() -> None:
    _, translator = run_stream(
        stream_events(
            ["x"],
            start_usage=usage(25, 1),
            delta_usages=[
                {"output_tokens": 50, "input_tokens": 30},
                {"output_tokens": 120, "input_tokens": 30, "cache_read_input_tokens": 7},
            ],
        )
    )
    final = translator.usage_chunk()["usage"]
    assert final["completion_tokens"] == 120  # not 1 + 50 + 120
    assert final["prompt_tokens"] == 37


def test_stream_tool_calls() -> None:
    chunks, _ = run_stream(
        stream_events(
            ["Let me check."],
            tools=[
                ("toolu_1", "get_weather", ['{"city":', ' "Paris"}']),
                ("toolu_2", "get_time", ["{}"]),
            ],
        )
    )
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    first = "".join(c["function"]["arguments"] for c in calls if c["index"] == 0)
    assert orjson.loads(first) == {"city": "Paris"}
    assert [c["id"] for c in calls if "id" in c] == ["toolu_1", "toolu_2"]
    assert {c["index"] for c in calls} == {0, 1}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_ignores_ping_and_unknown_events() -> None:
    translator = AnthropicStreamTranslator(created=0)
    assert translator.feed({"type": "ping"}) == []
    assert translator.feed({"type": "content_block_stop", "index": 0}) == []
    assert translator.feed({"type": "something_new"}) == []


def test_reverse_request_anthropic_to_openai() -> None:
    body = {
        "model": "m",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [tool_use_block("toolu_1", "get_weather", {"city": "Paris"})],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                    {"type": "text", "text": "And?"},
                ],
            },
        ],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any"},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "stream": True,
    }
    out = anthropic_request_to_openai(body)
    assert out["messages"][0] == {"role": "system", "content": "Be brief."}
    assert out["messages"][2]["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris"}'
    assert out["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"}
    assert out["messages"][4] == {"role": "user", "content": [{"type": "text", "text": "And?"}]}
    assert out["tools"][0]["function"]["parameters"] == {"type": "object"}
    assert out["tool_choice"] == "required"
    assert out["max_completion_tokens"] == 100 and out["stop"] == ["END"] and out["user"] == "u1"
    assert out["stream_options"] == {"include_usage": True}


def test_reverse_response_openai_to_anthropic() -> None:
    body = {
        "id": "chatcmpl-1",
        "model": "gpt-4.1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {"role": "assistant", "content": "Checking.", "tool_calls": [TOOL_CALL]},
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 60},
        },
    }
    out = openai_response_to_anthropic(body)
    assert out["stop_reason"] == "tool_use"
    assert out["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
    ]
    assert out["usage"] == {
        "input_tokens": 40,
        "output_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }

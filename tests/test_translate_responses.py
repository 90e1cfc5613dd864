"""Pure translation between the Responses API and chat completions (no gateway)."""

from __future__ import annotations

from typing import Any

from farebox.core.usage import Usage
from farebox.providers.translate_responses import (
    chat_to_response,
    echo_of,
    response_object,
    responses_request_to_chat,
)
from farebox.providers.translate_responses_stream import ChatStreamToResponses


def test_request_fields_map_to_chat() -> None:
    image = {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "low"}
    body: dict[str, Any] = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "Rules."}]},
            {"role": "user", "content": [{"type": "input_text", "text": "Look:"}, image]},
            {"type": "message", "role": "assistant",
             "content": [{"type": "output_text", "text": "Checking.", "annotations": []}]},
            {"type": "function_call", "call_id": "c1", "name": "a", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "b", "arguments": '{"x":1}'},
            {"type": "reasoning", "summary": []},
            {"type": "function_call_output", "call_id": "c1", "output": "one"},
            {"type": "function_call_output", "call_id": "c2",
             "output": [{"type": "input_text", "text": "two"}]},
        ],
        "tools": [{"type": "function", "name": "a", "parameters": {"type": "object"},
                   "strict": True}],
        "tool_choice": {"type": "function", "name": "a"},
        "parallel_tool_calls": False,
        "max_output_tokens": 77,
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"},
                            "strict": True}, "verbosity": "low"},
        "reasoning": {"effort": "high", "summary": "auto"},
        "metadata": {"k": "v"},
        "user": "u-1",
        "stream": True,
        "store": False,
    }  # fmt: skip
    chat = responses_request_to_chat(body)
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": "Rules."},
        {"role": "user", "content": [
            {"type": "text", "text": "Look:"},
            {"type": "image_url", "image_url": {"url": "https://x.test/a.png", "detail": "low"}},
        ]},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{}"}},
            {"id": "c2", "type": "function", "function": {"name": "b", "arguments": '{"x":1}'}},
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "one"},
        {"role": "tool", "tool_call_id": "c2", "content": "two"},
    ]  # fmt: skip
    assert chat["tools"] == [{"type": "function", "function": {
        "name": "a", "parameters": {"type": "object"}, "strict": True}}]  # fmt: skip
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "a"}}
    assert chat["parallel_tool_calls"] is False and chat["max_completion_tokens"] == 77
    assert chat["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "out", "schema": {"type": "object"}, "strict": True}}  # fmt: skip
    assert chat["verbosity"] == "low" and chat["reasoning_effort"] == "high"
    assert chat["user"] == "u-1" and chat["stream"] is True
    assert chat["stream_options"] == {"include_usage": True}
    assert "metadata" not in chat and "store" not in chat and "instructions" not in chat
    echo = echo_of(body)
    assert echo["metadata"] == {"k": "v"} and echo["instructions"] == "Be brief."
    assert echo["store"] is False and echo["previous_response_id"] is None


def test_chat_answer_becomes_output_items_and_usage() -> None:
    chat = {
        "model": "served-model",
        "choices": [{"index": 0, "finish_reason": "length", "message": {
            "role": "assistant", "content": "Partial", "reasoning_content": "Thinking...",
            "tool_calls": [{"id": "call_9", "type": "function",
                            "function": {"name": "f", "arguments": '{"a":1}'}}]}}],
    }  # fmt: skip
    response = response_object("resp_abc", 1, "asked", None)
    usage = Usage(input_tokens=10, cached_input_tokens=4, output_tokens=6, reasoning_tokens=2)
    out = chat_to_response(chat, response, usage, "0.000001")
    assert [i["type"] for i in out["output"]] == ["reasoning", "message", "function_call"]
    assert out["output"][0]["summary"] == [{"type": "summary_text", "text": "Thinking..."}]
    assert out["output"][1]["content"][0] == {
        "type": "output_text", "text": "Partial", "annotations": [], "logprobs": []}  # fmt: skip
    assert out["output"][2]["call_id"] == "call_9" and out["output"][2]["arguments"] == '{"a":1}'
    assert out["status"] == "incomplete"
    assert out["incomplete_details"] == {"reason": "max_output_tokens"}
    assert out["model"] == "served-model"
    assert out["usage"] == {
        "input_tokens": 10, "input_tokens_details": {"cached_tokens": 4},
        "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 16, "farebox_cost_usd": "0.000001",
    }  # fmt: skip


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"model": "m", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def test_stream_text_then_two_tool_calls() -> None:
    stream = ChatStreamToResponses(response_object("resp_s", 1, "m", None))
    events = stream.feed(_chunk({"role": "assistant", "content": "Hi"}))
    events += stream.feed(_chunk({"tool_calls": [
        {"index": 0, "id": "c0", "function": {"name": "f", "arguments": '{"a"'}}]}))  # fmt: skip
    events += stream.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}))
    second = {"index": 1, "id": "c1", "function": {"name": "g", "arguments": "{}"}}
    events += stream.feed(_chunk({"tool_calls": [second]}, "tool_calls"))
    events += stream.finish(Usage(input_tokens=3, output_tokens=4), "0.1")
    kinds = [k for k, _ in events]
    assert kinds == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added",
        "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.completed",
    ]  # fmt: skip
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert all(d["type"] == k for k, d in events)
    final = events[-1][1]["response"]
    assert [i["type"] for i in final["output"]] == ["message", "function_call", "function_call"]
    assert final["output"][1]["arguments"] == '{"a":1}' and final["output"][2]["name"] == "g"
    assert [d["output_index"] for k, d in events if k == "response.output_item.done"] == [0, 1, 2]
    assert final["usage"]["farebox_cost_usd"] == "0.1" and final["status"] == "completed"
    assert stream.finish(None) == []


def test_stream_cut_short_is_incomplete_and_failure_is_failed() -> None:
    stream = ChatStreamToResponses(response_object("resp_l", 1, "m", None))
    events = stream.feed(_chunk({"content": "abc"}, "length")) + stream.finish(None)
    assert events[-1][0] == "response.incomplete"
    assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    failing = ChatStreamToResponses(response_object("resp_f", 1, "m", None))
    events = failing.feed(_chunk({"content": "a"})) + failing.fail("upstream cut", "upstream")
    assert events[-1][0] == "response.failed"
    assert events[-1][1]["response"]["error"] == {"code": "upstream", "message": "upstream cut"}

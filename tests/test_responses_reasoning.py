"""Issue [10]: reasoning the upstream gives comes back as ``reasoning`` output items.

An Anthropic deployment's ``thinking`` blocks and an OpenAI-compatible server's
``reasoning_content`` (vLLM, DeepSeek) become a ``reasoning`` item with one ``summary_text``
part, before the message: in the Responses object, and in the stream as the documented events
(``response.output_item.added`` with the item, ``response.reasoning_summary_part.added``,
``response.reasoning_summary_text.delta``/``.done``, ``response.reasoning_summary_part.done``,
``response.output_item.done``) with their ``output_index``, ``summary_index`` and
``sequence_number``. The upstreams are loopback fakes speaking the real wire formats; the
official ``openai`` SDK parses every event into its own type.
"""

from __future__ import annotations

from typing import Any

from openai.types.responses import (
    ResponseReasoningItem,
    ResponseReasoningSummaryPartAddedEvent,
    ResponseReasoningSummaryPartDoneEvent,
    ResponseReasoningSummaryTextDeltaEvent,
    ResponseReasoningSummaryTextDoneEvent,
)

from fakes import Reply
from fakes import openai_upstream as oa
from fakes.anthropic_upstream import stream_events, text_block, usage
from tests.test_responses_api import EVENT_ORDER, _collapsed, _openai
from tests.test_responses_honour import ENV, _config

JSON = dict[str, Any]
REASONING_EVENTS = [
    *EVENT_ORDER[:2],
    "response.output_item.added",
    "response.reasoning_summary_part.added",
    "response.reasoning_summary_text.delta",
    "response.reasoning_summary_text.done",
    "response.reasoning_summary_part.done",
    "response.output_item.done",
    *EVENT_ORDER[2:],  # then the message, as without reasoning
]


def thinking(text: str) -> JSON:
    return {"type": "thinking", "thinking": text, "signature": "EqQBCgIYAhIM"}


def thinking_stream(fragments: list[str], texts: list[str]) -> list[tuple[str, JSON]]:
    """An Anthropic stream: a thinking block (index 0, its deltas and signature), then text."""
    events = stream_events(texts, start_usage=usage(30, 1), delta_usages=({"output_tokens": 40},))
    block = {"type": "content_block_start", "index": 0,
             "content_block": {"type": "thinking", "thinking": "", "signature": ""}}  # fmt: skip
    deltas: list[JSON] = [{"type": "thinking_delta", "thinking": f} for f in fragments]
    deltas.append({"type": "signature_delta", "signature": "EqQBCgIYAhIM"})
    thought = [("content_block_start", block)]
    thought += [("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": d}) for d in deltas]  # fmt: skip
    thought.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    for _, data in events:  # the text block follows the thinking block
        if "index" in data:
            data["index"] += 1
    return [events[0], *thought, *events[1:]]


def _check_reasoning_events(events: list[Any], summary: str) -> None:
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert _collapsed([e.type for e in events]) == REASONING_EVENTS
    added = events[2]
    assert added.output_index == 0 and added.item.type == "reasoning" and added.item.summary == []
    rs_id = added.item.id
    parts = [e for e in events if "reasoning_summary" in e.type]
    assert all(e.item_id == rs_id and e.output_index == 0 and e.summary_index == 0 for e in parts)
    assert isinstance(parts[0], ResponseReasoningSummaryPartAddedEvent)
    assert parts[0].part.text == ""
    deltas = [e for e in parts if isinstance(e, ResponseReasoningSummaryTextDeltaEvent)]
    assert "".join(e.delta for e in deltas) == summary
    done = [e for e in parts if isinstance(e, ResponseReasoningSummaryTextDoneEvent)]
    assert [e.text for e in done] == [summary]
    part_done = parts[-1]
    assert isinstance(part_done, ResponseReasoningSummaryPartDoneEvent)
    assert part_done.part.text == summary
    item_done = next(e for e in events if e.type == "response.output_item.done")
    assert item_done.output_index == 0 and item_done.item.summary[0].text == summary
    message_added = [e for e in events if e.type == "response.output_item.added"][1]
    assert message_added.output_index == 1 and message_added.item.type == "message"
    final = events[-1].response
    assert [i.type for i in final.output] == ["reasoning", "message"]
    assert final.output[0].id == rs_id and final.output[0].summary[0].text == summary


async def test_anthropic_thinking_is_a_reasoning_item(make_gateway: Any, ups: Any) -> None:
    claude, gpt = ups
    async with make_gateway(_config(claude, gpt), env=ENV) as gw:
        client = _openai(gw, await gw.tenant_key("acme"))
        claude.reply_message([thinking("6 x 7 is 42."), thinking("Say it."), text_block("42")])
        response = await client.responses.create(model="claude", input="6 x 7?")
        reasoning, answer = response.output
        assert isinstance(reasoning, ResponseReasoningItem)
        assert [s.text for s in reasoning.summary] == ["6 x 7 is 42.\n\nSay it."]
        assert reasoning.summary[0].type == "summary_text"
        assert answer.type == "message" and response.output_text == "42"
        # an OpenAI chat client gets the same reasoning as reasoning_content
        claude.reply_message([thinking("Small sum."), text_block("4")])
        chat = await client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "2 + 2?"}]
        )
        assert chat.choices[0].message.model_extra == {"reasoning_content": "Small sum."}


async def test_anthropic_thinking_streams_as_reasoning_events(make_gateway: Any, ups: Any) -> None:
    claude, gpt = ups
    async with make_gateway(_config(claude, gpt), env=ENV) as gw:
        client = _openai(gw, await gw.tenant_key("acme"))
        claude.reply_events(thinking_stream(["6 x 7", " is 42."], ["4", "2"]))
        stream = await client.responses.create(model="claude", input="6 x 7?", stream=True)
        events = [event async for event in stream]
        _check_reasoning_events(events, "6 x 7 is 42.")
        assert events[-1].response.output_text == "42"
        (entry,) = await gw.ledger("acme")
        assert entry.output_tokens == 40 == events[-1].response.usage.output_tokens


async def test_reasoning_content_of_an_openai_compatible_server(
    make_gateway: Any, ups: Any
) -> None:
    claude, gpt = ups
    async with make_gateway(_config(claude, gpt), env=ENV) as gw:
        client = _openai(gw, await gw.tenant_key("acme"))
        body = oa.chat_completion("42", usage_=oa.usage(12, 30, reasoning=22))
        body["choices"][0]["message"]["reasoning_content"] = "Multiply."
        gpt.push(Reply(body=body))
        response = await client.responses.create(model="gpt", input="6 x 7?")
        assert [i.type for i in response.output] == ["reasoning", "message"]
        assert response.output[0].summary[0].text == "Multiply."  # type: ignore[union-attr]
        assert response.usage is not None
        assert response.usage.output_tokens_details.reasoning_tokens == 22

        chunks: list[JSON | str] = [oa.chunk({"role": "assistant", "content": ""})]
        chunks += [oa.chunk({"reasoning_content": t}) for t in ("Multi", "ply.")]
        chunks += [oa.chunk({"content": t}) for t in ("4", "2")]
        chunks += [oa.chunk({}, "stop"), oa.usage_chunk(oa.usage(12, 30, reasoning=22)), "[DONE]"]
        gpt.push(Reply(frames=[oa.frame(c) for c in chunks]))
        stream = await client.responses.create(model="gpt", input="6 x 7?", stream=True)
        events = [event async for event in stream]
        _check_reasoning_events(events, "Multiply.")
        final = events[-1].response
        assert final.usage.output_tokens_details.reasoning_tokens == 22
        assert final.output_text == "42"


def test_a_stream_without_usage_estimates_its_reasoning_as_output() -> None:
    """When the upstream never reports usage, the estimate counts streamed reasoning text (as
    ``reasoning_content`` or ``reasoning``) with the answer's text: it is output the model
    produced and the provider bills."""
    from farebox.gateway.stream_meter import StreamMeter

    body = {"messages": [{"role": "user", "content": "hi"}]}
    plain, thinking = StreamMeter(body, 0.0), StreamMeter(body, 0.0)
    answer = {"choices": [{"delta": {"content": "x" * 40}}]}
    for meter in (plain, thinking):
        meter.see(answer)
    thinking.see({"choices": [{"delta": {"reasoning_content": "y" * 80}}]})
    thinking.see({"choices": [{"delta": {"reasoning": "z" * 40}}]})
    assert plain.usage().output_tokens == 10
    assert thinking.usage().output_tokens == 10 + 20 + 10
    assert thinking.usage().input_tokens == plain.usage().input_tokens

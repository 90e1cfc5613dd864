"""Issue 15: the guardrail stage in the request path (``gateway.guardrails``): blocks write
one unbilled ``blocked`` entry and hold, cache and send nothing; flags forward and record;
redactions reach the upstream as placeholders and come back restored; the texts each check
reads, within bounds."""

from __future__ import annotations

from typing import Any

import pytest

from farebox.core.guardrails import Finding, GuardrailPolicy, InjectionPolicy, PiiPolicy
from farebox.core.meters import BILLED
from farebox.gateway.guard_output import HOLD, AnswerGuard
from farebox.gateway.guard_texts import Slot, Unit, chat_slots, responses_slots
from farebox.guardrails import pii_patterns
from farebox.guardrails.placeholders import Redactor
from tests.guard_world import AWS_KEY, EMAIL, INJECTION, MODEL, EchoMock, config


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}


async def test_a_block_is_400_one_unbilled_entry_nothing_sent(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="block")
        r = await gw.client.post("/v1/chat/completions", json=ask(INJECTION), headers=auth(key))
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "prompt_injection_detected"
        assert error["detector"] == "injection_rules"
        assert "ignore all previous" not in error["message"].lower()
        assert mock.bodies == []
        rid = r.headers["x-farebox-request-id"]
        (entry,) = await gw.ledger("acme")
        assert entry.request_id == rid
        assert (entry.status, entry.http_status, entry.error_code) == (
            "blocked", 400, "prompt_injection_detected")  # fmt: skip
        assert entry.cost == 0 and entry.revenue == 0 and entry.status not in BILLED
        assert [Finding.of(f).action for f in entry.guardrails] == ["blocked"]
        assert entry.guardrails[0]["category"] == "instruction_override"
        # the request log (and its rollups) take the new status like any other
        log = await gw.client.get("/admin/v1/requests?tenant=acme&status=blocked",
                                  headers=gw.admin)  # fmt: skip
        assert log.status_code == 200, log.text
        assert [row["request_id"] for row in log.json()["data"]] == [rid]


@pytest.mark.parametrize(
    ("text", "code", "detector"),
    [(f"my key is {AWS_KEY}", "secret_detected", "secrets"),
     (f"mail me at {EMAIL}", "pii_detected", "pii")],
)  # fmt: skip
async def test_secrets_and_pii_block_in_both_error_shapes(
    make_gateway: Any, text: str, code: str, detector: str
) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="block")
        r = await gw.client.post("/v1/chat/completions", json=ask(text), headers=auth(key))
        assert r.status_code == 400 and r.json()["error"]["code"] == code
        body = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": text}]}
        r = await gw.client.post("/v1/messages", json=body, headers={"x-api-key": key})
        assert r.status_code == 400, r.text
        error = r.json()
        assert error["type"] == "error" and error["error"]["code"] == code
        assert error["error"]["detector"] == detector
        assert EMAIL not in r.text and AWS_KEY not in r.text
        assert mock.bodies == []
        entries = await gw.ledger("acme")
        assert [e.status for e in entries] == ["blocked", "blocked"]


async def test_flag_forwards_and_records_the_finding(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="flag")
        r = await gw.client.post("/v1/chat/completions", json=ask(INJECTION), headers=auth(key))
        assert r.status_code == 200, r.text
        assert INJECTION in mock.sent()
        (entry,) = await gw.ledger("acme")
        assert entry.status == "ok" and entry.cost > 0
        assert [(f["detector"], f["action"], f["where"]) for f in entry.guardrails] == [
            ("injection_rules", "flagged", "user")]  # fmt: skip


async def test_tool_results_are_scanned_system_prompts_are_not(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="block")
        call = {"id": "c1", "type": "function", "function": {"name": "web", "arguments": "{}"}}
        tool = {"model": MODEL, "messages": [
            {"role": "user", "content": "read the page"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": INJECTION}]}  # fmt: skip
        r = await gw.client.post("/v1/chat/completions", json=tool, headers=auth(key))
        assert r.status_code == 400 and "tool" in r.json()["error"]["message"]
        # Anthropic tool_result blocks arrive as tool messages
        anthropic = {"model": MODEL, "max_tokens": 20, "messages": [
            {"role": "user", "content": "read the page"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "web",
                                               "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                          "content": [{"type": "text",
                                                       "text": INJECTION}]}]}]}  # fmt: skip
        r = await gw.client.post("/v1/messages", json=anthropic, headers={"x-api-key": key})
        assert r.status_code == 400 and r.json()["error"]["code"] == "prompt_injection_detected"
        system = {"model": MODEL, "messages": [{"role": "system", "content": INJECTION},
                                               {"role": "user", "content": "hello"}]}  # fmt: skip
        r = await gw.client.post("/v1/chat/completions", json=system, headers=auth(key))
        assert r.status_code == 200, r.text
        assert len(mock.bodies) == 1


async def test_redact_restore_non_streamed(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="redact")
        text = f"I am {EMAIL}, key {AWS_KEY}"
        r = await gw.client.post("/v1/chat/completions", json=ask(text), headers=auth(key))
        assert r.status_code == 200, r.text
        # PII is restored, a secret never is (review 1.7)
        assert r.json()["choices"][0]["message"]["content"] == (
            f"You said: I am {EMAIL}, key <SECRET_1>")  # fmt: skip
        assert EMAIL not in mock.sent() and AWS_KEY not in mock.sent()
        assert "<EMAIL_1>" in mock.sent()
        (entry,) = await gw.ledger("acme")
        assert {(f["detector"], f["action"]) for f in entry.guardrails} == {
            ("pii", "redacted"), ("secrets", "redacted")}  # fmt: skip


async def test_redact_without_restore_leaves_placeholders(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="redact_only")
        r = await gw.client.post("/v1/chat/completions", json=ask(f"hi {EMAIL}"),
                                 headers=auth(key))  # fmt: skip
        assert r.json()["choices"][0]["message"]["content"] == "You said: hi <EMAIL_1>"


async def test_output_pii_is_redacted_streamed_and_not(make_gateway: Any) -> None:
    mock = EchoMock()
    mock.answer = f"Write to {EMAIL} or to bob@corp.example.org today."
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="output")
        r = await gw.client.post("/v1/chat/completions", json=ask("who?"), headers=auth(key))
        content = r.json()["choices"][0]["message"]["content"]
        assert content == "Write to <EMAIL_1> or to <EMAIL_2> today."
        r = await gw.client.post("/v1/chat/completions", json=ask("who?", stream=True),
                                 headers=auth(key))  # fmt: skip
        assert r.status_code == 200 and EMAIL not in r.text
        assert r.text.rstrip().endswith("data: [DONE]")
        entries = await gw.ledger("acme")
        for entry in entries:
            assert [(f["category"], f["action"], f["where"]) for f in entry.guardrails] == [
                ("EMAIL_ADDRESS", "redacted", "output")]  # fmt: skip


async def test_a_plan_without_guardrails_has_no_state(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="plain")
        r = await gw.client.post("/v1/chat/completions", json=ask(INJECTION), headers=auth(key))
        assert r.status_code == 200
        (entry,) = await gw.ledger("acme")
        assert entry.guardrails == []


# units ---------------------------------------------------------------------------------------


def test_slots_skip_images_audio_and_unknown_parts() -> None:
    body = {"messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
            {"type": "text", "text": 5}, "junk", {"type": "text"}]},
        {"role": "system", "content": "s"}, {"role": "weird", "content": "w"}, 7]}  # fmt: skip
    slots = chat_slots(body, frozenset({"user"}))
    assert [s.text for s in slots] == ["a"]
    assert [s.text for s in chat_slots(body, frozenset({"system", "user"}))] == ["a", "s"]


def test_responses_slots_read_instructions_input_and_tool_outputs() -> None:
    body = {"instructions": "sys", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "u"}]},
        {"type": "function_call_output", "call_id": "c", "output": "o"}]}  # fmt: skip
    assert [s.text for s in responses_slots(body)] == ["sys", "u", "o"]
    assert [s.text for s in responses_slots({"input": "plain"})] == ["plain"]


def test_lone_surrogates_are_read_as_question_marks() -> None:
    unit = Unit.of("user", [Slot("user", {"content": "a\ud800b"}, "content")])
    assert unit.text == "a?b"


def test_output_scan_sees_a_value_cut_between_deltas() -> None:
    guard = AnswerGuard(None, lambda t: pii_patterns.scan(t, ["EMAIL_ADDRESS"]), True)
    text = "y" * (HOLD + 5) + f" mail {EMAIL} end " + "z" * HOLD
    out = "".join(guard.delta(0, text[i : i + 2]) for i in range(0, len(text), 2))
    out += guard.flush(0)
    assert out == text.replace(EMAIL, "<EMAIL_1>") and len(guard.findings) == 1


def test_answer_guard_restores_across_deltas() -> None:
    redactor = Redactor()
    redacted = redactor.redact(f"hi {EMAIL}", pii_patterns.scan(f"hi {EMAIL}", ["EMAIL_ADDRESS"]))
    guard = AnswerGuard(redactor, None, False)
    pieces = [redacted[i : i + 2] for i in range(0, len(redacted), 2)]
    assert "".join(guard.delta(0, p) for p in pieces) + guard.flush(0) == f"hi {EMAIL}"


def test_the_stage_is_skipped_unless_a_check_is_on() -> None:
    assert not GuardrailPolicy().enabled
    assert GuardrailPolicy(prompt_injection=InjectionPolicy(mode="flag")).enabled
    assert GuardrailPolicy(pii=PiiPolicy(mode="redact")).enabled


async def test_the_billing_export_sends_nothing_for_a_blocked_request(make_gateway: Any) -> None:
    from fakes.billing import WebhookFake
    from farebox.core.meters import METERS, per_request, render
    from farebox.sinks.events import event_key

    secret = "whsec-guard-secret"
    async with WebhookFake(secret.encode()) as hook:
        sink = {"kind": "webhook", "base_url": hook.root_url + "/hooks/billing",
                "secret": "env:WEBHOOK_SECRET"}  # fmt: skip
        cfg = config(billing={"in_serve": False, "sinks": {"webhook": sink}})
        env = {"WEBHOOK_SECRET": secret}
        async with make_gateway(cfg, providers={"sim": EchoMock()}, env=env) as gw:
            key = await gw.tenant_key("acme", plan="block")
            await gw.client.patch("/admin/v1/tenants/acme", headers=gw.admin,
                                  json={"billing": {"stripe_customer_id": "cus_acme"}})  # fmt: skip
            blocked = await gw.client.post("/v1/chat/completions", json=ask(INJECTION),
                                           headers=auth(key))  # fmt: skip
            served = await gw.client.post("/v1/chat/completions", json=ask("hi"), headers=auth(key))
            assert (blocked.status_code, served.status_code) == (400, 200)
            exporter = gw.app.state.exporter
            for _ in range(50):
                if not (await exporter.export_once("webhook")).entries:
                    break
            entries = await gw.ledger("acme")
            assert sorted(e.status for e in entries) == ["blocked", "ok"]
            want = {event_key(r.tenant, r.unit, r.meter): render(r.meter, r.raw)
                    for r in per_request(entries, METERS)}  # fmt: skip
            assert want and set(hook.accepted) == set(want)
            rid = blocked.headers["x-farebox-request-id"]
            assert not any(rid in k for k in hook.accepted)
            assert any(served.headers["x-farebox-request-id"] in k for k in hook.accepted)


async def test_a_blocked_entry_reaches_the_observers_and_metrics(make_gateway: Any) -> None:
    async with make_gateway(config(), providers={"sim": EchoMock()}) as gw:
        key = await gw.tenant_key("acme", plan="block")
        metering = gw.app.state.services.gateway._metering
        seen: list[tuple[str, str, int]] = []
        observe = metering._observe

        def watching(entry: Any, plan: str) -> None:
            seen.append((entry.status, plan, len(entry.guardrails)))
            observe(entry, plan)

        metering._observe = watching
        r = await gw.client.post("/v1/chat/completions", json=ask(INJECTION), headers=auth(key))
        assert r.status_code == 400
        assert seen == [("blocked", "block", 1)]
        metrics = (await gw.client.get("/metrics")).text
        assert 'status="blocked"' in metrics and 'provider=""' in metrics


async def test_responses_streamed_redact_and_restore(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="redact")
        body = {"model": MODEL, "input": f"I am {EMAIL}", "stream": True, "store": False}
        r = await gw.client.post("/v1/responses", json=body, headers=auth(key))
        assert r.status_code == 200
        deltas = [line for line in r.text.splitlines() if '"response.output_text.delta"' in line]
        assert deltas and EMAIL not in mock.sent()
        assert f'"text":"You said: I am {EMAIL}"' in r.text  # the done event's whole text


async def test_abuse_patterns_flag_and_block(make_gateway: Any) -> None:
    abuse = {"stuffing": "block", "batch": "flag", "batch_max": 2, "context": "block"}
    plans = {"abuse": {"models": ["*"], "guardrails": {"abuse": abuse}}}
    models = {MODEL: [{"provider": "sim", "model": MODEL, "context_window": 2000}]}
    mock = EchoMock()
    async with make_gateway(config(plans, models=models), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="abuse")
        post = gw.client.post
        codes = []
        for i in range(3):  # near-identical: the third is a burst (flagged, served)
            question = ask(f"What is the price of item {i} today?")
            r = await post("/v1/chat/completions", json=question, headers=auth(key))
            codes.append(r.status_code)
        stuffed = "buy cheap tokens now " * 300  # 6,300 characters of one phrase
        r = await post("/v1/chat/completions", json=ask(stuffed), headers=auth(key))
        assert r.status_code == 400 and r.json()["error"]["code"] == "abuse_detected"
        assert r.json()["error"]["category"] == "prompt_stuffing"
        filling = " ".join(f"word{i}" for i in range(2500))  # about 1,900+ tokens of 2,000
        r = await post("/v1/chat/completions", json=ask(filling), headers=auth(key))
        assert r.status_code == 400 and r.json()["error"]["category"] == "context_exploitation"
        assert codes == [200, 200, 200] and len(mock.bodies) == 3
        entries = sorted(await gw.ledger("acme"), key=lambda e: e.started_at)
        found = [[(f["category"], f["action"]) for f in e.guardrails] for e in entries]
        assert found == [[], [], [("batch_abuse", "flagged")], [("prompt_stuffing", "blocked")],
                         [("context_exploitation", "blocked")]]  # fmt: skip


# the classifier layer, on the stage itself (no model: a runner of our own) ------------------


class Runner:
    """A ``ClassifierRunner`` stand-in: fixed scores, or a timeout."""

    def __init__(self, scores: list[float] | None) -> None:
        self.scores_given = scores
        self.asked: list[list[str]] = []

    async def scores(self, texts: list[str], timeout_ms: int) -> list[float]:
        from farebox.guardrails.classifier import ClassifierTimeout

        self.asked.append(texts)
        if self.scores_given is None:
            raise ClassifierTimeout(f"over {timeout_ms} ms")
        return self.scores_given[: len(texts)]

    async def close(self) -> None:
        return None


def stage_call(policy: GuardrailPolicy, text: str) -> Any:
    from types import SimpleNamespace

    body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    return SimpleNamespace(plan=SimpleNamespace(guardrails=policy), body=body, responses=None,
                           guard=None)  # fmt: skip


@pytest.mark.parametrize(
    ("scores", "mode", "on_timeout", "outcome"),
    [([0.97], "block", "flag", ("blocked", "injection")),
     ([0.97], "flag", "flag", ("flagged", "injection")),
     ([0.10], "block", "flag", None),
     (None, "block", "flag", ("flagged", "timeout")),
     (None, "block", "block", ("blocked", "timeout"))],
)  # fmt: skip
async def test_the_classifier_layer_and_its_timeout(
    scores: list[float] | None, mode: str, on_timeout: str, outcome: tuple[str, str] | None
) -> None:
    from farebox.errors import PromptInjectionDetected
    from farebox.gateway.guardrails import GuardrailStage

    runner = Runner(scores)
    stage = GuardrailStage(classifier=runner)  # type: ignore[arg-type]
    policy = GuardrailPolicy(prompt_injection=InjectionPolicy(
        mode=mode, classifier=True, on_timeout=on_timeout))  # type: ignore[arg-type]  # fmt: skip
    call = stage_call(policy, "Tell me a story about a dragon who guards a library.")
    if outcome is not None and outcome[0] == "blocked":
        with pytest.raises(PromptInjectionDetected) as caught:
            await stage.screen(call, 10)
        assert caught.value.extra == {"detector": "injection_classifier", "category": outcome[1]}
        assert "dragon" not in caught.value.message
    else:
        await stage.screen(call, 10)
    found = [(f.detector, f.action, f.category) for f in call.guard.findings]
    assert found == ([] if outcome is None else [("injection_classifier", *outcome)])
    assert runner.asked == [["Tell me a story about a dragon who guards a library."]]


async def test_the_classifier_is_not_asked_once_the_rules_block() -> None:
    from farebox.errors import PromptInjectionDetected
    from farebox.gateway.guardrails import GuardrailStage

    runner = Runner([0.2])
    stage = GuardrailStage(classifier=runner)  # type: ignore[arg-type]
    policy = GuardrailPolicy(prompt_injection=InjectionPolicy(mode="block", classifier=True))
    with pytest.raises(PromptInjectionDetected):
        await stage.screen(stage_call(policy, INJECTION), 10)
    assert runner.asked == []


async def test_a_value_found_once_is_replaced_everywhere_in_the_request(make_gateway: Any) -> None:
    mock = EchoMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="redact")
        body = {"model": MODEL, "messages": [
            {"role": "system", "content": f"The account holder is {EMAIL}."},  # not scanned
            {"role": "user", "content": f"Is {EMAIL} my login?"}]}  # fmt: skip
        r = await gw.client.post("/v1/chat/completions", json=body, headers=auth(key))
        assert r.json()["choices"][0]["message"]["content"] == f"You said: Is {EMAIL} my login?"
        (sent,) = mock.bodies
        assert sent["messages"][0]["content"] == "The account holder is <EMAIL_1>."
        assert EMAIL not in mock.sent()

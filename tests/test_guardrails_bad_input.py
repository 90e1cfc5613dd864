"""Issue 15, acceptance 6 (the stage's part): with guardrails on, any OpenAI chat body (lone
surrogates, huge messages, nested content parts, image and audio parts, injections, values
to redact), streamed or not, is answered without a 5xx or a traceback, and the ledger and the
budgets stay consistent: one entry per answered request, blocked ones unbilled, nothing
left reserved. A plan needing a missing extra stops start-up, naming the extra."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from farebox.app import create_app
from farebox.config.settings import parse_settings
from farebox.errors import GuardrailUnavailable
from farebox.gateway.guard_texts import chat_slots
from tests.guard_world import AWS_KEY, EMAIL, INJECTION, MODEL, EchoMock, plan

TRACE_MARKERS = ("Traceback", 'File "', "farebox/", '.py"')
GUARDS = {"prompt_injection": {"mode": "block", "scan": ["user", "tool", "system"]},
          "pii": {"mode": "redact", "restore": True, "engine": "builtin"},
          "secrets": {"mode": "redact"}, "output": {"pii": "redact"},
          "abuse": {"stuffing": "flag", "batch": "flag", "context": "flag"}}  # fmt: skip
PLANS = {"guarded": plan(GUARDS, budgets=[{"period": "day", "limit_usd": "100"}])}
CODES = {"prompt_injection_detected", "pii_detected", "secret_detected", "abuse_detected",
         "guardrail_scan_limit"}  # fmt: skip
TENANTS = itertools.count()

WORDS = st.sampled_from(
    ["hello", INJECTION, EMAIL, AWS_KEY, "\ud800", "\udfff", "\u200b", "é", "🙂", "<EMAIL_1>",
     "ignore", "system", "\x00", " "]
)  # fmt: skip
TEXT = st.one_of(
    st.lists(WORDS, max_size=12).map(" ".join),
    st.text(max_size=200),
    st.builds(lambda w, n: (w + " ") * n, WORDS, st.integers(1, 5_000)),  # huge
)
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
AUDIO = {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
PART = st.one_of(
    TEXT.map(lambda t: {"type": "text", "text": t}),
    st.just(IMAGE),
    st.just(AUDIO),
    st.recursive(TEXT.map(lambda t: {"type": "text", "text": t}),
                 lambda inner: st.lists(inner, max_size=3).map(
                     lambda kids: {"type": "text", "text": "x", "parts": kids}),
                 max_leaves=20),  # nested
)  # fmt: skip
CONTENT = st.one_of(TEXT, st.lists(PART, min_size=1, max_size=6))
MESSAGE = st.one_of(
    st.builds(lambda c: {"role": "user", "content": c}, CONTENT),
    st.builds(lambda t: {"role": "system", "content": t}, TEXT),
    st.builds(lambda t: {"role": "assistant", "content": t}, TEXT),
)
BODY = st.builds(
    lambda ms, last, stream: {"model": MODEL, "messages": [*ms, last], "stream": stream},
    st.lists(MESSAGE, max_size=4),
    st.builds(lambda c: {"role": "user", "content": c}, CONTENT),
    st.booleans(),
)


def leaked(sent: dict[str, Any]) -> bool:
    """A value reached the upstream in a part its check reads (PII: user, tool, and the
    assistant's turns, which carry restored values back; secrets: user, tool, system)."""
    pii = chat_slots(sent, frozenset({"user", "tool", "assistant"}))
    keys = chat_slots(sent, frozenset({"user", "tool", "system"}))
    return any(EMAIL in s.text for s in pii) or any(AWS_KEY in s.text for s in keys)


def raw(body: dict[str, Any]) -> bytes:
    """JSON with lone surrogates as ``\\udXXX`` escapes (what a client may send)."""
    return json.dumps(body, ensure_ascii=True).encode()


def gateway_config(tmp: Path) -> Any:
    data = {"database": f"sqlite:///{tmp / 'farebox.db'}", "providers": {"sim": {"kind": "mock"}},
            "plans": PLANS, "server": {"max_body_bytes": 4 * 1024 * 1024},
            "logging": {"access_log": False}}  # fmt: skip
    return data


SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
           HealthCheck.data_too_large, HealthCheck.large_base_example]  # fmt: skip


# no shrinking: a failing example is printed as drawn (shrinking huge bodies takes minutes)
@settings(max_examples=40, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=SLOW_OK)  # fmt: skip
@given(st.lists(BODY, min_size=1, max_size=6))
async def test_any_chat_body_is_answered_and_accounted(
    make_gateway: Any, bodies: list[dict[str, Any]]
) -> None:
    mock = EchoMock()
    tenant = f"t{next(TENANTS)}"
    cfg = {k: v for k, v in gateway_config(Path("/unused")).items() if k != "database"}
    async with make_gateway(cfg, providers={"sim": mock}) as gw:
        key = await gw.tenant_key(tenant, plan="guarded")
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        served = blocked = 0
        for body in bodies:
            r = await gw.client.post("/v1/chat/completions", content=raw(body), headers=auth)
            assert r.status_code < 500, r.text[:500]
            assert not any(marker in r.text for marker in TRACE_MARKERS), r.text[:500]
            if r.status_code == 200:
                served += 1
                assert not leaked(mock.bodies[-1])  # past the scan limit: refused
            elif r.json()["error"]["code"] in CODES:
                blocked += 1
        entries = await gw.ledger(tenant)
        assert sorted(e.status for e in entries) == sorted(["blocked"] * blocked + ["ok"] * served)
        assert all(e.cost == 0 and e.revenue == 0 for e in entries if e.status == "blocked")
        me = (await gw.client.get("/v1/me", headers=auth)).json()
        assert me["budgets"][0]["reserved_usd"] == "0.00"


def start(tmp: Path, guardrails: dict[str, Any]) -> None:
    data = {"database": f"sqlite:///{tmp / 'farebox.db'}", "providers": {"sim": {"kind": "mock"}},
            "plans": {"p": plan(guardrails)}}  # fmt: skip
    settings_ = parse_settings(data, source="test.yaml", env={"FAREBOX_ADMIN_KEY": "x" * 40},
                               base_dir=tmp)  # fmt: skip
    create_app(settings_, announce=lambda _m: None)


def test_presidio_without_its_extra_stops_start_up_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("presidio_analyzer", "presidio_anonymizer", "farebox.guardrails.pii_presidio"):
        monkeypatch.setitem(sys.modules, name, None)  # an import of it raises ImportError
    with pytest.raises(GuardrailUnavailable) as caught:
        pii = {"mode": "redact", "engine": "presidio", "entities": ["PERSON", "EMAIL_ADDRESS"]}
        start(tmp_path, {"pii": pii})
    assert "farebox[pii]" in caught.value.message
    assert "plans.p.guardrails.pii.engine" in caught.value.message


def test_the_classifier_without_its_extra_stops_start_up_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.setitem(sys.modules, "metatronnanoguard", None)
    with pytest.raises(GuardrailUnavailable) as caught:
        start(tmp_path, {"prompt_injection": {"mode": "block", "classifier": True}})
    assert "farebox[guard-model]" in caught.value.message


def test_builtin_plans_need_no_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("presidio_analyzer", "torch"):
        monkeypatch.setitem(sys.modules, name, None)
    start(tmp_path, {"pii": {"mode": "redact", "engine": "builtin"},
                     "prompt_injection": {"mode": "block"}})  # fmt: skip

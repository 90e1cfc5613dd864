"""Issue 15, the embeddings endpoint: a plan's guardrails screen ``/v1/embeddings`` as they do
chat. Each string of ``input`` is read as part ``user``; token arrays cannot be read (the
``x-farebox-guardrails-skipped`` note). A block is a 400 in OpenAI's error shape, one unbilled
``blocked`` entry, and nothing reserved, cached or sent; a redaction is what the provider
embeds and what the cache keys on (there is no restore: a vector cannot be un-redacted);
findings reach the ledger, the metrics and the signed webhook. Screening happens before the
cache and admission; a plan without guardrails does not enter the stage."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from farebox.core.cache import HIT_STATUS
from farebox.core.guardrails import AbusePolicy
from farebox.core.meters import BILLED
from farebox.gateway.guard_texts import EmbedInput
from farebox.guardrails import abuse
from farebox.providers.base import EmbedRequest, EmbedResult
from tests.guard_world import AWS_KEY, EMAIL, INJECTION, EchoMock, asgi, config, plan
from tests.test_guardrail_findings import hook_receiver, running, signed_by_secret

EMBED = "text-embedding-3-small"
PATH = "/v1/embeddings"
BUDGET = [{"period": "day", "limit_usd": "10"}]
CACHE = {"mode": "exact"}
ALL_BLOCK = {
    "prompt_injection": {"mode": "block"},
    "secrets": {"mode": "block"},
    "pii": {"mode": "block", "engine": "builtin"},
}
REDACT = {"pii": {"mode": "redact", "restore": True, "engine": "builtin"},
          "secrets": {"mode": "redact"}}  # fmt: skip
PLANS: dict[str, Any] = {
    "plain": {"models": ["*"], "cache": CACHE},
    "block": plan(ALL_BLOCK, cache=CACHE, budgets=BUDGET),
    "flag": plan(
        {
            "prompt_injection": {"mode": "flag"},
            "secrets": {"mode": "flag"},
            "pii": {"mode": "flag", "engine": "builtin"},
        }
    ),  # fmt: skip
    "redact": plan(REDACT, cache=CACHE, budgets=BUDGET),
    "system_only": plan({"prompt_injection": {"mode": "block", "scan": ["system"]}}),
    "stuffing": plan({"abuse": {"stuffing": "block", "batch": "block", "batch_max": 1}}),
    "small": plan({"pii": {"mode": "redact", "engine": "builtin"}, "max_scan_chars": 4096}),
    "small_flag": plan({"pii": {"mode": "flag", "engine": "builtin"}, "max_scan_chars": 4096}),
    "mixed": plan(
        {
            "prompt_injection": {"mode": "flag"},
            "secrets": {"mode": "block"},
            "pii": {"mode": "redact", "engine": "builtin"},
            "abuse": {"stuffing": "flag"},
        },
        cache=CACHE,
        budgets=BUDGET,
    ),  # fmt: skip
}
TENANTS = itertools.count()


class EmbedMock(EchoMock):
    """The echo mock, keeping the ``input`` of every embeddings call it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[Any] = []

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        self.embedded.append(request.body.get("input"))
        return await super().embed(request)


def sdk(gw: Any, key: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key=key, base_url="http://gateway/v1", http_client=asgi(gw),
                              max_retries=0)  # fmt: skip


async def post(gw: Any, key: str, body: dict[str, Any]) -> httpx.Response:
    r = await gw.client.post(PATH, json=body, headers={"Authorization": f"Bearer {key}"})
    cache = gw.app.state.services.gateway.cache
    if cache is not None:
        await cache.settled()  # whatever the answer stores is stored
    return r


def watch_admission(gw: Any) -> list[str]:
    """The request ids that reach admission (a reservation), from now on."""
    gateway = gw.app.state.services.gateway
    admitted: list[str] = []
    admit = gateway._admission.admit

    async def counting(call: Any, *args: Any, **kwargs: Any) -> Any:
        admitted.append(call.request_id)
        return await admit(call, *args, **kwargs)

    gateway._admission.admit = counting
    return admitted


@pytest.mark.parametrize(
    ("given_input", "code", "detector"),
    [(f"my key is {AWS_KEY}", "secret_detected", "secrets"),
     (["a clean document", f"contact {EMAIL} for details"], "pii_detected", "pii"),
     (["fine", INJECTION], "prompt_injection_detected", "injection_rules")],
)  # fmt: skip
async def test_a_block_is_400_and_holds_caches_and_sends_nothing(
    make_gateway: Any, given_input: Any, code: str, detector: str
) -> None:
    mock = EmbedMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="block")
        admitted = watch_admission(gw)
        for _ in range(2):  # twice: nothing was stored to hit the second time
            with pytest.raises(openai.BadRequestError) as caught:
                await sdk(gw, key).embeddings.create(model=EMBED, input=given_input)
            error = caught.value.body
            assert isinstance(error, dict) and error["code"] == code
            assert error["type"] == "invalid_request_error" and error["detector"] == detector
            assert caught.value.response.headers.get("x-farebox-cache") is None
            assert EMAIL not in caught.value.response.text
            assert AWS_KEY not in caught.value.response.text
        assert mock.embedded == [] and admitted == []
        assert (await gw.app.state.services.cache.usage("acme")).entries == 0
        entries = await gw.ledger("acme")
        assert [(e.status, e.http_status, e.error_code) for e in entries] == [
            ("blocked", 400, code)] * 2  # fmt: skip
        for entry in entries:
            assert entry.endpoint == "embeddings" and entry.status not in BILLED
            assert entry.cost == entry.revenue == 0 and entry.reservation_id is None
            assert [(f["detector"], f["action"], f["where"]) for f in entry.guardrails] == [
                (detector, "blocked", "user")]  # fmt: skip
        me = await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
        (budget,) = me.json()["budgets"]
        assert budget["reserved_usd"] == budget["used_usd"] == "0.00"


async def test_redaction_is_what_the_provider_embeds_and_the_cache_keys_on(
    make_gateway: Any,
) -> None:
    mock = EmbedMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="redact")
        plain = await gw.tenant_key("other", plan="plain")
        items = ["hello", f"mail {EMAIL}", f"key {AWS_KEY} and {EMAIL}"]
        answer = await sdk(gw, key).embeddings.create(model=EMBED, input=items)
        await gw.app.state.services.gateway.cache.settled()
        assert mock.embedded == [["hello", "mail <EMAIL_1>", "key <SECRET_1> and <EMAIL_1>"]]
        # the vectors are those of the redacted texts (nothing to restore in a vector)
        same = await sdk(gw, plain).embeddings.create(model=EMBED, input=mock.embedded[0])
        assert [d.embedding for d in answer.data] == [d.embedding for d in same.data]
        (entry,) = await gw.ledger("acme")
        assert entry.status == "ok" and entry.cost > 0
        assert {(f["category"], f["action"]) for f in entry.guardrails} == {
            ("EMAIL_ADDRESS", "redacted"), ("aws_access_key", "redacted")}  # fmt: skip
        # another address redacts to the same text: a cache hit, nothing sent
        other = "mail someone.else@example.org"  # as the SDK sent the first: base64
        r = await post(gw, key, {"model": EMBED, "input": other, "encoding_format": "base64"})
        assert r.status_code == 200, r.text
        assert r.headers["x-farebox-cache"] == "hit-exact"
        assert len(mock.embedded) == 2  # the plain tenant's call only
        assert "someone.else" not in repr(mock.embedded)
        hit = (await gw.ledger("acme"))[-1]
        assert [f["action"] for f in hit.guardrails] == ["redacted"]


async def test_token_arrays_are_skipped_with_a_note(make_gateway: Any) -> None:
    mock = EmbedMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="redact")
        r = await post(gw, key, {"model": EMBED, "input": [[1, 2, 3], [4, 5]]})
        assert r.status_code == 200, r.text
        assert r.headers["x-farebox-guardrails-skipped"] == "tokens=2"
        r = await post(gw, key, {"model": EMBED, "input": [1, 2, 3]})
        assert r.headers["x-farebox-guardrails-skipped"] == "tokens=1"
        assert r.headers["x-farebox-cache"] == "hit-exact"  # a hit carries the note too
        r = await post(gw, key, {"model": EMBED, "input": "words"})
        assert "x-farebox-guardrails-skipped" not in r.headers
        assert mock.embedded == [[[1, 2, 3], [4, 5]], "words"]


def test_an_input_with_nothing_to_read_has_no_note() -> None:
    """An empty ``input`` (the schema refuses it first) holds nothing unread: no note; a
    value of another type is ``unknown=1``."""
    assert EmbedInput.of({"input": []}).skipped == ""
    assert EmbedInput.of({}).skipped == ""
    assert EmbedInput.of({"input": 5}).skipped == "unknown=1"
    assert EmbedInput.of({"input": ["a", {}, [1]]}).skipped == "tokens=1,unknown=1"


async def test_flag_forwards_as_it_was_and_records(make_gateway: Any) -> None:
    mock = EmbedMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="flag")
        text = f"{INJECTION} Mail {EMAIL}, key {AWS_KEY}"
        await sdk(gw, key).embeddings.create(model=EMBED, input=[text])
        assert mock.embedded == [[text]]
        (entry,) = await gw.ledger("acme")
        assert entry.status == "ok"
        assert {(f["detector"], f["action"]) for f in entry.guardrails} == {
            ("injection_rules", "flagged"), ("pii", "flagged"), ("secrets", "flagged")}  # fmt: skip


async def test_injection_follows_the_plans_scan_parts(make_gateway: Any) -> None:
    mock = EmbedMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="system_only")  # reads system prompts only
        r = await post(gw, key, {"model": EMBED, "input": INJECTION})
        assert r.status_code == 200, r.text
        assert mock.embedded == [INJECTION]
        assert (await gw.ledger("acme"))[0].guardrails == []


async def test_stuffing_is_judged_string_by_string(make_gateway: Any) -> None:
    mock = EmbedMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="stuffing")
        docs = [f"Product {i % 10}: a sturdy oak table with four legs, seats {i % 8 + 2}, "
                "natural oak finish." for i in range(120)]  # fmt: skip
        joined = abuse.stuffing_hit("\n".join(docs), AbusePolicy(stuffing="block"))
        assert joined is not None  # read as one text, the batch would look like padding
        for _ in range(3):  # a batch of similar documents, again and again: no batch check
            r = await post(gw, key, {"model": EMBED, "input": docs})
            assert r.status_code == 200, r.text
        r = await post(gw, key, {"model": EMBED, "input": ["ok", "pad " * 2000]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "abuse_detected"
        assert len(mock.embedded) == 3
        assert [e.status for e in await gw.ledger("acme")] == ["ok"] * 3 + ["blocked"]


async def test_past_the_scan_limit_redact_refuses_and_flag_flags(make_gateway: Any) -> None:
    mock = EmbedMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        items = [f"document {i} " + "x" * 100 for i in range(60)]  # 60 * 112 > 4096
        key = await gw.tenant_key("acme", plan="small")
        r = await post(gw, key, {"model": EMBED, "input": items})
        assert r.status_code == 400 and r.json()["error"]["code"] == "guardrail_scan_limit"
        assert mock.embedded == []
        key = await gw.tenant_key("beta", plan="small_flag")
        r = await post(gw, key, {"model": EMBED, "input": items})
        assert r.status_code == 200, r.text
        (entry,) = await gw.ledger("beta")
        assert [(f["category"], f["action"]) for f in entry.guardrails] == [
            ("scan_limit", "flagged")]  # fmt: skip


async def test_a_plan_without_guardrails_does_not_enter_the_stage(make_gateway: Any) -> None:
    mock = EmbedMock()
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        stage = gw.app.state.services.gateway.guardrails

        async def refuse(call: Any) -> None:
            raise AssertionError("screened")

        stage.screen_embed = refuse
        key = await gw.tenant_key("acme", plan="plain")
        r = await post(gw, key, {"model": EMBED, "input": f"key {AWS_KEY}"})
        assert r.status_code == 200, r.text
        assert mock.embedded == [f"key {AWS_KEY}"]
        (entry,) = await gw.ledger("acme")
        assert entry.guardrails == [] and "x-farebox-guardrails-skipped" not in r.headers


async def test_findings_reach_the_metrics_and_the_signed_webhook(tmp_path: Path) -> None:
    plans = {"guarded": plan({**REDACT, "secrets": {"mode": "block"}})}
    async with hook_receiver(2) as (got, both, hook), running(tmp_path, plans=plans, **hook) as gw:
        _, key = await gw.setup("acme", plan="guarded")
        client = openai.AsyncOpenAI(api_key=key, base_url="http://gateway/v1",
                                    http_client=asgi(gw), max_retries=0)  # fmt: skip
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model=EMBED, input=f"key {AWS_KEY}")
        await client.embeddings.create(model=EMBED, input=[f"I am {EMAIL}"])
        await asyncio.wait_for(both.wait(), 10)
        metrics = (await gw.client.get("/metrics")).text
        rows = await gw.client.get("/admin/v1/guardrails/findings?tenant=acme", headers=gw.admin)
    assert ('farebox_guardrail_findings_total{action="blocked",category="aws_access_key",'
            'detector="secrets"} 1.0') in metrics  # fmt: skip
    assert ('farebox_guardrail_findings_total{action="redacted",category="EMAIL_ADDRESS",'
            'detector="pii"} 1.0') in metrics  # fmt: skip
    events = [orjson.loads(body) for _, body in got]
    assert sorted(e["type"] for e in events) == ["guardrail.blocked", "guardrail.flagged"]
    assert all(signed_by_secret(header, body) for header, body in got)
    assert sorted(r["status"] for r in rows.json()["data"]) == ["blocked", "ok"]
    for text in (rows.text, *(b.decode() for _, b in got)):
        assert EMAIL not in text and AWS_KEY not in text


# any body: never a 5xx, never a value upstream, every request accounted --------------------
FILLER = st.text(alphabet="abc xyz019.,:-", max_size=20)
SENTINEL = st.sampled_from([EMAIL, AWS_KEY, INJECTION, "pad " * 600])
TEXT = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, s, b: f"{a} {s} {b}", FILLER, SENTINEL, FILLER),
    st.sampled_from(["\ud800", f"{EMAIL}\udfff", "", "<EMAIL_1>"]),
)
TOKENS = st.lists(st.integers(-3, 200_000), max_size=5)
JUNK = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | TEXT,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),  # fmt: skip
    max_leaves=8,
)
INPUT = st.one_of(TEXT, st.lists(TEXT, max_size=6), TOKENS, st.lists(TOKENS, max_size=4),
                  st.lists(st.one_of(TEXT, TOKENS, JUNK), max_size=5), JUNK)  # fmt: skip
BODY = st.fixed_dictionaries(
    {"model": st.sampled_from([EMBED, EMBED, "no-such-model"]), "input": INPUT},
    optional={"encoding_format": st.sampled_from(["float", "base64", "hex"]),
              "dimensions": st.integers(-1, 5000), "user": TEXT},
)  # fmt: skip
CODES = {"secret_detected", "pii_detected", "prompt_injection_detected", "abuse_detected",
         "guardrail_scan_limit"}  # fmt: skip
SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
           HealthCheck.data_too_large, HealthCheck.large_base_example]  # fmt: skip


def raw(body: dict[str, Any]) -> bytes:
    """JSON with lone surrogates as ``\\udXXX`` escapes (what a client may send)."""
    return json.dumps(body, ensure_ascii=True).encode()


@settings(max_examples=30, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=SLOW_OK)  # fmt: skip
@given(st.lists(BODY, min_size=1, max_size=5), st.booleans())
async def test_any_embeddings_body_is_answered_and_accounted(
    make_gateway: Any, bodies: list[dict[str, Any]], invalid_utf8: bool
) -> None:
    mock = EmbedMock()
    tenant = f"t{next(TENANTS)}"
    async with make_gateway(config(PLANS), providers={"sim": mock}) as gw:
        key = await gw.tenant_key(tenant, plan="mixed")
        auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        sent = [raw(b) for b in bodies] + ([b'{"model": "x", "input": "\xff\xfe"}'] * invalid_utf8)
        served = blocked = 0
        for content in sent:
            r = await gw.client.post(PATH, content=content, headers=auth)
            assert r.status_code < 500, r.text[:500]
            if r.status_code == 200:
                served += 1
            elif r.json()["error"]["code"] in CODES:
                blocked += 1
        await gw.app.state.services.gateway.cache.settled()
        upstream = repr(mock.embedded)
        assert EMAIL not in upstream and AWS_KEY not in upstream
        entries = await gw.ledger(tenant)
        statuses = sorted(e.status for e in entries if e.status != HIT_STATUS)
        hits = sum(e.status == HIT_STATUS for e in entries)
        assert statuses == sorted(["blocked"] * blocked + ["ok"] * (served - hits))
        assert all(e.cost == 0 and e.revenue == 0 for e in entries if e.status == "blocked")
        me = (await gw.client.get("/v1/me", headers=auth)).json()
        assert me["budgets"][0]["reserved_usd"] == "0.00"

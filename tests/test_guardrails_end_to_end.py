"""Issue 15, acceptance 3 end to end: requests screened by the real stage, sent with the
official ``openai`` SDK, show their findings in the ledger, in the admin findings API and in
the signed webhook, and none of them carries the matched text."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.guard_world import INJECTION
from tests.test_guardrail_findings import hook_receiver, running, signed_by_secret

EMAIL = "ana.lopez@example.com"
PLANS = {
    "guarded": {
        "models": ["*"],
        "guardrails": {
            "prompt_injection": {"mode": "block"},
            "pii": {"mode": "redact", "restore": True, "engine": "builtin"},
        },
    }
}


async def test_findings_reach_the_ledger_the_api_and_the_signed_webhook(tmp_path: Path) -> None:
    async with (
        hook_receiver(2) as (got, both, hook),
        running(tmp_path, plans=PLANS, **hook) as gw,
    ):
        _, key = await gw.setup("acme", plan="guarded")
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=gw.app))
        oai = openai.AsyncOpenAI(api_key=key, base_url="http://gateway/v1",
                                 http_client=http, max_retries=0)  # fmt: skip
        with pytest.raises(openai.BadRequestError) as caught:
            await oai.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": INJECTION}]
            )
        assert caught.value.code == "prompt_injection_detected"
        answer = await oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"I am {EMAIL}"}]
        )
        assert answer.choices[0].message.content is not None
        await asyncio.wait_for(both.wait(), 10)
        rows = await gw.client.get("/admin/v1/guardrails/findings?tenant=acme",
                                   headers=gw.admin)  # fmt: skip
        only_pii = await gw.client.get("/admin/v1/guardrails/findings?detector=pii",
                                       headers=gw.admin)  # fmt: skip
        ledger = await gw.client.get("/admin/v1/requests?tenant=acme", headers=gw.admin)
        await http.aclose()
    assert rows.status_code == 200, rows.text
    found = {r["status"]: r["findings"] for r in rows.json()["data"]}
    assert found["blocked"][0]["category"] == "instruction_override"
    (pii,) = found["ok"]
    kept = ("detector", "category", "action", "where")
    assert [pii[k] for k in kept] == ["pii", "EMAIL_ADDRESS", "redacted", "user"]
    assert 0 < pii["score"] <= 1
    assert [r["status"] for r in only_pii.json()["data"]] == ["ok"]
    statuses = sorted(r["status"] for r in ledger.json()["data"])
    assert statuses == ["blocked", "ok"]
    events = [orjson.loads(body) for _, body in got]
    assert sorted(e["type"] for e in events) == ["guardrail.blocked", "guardrail.flagged"]
    for header, body in got:
        assert signed_by_secret(header, body)
    for text in (rows.text, only_pii.text, ledger.text, *(b.decode() for _, b in got)):
        assert EMAIL not in text and "ignore all previous" not in text.lower()


async def test_images_and_audio_are_skipped_with_a_note(make_gateway: object) -> None:

    from tests.guard_world import MODEL, EchoMock, config

    mock = EchoMock()
    gateway: Any = make_gateway
    async with gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="block")
        content = [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]
        body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
        r = await gw.client.post("/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert r.status_code == 200, r.text
        assert r.headers["x-farebox-guardrails-skipped"] == "image_url=2,input_audio=1"
        sent = mock.bodies[-1]["messages"][0]["content"]
        assert [p["type"] for p in sent] == ["text", "image_url", "input_audio", "image_url"]
        plain = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}]}
        r = await gw.client.post("/v1/chat/completions", json=plain,
                                 headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert "x-farebox-guardrails-skipped" not in r.headers


async def test_a_cache_hit_carries_the_skipped_parts_note(make_gateway: Any) -> None:
    """A chat answer served from the cache says which parts no check read, like a miss."""
    from tests.guard_world import MODEL, EchoMock, config

    mock = EchoMock()
    gateway: Any = make_gateway
    async with gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached_block")
        content = [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        ]
        body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
        auth = {"Authorization": f"Bearer {key}"}
        statuses = []
        for _ in range(2):
            r = await gw.client.post("/v1/chat/completions", json=body, headers=auth)
            assert r.status_code == 200, r.text
            statuses.append(r.headers["x-farebox-cache"])
            assert r.headers["x-farebox-guardrails-skipped"] == "image_url=1"
            await gw.app.state.services.gateway.cache.settled()  # the miss is stored
        assert statuses == ["miss", "hit-exact"] and len(mock.bodies) == 1

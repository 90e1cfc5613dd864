from __future__ import annotations

from typing import Any


async def test_chat_roundtrip_records_exact_cost(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        r = await gw.client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert r.status_code == 200, r.text
        entries = await gw.ledger("acme")
        assert len(entries) == 1
        usage = r.json()["usage"]
        expected = usage["prompt_tokens"] * 150_000 + usage["completion_tokens"] * 600_000
        assert entries[0].cost == expected
        assert r.headers["x-farebox-request-id"] == entries[0].request_id

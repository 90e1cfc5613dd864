from __future__ import annotations

import asyncio
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


async def test_the_data_plane_counts_requests_in_flight_back_to_zero(make_gateway: Any) -> None:
    """The count that lets a request served alone commit its own ledger entry at once: every
    kind of ending (success, stream, refusal, bad input, concurrency) gives its place back."""
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        auth = {"Authorization": f"Bearer {key}"}
        in_flight = gw.app.in_flight
        assert in_flight.count == 0
        sent = [
            await gw.client.post("/v1/chat/completions", json=chat, headers=auth),
            await gw.client.post(
                "/v1/chat/completions", json={**chat, "stream": True}, headers=auth
            ),
            await gw.client.post("/v1/chat/completions", json=chat),  # no key
            await gw.client.post("/v1/chat/completions", content=b"{oops", headers=auth),
            await gw.client.get("/v1/chat/completions", headers=auth),  # wrong method
        ]
        assert [r.status_code for r in sent] == [200, 200, 401, 400, 405]
        assert in_flight.count == 0

        many = await asyncio.gather(
            *(gw.client.post("/v1/chat/completions", json=chat, headers=auth) for _ in range(20))
        )
        assert {r.status_code for r in many} == {200}
        assert in_flight.count == 0
        assert len(await gw.ledger("acme")) == 22  # two alone, twenty together: all recorded

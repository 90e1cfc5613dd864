from __future__ import annotations

import asyncio
from typing import Any

from fakes import openai_upstream as oa


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


async def test_a_request_alone_commits_at_once_and_load_shares_commits(make_gateway: Any) -> None:
    """The data plane counts its requests in flight. A request served alone commits its own
    ledger entry at once (``append_ledger_now``); with others in flight, entries go through
    the writer's group commit. Every kind of ending gives its place in the count back."""
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    async with oa.OpenAIUpstream() as up:  # a loopback upstream: requests really overlap
        config = {
            "providers": {"up": {"kind": "openai", "base_url": up.base_url, "api_key": "env:K"}},
            "models": {"gpt-4o-mini": [{"provider": "up", "model": "gpt-4o-mini"}]},
        }
        async with make_gateway(config, env={"K": "sk-up"}) as gw:
            key = await gw.tenant_key("acme")
            auth = {"Authorization": f"Bearer {key}"}
            in_flight, store = gw.app.in_flight, gw.store
            seen: list[tuple[str, int]] = []  # (path, requests in flight) per ledger write
            at_once, queued = store.append_ledger_now, store.append_ledger

            def spy_now(entries: Any) -> bool:
                seen.append(("at once", in_flight.count))
                return bool(at_once(entries))

            async def spy_queued(entries: Any) -> None:
                seen.append(("queued", in_flight.count))
                await queued(entries)

            store.append_ledger_now, store.append_ledger = spy_now, spy_queued
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
            assert seen == [("at once", 1), ("at once", 1)]
            assert in_flight.count == 0
            seen.clear()
            many = await asyncio.gather(
                *(
                    gw.client.post("/v1/chat/completions", json=chat, headers=auth)
                    for _ in range(20)
                )
            )
            assert {r.status_code for r in many} == {200}
            assert in_flight.count == 0
            assert seen[0] == ("queued", seen[0][1]) and seen[0][1] > 1  # under load
            assert all(n <= 1 for path, n in seen if path == "at once")
            assert len(await gw.ledger("acme")) == 22  # every request recorded, once

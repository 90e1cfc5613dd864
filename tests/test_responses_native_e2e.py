"""Issue [10] on loopback: the real ``farebox serve`` process with a ``responses: native``
deployment, its upstream a loopback fake speaking the Responses wire format, and the official
``openai`` SDK as the client (``test_responses_native.py`` covers the rest in process)."""

from __future__ import annotations

from pathlib import Path

import openai

from fakes.responses_upstream import ResponsesUpstream, message, reasoning, usage
from tests.e2e import create_tenant_key, db_path, ledger_row, serve, usd_to_pico, write_config

# gpt-4o-mini list prices, pico-USD per token: input, cached input, output
IN, CACHED, OUT = 150_000, 75_000, 600_000


async def test_native_deployment_over_loopback(tmp_path: Path) -> None:
    async with ResponsesUpstream() as up:
        native = {"kind": "openai", "base_url": up.base_url, "responses": "native"}
        config = write_config(tmp_path, providers={"native": native},
                              models={"gpt-4o-mini": [{"provider": "native",
                                                       "model": "gpt-4o-mini"}]})  # fmt: skip
        with serve(config, cwd=tmp_path) as server:
            key = create_tenant_key(server.base_url, "acme", "pro")
            client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key=key,
                                        max_retries=0, timeout=20.0)  # fmt: skip
            up.reply_response([reasoning(), message("Hi Ada.")],
                              usage=usage(50, 8, cached=20, reasoning=3))  # fmt: skip
            raw = await client.responses.with_raw_response.create(
                model="gpt-4o-mini", input="I am Ada."
            )
            first = raw.parse()
            row = ledger_row(db_path(tmp_path), raw.headers["x-farebox-request-id"])
            cost = usd_to_pico(raw.headers["x-farebox-cost-usd"])
            assert cost == row["cost"] == 30 * IN + 20 * CACHED + 8 * OUT
            assert [i.type for i in first.output] == ["reasoning", "message"]
            assert row["endpoint"] == "responses" and row["reasoning_tokens"] == 3

            up.reply_events([message("You are ", "Ada.")], usage=usage(70, 4))
            stream = await client.responses.create(
                model="gpt-4o-mini", input="Who am I?", previous_response_id=first.id, stream=True
            )
            got = [event async for event in stream]
            await client.close()
        sent = up.last.json
        assert sent["store"] is False and "previous_response_id" not in sent
        assert [i.get("role") for i in sent["input"]] == ["user", "assistant", "user"]
        final = got[-1].response
        assert got[-1].type == "response.completed" and final.output_text == "You are Ada."
        assert final.previous_response_id == first.id and final.usage is not None
        assert usd_to_pico(final.usage.model_extra["farebox_cost_usd"]) == 70 * IN + 4 * OUT

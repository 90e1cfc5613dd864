"""Issue [10], acceptance 2: the OpenAI Agents SDK (``openai-agents``, tracing off) runs a
tool-using agent through Farebox to a final answer, over the Responses API, against the
built-in mock. Skipped where ``openai-agents`` is not installed (it is not a dependency)."""

from __future__ import annotations

from typing import Any

import httpx2
import openai
import pytest

agents = pytest.importorskip("agents")


async def test_a_tool_using_agent_reaches_a_final_answer(make_gateway: Any) -> None:
    agents.set_tracing_disabled(True)
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"Sunny in {city}"

    async with make_gateway({"plans": {"pro": {"models": ["*"]}}}) as gw:
        key = await gw.tenant_key("acme", plan="pro")
        http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=gw.app))
        client = openai.AsyncOpenAI(
            api_key=key, base_url="http://gateway/v1", http_client=http, max_retries=0
        )
        model = agents.OpenAIResponsesModel(model="gpt-4o-mini", openai_client=client)
        agent = agents.Agent(
            name="weather", instructions="Use the tool.", tools=[get_weather], model=model
        )
        result = await agents.Runner.run(agent, "What is the weather in Oslo?")
        assert calls == ["mock"]  # the mock fills required arguments with "mock"
        assert isinstance(result.final_output, str) and result.final_output
        streamed = agents.Runner.run_streamed(agent, "And in Bergen?")
        async for _ in streamed.stream_events():
            pass
        assert isinstance(streamed.final_output, str) and streamed.final_output
        assert len(calls) == 2
        rows = await gw.ledger("acme")
        assert len(rows) == 4 and {r.endpoint for r in rows} == {"responses"}
        assert all(r.status == "ok" and r.cost > 0 for r in rows)

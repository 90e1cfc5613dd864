"""Issue [10], acceptance 1 and 4 on loopback: the official ``openai`` SDK's
``client.responses`` against the real ``farebox serve`` process and its built-in mock."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.e2e import gpt_4o_mini_cost, ledger_row, usd_to_pico
from tests.sdk_gateway import SdkGateway, sdk_gateway

TOOL = {
    "type": "function",
    "name": "lookup",
    "description": "Look an order up",
    "parameters": {"type": "object", "properties": {"id": {"type": "string"}}},
    "strict": False,
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkGateway]:
    plans = {
        "pro": {"models": ["*"]},
        "tiny": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "0.000001"}]},
    }
    tmp = tmp_path_factory.mktemp("e2e_responses")
    with sdk_gateway(tmp, {"pro": "acme", "tiny": "tiny"}, plans) as env:
        yield env


def test_plain_response_cost_header_is_list_price_of_usage(gw: SdkGateway) -> None:
    with gw.client(gw.keys["pro"]) as client:
        raw = client.responses.with_raw_response.create(
            model="gpt-4o-mini", input="Say hello over loopback.", max_output_tokens=40
        )
        response = raw.parse()
    assert response.status in ("completed", "incomplete") and response.output_text
    usage = response.usage
    assert usage is not None and usage.output_tokens <= 40
    row = ledger_row(gw.db, raw.headers["x-farebox-request-id"])
    assert row["endpoint"] == "responses" and row["status"] == "ok"
    assert (row["input_tokens"], row["output_tokens"]) == (usage.input_tokens, usage.output_tokens)
    cost = usd_to_pico(raw.headers["x-farebox-cost-usd"])
    assert cost == row["cost"] == gpt_4o_mini_cost(usage.input_tokens, usage.output_tokens)


def test_streamed_response_ends_with_completed_and_its_cost(gw: SdkGateway) -> None:
    with gw.client(gw.keys["pro"]) as client:
        raw = client.responses.with_raw_response.create(
            model="gpt-4o-mini", input="Stream over loopback.", stream=True
        )
        events = list(raw.parse())
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final: Any = events[-1]
    row = ledger_row(gw.db, raw.headers["x-farebox-request-id"])
    assert row["stream"] and row["status"] == "ok" and row["endpoint"] == "responses"
    assert usd_to_pico(final.response.usage.model_extra["farebox_cost_usd"]) == row["cost"]
    assert final.response.usage.output_tokens == row["output_tokens"]


def test_function_call_output_round_trip(gw: SdkGateway) -> None:
    with gw.client(gw.keys["pro"]) as client:
        first = client.responses.create(
            model="gpt-4o-mini", input="Find order 7", tools=[TOOL], tool_choice="required"
        )
        call = next(item for item in first.output if item.type == "function_call")
        second = client.responses.create(
            model="gpt-4o-mini",
            tools=[TOOL],
            input=[
                {"role": "user", "content": "Find order 7"},
                call.model_dump(exclude_none=True),
                {"type": "function_call_output", "call_id": call.call_id, "output": "shipped"},
            ],
        )
    assert second.status == "completed" and second.output_text


def test_budget_refusal_reaches_the_sdk_as_rate_limit_error(gw: SdkGateway) -> None:
    with gw.client(gw.keys["tiny"]) as client, pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=50)
    assert caught.value.code == "budget_exceeded"
    body = caught.value.body
    assert isinstance(body, dict) and body["limit_usd"] and "Budget exceeded" in body["message"]


def test_previous_response_id_chain_and_isolation_over_loopback(gw: SdkGateway) -> None:
    with gw.client(gw.keys["pro"]) as client, gw.client(gw.keys["tiny"]) as other:
        first = client.responses.create(model="gpt-4o-mini", input="My name is Ann.")
        stream = client.responses.create(
            model="gpt-4o-mini", input="And the weather?", previous_response_id=first.id,
            stream=True,
        )  # fmt: skip
        second = [event for event in stream][-1].response
        assert second.status == "completed" and second.previous_response_id == first.id
        third = client.responses.create(
            model="gpt-4o-mini", input="My name?", previous_response_id=second.id
        )
        tokens = [ledger_row(gw.db, "req_" + r.id.removeprefix("resp_"))["input_tokens"]
                  for r in (first, second, third)]  # fmt: skip
        assert tokens[0] < tokens[1] < tokens[2]
        items = client.responses.input_items.list(third.id, order="asc").data
        assert [getattr(i, "role", None) for i in items] == ["user", "assistant"] * 2 + ["user"]
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(third.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.create(model="gpt-4o-mini", input="x", previous_response_id=third.id)
        unstored = client.responses.create(model="gpt-4o-mini", input="Hi", store=False)
        with pytest.raises(openai.NotFoundError):
            client.responses.create(
                model="gpt-4o-mini", input="x", previous_response_id=unstored.id
            )
        client.responses.delete(third.id)
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(third.id)

"""End to end with the official ``openai`` SDK against the real ``farebox serve`` process."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.e2e import (
    admin_headers,
    create_tenant_key,
    gpt_4o_mini_cost,
    ledger_row,
    ledger_rows,
    usd_to_pico,
)
from tests.sdk_gateway import SdkGateway, sdk_gateway

MESSAGES = [{"role": "user", "content": "Say hello to the end-to-end test."}]
EMBEDDING_INPUT_PICO = 20_000  # text-embedding-3-small: USD 0.02 per 1M tokens


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkGateway]:
    with sdk_gateway(tmp_path_factory.mktemp("e2e_sdk"), {"pro": "acme", "free": "tiny"}) as env:
        yield env


def test_chat_non_streamed_headers_match_ledger(gw: SdkGateway) -> None:
    with gw.client(gw.keys["pro"]) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES
        )
        completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    request_id = raw.headers["x-farebox-request-id"]
    assert raw.headers["x-farebox-model"] == "gpt-4o-mini"
    row = ledger_row(gw.db, request_id)
    assert row["tenant_id"] == "acme"
    assert row["status"] == "ok"
    assert row["input_tokens"] == completion.usage.prompt_tokens
    assert row["output_tokens"] == completion.usage.completion_tokens
    assert row["cost"] == gpt_4o_mini_cost(row["input_tokens"], row["output_tokens"])
    assert usd_to_pico(raw.headers["x-farebox-cost-usd"]) == row["cost"]


def test_stream_with_include_usage_reports_ledger_cost(gw: SdkGateway) -> None:
    with gw.client(gw.keys["pro"]) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        with raw.parse() as stream:
            chunks = list(stream)
    request_id = raw.headers["x-farebox-request-id"]
    assert "x-farebox-cost-usd" not in raw.headers  # a stream's headers leave before its cost
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    last = chunks[-1]
    assert last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    extra = last.usage.model_extra or {}
    assert "farebox_cost_usd" in extra, last.usage
    row = ledger_row(gw.db, request_id)
    assert row["stream"] == 1
    assert row["status"] == "ok"
    assert row["input_tokens"] == last.usage.prompt_tokens
    assert row["output_tokens"] == last.usage.completion_tokens
    assert row["cost"] == gpt_4o_mini_cost(row["input_tokens"], row["output_tokens"])
    assert usd_to_pico(str(extra["farebox_cost_usd"])) == row["cost"]


def test_stream_without_include_usage_strips_usage_but_meters_exactly(gw: SdkGateway) -> None:
    with gw.client(gw.keys["pro"]) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        with raw.parse() as stream:
            chunks = list(stream)
    assert chunks
    assert all(c.usage is None for c in chunks), [c.usage for c in chunks]
    assert all("farebox_cost_usd" not in (c.model_extra or {}) for c in chunks)
    words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert words
    row = ledger_row(gw.db, raw.headers["x-farebox-request-id"])
    assert row["status"] == "ok"
    assert row["usage_source"] == "provider"  # the gateway asked upstream for usage itself
    assert row["input_tokens"] > 0
    assert row["output_tokens"] > 0
    assert row["cost"] == gpt_4o_mini_cost(row["input_tokens"], row["output_tokens"])


def test_embeddings(gw: SdkGateway) -> None:
    with gw.client(gw.keys["pro"]) as client:
        raw = client.embeddings.with_raw_response.create(
            model="text-embedding-3-small", input=["first text", "second text"]
        )
        result = raw.parse()
    assert [d.index for d in result.data] == [0, 1]
    for item in result.data:
        assert len(item.embedding) == 1536
        assert math.isclose(math.fsum(v * v for v in item.embedding), 1.0, rel_tol=1e-3)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens
    row = ledger_row(gw.db, raw.headers["x-farebox-request-id"])
    assert row["input_tokens"] == result.usage.prompt_tokens
    assert row["output_tokens"] == 0
    assert row["cost"] == row["input_tokens"] * EMBEDDING_INPUT_PICO
    assert usd_to_pico(raw.headers["x-farebox-cost-usd"]) == row["cost"]


def test_models_list_is_filtered_by_plan(gw: SdkGateway) -> None:
    with gw.client(gw.keys["free"]) as client:
        raw = client.models.with_raw_response.list()
        free = {m.id for m in raw.parse()}
    assert raw.headers["x-farebox-request-id"]
    with gw.client(gw.keys["pro"]) as client:
        pro = {m.id for m in client.models.list()}
    assert free == {"gpt-4o-mini"}
    assert {
        "gpt-4o-mini",
        "gpt-4o",
        "o4-mini",
        "text-embedding-3-small",
        "claude-sonnet-4-5",
    } <= pro
    assert free < pro


def test_disallowed_model_raises_permission_denied(gw: SdkGateway) -> None:
    before = len(ledger_rows(gw.db, "tenant_id = ?", ("tiny",)))
    with (
        gw.client(gw.keys["free"]) as client,
        pytest.raises(openai.PermissionDeniedError) as caught,
    ):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    error = caught.value
    assert error.status_code == 403
    assert error.code == "model_not_allowed"
    assert error.response.headers.get("x-farebox-request-id")
    assert len(ledger_rows(gw.db, "tenant_id = ?", ("tiny",))) == before  # nothing was billed


def test_unknown_model_raises_not_found(gw: SdkGateway) -> None:
    with gw.client(gw.keys["pro"]) as client, pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model-xyz", messages=MESSAGES)
    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"


def test_bad_key_raises_authentication_error(gw: SdkGateway) -> None:
    with (
        gw.client("fbx_not_a_real_key") as client,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        client.models.list()
    assert caught.value.status_code == 401


def test_usage_endpoint_matches_ledger(gw: SdkGateway) -> None:
    key = create_tenant_key(gw.server.base_url, "usage-check", "pro")
    with gw.client(key) as client:
        for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4o"):
            client.chat.completions.create(model=model, messages=MESSAGES)
    rows = ledger_rows(gw.db, "tenant_id = ?", ("usage-check",))
    assert len(rows) == 3
    with httpx.Client(base_url=gw.server.base_url, headers=admin_headers(), timeout=10.0) as admin:
        r = admin.get("/admin/v1/usage", params={"tenant": "usage-check", "group_by": "model"})
    assert r.status_code == 200, r.text
    by_model = {row["model"]: row for row in r.json()["data"]}
    assert set(by_model) == {"gpt-4o-mini", "gpt-4o"}
    for model, usage in by_model.items():
        mine = [row for row in rows if row["model_served"] == model]
        assert usage["requests"] == len(mine)
        assert usage["input_tokens"] == sum(row["input_tokens"] for row in mine)
        assert usage["output_tokens"] == sum(row["output_tokens"] for row in mine)
        assert usd_to_pico(usage["cost_usd"]) == sum(row["cost"] for row in mine)

"""Issue [10], acceptance 5, end to end: the real ``farebox serve`` process on loopback, the
official SDKs as clients.

- ``openai`` ``client.completions.create``, streamed and not: one ledger row each, the cost
  header (or the stream's ``farebox_cost_usd``) equal to the list price of the usage;
- ``anthropic`` ``client.messages.count_tokens``, forwarded to an Anthropic deployment (a
  loopback fake speaking the real wire format) and estimated for the mock: a count, and no
  ledger row; each count takes a request of the key's requests-per-minute limit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from fakes.anthropic_upstream import AnthropicUpstream
from tests.e2e import (
    ADMIN_KEY,
    child_env,
    create_tenant_key,
    db_path,
    free_port,
    gpt_4o_mini_cost,
    ledger_row,
    ledger_rows,
    running,
    usd_to_pico,
    write_config,
)

PROMPT = "Say hello to the end-to-end test."


def _config(tmp: Path, claude: AnthropicUpstream) -> Path:
    return write_config(
        tmp,
        providers={
            "sim": {"kind": "mock", "seed": 7, "latency_ms": 0},
            "claude": {
                "kind": "anthropic",
                "base_url": claude.base_url,
                "api_key": "env:CLAUDE_E2E_KEY",
            },
        },  # fmt: skip
        models={
            "gpt-4o-mini": [{"provider": "sim", "model": "gpt-4o-mini"}],
            "smart": [{"provider": "claude", "model": "claude-sonnet-4-5"}],
        },
        plans={
            "pro": {"models": ["*"]},
            "tight": {"models": ["*"], "rate_limits": [{"scope": "key", "requests_per_minute": 2}]},
        },
    )


async def test_completions_and_count_tokens_on_a_real_server(tmp_path: Path) -> None:
    async with AnthropicUpstream() as claude:
        port = free_port()
        args = ["serve", "--config", str(_config(tmp_path, claude)), "--host", "127.0.0.1",
                "--port", str(port)]  # fmt: skip
        env = child_env(ADMIN_KEY, CLAUDE_E2E_KEY="sk-ant-e2e")
        with running(args, cwd=tmp_path, env=env, port=port) as server:
            key = create_tenant_key(server.base_url, "acme", "pro")
            db = db_path(tmp_path)
            await _completions(server.base_url, key, db)
            before = len(ledger_rows(db))
            await _count_tokens(server.base_url, key, claude)
            assert len(ledger_rows(db)) == before == 2
            tight = create_tenant_key(server.base_url, "tight", "tight")
            await _counts_take_requests(server.base_url, tight)
            assert len(ledger_rows(db)) == 2  # the counts left no row, the refusal none


async def _completions(base_url: str, key: str, db: Path) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=20.0
    ) as client:
        raw = await client.completions.with_raw_response.create(
            model="gpt-4o-mini", prompt=PROMPT, max_tokens=40
        )
        completion = raw.parse()
        assert completion.object == "text_completion" and completion.choices[0].text
        assert completion.usage is not None
        row = ledger_row(db, raw.headers["x-farebox-request-id"])
        assert row["endpoint"] == "completions" and row["status"] == "ok"
        assert row["input_tokens"] == completion.usage.prompt_tokens
        assert row["output_tokens"] == completion.usage.completion_tokens
        cost = gpt_4o_mini_cost(completion.usage.prompt_tokens, completion.usage.completion_tokens)
        assert usd_to_pico(raw.headers["x-farebox-cost-usd"]) == row["cost"] == cost

        streamed = await client.completions.with_raw_response.create(
            model="gpt-4o-mini", prompt=PROMPT, stream=True,
            stream_options={"include_usage": True},
        )  # fmt: skip
        chunks: list[Any] = [chunk async for chunk in streamed.parse()]
        assert "".join(c.choices[0].text for c in chunks if c.choices)
        usage = chunks[-1].usage
        assert usage is not None
        row = ledger_row(db, streamed.headers["x-farebox-request-id"])
        assert row["stream"] == 1 and row["endpoint"] == "completions"
        assert row["cost"] == gpt_4o_mini_cost(usage.prompt_tokens, usage.completion_tokens)
        assert usd_to_pico(str((usage.model_extra or {})["farebox_cost_usd"])) == row["cost"]


async def _count_tokens(base_url: str, key: str, claude: AnthropicUpstream) -> None:
    messages: Any = [{"role": "user", "content": PROMPT}]
    async with anthropic.AsyncAnthropic(
        base_url=base_url, api_key=key, max_retries=0, timeout=20.0
    ) as client:
        claude.reply_count(1234)
        forwarded = await client.messages.count_tokens(model="smart", messages=messages)
        assert forwarded.input_tokens == 1234
        assert claude.last.path == "/v1/messages/count_tokens"
        assert claude.last.headers["x-api-key"] == "sk-ant-e2e"
        local = await client.messages.count_tokens(model="gpt-4o-mini", messages=messages)
        assert local.input_tokens > 0
        assert claude.calls == 1


async def _counts_take_requests(base_url: str, key: str) -> None:
    """Two counts use the key's two requests a minute: the next request is refused."""
    messages: Any = [{"role": "user", "content": PROMPT}]
    async with anthropic.AsyncAnthropic(
        base_url=base_url, api_key=key, max_retries=0, timeout=20.0
    ) as client:
        for model in ("smart", "gpt-4o-mini"):
            await client.messages.count_tokens(model=model, messages=messages)
        with pytest.raises(anthropic.RateLimitError) as limited:
            await client.messages.create(model="gpt-4o-mini", max_tokens=8, messages=messages)
        assert limited.value.response.headers["x-ratelimit-remaining-requests"] == "0"

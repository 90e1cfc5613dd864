"""Issue [10]: ``responses.store_before_reply: auto`` (the default) stores an answer before its
last bytes only where other processes share the database.

- A gateway that is its database's only user (single-process SQLite, memory) replies first:
  every continuation of its answers reaches it, and waits there for a write still pending, so
  a chain continued at once, streamed or not, and a ``GET`` at once all find the answer.
- The shared SQLite mode (what ``--workers`` runs) waits for the write: another process may
  be asked to continue it next. So does the replicas' PostgreSQL store (the same rule: not a
  sole user), and ``true``/``false`` are kept as given.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from farebox.api.responses_stored import StoredResponses
from farebox.config.limits import ResponsesSettings
from farebox.config.settings import parse_settings
from farebox.errors import ConfigError
from farebox.gateway.render import Reply
from tests.test_messages_api import _openai
from tests.test_responses_writer import Recording, T, sent

PLANS: dict[str, Any] = {"pro": {"models": ["*"]}}
SINGLE = {"server": {"single_process": True}}
SHARED = {"server": {"single_process": False}}


def test_the_setting_is_a_boolean_or_auto(tmp_path: Any) -> None:
    assert ResponsesSettings().store_before_reply == "auto"
    with pytest.raises(ConfigError) as bad:
        parse_settings({"responses": {"store_before_reply": "sometimes"}}, source="f.yaml",
                       env={}, base_dir=tmp_path)  # fmt: skip
    assert "responses.store_before_reply" in str(bad.value) and "'auto'" in str(bad.value)


@pytest.mark.parametrize(
    ("config", "before"),
    [
        (SINGLE, False),
        ({"database": "memory"}, False),
        (SHARED, True),
        ({**SINGLE, "responses": {"store_before_reply": True}}, True),
        ({**SHARED, "responses": {"store_before_reply": False}}, False),
    ],
    ids=["single-process", "memory", "shared", "single-but-true", "shared-but-false"],
)
async def test_auto_waits_only_where_the_database_is_shared(
    make_gateway: Any, config: dict[str, Any], before: bool
) -> None:
    async with make_gateway({"plans": PLANS, **config}) as gw:
        assert gw.app.state.services.responses.before_reply is before


async def test_a_sole_gateway_continues_its_answers_at_once(make_gateway: Any) -> None:
    async with make_gateway({"plans": PLANS, **SINGLE}) as gw:
        assert gw.app.state.services.responses.before_reply is False
        client = _openai(gw, await gw.tenant_key("acme", plan="pro"))
        answer = await client.responses.create(model="gpt-4o-mini", input="Turn 1.")
        for n in range(2, 6):
            if n % 2:
                stream = await client.responses.create(
                    model="gpt-4o-mini", input=f"Turn {n}.", previous_response_id=answer.id,
                    stream=True,
                )  # fmt: skip
                answer = [event async for event in stream][-1].response
            else:
                answer = await client.responses.create(
                    model="gpt-4o-mini", input=f"Turn {n}.", previous_response_id=answer.id
                )
            assert (await client.responses.retrieve(answer.id)).id == answer.id
        items = await client.responses.input_items.list(answer.id, order="asc")
        said = [i.content[0].text for i in items.data if i.role == "user"]
        assert said == [f"Turn {n}." for n in range(1, 6)]


@pytest.mark.parametrize("sole", [True, False], ids=["sole", "shared"])
async def test_auto_replies_first_only_for_a_sole_user(sole: bool) -> None:
    """With a write held back, ``keep`` returns at once for a sole user (whose readers then
    wait for the write), and waits for it where the database is shared."""
    release = asyncio.Event()
    kept = StoredResponses(Recording(gate=release), ResponsesSettings(), lambda: T, sole_user=sole)
    keeping = asyncio.ensure_future(kept.keep(Reply(sent("resp_1"), {}), "resp_1", "acme", []))
    reader = asyncio.ensure_future(kept.find("acme", "resp_1"))
    for _ in range(3):  # nothing here does I/O: a few turns of the loop run what can run
        await asyncio.sleep(0)
    assert keeping.done() is sole and not reader.done()
    release.set()
    assert (await reader).id == "resp_1"
    await keeping

"""The ``ResponseStore`` contract (``Store.responses``: stored Responses API answers for
``previous_response_id``) on every backend: a round trip that keeps the JSON as it was, a
tenant's answers invisible to every other tenant (as an unknown id), expiry, deletion and
purging."""

from __future__ import annotations

import dataclasses
from typing import Any

from farebox.core.records import StoredResponse
from tests.contracts.backends import EVERY

BACKENDS = EVERY

T0 = 1_793_577_600.25  # 2026-11-02T00:00:00.25Z
DAY = 86_400.0


def stored(rid: str = "resp_1", tenant: str = "acme", created: float = T0, **kw: Any) -> Any:
    values: dict[str, Any] = {
        "id": rid, "tenant_id": tenant, "model": "gpt-4o-mini",
        "input": [{"role": "user", "content": "Hi ☃ \u2028 \"quoted\""},
                  {"type": "function_call_output", "call_id": "c1", "output": "21 C"}],
        "output": [{"id": "msg_1", "type": "message", "role": "assistant",
                    "content": [{"type": "output_text", "text": "Hello", "annotations": []}]}],
        "usage": {"input_tokens": 12, "output_tokens": 3, "total_tokens": 15,
                  "input_tokens_details": {"cached_tokens": 0}},
        "created_at": created, "expires_at": created + 30 * DAY,
        "details": {"status": "completed", "metadata": {"k": "v"}, "instructions": None},
    }  # fmt: skip
    values.update(kw)
    return StoredResponse(**values)


async def test_put_then_get_round_trips_every_field(store: Any) -> None:
    r = store.responses
    kept = stored()
    await r.put(kept)
    assert await r.get("acme", "resp_1", T0 + 1) == kept
    assert await r.get("acme", "resp_unknown", T0 + 1) is None


async def test_another_tenant_sees_nothing_and_cannot_delete(store: Any) -> None:
    r = store.responses
    await r.put(stored("resp_a", "acme"))
    assert await r.get("globex", "resp_a", T0) is None  # exactly like an unknown id
    assert await r.delete("globex", "resp_a") is False
    assert (await r.get("acme", "resp_a", T0)) == stored("resp_a", "acme")


async def test_expired_reads_as_absent(store: Any) -> None:
    r = store.responses
    await r.put(stored(expires_at=T0 + 10))
    assert await r.get("acme", "resp_1", T0 + 9.5) is not None
    assert await r.get("acme", "resp_1", T0 + 10) is None  # at the instant it expires
    assert await r.get("acme", "resp_1", T0 + DAY) is None


async def test_delete_forgets_once(store: Any) -> None:
    r = store.responses
    await r.put(stored("resp_a"))
    await r.put(stored("resp_b"))
    assert await r.delete("acme", "resp_a") is True
    assert await r.get("acme", "resp_a", T0) is None
    assert await r.delete("acme", "resp_a") is False
    assert await r.get("acme", "resp_b", T0) is not None  # the other one stays


async def test_purge_removes_only_the_expired(store: Any) -> None:
    r = store.responses
    await r.put(stored("resp_old", expires_at=T0 + 5))
    await r.put(stored("resp_other", "globex", expires_at=T0 + 5))
    await r.put(stored("resp_new", expires_at=T0 + 50))
    assert await r.purge(T0) == 0
    assert await r.purge(T0 + 5) == 2
    assert await r.get("acme", "resp_new", T0 + 6) is not None
    assert await r.delete("acme", "resp_old") is False  # gone, not only hidden
    assert await r.purge(T0 + 5) == 0


async def test_put_again_replaces(store: Any) -> None:
    r = store.responses
    await r.put(stored())
    again = dataclasses.replace(stored(), output=[], usage={"input_tokens": 1})
    await r.put(again)
    assert await r.get("acme", "resp_1", T0) == again


async def test_what_was_read_is_a_copy(store: Any) -> None:
    r = store.responses
    await r.put(stored())
    found = await r.get("acme", "resp_1", T0)
    assert found is not None
    found.input.append({"role": "user", "content": "changed"})
    found.details["status"] = "changed"
    assert await r.get("acme", "resp_1", T0) == stored()


async def test_text_a_database_refuses_is_still_kept(store: Any) -> None:
    r = store.responses
    odd = [{"role": "user", "content": "nul \x00 here"}]
    await r.put(stored(input=odd))
    found = await r.get("acme", "resp_1", T0)
    assert found is not None and found.input[0]["content"].startswith("nul ")

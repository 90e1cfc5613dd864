"""The ``ResponseStore`` contract for batches (``put_many``, what the batching writer of
stored answers uses) on every backend: each answer of a batch is kept as a ``put`` keeps it,
in order (a later one with the same id replaces an earlier one), each its own tenant's."""

from __future__ import annotations

import dataclasses
from typing import Any

from tests.contracts.backends import EVERY
from tests.contracts.test_response_role import T0, stored

BACKENDS = EVERY


async def test_a_batch_keeps_each_answer_in_order(store: Any) -> None:
    r = store.responses
    first = stored("resp_a")
    again = dataclasses.replace(first, output=[], usage={"input_tokens": 1})
    other = stored("resp_b", "globex", model="gpt-4o")
    await r.put_many([first, other, again])
    assert await r.get("acme", "resp_a", T0) == again  # the later one replaced it
    assert await r.get("globex", "resp_b", T0) == other
    assert await r.get("acme", "resp_b", T0) is None  # another tenant's: as unknown
    await r.put_many([])
    assert await r.get("acme", "resp_a", T0) == again


async def test_a_batch_of_one_is_a_put(store: Any) -> None:
    r = store.responses
    await r.put_many([stored("resp_1")])
    assert await r.get("acme", "resp_1", T0) == stored("resp_1")

"""Issue [12] acceptance 6 (memory per 10,000 cached entries), found by ``bench.cache``: an
entry of the in-process cache should hold about the bytes it counts against its tenant's
``max_bytes`` (``CachedAnswer.size``), not several times more.

What the bench saw: 44 MiB of RSS per 10,000 exact entries whose ``size`` adds up to 7 MB
(716 B each). The cause: the stage stores an OpenAI answer from the bytes its reply made
(``gateway/render.py``: ``orjson.dumps``), and orjson 3.13 returns a ``bytes`` object that keeps
its whole write buffer (at least 4 KiB) however short the JSON is; a copy
(``memoryview(body).tobytes()``) holds only its length. So each entry keeps ~4 KiB alive, and a
tenant's ``max_bytes`` bounds about a seventh of the memory it can take.
"""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import orjson

from tests.cache_attack import PLANS, EchoUpstream, chat_body, echo_config

ENTRIES = 300


def test_orjson_bytes_keep_their_buffer() -> None:
    """The cause, alone: a short ``orjson.dumps`` result holds a buffer of 4 KiB or more."""
    doc = {"choices": [{"message": {"content": "hello " * 80}}]}
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = [orjson.dumps(doc) for _ in range(100)]
        copied = [memoryview(orjson.dumps(doc)).tobytes() for _ in range(100)]
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    per = sum(s.size_diff for s in after.compare_to(before, "filename")) / 200
    assert len(kept[0]) == len(copied[0]) < 600
    assert per > 1500  # (4 KiB + ~0.6 KiB) / 2: the dumps results are the big ones


async def test_a_cached_answer_holds_about_its_counted_size(make_gateway: Any) -> None:
    async with EchoUpstream() as upstream:
        config = {**echo_config(upstream.base_url), "plans": PLANS,
                  "logging": {"access_log": False}}  # fmt: skip
        async with make_gateway(config, env={"ECHO_UPSTREAM_KEY": "sk-echo"}) as gw:
            auth = {"Authorization": f"Bearer {await gw.tenant_key('t', 'exact')}"}
            for n in range(20):  # warm every path once
                await gw.client.post("/v1/chat/completions", json=chat_body(f"w{n}"), headers=auth)
            cache = gw.app.state.services.cache
            held = await cache.usage("t")
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.take_snapshot()
                for n in range(ENTRIES):
                    r = await gw.client.post(
                        "/v1/chat/completions", json=chat_body(f"question {n}"), headers=auth
                    )
                    assert r.headers["x-farebox-cache"] == "miss"
                await cache_settled(cache, held.entries + ENTRIES)
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            now = await cache.usage("t")
    # only what the gateway keeps: the fake upstream records every request it served
    farebox = [tracemalloc.Filter(True, "*/farebox/*")]
    grown = after.filter_traces(farebox).compare_to(before.filter_traces(farebox), "filename")
    per_entry = sum(s.size_diff for s in grown) / ENTRIES
    counted = (now.bytes - held.bytes) / (now.entries - held.entries)
    assert now.entries - held.entries == ENTRIES
    assert per_entry <= 2 * counted, f"{per_entry:.0f} B kept per entry, {counted:.0f} B counted"


async def cache_settled(cache: Any, entries: int) -> None:
    """Entries are stored behind the reply: wait (bounded) until they all are."""
    import asyncio

    for _ in range(500):
        if (await cache.usage("t")).entries >= entries:
            return
        await asyncio.sleep(0.01)  # polling interval; the loop bounds the wait
    raise AssertionError("the cache did not store every miss")

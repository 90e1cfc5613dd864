"""Issue [12], acceptance 2: embedding batches are cached per input item; a batch with known
and new inputs sends only the new ones upstream and returns every item in its place."""

from __future__ import annotations

from typing import Any

from farebox.core.cache import BYPASS, HIT_EXACT, HIT_STATUS, MISS
from tests.cache_gateway import CountingMock, config, post

EMBED = "text-embedding-3-small"
PATH = "/v1/embeddings"


def vectors(r: Any) -> list[Any]:
    data = r.json()["data"]
    assert [d["index"] for d in data] == list(range(len(data)))
    return [d["embedding"] for d in data]


async def test_a_partial_batch_sends_only_the_new_items(make_gateway: Any) -> None:
    mock = CountingMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        first = await post(gw, key, {"model": EMBED, "input": ["alpha", "beta", "gamma"]}, PATH)
        assert first.status_code == 200, first.text
        assert first.headers["x-farebox-cache"] == MISS
        assert first.headers["x-farebox-cache-items-hit"] == "0"
        a, b, c = vectors(first)
        mixed = {"model": EMBED, "input": ["alpha", "delta", "beta", "epsilon", "gamma"]}
        r = await post(gw, key, mixed, PATH)
        assert r.status_code == 200, r.text
        assert mock.embedded == [["alpha", "beta", "gamma"], ["delta", "epsilon"]]
        assert r.headers["x-farebox-cache"] == MISS
        assert r.headers["x-farebox-cache-items-hit"] == "3"
        got = vectors(r)
        assert (got[0], got[2], got[4]) == (a, b, c)
        only_new = await post(gw, key, {"model": EMBED, "input": ["delta", "epsilon"]},
                              PATH, **{"Cache-Control": "no-cache"})  # fmt: skip
        assert (got[1], got[3]) == tuple(vectors(only_new))
        assert r.json()["usage"]["prompt_tokens"] == sum(
            x.json()["usage"]["prompt_tokens"] for x in (first, only_new)
        )
        # all of them known: a hit, in the order asked, nothing sent upstream
        hit = await post(gw, key, {"model": EMBED, "input": ["gamma", "epsilon", "alpha"]}, PATH)
        assert hit.headers["x-farebox-cache"] == HIT_EXACT
        assert hit.headers["x-farebox-cache-items-hit"] == "3"
        assert hit.headers["x-farebox-cost-usd"] == "0.00"
        assert vectors(hit) == [c, got[3], a]
        single = await post(gw, key, {"model": EMBED, "input": "beta"}, PATH)
        assert single.headers["x-farebox-cache"] == HIT_EXACT and vectors(single) == [b]
        assert len(mock.embedded) == 3
        ledger = await gw.ledger("acme")
        assert [(e.status, e.cache) for e in ledger] == [
            ("ok", MISS), ("ok", MISS), ("ok", BYPASS), (HIT_STATUS, HIT_EXACT),
            (HIT_STATUS, HIT_EXACT),
        ]  # fmt: skip
        whole, partial, _, three, one = ledger
        assert partial.cost > 0 and partial.saved == whole.cost  # the three known items
        assert partial.revenue == partial.cost + whole.revenue  # markup 1, hit_price full
        assert three.cost == one.cost == 0 and 0 < one.saved < three.saved


async def test_the_parts_of_a_batch_add_up_to_the_whole(make_gateway: Any) -> None:
    async with make_gateway(config()) as gw:
        key = await gw.tenant_key("acme", plan="half_hits")
        items = ["one", "a somewhat longer input", "x" * 300, "three words here"]
        first = await post(gw, key, {"model": EMBED, "input": items}, PATH)
        assert first.status_code == 200, first.text
        hit = await post(gw, key, {"model": EMBED, "input": list(reversed(items))}, PATH)
        assert hit.headers["x-farebox-cache"] == HIT_EXACT
        miss, again = await gw.ledger("acme")
        assert again.saved == miss.cost  # every item's share, summed: the whole, exactly
        assert again.revenue == (miss.revenue + 1) // 2  # hit_price 0.5, rounded half up


async def test_formats_and_token_arrays_are_keyed_as_sent(make_gateway: Any) -> None:
    mock = CountingMock()
    async with make_gateway(config(), providers={"sim": mock}) as gw:
        key = await gw.tenant_key("acme", plan="cached")
        await post(gw, key, {"model": EMBED, "input": "same"}, PATH)
        b64 = await post(gw, key, {"model": EMBED, "input": "same", "encoding_format": "base64"},
                         PATH)  # fmt: skip
        assert b64.headers["x-farebox-cache"] == MISS and isinstance(vectors(b64)[0], str)
        tokens = {"model": EMBED, "input": [17, 23, 42]}  # one token array: one item
        assert (await post(gw, key, tokens, PATH)).headers["x-farebox-cache-items-hit"] == "0"
        r = await post(gw, key, {"model": EMBED, "input": [[17, 23, 42], [5, 6]]}, PATH)
        assert r.headers["x-farebox-cache-items-hit"] == "1" and len(vectors(r)) == 2
        assert mock.embedded[-1] == [[5, 6]]
        assert mock.embedded[2] == [17, 23, 42]

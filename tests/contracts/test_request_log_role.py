"""The request log's contract (``ReportStore.requests``), on every backend: each page is
exactly the filtered ledger, newest first by ``(started_at, request_id)``; walking every page
yields each match once; a tenant's filter never shows another tenant's entry; tags follow an
entry (a late settlement's placeholder leaves none behind); a bad cursor is a clear 400.

Entries and queries are drawn by hypothesis; one store serves every example of a test, so the
ledger grows across examples and each query is checked against all of it."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.core.records import LedgerEntry, RequestQuery, Reservation
from farebox.errors import InvalidRequest
from farebox.stores.request_log import encode_cursor, selects
from tests.contracts.backends import CLUSTER, EVERY, opened
from tests.contracts.builders import DAY, T0, entry, hold

BACKENDS = EVERY
TENANTS = ("t1", "t2", "t3")
TAG_NAMES = ("team", "env", "n")
TAG_VALUES = st.one_of(
    st.sampled_from(["a", "b", "ü", ""]),
    st.integers(-2, 2),
    st.booleans(),
    st.sampled_from([0.5, None, [1], {"a": 1}]),  # kept, but never tags
)
EXAMPLES = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@st.composite
def entries(draw: st.DrawFn) -> list[LedgerEntry]:
    ids = draw(st.lists(st.text("abAB09-_é", min_size=1, max_size=3), max_size=25, unique=True))
    out = []
    for rid in ids:
        out.append(
            entry(
                rid,
                tenant_id=draw(st.sampled_from(TENANTS)),
                key_id=draw(st.sampled_from(["k1", "k2"])),
                user=draw(st.sampled_from([None, "u1", "u2"])),
                feature=draw(st.sampled_from([None, "f1"])),
                model_served=draw(st.sampled_from(["m1", "m2"])),
                status=draw(st.sampled_from(["ok", "error", "unsettled"])),
                started_at=T0 + draw(st.integers(0, 12)) + draw(st.sampled_from([0.0, 0.25])),
                metadata=draw(st.dictionaries(st.sampled_from(TAG_NAMES), TAG_VALUES, max_size=3)),
                cost=draw(st.integers(0, 10**15)),
            )
        )
    return out


def queries() -> st.SearchStrategy[RequestQuery]:
    def maybe(values: Any) -> st.SearchStrategy[Any]:
        return st.one_of(st.none(), st.sampled_from(values))

    tag = st.tuples(st.sampled_from(TAG_NAMES), st.sampled_from(["a", "b", "ü", "", "1", "true"]))
    return st.builds(
        RequestQuery,
        tenant_id=maybe(TENANTS + ("nobody",)),
        start=maybe([T0 + 2, T0 + 5.25]),
        end=maybe([T0 + 6, T0 + 11]),
        status=maybe(["ok", "error", "unsettled"]),
        key_id=maybe(["k1", "k2"]),
        user=maybe(["u1", "u2"]),
        feature=maybe(["f1"]),
        model=maybe(["m1", "m2"]),
        tag=st.one_of(st.none(), tag),
        limit=st.integers(1, 7),
    )


def newest_first(rows: list[LedgerEntry]) -> list[LedgerEntry]:
    return sorted(rows, key=lambda e: (e.started_at, e.request_id), reverse=True)


async def walk(store: Any, query: RequestQuery, expected: list[LedgerEntry]) -> None:
    """Every page of ``query`` is the next slice of ``expected``; the last has no cursor."""
    cursor, pages, seen = None, 0, []
    while True:
        page = await store.requests(RequestQuery(**{**_fields(query), "cursor": cursor}))
        start = pages * query.limit
        assert page.entries == expected[start : start + query.limit]
        if query.tenant_id is not None:
            assert {e.tenant_id for e in page.entries} <= {query.tenant_id}
        seen += [e.request_id for e in page.entries]
        pages += 1
        if page.next_cursor is None:
            break
        assert len(page.entries) == query.limit
        cursor = page.next_cursor
    assert seen == [e.request_id for e in expected]  # each match once, in order
    assert len(seen) == len(set(seen))


def _fields(query: RequestQuery) -> dict[str, Any]:
    return {name: getattr(query, name) for name in RequestQuery.__dataclass_fields__}


@pytest.mark.parametrize("backend", EVERY)
@EXAMPLES
@given(data=st.data())
async def test_pages_are_the_filtered_ordered_ledger(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, data: st.DataObject
) -> None:
    """Each example on a fresh store (so that a failing one replays exactly)."""
    cluster = request.getfixturevalue("redis_cluster_nodes") if backend == CLUSTER else None
    with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
        async with opened(backend, Path(scratch), cluster.url if cluster else None) as store:
            model: list[LedgerEntry] = []
            for batch in data.draw(st.lists(entries(), min_size=1, max_size=3)):
                batch = [e for e in batch if e.request_id not in {m.request_id for m in model}]
                if batch:
                    await store.append_ledger(batch)
                    model.extend(batch)
            for query in data.draw(st.lists(queries(), min_size=1, max_size=5)):
                await walk(store, query, newest_first([e for e in model if selects(e, query)]))


async def test_no_tenant_sees_another(store: Any) -> None:
    rows = [
        entry(f"r{i}", tenant_id=TENANTS[i % 3], started_at=T0 + i // 4, metadata={"team": "a"})
        for i in range(30)
    ]
    await store.append_ledger(rows)
    for tenant in TENANTS:
        for tag in (None, ("team", "a")):
            page = await store.requests(RequestQuery(tenant_id=tenant, tag=tag, limit=200))
            assert page.entries
            assert page.entries == newest_first([e for e in rows if e.tenant_id == tenant])
            assert page.next_cursor is None
    # an empty tenant id is a tenant that has nothing, not "every tenant"
    assert (await store.requests(RequestQuery(tenant_id=""))).entries == []


async def test_tags_are_strings_integers_and_booleans(store: Any) -> None:
    meta = {"s": "x", "i": 42, "neg": -7, "yes": True, "no": False, "f": 1.0, "z": None,
            "o": {"k": "x"}, "l": ["x"]}  # fmt: skip
    one = entry("r1", metadata=meta)
    await store.append_ledger([one, entry("r2", started_at=T0 + 1)])
    found = {
        (name, value): [e.request_id for e in (await store.requests(
            RequestQuery(tag=(name, value)))).entries]
        for name, value in [("s", "x"), ("i", "42"), ("neg", "-7"), ("yes", "true"),
                            ("no", "false"), ("f", "1.0"), ("f", "1"), ("z", "null"),
                            ("o", '{"k":"x"}'), ("l", '["x"]'), ("s", "X"), ("i", "42.0")]
    }  # fmt: skip
    assert found == {
        ("s", "x"): ["r1"], ("i", "42"): ["r1"], ("neg", "-7"): ["r1"], ("yes", "true"): ["r1"],
        ("no", "false"): ["r1"], ("f", "1.0"): [], ("f", "1"): [], ("z", "null"): [],
        ("o", '{"k":"x"}'): [], ("l", '["x"]'): [], ("s", "X"): [], ("i", "42.0"): [],
    }  # fmt: skip
    (read,) = (await store.requests(RequestQuery(tag=("s", "x")))).entries
    assert read == one  # the whole entry, metadata and all


async def test_a_cursor_survives_new_entries(store: Any) -> None:
    await store.append_ledger([entry(f"r{i}", started_at=T0 + i) for i in range(5)])
    first = await store.requests(RequestQuery(limit=2))
    assert [e.request_id for e in first.entries] == ["r4", "r3"]
    await store.append_ledger([entry("newer", started_at=T0 + 9), entry("r2b", started_at=T0 + 2)])
    rest = await store.requests(RequestQuery(limit=10, cursor=first.next_cursor))
    assert [e.request_id for e in rest.entries] == ["r2b", "r2", "r1", "r0"]
    assert rest.next_cursor is None


@pytest.mark.backends("memory", "sqlite", "sqlite-single-process", "postgres+redis")
async def test_late_settlement_leaves_no_placeholder_tags(store: Any) -> None:
    a = hold("tenant:acme:day", 100)
    placeholder = entry("req-r1", status="unsettled", http_status=0, reservation_id="r1",
                        metadata={"team": "a", "reserved_usd": "0.6"})  # fmt: skip
    assert (await store.reserve(Reservation("r1", 60, (a,), T0 + 30, placeholder))).ok
    assert len(await store.reclaim_expired(T0 + 31)) == 1
    held = await store.requests(RequestQuery(tag=("reserved_usd", "0.6")))
    assert [e.status for e in held.entries] == ["unsettled"]
    late = entry("req-r1", cost=45, reservation_id="r1", metadata={"team": "b"})
    await store.append_ledger([late])
    assert (await store.requests(RequestQuery(tag=("reserved_usd", "0.6")))).entries == []
    assert (await store.requests(RequestQuery(tag=("team", "a")))).entries == []
    assert (await store.requests(RequestQuery(tag=("team", "b")))).entries == [late]
    assert (await store.requests(RequestQuery(tenant_id="acme", start=T0 - DAY))).entries == [late]


BAD_CURSORS = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: encode_cursor(entry("x"))[:3] + b.hex()),
    st.sampled_from(["", "=", "WzFd", "WzEsIngiLCJyIl0", "W10", "bnVsbA", "WzIsMSwiciJd",
                     "WzEsMSwxXQ", "WzEsdHJ1ZSwiciJd", "WzEsMWU5OTk5LCJyIl0", "€"]),
)  # fmt: skip


async def test_a_good_cursor_pages_on(store: Any) -> None:
    await store.append_ledger([entry("r1")])
    good = encode_cursor(entry("r2", started_at=T0 + 1))
    page = await store.requests(RequestQuery(cursor=good))
    assert [e.request_id for e in page.entries] == ["r1"]


@EXAMPLES
@given(cursor=BAD_CURSORS)
async def test_a_bad_cursor_is_a_clear_error(store: Any, cursor: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await store.requests(RequestQuery(cursor=cursor))
    assert caught.value.param == "cursor"


async def test_a_bad_limit_is_a_clear_error(store: Any) -> None:
    for limit in (0, -1):
        with pytest.raises(InvalidRequest) as caught:
            await store.requests(RequestQuery(limit=limit))
        assert caught.value.param == "limit"


@pytest.mark.parametrize(
    ("changes", "param"),
    [({"tenant_id": "a\x00"}, "tenant_id"), ({"user": "\x00"}, "user"), ({"tag": ("a", "\x00")},
     "tag"), ({"start": float("nan")}, "start"), ({"end": float("inf")}, "end")],
)  # fmt: skip
async def test_a_filter_no_store_can_compare_is_a_clear_error(
    store: Any, changes: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await store.requests(RequestQuery(**changes))
    assert caught.value.param == param

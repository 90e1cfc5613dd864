"""The ``FindingsStore`` contract (``store.findings``, issue 15) on every backend that keeps it:
pages are exactly the ledger entries with findings that the filters select (a finding filter
matches when ANY finding of the entry has the fields asked), newest first, each once however
the pages are cut; nothing but a finding's five fields ever comes back; counts group findings
per tenant, detector, category and action; a tally is atomic: of concurrent tallies (in one
process, or two stores on one database) exactly one sees the hour's sum cross a limit."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.errors import InvalidRequest
from farebox.stores.findings import FindingCount, FindingsQuery, FindingsStore, findings_of
from tests.contracts.backends import make_postgres, make_sqlite
from tests.contracts.builders import T0, entry

BACKENDS = ("memory", "sqlite", "sqlite-single-process", "postgres", "postgres+redis")
DETECTORS = ("injection_rules", "pii", "secrets")
CATEGORIES = ("EMAIL_ADDRESS", "instruction_override", "aws_access_key")
ACTIONS = ("flagged", "redacted", "blocked")
_IDS = itertools.count()


def finding(detector: str, category: str, action: str = "flagged", **extra: Any) -> dict[str, Any]:
    return {"detector": detector, "category": category, "action": action, "score": 0.9,
            "where": "user", **extra}  # fmt: skip


def role(store: Any) -> FindingsStore:
    found = findings_of(store)
    assert found is not None
    return found


async def test_pages_list_only_entries_with_findings_newest_first(store: Any) -> None:
    leak = finding("pii", "EMAIL_ADDRESS", "redacted", text="ana@example.com", start=3)
    await store.append_ledger([
        entry("r0", started_at=T0),  # no findings: never listed
        entry("r1", started_at=T0 + 1, guardrails=[leak], workspace="ml", user="u1"),
        entry("r2", started_at=T0 + 2, tenant_id="globex", key_id="k9", status="blocked",
              http_status=400, cost=0, guardrails=[finding("injection_rules",
                                                           "instruction_override", "blocked")]),
        entry("r3", started_at=T0 + 2, guardrails=[finding("secrets", "aws_access_key"),
                                                   finding("pii", "PHONE_NUMBER")]),
    ])  # fmt: skip
    page = await role(store).page(FindingsQuery())
    assert [r.request_id for r in page.rows] == ["r3", "r2", "r1"] and page.next_cursor is None
    r1 = page.rows[2]
    assert (r1.tenant_id, r1.key_id, r1.workspace, r1.user, r1.status) == ("acme", "k1", "ml",
                                                                         "u1", "ok")  # fmt: skip
    assert r1.findings == [{"detector": "pii", "category": "EMAIL_ADDRESS", "action": "redacted",
                            "score": 0.9, "where": "user"}]  # fmt: skip
    assert "ana@example.com" not in repr(page)  # only a finding's five fields come back
    r2 = page.rows[1]
    assert (r2.tenant_id, r2.status, r2.http_status) == ("globex", "blocked", 400)
    one = await role(store).page(FindingsQuery(detector="pii"))
    assert [r.request_id for r in one.rows] == ["r3", "r1"]  # any finding of the entry matches
    both = FindingsQuery(detector="pii", action="redacted")  # one finding must have both
    assert [r.request_id for r in (await role(store).page(both)).rows] == ["r1"]
    mixed = FindingsQuery(detector="secrets", category="PHONE_NUMBER")  # two findings: no match
    assert (await role(store).page(mixed)).rows == []
    tenant = await role(store).page(FindingsQuery(tenant_id="globex"))
    assert [r.request_id for r in tenant.rows] == ["r2"]
    window = await role(store).page(FindingsQuery(start=T0 + 1, end=T0 + 2))
    assert [r.request_id for r in window.rows] == ["r1"]
    assert [r.request_id for r in (await role(store).page(FindingsQuery(key_id="k9"))).rows] == [
        "r2"
    ]


async def test_a_bad_cursor_or_filter_is_invalid(store: Any) -> None:
    for query in (FindingsQuery(cursor="nope"), FindingsQuery(limit=0),
                  FindingsQuery(detector="a\x00b"), FindingsQuery(start=float("nan"))):  # fmt: skip
        with pytest.raises(InvalidRequest):
            await role(store).page(query)


@st.composite
def ledgers(draw: st.DrawFn) -> list[Any]:
    out = []
    for _ in range(draw(st.integers(0, 14))):
        rid = f"h{next(_IDS):05d}"
        found = draw(st.lists(st.builds(finding, st.sampled_from(DETECTORS),
                                        st.sampled_from(CATEGORIES), st.sampled_from(ACTIONS)),
                              max_size=3))  # fmt: skip
        out.append(entry(rid, tenant_id=draw(st.sampled_from(["t1", "t2"])),
                         key_id=draw(st.sampled_from(["k1", "k2"])), guardrails=found,
                         started_at=T0 + draw(st.integers(0, 6)) + 0.5))  # fmt: skip
    return out


def queries() -> st.SearchStrategy[FindingsQuery]:
    def maybe(values: tuple[Any, ...]) -> st.SearchStrategy[Any]:
        return st.one_of(st.none(), st.sampled_from(values))

    return st.builds(FindingsQuery, tenant_id=maybe(("t1", "t2", "t3")), key_id=maybe(("k1",)),
                     detector=maybe(DETECTORS), category=maybe(CATEGORIES),
                     action=maybe(ACTIONS), start=maybe((T0 + 2,)), end=maybe((T0 + 5,)),
                     limit=st.integers(1, 4))  # fmt: skip


def expected(model: list[Any], q: FindingsQuery) -> list[str]:
    wanted = q.wanted
    out = []
    for e in model:
        if not e.guardrails or (q.tenant_id and e.tenant_id != q.tenant_id):
            continue
        if (q.key_id and e.key_id != q.key_id) or (q.start and e.started_at < q.start):
            continue
        if q.end and e.started_at >= q.end:
            continue
        if any(all(f[k] == v for k, v in wanted.items()) for f in e.guardrails):
            out.append(e)
    out.sort(key=lambda e: (e.started_at, e.request_id), reverse=True)
    return [e.request_id for e in out]


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_walking_every_page_yields_each_match_once(store: Any, data: st.DataObject) -> None:
    """One store for every example: the ledger grows, each query is checked against all."""
    model = getattr(store, "_findings_model", [])
    batch = data.draw(ledgers())
    if batch:
        await store.append_ledger(batch)
    model += batch
    store._findings_model = model
    query = data.draw(queries())
    seen, cursor = [], None
    while True:
        page = await role(store).page(FindingsQuery(**{**_fields(query), "cursor": cursor}))
        seen += [r.request_id for r in page.rows]
        if page.next_cursor is None:
            break
        assert len(page.rows) == query.limit
        cursor = page.next_cursor
    assert seen == expected(model, query)


def _fields(query: FindingsQuery) -> dict[str, Any]:
    return {name: getattr(query, name) for name in FindingsQuery.__dataclass_fields__}


async def test_counts_group_findings_per_tenant_detector_category_action(store: Any) -> None:
    email, card = finding("pii", "EMAIL_ADDRESS", "redacted"), finding("pii", "CREDIT_CARD")
    await store.append_ledger([
        entry("c1", started_at=T0 + 10, guardrails=[email, email, card]),
        entry("c2", started_at=T0 + 20, guardrails=[email]),
        entry("c3", started_at=T0 + 30, tenant_id="globex",
              guardrails=[finding("secrets", "aws_access_key", "blocked")]),
        entry("c4", started_at=T0 + 99, guardrails=[email]),  # outside the window
        entry("c5", started_at=T0 + 15),
    ])  # fmt: skip
    counts = await role(store).counts(None, T0, T0 + 60)
    assert counts == [
        FindingCount("acme", "pii", "EMAIL_ADDRESS", "redacted", 3, 2),
        FindingCount("acme", "pii", "CREDIT_CARD", "flagged", 1, 1),
        FindingCount("globex", "secrets", "aws_access_key", "blocked", 1, 1),
    ]
    assert await role(store).counts("globex", T0, T0 + 60) == counts[2:]
    assert await role(store).counts("nobody", T0, T0 + 60) == []


async def test_a_tally_sums_the_last_hour(store: Any) -> None:
    tally = role(store).tally
    assert await tally("k1", T0, 3) == (0, 3)
    assert await tally("k1", T0 + 59, 2) == (3, 5)  # the same minute
    assert await tally("k2", T0 + 60, 1) == (0, 1)  # another subject
    assert await tally("k1", T0 + 3599, 1) == (5, 6)  # the first minute is still in the hour
    assert await tally("k1", T0 + 3600, 1) == (1, 2)  # its first minute has left the hour
    await role(store).prune(T0 + 7200)
    assert await tally("k1", T0 + 3600, 0) == (0, 0)


async def test_concurrent_tallies_cross_a_limit_exactly_once(store: Any) -> None:
    limit = 10
    results = await asyncio.gather(*(role(store).tally("k1", T0 + n % 7, 1) for n in range(40)))
    assert sorted(after for _, after in results) == list(range(1, 41))
    assert sum(1 for before, after in results if before <= limit < after) == 1


@pytest.mark.backends("sqlite", "postgres")
async def test_two_stores_on_one_database_cross_a_limit_exactly_once(
    store: Any, tmp_path: Path
) -> None:
    """A second store on the same file or schema: another worker or replica."""
    other = make_sqlite(tmp_path) if hasattr(store, "_path") else make_postgres(
        tmp_path, store._schema)  # fmt: skip
    await other.open()
    try:
        stores = [role(store), role(other)]
        results = await asyncio.gather(
            *(stores[n % 2].tally("jwt:acme", T0 + 5, 2) for n in range(30))
        )
    finally:
        await other.close()
    assert sorted(after for _, after in results) == list(range(2, 61, 2))
    assert sum(1 for before, after in results if before <= 25 < after) == 1

"""Issue 12, "Operations": ``GET /admin/v1/tenants/{id}/cache`` (entries and bytes the cache
holds, hits, misses, hit rate and USD saved over a period), ``GET /admin/v1/cache`` (every
tenant), ``DELETE /admin/v1/tenants/{id}/cache`` (all, or one namespace) and the same numbers
in ``/v1/me`` for the caller's own tenant only. The ledger is the memory store's (its tallies
are exact); the cache is a fake ``CacheStore`` of the test's own. Bad parameters are a 400,
never a 500 (hypothesis over the parameters)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farebox.api.admin.cache import hit_rate, period
from farebox.core.cache import (
    HIT_EXACT,
    HIT_SEMANTIC,
    HIT_STATUS,
    MISS,
    CachedAnswer,
    CacheLimits,
    CacheUsage,
    Partition,
    tally_entries,
)
from farebox.core.money import format_usd
from farebox.core.periods import iso_utc
from farebox.errors import CacheUnavailable
from farebox.stores.base import CacheStore
from tests.contracts.builders import entry

MEMORY = {"database": "memory"}
HOUR = 3600


@dataclass
class FakeCache:
    """A ``CacheStore`` with what the admin routes read: ``usage`` and ``purge``."""

    held: dict[str, CacheUsage] = field(default_factory=dict)
    namespaces: dict[tuple[str, str], int] = field(default_factory=dict)
    purged: list[tuple[str, str | None]] = field(default_factory=list)
    down: bool = False

    async def usage(self, tenant: str) -> CacheUsage:
        if self.down:
            raise CacheUnavailable("redis is down")
        return self.held.get(tenant, CacheUsage(0, 0))

    async def purge(self, tenant: str, namespace: str | None = None) -> int:
        if self.down:
            raise CacheUnavailable("redis is down")
        self.purged.append((tenant, namespace))
        gone = [k for k in self.namespaces if k[0] == tenant and namespace in (None, k[1])]
        return sum(self.namespaces.pop(k) for k in gone)

    async def get(self, partition: Partition, key: str, now: float) -> CachedAnswer | None:
        raise NotImplementedError

    async def get_many(
        self, partition: Partition, keys: Sequence[str], now: float
    ) -> list[CachedAnswer | None]:
        raise NotImplementedError

    async def put(
        self, partition: Partition, answers: Sequence[CachedAnswer], limits: CacheLimits,
        now: float,
    ) -> None:  # fmt: skip
        raise NotImplementedError

    async def add_vector(
        self, partition: Partition, context: str, key: str, vector: bytes, now: float
    ) -> None:
        raise NotImplementedError

    async def nearest(self, partition: Partition, context: str, vector: bytes, now: float) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        return None


def _fake() -> CacheStore:
    return FakeCache()  # type-checks as the role


def cache_entries(now: float) -> list[Any]:
    """This month's traffic: a has 2 hits (exact, semantic) and 3 misses, b 1 hit and a
    bypass, c only plain requests; one of a's hits is from last month."""
    month = datetime.fromtimestamp(now, UTC).replace(day=1, hour=0, minute=0, second=0,
                                                     microsecond=0).timestamp()  # fmt: skip
    at = max(month + 1, now - 60)
    rows = [
        entry("r1", tenant_id="a", status=HIT_STATUS, cache=HIT_EXACT, saved=1_234_567,
              started_at=at),
        entry("r2", tenant_id="a", status=HIT_STATUS, cache=HIT_SEMANTIC, saved=10**12 + 3,
              started_at=at),
        entry("r6", tenant_id="a", status=HIT_STATUS, cache=HIT_EXACT, saved=99,
              started_at=month - 10),
        entry("r7", tenant_id="b", status=HIT_STATUS, cache=HIT_EXACT, saved=5, started_at=at),
        entry("r8", tenant_id="b", cache="bypass", started_at=at),
        entry("r9", tenant_id="c", started_at=at),
    ]  # fmt: skip
    rows += [entry(f"m{i}", tenant_id="a", cache=MISS, started_at=at) for i in range(3)]
    return rows


async def seeded(gw: Any) -> list[str]:
    keys = [await gw.tenant_key(t) for t in ("a", "b", "c")]
    await gw.store.append_ledger(cache_entries(time.time()))
    return keys


async def get(gw: Any, path: str, status: int = 200, **params: Any) -> Any:
    r = await gw.client.get(path, params=params, headers=gw.admin)
    assert r.status_code == status, r.text
    return r.json()


def this_month() -> tuple[str, str]:
    lo, hi = period(None, None, time.time())
    return iso_utc(lo), iso_utc(hi)


async def test_a_tenants_cache_holds_the_ledgers_numbers_and_the_stores(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        await seeded(gw)
        fake = FakeCache(held={"a": CacheUsage(7, 4096)})
        gw.app.state.services.cache = fake
        since, until = this_month()
        assert await get(gw, "/admin/v1/tenants/a/cache") == {
            "tenant": "a", "entries": 7, "bytes": 4096, "hits": 2, "misses": 3,
            "hit_rate": "0.4000", "saved_usd": format_usd(1_234_567 + 10**12 + 3),
            "since": since, "until": until,
        }  # fmt: skip
        b = await get(gw, "/admin/v1/tenants/b/cache")
        assert (b["hits"], b["misses"], b["hit_rate"], b["saved_usd"]) == (
            1,
            0,
            "1.0000",
            "0.000000000005",
        )
        c = await get(gw, "/admin/v1/tenants/c/cache")
        assert (c["hits"], c["misses"], c["hit_rate"], c["saved_usd"]) == (0, 0, None, "0.00")
        # last month: a's older hit only
        lo = datetime.fromisoformat(since.replace("Z", "+00:00"))
        prev = (lo.replace(month=lo.month - 1) if lo.month > 1
                else lo.replace(year=lo.year - 1, month=12))  # fmt: skip
        old = await get(gw, "/admin/v1/tenants/a/cache", since=prev.isoformat(), until=since)
        assert (old["hits"], old["misses"], old["saved_usd"]) == (1, 0, format_usd(99))
        assert old["since"] == iso_utc(prev.timestamp()) and old["until"] == since


async def test_the_numbers_equal_the_reference_tally_of_the_ledger(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        await seeded(gw)
        lo, hi = period(None, None, time.time())
        expected = {t.tenant_id: t for t in tally_entries(await gw.ledger(), None, lo, hi)}
        listed = await get(gw, "/admin/v1/cache")
        assert listed["object"] == "list" and (listed["since"], listed["until"]) == this_month()
        assert [r["tenant"] for r in listed["data"]] == sorted(expected) == ["a", "b"]
        for row in listed["data"]:
            tally = expected[row["tenant"]]
            assert (row["hits"], row["misses"]) == (tally.hits, tally.misses)
            assert row["saved_usd"] == format_usd(tally.saved)
            assert row == await get(gw, f"/admin/v1/tenants/{row['tenant']}/cache")


async def test_entries_alone_list_a_tenant_and_a_down_backend_is_null(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        await seeded(gw)
        fake = FakeCache(held={"c": CacheUsage(2, 10)})
        gw.app.state.services.cache = fake
        listed = await get(gw, "/admin/v1/cache")
        assert [r["tenant"] for r in listed["data"]] == ["a", "b", "c"]
        fake.down = True
        a = await get(gw, "/admin/v1/tenants/a/cache")
        assert (a["entries"], a["bytes"], a["hits"]) == (None, None, 2)
        r = await gw.client.delete("/admin/v1/tenants/a/cache", headers=gw.admin)
        assert r.status_code == 503 and r.json()["error"]["code"] == "cache_unavailable"


async def test_no_cache_configured_answers_zeros(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        await gw.tenant_key("a")
        assert gw.app.state.services.cache is None
        a = await get(gw, "/admin/v1/tenants/a/cache")
        assert (a["entries"], a["bytes"], a["hits"], a["misses"], a["hit_rate"]) == (
            0,
            0,
            0,
            0,
            None,
        )
        r = await gw.client.delete("/admin/v1/tenants/a/cache", headers=gw.admin)
        assert r.status_code == 200 and r.json() == {"purged": 0}
        assert (await get(gw, "/admin/v1/cache"))["data"] == []


async def test_purge_all_or_one_namespace(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        await seeded(gw)
        fake = FakeCache(namespaces={("a", ""): 3, ("a", "eu/1"): 2, ("a", "us"): 4, ("b", ""): 9})
        gw.app.state.services.cache = fake
        path = "/admin/v1/tenants/a/cache"
        r = await gw.client.delete(path, params={"namespace": "eu/1"}, headers=gw.admin)
        assert r.status_code == 200 and r.json() == {"purged": 2}
        r = await gw.client.delete(path, headers=gw.admin)
        assert r.json() == {"purged": 7}
        assert fake.purged == [("a", "eu/1"), ("a", None)]
        assert fake.namespaces == {("b", ""): 9}  # the other tenant's entries stay


async def test_unknown_tenants_and_missing_admin_key(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        keys = await seeded(gw)
        fake = FakeCache()
        gw.app.state.services.cache = fake
        for method in ("GET", "DELETE"):
            r = await gw.client.request(method, "/admin/v1/tenants/zz/cache", headers=gw.admin)
            assert r.status_code == 404 and r.json()["error"]["code"] == "tenant_not_found"
            r = await gw.client.request(method, "/admin/v1/tenants/a/cache")
            assert r.status_code == 401
            tenant_key = {"Authorization": f"Bearer {keys[0]}"}
            r = await gw.client.request(method, "/admin/v1/tenants/a/cache", headers=tenant_key)
            assert r.status_code == 401
        assert fake.purged == []


@pytest.mark.parametrize(
    ("method", "params", "param"),
    [
        ("GET", {"since": "yesterday"}, "since"),
        ("GET", {"until": "2026-13-01"}, "until"),
        ("GET", {"since": "1e300"}, "since"),
        ("GET", {"since": "nan"}, "since"),
        ("GET", {"since": "-5"}, "since"),
        ("GET", {"since": "2026-06-01", "until": "2026-05-01"}, "until"),
        ("GET", {"since": "x" * 65}, "since"),
        ("GET", {"tenant": "a"}, "tenant"),
        ("DELETE", {"namespace": ""}, "namespace"),
        ("DELETE", {"namespace": "x" * 65}, "namespace"),
        ("DELETE", {"namespace": "a\nb"}, "namespace"),
        ("DELETE", {"since": "0"}, "since"),
    ],
)
async def test_bad_parameters_are_a_400_naming_them(
    make_gateway: Any, method: str, params: dict[str, str], param: str
) -> None:
    async with make_gateway(MEMORY) as gw:
        await gw.tenant_key("a")
        fake = FakeCache()
        gw.app.state.services.cache = fake
        r = await gw.client.request(
            method, "/admin/v1/tenants/a/cache", params=params, headers=gw.admin
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param
        assert fake.purged == []


async def test_a_period_is_widened_to_whole_hours(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        await gw.tenant_key("a")
        answer = await get(gw, "/admin/v1/tenants/a/cache", since="2026-05-01T10:20:00Z",
                           until="1777640401")  # fmt: skip
        assert answer["since"] == "2026-05-01T10:00:00Z"
        assert answer["until"] == iso_utc((1777640401 // HOUR + 1) * HOUR)


async def test_v1_me_has_the_callers_own_cache_only(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        keys = await seeded(gw)
        gw.app.state.services.cache = FakeCache(
            held={"a": CacheUsage(3, 30), "b": CacheUsage(1, 1)}
        )
        for tenant, key in zip(("a", "b", "c"), keys, strict=True):
            r = await gw.client.get("/v1/me", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
            assert r.json()["cache"] == await get(gw, f"/admin/v1/tenants/{tenant}/cache")


async def test_the_openapi_document_describes_the_shapes(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        doc = (await gw.client.get("/openapi.json", headers=gw.admin)).json()
        item = doc["paths"]["/admin/v1/tenants/{tenant_id}/cache"]
        ok = item["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok == {"$ref": "#/components/schemas/CacheStats"}
        stats = doc["components"]["schemas"]["CacheStats"]
        assert set(stats["required"]) == {"tenant", "entries", "bytes", "hits", "misses",
                                          "hit_rate", "saved_usd", "since", "until"}  # fmt: skip
        assert {"200", "400", "401", "404", "503"} <= set(item["delete"]["responses"])
        assert "/admin/v1/cache" in doc["paths"]


@given(hits=st.integers(0, 10**15), misses=st.integers(0, 10**15))
def test_the_hit_rate_is_exact_to_four_places(hits: int, misses: int) -> None:
    text = hit_rate(hits, hits + misses)
    if hits + misses == 0:
        assert text is None
        return
    exact = (Decimal(hits) / Decimal(hits + misses)).quantize(Decimal("0.0001"), ROUND_HALF_UP)
    assert text == str(exact) and len(text.split(".")[1]) == 4


QUERY = st.dictionaries(
    st.sampled_from(["since", "until", "namespace", "tenant", "x"]),
    st.one_of(
        st.text(max_size=70),
        st.integers(-(10**20), 10**20).map(str),
        st.floats(allow_nan=True).map(str),
    ),  # fmt: skip
    max_size=3,
)


async def test_any_parameters_are_answered_never_with_a_5xx(make_gateway: Any) -> None:
    cases: list[tuple[dict[str, str], str]] = []

    @settings(max_examples=200, deadline=None)
    @given(params=QUERY, method=st.sampled_from(["GET", "DELETE"]))
    def drawn(params: dict[str, str], method: str) -> None:
        cases.append((params, method))

    drawn()
    async with make_gateway(MEMORY) as gw:
        await seeded(gw)
        gw.app.state.services.cache = FakeCache(namespaces={("a", "n"): 1})
        for params, method in cases:
            for path in ("/admin/v1/tenants/a/cache", "/admin/v1/cache"):
                r = await gw.client.request(method, path, params=params, headers=gw.admin)
                assert r.status_code in (200, 400, 405), (params, r.text)
                if r.status_code == 400:
                    assert r.json()["error"]["param"] in params, (params, r.text)


async def test_the_dashboard_shows_the_same_numbers(make_gateway: Any) -> None:
    from tests.test_dashboard_views import admin_page

    async with make_gateway(MEMORY) as gw:
        await seeded(gw)
        gw.app.state.services.cache = FakeCache(held={"a": CacheUsage(6, 1234)})
        a = await get(gw, "/admin/v1/tenants/a/cache")
        page = (await admin_page(gw, "/dashboard")).text
        row = re.search(r'data-tenant-row="a">(.*?)</tr>', page, re.S)
        assert row is not None
        assert f'data-field="cache_hits">{a["hits"]}<' in row.group(1)
        assert 'data-hit-rate="0.4000">40.00%<' in row.group(1)
        assert f'data-field="saved">${a["saved_usd"]}<' in row.group(1)
        c_row = re.search(r'data-tenant-row="c">(.*?)</tr>', page, re.S)
        assert c_row is not None and 'data-hit-rate="">–<' in c_row.group(1)
        tenant = (await admin_page(gw, "/dashboard/tenants/a")).text
        for name in ("hits", "misses", "entries"):
            assert f'data-cache="{name}">{a[name]}<' in tenant
        assert f'data-cache="saved">${a["saved_usd"]}<' in tenant
        log = (await admin_page(gw, "/dashboard/requests?tenant=a")).text
        assert 'data-cache="hit-semantic">hit-semantic<' in log and 'data-cache="miss">' in log


async def test_every_tenant_is_asked_in_batches_and_listed_in_order(make_gateway: Any) -> None:
    async with make_gateway(MEMORY) as gw:
        ids = [f"t{i:02d}" for i in range(70)]
        for tenant in reversed(ids):
            await gw.tenant(tenant)
        held = {t: CacheUsage(i, i * 10) for i, t in enumerate(ids) if i % 3 == 0 and i}
        gw.app.state.services.cache = FakeCache(held=held)
        listed = (await get(gw, "/admin/v1/cache"))["data"]
        assert [r["tenant"] for r in listed] == sorted(held)
        for r in listed:
            assert CacheUsage(r["entries"], r["bytes"]) == held[r["tenant"]]

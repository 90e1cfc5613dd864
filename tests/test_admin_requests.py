"""``GET /admin/v1/requests`` and ``GET /v1/me/requests``: the request log over HTTP. Rows carry
the entry's fields with money as exact decimal strings; pages walk with ``next_cursor``; every
filter is exact; a tenant key sees its own tenant only, whatever it sends; bad parameters are a
400 naming the parameter, never a 500 (hypothesis over the parameters)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.api.admin.requests import PARAMS, entry_json, request_query
from farebox.core.records import LedgerEntry
from farebox.stores.request_log import selects
from tests.contracts.builders import T0, entry

ADMIN_PATH = "/admin/v1/requests"


def ledger() -> list[LedgerEntry]:
    rows = []
    for i in range(30):
        rows.append(
            entry(
                f"req_{i:02d}",
                tenant_id=("acme", "globex")[i % 2],
                key_id=f"k{i % 3}",
                user=("ann", None)[i % 2 if i < 20 else 0],
                feature="chat" if i % 4 else "search",
                model_served=("gpt-4o-mini", "claude")[i % 5 == 0],
                status="error" if i % 7 == 0 else "ok",
                http_status=502 if i % 7 == 0 else 200,
                started_at=T0 + i * 60 + 0.125,
                metadata={"team": "red" if i % 3 == 0 else "blue", "n": i % 2},
                input_tokens=100 + i,
                cached_input_tokens=i,
                output_tokens=7 * i,
                reasoning_tokens=i // 2,
                cost=1_234_567 * i + 1,  # pico-USD: sub-cent amounts stay exact
                revenue=2_000_000 * i,
                latency_ms=12.5 + i,
                upstream_ms=10.25 + i,
            )
        )
    return rows


@contextlib.asynccontextmanager
async def seeded(make_gateway: Any) -> AsyncIterator[Any]:
    async with make_gateway() as gw:
        await gw.store.append_ledger(ledger())
        yield gw


def newest(rows: list[LedgerEntry]) -> list[LedgerEntry]:
    return sorted(rows, key=lambda e: (e.started_at, e.request_id), reverse=True)


async def walk(gw: Any, path: str, params: dict[str, Any], headers: dict[str, str]) -> list[Any]:
    rows, cursor = [], None
    for _ in range(100):
        r = await gw.client.get(path, params={**params, **({"cursor": cursor} if cursor else {})},
                                headers=headers)  # fmt: skip
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list"
        assert len(body["data"]) <= int(params.get("limit", 50))
        rows += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows
    raise AssertionError("the pages never ended")


FILTERS = [
    {},
    {"tenant": "acme"},
    {"tenant": "globex", "status": "error"},
    {"status": "ok", "model": "claude"},
    {"key": "k1", "user": "ann"},
    {"feature": "search"},
    {"tag": "team:red"},
    {"tag": "n:1", "tenant": "globex"},
    {"tag": "n:1", "tenant": "acme"},
    {"start": str(T0 + 600), "end": "2025-06-16T00:20:00Z"},
    {"start": "2025-06-16T00:05:00", "tenant": "acme", "tag": "team:blue"},
]


@pytest.mark.parametrize("filters", FILTERS)
async def test_admin_pages_are_the_filtered_ledger(
    make_gateway: Any, filters: dict[str, str]
) -> None:
    async with seeded(make_gateway) as gw:
        query = request_query(filters)
        expected = [entry_json(e) for e in newest([e for e in ledger() if selects(e, query)])]
        assert expected or filters == {"tag": "n:1", "tenant": "acme"}
        for limit in (3, 50):
            rows = await walk(gw, ADMIN_PATH, {**filters, "limit": limit}, gw.admin)
            assert rows == expected


async def test_a_row_has_every_field_and_exact_money(make_gateway: Any) -> None:
    async with seeded(make_gateway) as gw:
        r = await gw.client.get(ADMIN_PATH, params={"limit": 1, "tenant": "globex"},
                                headers=gw.admin)  # fmt: skip
        (row,) = r.json()["data"]
        assert row == {
            "time": "2025-06-16T00:29:00.125Z", "started_at": T0 + 29 * 60 + 0.125,
            "request_id": "req_29", "tenant": "globex", "key_id": "k2", "user": "ann",
            "feature": "chat", "endpoint": "chat.completions",
            "model_requested": "gpt-4o-mini", "model_served": "gpt-4o-mini", "provider": "mock",
            "status": "ok", "http_status": 200, "error_code": None, "stream": False,
            "tokens": {"input": 129, "cached": 29, "cache_write": 0, "output": 203,
                       "reasoning": 14},
            "cost_usd": "0.000035802444", "revenue_usd": "0.000058", "cache": None,
            "saved_usd": "0.00", "latency_ms": 41.5,
            "ttft_ms": None, "upstream_ms": 39.25, "metadata": {"team": "blue", "n": 1},
        }  # fmt: skip
        assert r.json()["next_cursor"]


async def test_tenant_key_sees_only_its_tenant(make_gateway: Any) -> None:
    async with seeded(make_gateway) as gw:
        key = await gw.tenant_key("acme")
        await gw.tenant("globex")
        mine = {"Authorization": f"Bearer {key}"}
        acme = [entry_json(e) for e in newest([e for e in ledger() if e.tenant_id == "acme"])]
        assert await walk(gw, "/v1/me/requests", {"limit": 4}, mine) == acme
        red = [row for row in acme if row["metadata"]["team"] == "red"]
        assert await walk(gw, "/v1/me/requests", {"tag": "team:red"}, mine) == red
        # another tenant's filter is refused, not obeyed, however it is spelled
        for params in ({"tenant": "globex"}, {"tenant_id": "globex"}, {"TENANT": "globex"}):
            r = await gw.client.get("/v1/me/requests", params=params, headers=mine)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["param"] == next(iter(params))
        # a cursor of another tenant's page only positions: the tenant stays the caller's
        other = await gw.client.get(ADMIN_PATH, params={"tenant": "globex", "limit": 1},
                                    headers=gw.admin)  # fmt: skip
        cursor = other.json()["next_cursor"]
        rows = await walk(gw, "/v1/me/requests", {"cursor": cursor}, mine)
        assert rows and {row["tenant"] for row in rows} == {"acme"}
        assert (await gw.client.get("/v1/me/requests")).status_code == 401


BAD = [
    ({"cursor": "nope"}, "cursor"),
    ({"cursor": "WzEsMSwxXQ"}, "cursor"),
    ({"limit": "0"}, "limit"),
    ({"limit": "201"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"start": "yesterday"}, "start"),
    ({"end": "nan"}, "end"),
    ({"start": "1e999"}, "start"),
    ({"tag": "team"}, "tag"),
    ({"tag": ":red"}, "tag"),
    ({"tenant": "no spaces"}, "tenant"),
    ({"status": ""}, "status"),
    ({"grop": "x"}, "grop"),
]


@pytest.mark.parametrize(("params", "param"), BAD)
async def test_bad_parameters_are_a_400_naming_them(
    make_gateway: Any, params: dict[str, str], param: str
) -> None:
    async with seeded(make_gateway) as gw:
        key = await gw.tenant_key("acme")
        for path, headers in (
            (ADMIN_PATH, gw.admin),
            ("/v1/me/requests", {"Authorization": f"Bearer {key}"}),
        ):
            if path != ADMIN_PATH and param == "tenant":
                continue
            r = await gw.client.get(path, params=params, headers=headers)
            assert r.status_code == 400, (path, r.text)
            assert r.json()["error"]["param"] == param, (path, r.text)


TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "0", "-1", "1e999", "nan", "inf", "2025-06-16",
                     "9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59",
                     "acme", "team:red", ":", "a:b:c", "WzFd",
                     "\x00", "1" * 300, "50", "200"]),
)  # fmt: skip
PARAMS_DRAWN = st.dictionaries(st.sampled_from([*PARAMS, "extra"]), TEXT, max_size=4)


async def test_any_parameters_are_answered_200_or_400(make_gateway: Any) -> None:
    async with seeded(make_gateway) as gw:
        key = await gw.tenant_key("acme")
        tenant_headers = {"Authorization": f"Bearer {key}"}

        @settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
        @given(params=PARAMS_DRAWN, tenant_view=st.booleans())
        def drawn(params: dict[str, str], tenant_view: bool) -> None:
            cases.append((params, tenant_view))

        cases: list[tuple[dict[str, str], bool]] = []
        drawn()
        for params, tenant_view in cases:
            path, headers = (("/v1/me/requests", tenant_headers) if tenant_view
                             else (ADMIN_PATH, gw.admin))  # fmt: skip
            r = await gw.client.get(path, params=params, headers=headers)
            assert r.status_code in (200, 400), (params, r.status_code, r.text)
            if r.status_code == 400:
                assert r.json()["error"]["param"] in params, (params, r.text)
            else:
                assert r.json()["object"] == "list"

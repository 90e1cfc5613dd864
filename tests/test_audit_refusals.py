"""The audit trail's fixes after review (issue [14]): ``before`` is read only for an allowed
caller; refusals without a valid admin key are folded per client IP and operation into one
record per window (each with its ``count``), and the counts still folded are written when the
app stops; ``/admin/graphql``'s refusals are recorded; a NUL in a path leaves a storable
record on PostgreSQL."""

from __future__ import annotations

import secrets
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.identity.audit import verify
from farebox.stores.sqlite.store import SQLiteStore
from tests.outage import dsn, fresh_databases, redis_url, require_services

CONFIG: dict[str, Any] = {"plans": {"default": {"models": ["*"]}}}
JUNK = {"Authorization": "Bearer fba_not_a_key_0123456789abcdef"}


async def admin_key(gw: Any, role: str, tenant: str | None = None) -> dict[str, str]:
    body = {"name": role, "role": role, **({"tenant": tenant} if tenant else {})}
    r = await gw.client.post("/admin/v1/admin-keys", json=body, headers=gw.admin)
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


async def test_before_is_read_only_once_the_caller_is_allowed(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        await gw.tenant("acme")
        await gw.tenant("globex")
        r = await gw.client.post("/admin/v1/tenants/acme/keys", json={"name": "k"},
                                 headers=gw.admin)  # fmt: skip
        key_id = r.json()["id"]
        viewer = await admin_key(gw, "viewer")
        other = await admin_key(gw, "tenant_admin", "globex")
        trail = gw.app.gate.trail
        reads: list[dict[str, str]] = []
        real = trail.readers["key_id"]

        async def spy(params: Any) -> Any:
            reads.append(dict(params))
            return await real(params)

        trail.readers = {**trail.readers, "key_id": spy}
        path = f"/admin/v1/keys/{key_id}"
        for headers, status in ((JUNK, 401), ({}, 401), (viewer, 403), (other, 404)):
            r = await gw.client.patch(path, json={"alert_threshold": 5}, headers=headers)
            assert r.status_code == status, r.text
            assert reads == [], headers  # refused: no read of the key on its behalf
        r = await gw.client.patch(path, json={"alert_threshold": 50}, headers=gw.admin)
        assert r.status_code == 200, r.text
        assert reads == [{"key_id": key_id}]
        last = (await gw.store.audit.scan(0, 100))[-1]
    assert last.change["before"]["id"] == key_id
    assert (last.change["before"]["alert_threshold"], last.change["after"]["alert_threshold"]) == (
        None, 50)  # fmt: skip


async def test_anonymous_refusals_fold_per_ip_and_operation(
    make_gateway: Any, tmp_path: Path
) -> None:
    now = [1_800_000_000.0]
    config = {**CONFIG, "server": {"trusted_proxies": ["127.0.0.1"]}}
    sent: Counter[tuple[str, str]] = Counter()

    async def refused(gw: Any, method: str, path: str, ip: str) -> None:
        headers = {**JUNK, "X-Forwarded-For": ip}
        r = await gw.client.request(method, "/admin/v1" + path, json={}, headers=headers)
        assert r.status_code == 401
        sent[(ip, method)] += 1

    async with make_gateway(config, clock=lambda: now[0]) as gw:
        start = len(await gw.store.audit.scan(0, 100))
        for _ in range(3):
            await refused(gw, "POST", "/tenants", "10.0.0.1")
        await refused(gw, "POST", "/tenants", "10.0.0.2")
        for path in ("/keys/a", "/keys/b", "/nowhere/1", "/nowhere/2"):
            await refused(gw, "DELETE", path, "10.0.0.1")
        records = (await gw.store.audit.scan(0, 100))[start:]
        assert [(r.ip, r.action, r.change["count"]) for r in records] == [
            ("10.0.0.1", "POST /tenants", 1),
            ("10.0.0.2", "POST /tenants", 1),
            ("10.0.0.1", "DELETE /keys/{key_id}", 1),
            ("10.0.0.1", "DELETE /nowhere/1", 1),
        ]
        assert gw.app.gate.trail.refusals.pending() == 4
        now[0] += 10  # the windows have passed: the next refusal writes what they counted
        await refused(gw, "POST", "/tenants", "10.0.0.1")
        records = (await gw.store.audit.scan(0, 100))[start + 4 :]
        folded = [(r.ip, r.action, r.target, r.change["count"], r.change.get("since"))
                  for r in records]  # fmt: skip
        assert folded == [
            ("10.0.0.1", "POST /tenants", "", 2, now[0] - 10),
            ("10.0.0.1", "DELETE /keys/{key_id}", "key:b", 1, now[0] - 10),
            ("10.0.0.1", "DELETE *", "", 1, now[0] - 10),  # paths no operation serves: one
            ("10.0.0.1", "POST /tenants", "", 1, None),  # a new window
        ]
        await refused(gw, "POST", "/tenants", "10.0.0.1")  # counted: written at the stop
    store = SQLiteStore(tmp_path / "farebox.db")
    await store.open()
    try:
        records = await store.audit.scan(0, 1000)
    finally:
        await store.close()
    assert verify(records) is None
    counts: Counter[tuple[str, str]] = Counter()
    for r in records[start:]:
        assert (r.actor, r.outcome, r.status) == ("anonymous", "refused", 401)
        counts[(r.ip, r.action.split()[0])] += r.change["count"]
    assert counts == sent  # every refused attempt is in the log: a record, or in a count


async def test_a_window_of_zero_records_each_refusal(make_gateway: Any) -> None:
    async with make_gateway({**CONFIG, "audit": {"refusal_window_s": 0}}) as gw:
        start = len(await gw.store.audit.scan(0, 100))
        for _ in range(3):
            r = await gw.client.post("/admin/v1/tenants", json={}, headers=JUNK)
            assert r.status_code == 401
        records = (await gw.store.audit.scan(0, 100))[start:]
    assert [r.change["count"] for r in records] == [1, 1, 1]


async def test_admin_graphql_refusals_are_recorded(make_gateway: Any) -> None:
    query = {"query": "{ tenants { id } }"}
    async with make_gateway(CONFIG) as gw:
        start = len(await gw.store.audit.scan(0, 100))
        ok = await gw.client.post("/admin/graphql", json=query, headers=gw.admin)
        assert ok.status_code == 200, ok.text
        assert len(await gw.store.audit.scan(0, 100)) == start  # a query changes nothing
        for method, headers in (("POST", JUNK), ("GET", {})):
            r = await gw.client.request(method, "/admin/graphql", json=query, headers=headers)
            assert r.status_code == 401
        records = (await gw.store.audit.scan(0, 100))[start:]
    got = [(r.actor, r.action, r.outcome, r.status, r.change["count"]) for r in records]
    assert got == [
        ("anonymous", "POST /admin/graphql", "refused", 401, 1),
        ("anonymous", "GET /admin/graphql", "refused", 401, 1),
    ]
    assert records[1].request_id == r.headers["x-farebox-request-id"]


async def test_a_nul_in_the_path_leaves_a_record_on_postgresql(make_gateway: Any) -> None:
    require_services()
    with fresh_databases(1) as [name]:
        config = {**CONFIG, "database": dsn(name), "redis": redis_url(),
                  "secret": "env:AUDIT_NUL_SECRET"}  # fmt: skip
        async with make_gateway(config, env={"AUDIT_NUL_SECRET": secrets.token_hex(32)}) as gw:
            r = await gw.client.delete("/admin/v1/keys/%00abc", headers=JUNK)
            assert r.status_code == 401
            stored = [x.target for x in await gw.store.audit.scan(0, 100) if x.actor == "anonymous"]
            assert stored == ["key:\\u0000abc"]  # stored, the NUL escaped
            found = await gw.client.get("/admin/v1/audit", params={"target": "key:\x00abc"},
                                        headers=gw.admin)  # fmt: skip
            assert found.status_code == 200, found.text
            records = found.json()["data"]
            assert [(x["actor"], x["outcome"], x["target"]) for x in records] == [
                ("anonymous", "refused", "key:\\u0000abc")
            ]
            assert records[0]["request_id"] == r.headers["x-farebox-request-id"]
            assert (await gw.app.gate.trail.audit.verify())[1] is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["1.1.1.1", "2.2.2.2", ""]),
            st.sampled_from(["A", "B"]),
            st.floats(0, 12, allow_nan=False),
        ),  # fmt: skip
        max_size=40,
    ),
    st.sampled_from([0.0, 1.0, 10.0]),
)
async def test_folding_loses_and_doubles_no_refusal(
    events: list[tuple[str, str, float]], window: float
) -> None:
    """Any sequence of refusals: once flushed, each (IP, operation)'s counts sum to its
    attempts, the chain holds, and no pair has more than one record of a first attempt in
    any window."""
    from farebox.api.admin.audit_refusals import Refusals
    from farebox.core.audit import AuditEntry
    from farebox.identity.audit import AuditLog
    from farebox.stores.memory.store import MemoryStore

    store, now = MemoryStore(), [0.0]
    refusals = Refusals(AuditLog(store.audit, lambda: now[0]), lambda: now[0], window)
    for n, (ip, op, wait) in enumerate(events):
        now[0] += wait
        entry = AuditEntry("anonymous", "", op, "", {"before": None}, ip, f"req_{n}",
                           "refused", 401)  # fmt: skip
        await refusals.record(entry, (ip, op))
    await refusals.flush()
    records = await store.audit.scan(0, 1000)
    assert verify(records) is None and refusals.pending() == 0
    sums: Counter[tuple[str, str]] = Counter()
    for r in records:
        sums[(r.ip, r.action)] += r.change["count"]
    assert sums == Counter((ip, op) for ip, op, _ in events)
    firsts: dict[tuple[str, str], list[float]] = {}
    for r in records:
        if "since" not in r.change:
            firsts.setdefault((r.ip, r.action), []).append(r.at)
    for times in firsts.values():
        assert all(b - a >= window for a, b in zip(times, times[1:], strict=False))

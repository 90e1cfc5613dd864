"""Issue 14, acceptance 5 (API half): every admin mutation leaves exactly one audit record.

The mutating operations are read from the admin OpenAPI document (every POST, PUT, PATCH and
DELETE under ``/admin/v1``), less those the router table marks ``read_only``; each is driven
with schemathesis-generated requests (valid and not, against a real tenant and key), and after
each request the audit log has grown by exactly one record naming the operation. Refused
attempts (no key, a wrong key) leave one record each; a created key's secret is in no record;
fifty concurrent mutations make one unbroken chain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.python.asgi import get_client, shutdown_lifespans

from farebox.app import create_app
from farebox.config.settings import parse_settings
from farebox.identity.audit import AuditLog, record_of, verify
from tests.conftest import ADMIN_KEY

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MUTATING = ("post", "put", "patch", "delete")
CONFIG: dict[str, Any] = {"plans": {"default": {"models": ["*"]}, "pro": {"models": ["*"]}}}


def audit_page(client: Any, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/admin/v1/audit", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def every_record(client: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = audit_page(client, order="asc", limit=1000, cursor=out[-1]["seq"] if out else 0)
        out += page
        if len(page) < 1000:
            return out


def refusal_records(world: World, client: Any, before: int, folded: int) -> list[dict[str, Any]]:
    """What one refusal without a valid admin key wrote after record ``before``, by the folding
    rule (README, "Audit trail"): the counts of the windows that had passed (``since``), and its
    own record unless its client's window on the operation was open (then it is counted). The
    refused attempts are conserved: those counted before (``folded``) and this one are now
    written or still counted, none lost, none twice. Its own record (or none) is returned."""
    new = [r for r in audit_page(client, limit=1000) if r["seq"] > before]
    assert all((r["actor"], r["outcome"], r["status"]) == ("anonymous", "refused", 401)
               for r in new)  # fmt: skip
    own = [r for r in new if "since" not in r["change"]]
    assert len(own) <= 1 and all(r["change"]["count"] == 1 for r in own)
    assert folded + 1 == world.folded() + sum(r["change"]["count"] for r in new)
    return own


def head(client: Any) -> int:
    page = audit_page(client, limit=1)
    return int(page[0]["seq"]) if page else 0


class World:
    def __init__(self, directory: Path) -> None:
        data = {"database": f"sqlite:///{directory / 'audit.db'}", **CONFIG}
        env = {"FAREBOX_ADMIN_KEY": ADMIN_KEY}
        self.app = create_app(parse_settings(data, source="t.yaml", env=env, base_dir=directory),
                              announce=lambda _m: None)  # fmt: skip
        schema = schemathesis.openapi.from_asgi("/openapi.json", self.app, headers=ADMIN)
        self.schema = schema.include(path_regex="^/admin/")
        self.operations = {
            (op.method.upper(), op.path): op
            for op in (result.ok() for result in self.schema.get_all_operations())
        }
        with get_client(self.app) as client:
            r = client.post("/admin/v1/tenants", json={"id": "acme"}, headers=ADMIN)
            assert r.status_code == 201, r.text
            r = client.post("/admin/v1/tenants/acme/keys", json={"name": "k"}, headers=ADMIN)
            self.key = r.json()
        self.real = {"tenant_id": "acme", "key_id": self.key["id"], "name": "mock"}

    def folded(self) -> int:
        """Refusals without a valid key counted into open windows, not yet in a record."""
        return int(self.app.gate.trail.refusals.pending())

    def read_only(self) -> set[tuple[str, str]]:
        """The router table's POSTs that change nothing (``AdminRoute.read_only``)."""
        trail = self.app.gate.trail
        return {(m.method, "/admin/v1" + m.template) for m in trail.matchers if m.read_only}

    def mutations(self) -> list[tuple[str, str]]:
        return sorted(
            (m, p)
            for (m, p) in self.operations
            if m.lower() in MUTATING and (m, p) not in self.read_only()
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    built = World(tmp_path_factory.mktemp("audit"))
    try:
        yield built
    finally:
        shutdown_lifespans()


def test_the_mutations_come_from_the_document(world: World) -> None:
    found = world.mutations()
    assert len(found) >= 15
    assert ("POST", "/admin/v1/tenants") in found and ("DELETE", "/admin/v1/keys/{key_id}") in found
    assert ("POST", "/admin/v1/reprice") in world.read_only()
    assert ("POST", "/admin/v1/reprice") not in found
    assert ("GET", "/admin/v1/audit") in world.operations


CREATED_KINDS = {"tenants": "tenant", "keys": "key", "service-keys": "key", "credits": "credit",
                 "workspaces": "workspace", "admin-keys": "admin_key",
                 "integrations": "integration"}  # fmt: skip


def _expected_target(method: str, path: str, params: dict[str, Any], answer: Any) -> str | None:
    """The target a record must name, where the test can tell (None: not checked): a create
    names what it made, anything else the path's most specific parameter."""
    segment = path.rstrip("/").rsplit("/", 1)[-1]
    if method == "POST" and segment in CREATED_KINDS:
        ok = isinstance(answer, dict) and isinstance(answer.get("id"), str)
        return f"{CREATED_KINDS[segment]}:{answer['id']}" if ok else None
    if not params:
        return ""
    last = list(params)[-1]
    kind = {"name": "provider"}.get(last, last.removesuffix("_id"))
    return f"{kind}:{params[last]}"


@pytest.mark.parametrize("real", [False, True], ids=["generated-params", "real-params"])
def test_every_mutation_leaves_exactly_one_record(world: World, real: bool) -> None:
    checked: dict[str, int] = {}
    with get_client(world.app) as client:
        for method, path in world.mutations():
            op = world.operations[(method, path)]
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                checked[f"{method} {path}"] = checked.get(f"{method} {path}", 0)
                _drive(world, client, op, mode, real, checked)
    assert all(n > 0 for n in checked.values()), checked


def _drive(world: World, client: Any, op: Any, mode: Any, real: bool,
           checked: dict[str, int]) -> None:  # fmt: skip
    method, path = op.method.upper(), op.path

    @settings(max_examples=6, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=op.as_strategy(mode))
    def run(case: Any) -> None:
        if real and case.path_parameters:
            case.path_parameters = {
                k: world.real.get(k, v) for k, v in case.path_parameters.items()
            }
        before, folded = head(client), world.folded()
        response = case.call(headers=ADMIN)
        if response.status_code == 401:  # a negative case may send a bad Authorization header
            own = refusal_records(world, client, before, folded)
            if not own:  # folded into its window's count: conserved, as checked
                checked[f"{method} {path}"] += 1
                return
            record = own[0]
        else:
            records = audit_page(client, limit=3)
            assert records and records[0]["seq"] == before + 1, (method, path, response.status_code)
            assert len([r for r in records if r["seq"] > before]) == 1
            record = records[0]
        assert record["action"] == f"{method} {path.removeprefix('/admin/v1')}"
        status = response.status_code
        assert record["status"] == status
        if status == 401:  # a negative case may send a bad Authorization header
            assert (record["actor"], record["outcome"]) == ("anonymous", "refused")
        else:
            assert record["actor"] in ("admin", "env") and record["role"] == "owner"
            assert record["outcome"] == ("ok" if status < 400 else "failed")
        given_id = response.headers["x-farebox-request-id"]  # a list, in schemathesis' response
        assert record["request_id"] in (given_id, *given_id)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        expected = _expected_target(method, path, case.path_parameters or {}, answer)
        if expected is not None and response.status_code < 400:
            assert record["target"] == expected, (method, path)
        checked[f"{method} {path}"] += 1

    run()


def test_reads_and_what_ifs_leave_none(world: World) -> None:
    with get_client(world.app) as client:
        before = head(client)
        for path in ("/admin/v1/tenants", "/admin/v1/tenants/acme", "/admin/v1/usage"):
            assert client.get(path, headers=ADMIN).status_code == 200
        r = client.post("/admin/v1/reprice", json={"plan": "default", "to": {}}, headers=ADMIN)
        assert r.status_code < 500
        assert head(client) == before


@pytest.mark.parametrize("auth", [None, "Bearer fba_wrong_key_0123456789abcdef", "Basic x"])
@pytest.mark.parametrize(("method", "path"), [("GET", "/admin/v1/tenants"),
                                              ("POST", "/admin/v1/tenants"),
                                              ("DELETE", "/admin/v1/keys/key_x")])  # fmt: skip
def test_a_refused_attempt_leaves_one_record(world: World, auth: str | None, method: str,
                                             path: str) -> None:  # fmt: skip
    headers = {"Authorization": auth} if auth else {}
    action = f"{method} {path.removeprefix('/admin/v1').replace('key_x', '{key_id}')}"
    with get_client(world.app) as client:
        before, folded = head(client), world.folded()
        r = client.request(method, path, json={"id": "evil"}, headers=headers)
        assert r.status_code == 401
        records = refusal_records(world, client, before, folded)
        opened = audit_page(client, action=action, actor="anonymous", limit=1)
    if not records:  # this client's refusals of this operation are in a window already open
        assert opened and opened[0]["change"]["count"] == 1  # the window's first, recorded
        return
    record = records[0]
    assert (record["outcome"], record["status"], record["actor"]) == ("refused", 401, "anonymous")
    assert (record["action"], record["change"]["count"]) == (action, 1)
    assert record["change"]["request"] is None and record["change"]["before"] is None
    assert record["ip"] == "testclient" or record["ip"]
    assert "fba_wrong" not in orjson.dumps(record).decode()


def test_secrets_are_masked_and_before_is_kept(world: World) -> None:
    with get_client(world.app) as client:
        r = client.post("/admin/v1/tenants/acme/keys", json={"name": "k2"}, headers=ADMIN)
        raw = r.json()["key"]
        service = client.post("/admin/v1/service-keys", json={"name": "s"}, headers=ADMIN)
        body = {"name": "Acme Inc", "metadata": {"api_key": "sk-live-abcdefghijklmnop",
                                                 "note": raw, "password": "hunter2"}}  # fmt: skip
        assert client.patch("/admin/v1/tenants/acme", json=body, headers=ADMIN).status_code == 200
        records = every_record(client)
    text = orjson.dumps(records).decode()
    for secret in (raw, service.json()["key"], "sk-live-abcdefghijklmnop", "hunter2"):
        assert secret not in text
    created = next(x for x in records if x["target"] == f"key:{r.json()['id']}")
    assert created["change"]["after"]["key"] == "***" + raw[-4:]
    patch = records[-1]
    assert patch["action"] == "PATCH /tenants/{tenant_id}" and patch["target"] == "tenant:acme"
    assert patch["change"]["before"]["name"] != "Acme Inc"
    assert patch["change"]["after"]["name"] == "Acme Inc"
    assert patch["change"]["request"]["metadata"] == {
        "api_key": "***mnop", "note": "***" + raw[-4:], "password": "***"
    }  # fmt: skip
    assert verify(record_of(x) for x in records) is None


def test_the_audit_page_filters_and_refuses_bad_input(world: World) -> None:
    with get_client(world.app) as client:
        client.post("/admin/v1/tenants/acme/pause", json={"reason": "x"}, headers=ADMIN)
        client.post("/admin/v1/tenants/acme/resume", headers=ADMIN)
        found = audit_page(client, target="tenant:acme", action="POST /tenants/{tenant_id}/pause")
        assert found and all(x["target"] == "tenant:acme" for x in found)
        assert found[0]["change"]["before"]["paused"] is False
        assert found[0]["change"]["after"]["paused"] is True
        newest = audit_page(client, limit=1)[0]
        assert audit_page(client, **{"from": newest["at"], "actor": newest["actor"]})[0] == newest
        assert audit_page(client, to=newest["at"], limit=1)[0]["seq"] < newest["seq"]
        for bad in ({"limit": 0}, {"from": "yesterday"}, {"cursor": -1}, {"order": "up"},
                    {"actr": "x"}):  # fmt: skip
            r = client.get("/admin/v1/audit", params=bad, headers=ADMIN)
            assert r.status_code == 400, (bad, r.text)


async def test_fifty_concurrent_mutations_make_one_chain(make_gateway: Any) -> None:
    async with make_gateway(CONFIG) as gw:
        await gw.tenant("acme")

        async def pause(n: int) -> int:
            path = f"/admin/v1/tenants/acme/{'pause' if n % 2 else 'resume'}"
            r = await gw.client.post(path, headers=gw.admin)
            return r.status_code

        statuses = await asyncio.gather(*(pause(n) for n in range(50)))
        assert set(statuses) == {200}
        count, broken = await gw.app.gate.trail.audit.verify()
    assert (count, broken) == (51, None)


async def test_records_stream_to_the_signed_webhook(make_gateway: Any) -> None:
    from aiohttp import web

    from fakes import serve
    from farebox.sinks.webhook import verify as signed

    got: list[tuple[str, bytes]] = []
    arrived = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        got.append((request.headers["x-farebox-signature"], await request.read()))
        arrived.set()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", handle)
    runner, port = await serve(receiver)
    secret = "whsec_audit_stream_test_0123456789"
    config = {**CONFIG, "audit": {"webhook": True},
              "budgets": {"alert_webhook_url": f"http://127.0.0.1:{port}/hook",
                          "alert_webhook_secret": "env:AUDIT_HOOK_SECRET"}}  # fmt: skip
    try:
        async with make_gateway(config, env={"AUDIT_HOOK_SECRET": secret}) as gw:
            await gw.tenant("acme")
            await asyncio.wait_for(arrived.wait(), 10)
            stored = await gw.store.audit.scan(0, 10)
    finally:
        await runner.cleanup()
    sent, body = got[0]
    event = orjson.loads(body)
    assert event["type"] == "audit.record" and event["record"]["hash"] == stored[0].hash
    assert event["record"]["target"] == "tenant:acme"
    stamp = int(dict(p.split("=", 1) for p in sent.split(","))["t"])
    assert signed(secret.encode(), sent, body, stamp)


async def test_a_tenant_admins_404_is_a_refusal_and_its_key_is_the_actor() -> None:
    """The trail alone, around a stand-in for the gate that resolves an admin key's actor
    (``farebox.admin_actor`` in the scope, as the roles' gate puts it) and answers 404, as
    a ``tenant_admin`` is answered outside its tenant."""
    from types import SimpleNamespace

    from farebox.api.admin.audit_trail import AuditTrail
    from farebox.api.client_ip import TrustedProxies
    from farebox.stores.memory.store import MemoryStore

    store = MemoryStore()
    op = SimpleNamespace(method="GET", path="/tenants/{tenant_id}", options={}, read_only=False)
    trail = AuditTrail(AuditLog(store.audit, lambda: 1.5), [op], {}, TrustedProxies([]))

    async def gate(scope: Any, receive: Any, send: Any) -> None:
        scope["farebox.admin_actor"] = SimpleNamespace(key_id=scope["key"], role=scope["role"])
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b'{"error":{}}'})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    for key, role in (("key_ta", "tenant_admin"), ("key_op", "operator")):
        scope = {"type": "http", "method": "GET", "path": "/admin/v1/tenants/globex",
                 "headers": [], "client": ("10.1.2.3", 5), "key": key, "role": role}  # fmt: skip
        await trail.serve(scope, receive, send, gate)
    records = await store.audit.scan(0, 10)
    assert len(records) == 1  # the operator's 404 is an answer, not a refusal: a read, unkept
    record = records[0]
    assert (record.actor, record.role, record.outcome, record.status) == (
        "key_ta", "tenant_admin", "refused", 404)  # fmt: skip
    assert (record.action, record.target, record.ip) == (
        "GET /tenants/{tenant_id}", "tenant:globex", "10.1.2.3")  # fmt: skip
    assert [m["type"] for m in sent].count("http.response.body") == 2  # every answer sent

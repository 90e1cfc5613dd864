"""Acceptance "Keys": storage, revocation, expiry, tenant isolation, service keys,
pausing and attribution."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import yaml
from click.testing import CliRunner

from farebox.app import create_app
from farebox.cli import main
from farebox.config.settings import parse_settings

ADMIN_KEY = "fba_test_admin_key_for_tests_only_0123456789"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}
EMBED = {"model": "text-embedding-3-small", "input": "hello there"}
URLSAFE_43 = re.compile(r"^[A-Za-z0-9_-]{43,}$")


def bearer(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def db_path(tmp_path: Path) -> Path:
    # conftest's make_gateway puts the database here
    return tmp_path / "farebox.db"


async def chat(gw: Any, key: str, **headers: str) -> httpx.Response:
    return await gw.client.post("/v1/chat/completions", json=CHAT, headers=bearer(key, **headers))


async def key_record(gw: Any, tenant: str, **extra: Any) -> dict[str, Any]:
    r = await gw.client.post(
        f"/admin/v1/tenants/{tenant}/keys", json={"name": "k", **extra}, headers=gw.admin
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def service_key(gw: Any, name: str = "backend") -> dict[str, Any]:
    r = await gw.client.post("/admin/v1/service-keys", json={"name": name}, headers=gw.admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


def all_cells(path: Path) -> list[str]:
    """Every value of every row of every table, as text (blobs decoded leniently)."""
    conn = sqlite3.connect(str(path))
    try:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        assert {"tenants", "api_keys", "ledger"} <= set(tables)
        cells: list[str] = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes):
                        cells.append(value.decode("utf-8", "replace"))
                        cells.append(value.hex())
                    elif value is not None:
                        cells.append(str(value))
        return cells
    finally:
        conn.close()


def database_files(tmp_path: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes()
        for p in tmp_path.iterdir()
        if p.is_file() and p.name.startswith("farebox.db")
    }


def random_part(key: str) -> str:
    prefix, sep, rest = key.partition("_")
    assert sep and prefix, key
    return rest


# (a) no plaintext key in the database ----------------------------------------------------


async def test_keys_are_fbx_with_256_bits_and_unique(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await gw.tenant("acme")
        keys = [(await key_record(gw, "acme"))["key"] for _ in range(5)]
        for key in keys:
            assert key.startswith("fbx_")
            assert URLSAFE_43.match(key[len("fbx_") :]), key
        assert len(set(keys)) == len(keys)
        service = (await service_key(gw))["key"]
        assert URLSAFE_43.match(random_part(service)), service
        assert service not in keys


async def test_database_holds_no_plaintext_key(make_gateway: Any, tmp_path: Path) -> None:
    async with make_gateway() as gw:
        a_key = await gw.tenant_key("acme")
        b_key = await gw.tenant_key("globex")
        svc = await service_key(gw)
        svc_key = svc["key"]
        assert svc["id"] != svc_key
        # use every key, so any "last used" bookkeeping or ledger row is written
        assert (await chat(gw, a_key)).status_code == 200
        assert (await chat(gw, b_key, **{"X-Farebox-User": "u1"})).status_code == 200
        r = await chat(gw, svc_key, **{"X-Farebox-Tenant": "acme"})
        assert r.status_code == 200, r.text
        r = await gw.client.post("/v1/embeddings", json=EMBED, headers=bearer(a_key))
        assert r.status_code == 200, r.text
        assert (await gw.client.get("/v1/me", headers=bearer(b_key))).status_code == 200
        assert len(await gw.ledger()) == 4
        cells = all_cells(db_path(tmp_path))
        assert any("acme" in c for c in cells)  # the reader really sees the data
        secrets = [a_key, b_key, svc_key, ADMIN_KEY]
        for secret in secrets:
            for needle in (secret, random_part(secret)):
                leaked = [c for c in cells if needle in c]
                assert not leaked, f"{needle[:8]}... stored in plaintext"
        # nor in the WAL or any other file beside the database
        files = database_files(tmp_path)
        assert any(name.endswith("-wal") for name in files) or len(files) >= 1
        for name, raw in files.items():
            for secret in secrets:
                assert random_part(secret).encode() not in raw, name


async def test_key_listing_does_not_reveal_the_secret(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await gw.tenant("acme")
        created = await key_record(gw, "acme")
        r = await gw.client.get("/admin/v1/tenants/acme/keys", headers=gw.admin)
        assert r.status_code == 200, r.text
        assert [k["id"] for k in r.json()["data"]] == [created["id"]]
        assert random_part(created["key"]) not in r.text
        assert "key" not in r.json()["data"][0]


# (b) revocation, expiry, and cross-instance invalidation ------------------------------------


async def test_revoked_key_is_refused_on_the_very_next_request(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await gw.tenant("acme")
        rec = await key_record(gw, "acme")
        other = await gw.key("acme")
        for _ in range(3):  # warm every cache
            assert (await chat(gw, rec["key"])).status_code == 200
        r = await gw.client.delete(f"/admin/v1/keys/{rec['id']}", headers=gw.admin)
        assert r.status_code == 200, r.text
        assert r.json()["revoked"] is True
        r = await chat(gw, rec["key"])
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert (await gw.client.get("/v1/me", headers=bearer(rec["key"]))).status_code == 401
        r = await gw.client.post("/v1/embeddings", json=EMBED, headers=bearer(rec["key"]))
        assert r.status_code == 401
        # the tenant's other key is unaffected
        assert (await chat(gw, other)).status_code == 200
        assert len(await gw.ledger("acme")) == 4


async def test_revoking_an_unknown_key_is_404(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        r = await gw.client.delete("/admin/v1/keys/key_doesnotexist", headers=gw.admin)
        assert r.status_code == 404
        assert set(r.json()["error"]) >= {"message", "type", "param", "code"}


class Clock:
    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_expired_key_is_refused_at_once(make_gateway: Any) -> None:
    clock = Clock()
    async with make_gateway(clock=clock) as gw:
        await gw.tenant("acme")
        rec = await key_record(gw, "acme", expires_in_s=60)
        forever = await gw.key("acme")
        assert rec["expires_at"] == clock.now + 60
        assert (await chat(gw, rec["key"])).status_code == 200
        clock.now += 59
        assert (await chat(gw, rec["key"])).status_code == 200
        clock.now += 1.5
        r = await chat(gw, rec["key"])
        assert r.status_code == 401, r.text
        assert r.json()["error"]["code"] == "invalid_api_key"
        assert (await gw.client.get("/v1/me", headers=bearer(rec["key"]))).status_code == 401
        assert (await chat(gw, forever)).status_code == 200


async def test_service_key_expiry_and_revocation(make_gateway: Any) -> None:
    clock = Clock()
    async with make_gateway(clock=clock) as gw:
        await gw.tenant("acme")
        r = await gw.client.post(
            "/admin/v1/service-keys", json={"name": "cron", "expires_in_s": 60}, headers=gw.admin
        )
        assert r.status_code == 201, r.text
        expiring = r.json()
        assert expiring["expires_at"] == clock.now + 60
        revocable = await service_key(gw)
        for rec in (expiring, revocable):
            assert (await chat(gw, rec["key"], **{"X-Farebox-Tenant": "acme"})).status_code == 200
        clock.now += 61
        r = await chat(gw, expiring["key"], **{"X-Farebox-Tenant": "acme"})
        assert r.status_code == 401, r.text
        r = await gw.client.delete(f"/admin/v1/keys/{revocable['id']}", headers=gw.admin)
        assert r.status_code == 200, r.text
        r = await chat(gw, revocable["key"], **{"X-Farebox-Tenant": "acme"})
        assert r.status_code == 401, r.text


async def test_admin_key_is_not_a_data_plane_key(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await gw.tenant("acme")
        r = await chat(gw, ADMIN_KEY, **{"X-Farebox-Tenant": "acme"})
        assert r.status_code == 401, r.text
        assert await gw.ledger() == []


async def test_key_cannot_be_created_already_expired(make_gateway: Any) -> None:
    clock = Clock()
    async with make_gateway(clock=clock) as gw:
        await gw.tenant("acme")
        r = await gw.client.post(
            "/admin/v1/tenants/acme/keys",
            json={"name": "k", "expires_at": clock.now - 1},
            headers=gw.admin,
        )
        assert r.status_code == 400, r.text


@contextlib.asynccontextmanager
async def second_instance(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Another app on the same database file, as another worker process would be."""
    data = {"database": f"sqlite:///{db_path(tmp_path)}"}
    settings = parse_settings(
        data, source="second.yaml", env={"FAREBOX_ADMIN_KEY": ADMIN_KEY}, base_dir=tmp_path
    )
    app = create_app(settings, announce=lambda _m: None)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://second") as client:
            yield client


async def test_revocation_by_another_instance_is_seen_at_once(
    make_gateway: Any, tmp_path: Path
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with make_gateway() as gw:
        await gw.tenant("acme")
        rec = await key_record(gw, "acme")
        async with second_instance(tmp_path) as other:
            # both instances accept (and cache) the key
            assert (await chat(gw, rec["key"])).status_code == 200
            r = await other.post("/v1/chat/completions", json=CHAT, headers=bearer(rec["key"]))
            assert r.status_code == 200, r.text
            r = await other.delete(f"/admin/v1/keys/{rec['id']}", headers=admin)
            assert r.status_code == 200, r.text
            assert (await chat(gw, rec["key"])).status_code == 401
            # and pausing the tenant elsewhere, too
            key2 = await gw.key("acme")
            assert (await chat(gw, key2)).status_code == 200
            r = await other.post("/admin/v1/tenants/acme/pause", headers=admin)
            assert r.status_code == 200, r.text
            r = await chat(gw, key2)
            assert r.status_code == 403
            assert r.json()["error"]["code"] == "tenant_paused"


async def test_revocation_by_the_cli_is_seen_at_once(make_gateway: Any, tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({"database": f"sqlite:///{db_path(tmp_path)}"}))
    async with make_gateway() as gw:
        await gw.tenant("acme")
        rec = await key_record(gw, "acme")
        for _ in range(2):
            assert (await chat(gw, rec["key"])).status_code == 200
        runner = CliRunner()
        result = await asyncio.to_thread(
            runner.invoke,
            main,
            ["keys", "revoke", rec["id"], "--config", str(config)],
            env={"FAREBOX_ADMIN_KEY": ADMIN_KEY},
        )
        assert result.exit_code == 0, result.output
        assert rec["id"] in result.output
        r = await chat(gw, rec["key"])
        assert r.status_code == 401, r.text


# (c) tenant isolation ------------------------------------------------------------------------


async def test_tenant_key_sees_only_its_own_tenant(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        a = await gw.tenant_key("tenant-a")
        b = await gw.tenant_key("tenant-b")
        r = await gw.client.get("/v1/me", headers=bearer(a, **{"X-Farebox-Tenant": "tenant-b"}))
        assert r.status_code == 200, r.text
        assert r.json()["tenant"]["id"] == "tenant-a"
        assert "tenant-b" not in r.text
        r = await gw.client.get("/v1/me", headers=bearer(b))
        assert r.json()["tenant"]["id"] == "tenant-b"


async def test_admin_api_rejects_tenant_and_service_keys(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        a = await gw.tenant_key("tenant-a")
        await gw.tenant("tenant-b")
        svc = (await service_key(gw))["key"]
        requests = [
            ("GET", "/admin/v1/tenants", None),
            ("GET", "/admin/v1/tenants/tenant-b", None),
            ("GET", "/admin/v1/tenants/tenant-a", None),
            ("GET", "/admin/v1/usage", None),
            ("GET", "/admin/v1/usage?tenant=tenant-b", None),
            ("POST", "/admin/v1/tenants/tenant-b/keys", {"name": "steal"}),
            ("POST", "/admin/v1/tenants", {"id": "evil"}),
            ("POST", "/admin/v1/tenants/tenant-b/pause", None),
        ]
        for key in (a, svc):
            for method, path, body in requests:
                r = await gw.client.request(
                    method, path, json=body, headers=bearer(key, **{"X-Farebox-Tenant": "tenant-b"})
                )
                assert r.status_code == 401, (method, path, r.text)
                assert r.json()["error"]["type"] == "authentication_error"
        r = await gw.client.get("/admin/v1/tenants", headers=gw.admin)
        assert sorted(t["id"] for t in r.json()["data"]) == ["tenant-a", "tenant-b"]
        assert all(not t["paused"] for t in r.json()["data"])
        r = await gw.client.get("/admin/v1/tenants", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        r = await gw.client.get("/admin/v1/tenants")
        assert r.status_code == 401


async def test_tenant_header_cannot_switch_tenant(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        a = await gw.tenant_key("tenant-a")
        await gw.tenant("tenant-b")
        r = await chat(gw, a, **{"X-Farebox-Tenant": "tenant-b"})
        assert r.status_code == 200, r.text
        entries = await gw.ledger()
        assert [e.tenant_id for e in entries] == ["tenant-a"]
        assert await gw.ledger("tenant-b") == []


async def test_usage_and_ledger_are_attributed_to_the_right_tenant(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        a = await gw.tenant_key("tenant-a")
        b = await gw.tenant_key("tenant-b")
        await gw.tenant("tenant-c")
        for _ in range(3):
            assert (await chat(gw, a)).status_code == 200
        for _ in range(2):
            assert (await chat(gw, b)).status_code == 200
        r = await gw.client.post("/v1/embeddings", json=EMBED, headers=bearer(b))
        assert r.status_code == 200
        a_entries, b_entries = await gw.ledger("tenant-a"), await gw.ledger("tenant-b")
        assert len(a_entries) == 3 and len(b_entries) == 3
        assert {e.tenant_id for e in a_entries} == {"tenant-a"}
        assert {e.tenant_id for e in b_entries} == {"tenant-b"}
        assert await gw.ledger("tenant-c") == []
        r = await gw.client.get("/admin/v1/usage?group_by=tenant", headers=gw.admin)
        assert r.status_code == 200, r.text
        rows = {row["tenant"]: row for row in r.json()["data"]}
        assert set(rows) == {"tenant-a", "tenant-b"}
        assert rows["tenant-a"]["requests"] == 3
        assert rows["tenant-b"]["requests"] == 3
        assert rows["tenant-a"]["input_tokens"] == sum(e.input_tokens for e in a_entries)
        assert rows["tenant-b"]["output_tokens"] == sum(e.output_tokens for e in b_entries)
        r = await gw.client.get("/admin/v1/usage?tenant=tenant-c", headers=gw.admin)
        assert r.status_code == 200
        assert sum(row["requests"] for row in r.json()["data"]) == 0


# (d) service keys -------------------------------------------------------------------------


async def test_service_key_needs_a_tenant_header(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await gw.tenant("acme")
        svc = (await service_key(gw))["key"]
        for path, body in (("/v1/chat/completions", CHAT), ("/v1/embeddings", EMBED)):
            r = await gw.client.post(path, json=body, headers=bearer(svc))
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "missing_tenant"
            assert r.json()["error"]["param"] == "X-Farebox-Tenant"
        r = await gw.client.get("/v1/me", headers=bearer(svc))
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "missing_tenant"
        assert await gw.ledger() == []


async def test_service_key_with_unknown_tenant_is_refused(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await gw.tenant("acme")
        svc = (await service_key(gw))["key"]
        r = await chat(gw, svc, **{"X-Farebox-Tenant": "nobody"})
        assert 400 <= r.status_code < 500, r.text
        assert set(r.json()["error"]) >= {"message", "type", "param", "code"}
        assert await gw.ledger() == []


async def test_service_key_acts_for_the_named_tenant(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await gw.tenant("acme")
        await gw.tenant("globex")
        svc = await service_key(gw)
        r = await chat(gw, svc["key"], **{"X-Farebox-Tenant": "globex"})
        assert r.status_code == 200, r.text
        r = await gw.client.post(
            "/v1/embeddings", json=EMBED, headers=bearer(svc["key"], **{"X-Farebox-Tenant": "acme"})
        )
        assert r.status_code == 200, r.text
        r = await gw.client.get(
            "/v1/me", headers={"x-api-key": svc["key"], "X-Farebox-Tenant": "globex"}
        )
        assert r.status_code == 200, r.text
        assert r.json()["tenant"]["id"] == "globex"
        (g,) = await gw.ledger("globex")
        (a,) = await gw.ledger("acme")
        assert g.key_id == svc["id"] and a.key_id == svc["id"]
        assert g.endpoint == "chat.completions" and a.endpoint == "embeddings"


async def test_service_key_respects_a_paused_tenant(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await gw.tenant("acme")
        svc = (await service_key(gw))["key"]
        assert (await gw.client.post("/admin/v1/tenants/acme/pause", headers=gw.admin)).is_success
        r = await chat(gw, svc, **{"X-Farebox-Tenant": "acme"})
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "tenant_paused"


# (e) pause and resume ---------------------------------------------------------------------


async def test_pause_and_resume_tenant(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        other = await gw.tenant_key("globex")
        assert (await chat(gw, key)).status_code == 200
        r = await gw.client.post(
            "/admin/v1/tenants/acme/pause", json={"reason": "spike"}, headers=gw.admin
        )
        assert r.status_code == 200, r.text
        assert r.json()["paused"] is True
        r = await chat(gw, key)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "tenant_paused"
        assert r.json()["error"]["type"] == "permission_error"
        assert "x-farebox-request-id" in r.headers
        r = await gw.client.post("/v1/embeddings", json=EMBED, headers=bearer(key))
        assert r.status_code == 403
        assert (await chat(gw, other)).status_code == 200  # other tenants unaffected
        r = await gw.client.post("/admin/v1/tenants/acme/resume", headers=gw.admin)
        assert r.status_code == 200, r.text
        assert r.json()["paused"] is False
        assert (await chat(gw, key)).status_code == 200
        assert len(await gw.ledger("acme")) == 2


async def test_pause_and_resume_key(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        await gw.tenant("acme")
        rec = await key_record(gw, "acme")
        sibling = await gw.key("acme")
        assert (await chat(gw, rec["key"])).status_code == 200
        r = await gw.client.post(f"/admin/v1/keys/{rec['id']}/pause", headers=gw.admin)
        assert r.status_code == 200, r.text
        r = await chat(gw, rec["key"])
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "key_paused"
        assert (await chat(gw, sibling)).status_code == 200
        r = await gw.client.post(f"/admin/v1/keys/{rec['id']}/resume", headers=gw.admin)
        assert r.status_code == 200, r.text
        assert (await chat(gw, rec["key"])).status_code == 200


async def test_pausing_an_unknown_tenant_or_key_is_404(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        r = await gw.client.post("/admin/v1/tenants/ghost/pause", headers=gw.admin)
        assert r.status_code == 404
        r = await gw.client.post("/admin/v1/keys/key_ghost/pause", headers=gw.admin)
        assert r.status_code == 404


# (f) attribution ------------------------------------------------------------------------


async def test_attribution_headers_land_in_the_ledger(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        headers = {
            "X-Farebox-User": "user-42",
            "X-Farebox-Feature": "document_analysis",
            "X-Farebox-Metadata": '{"team": "blue", "n": 3, "nested": {"ok": true}}',
        }
        r = await chat(gw, key, **headers)
        assert r.status_code == 200, r.text
        (entry,) = await gw.ledger("acme")
        assert entry.request_id == r.headers["x-farebox-request-id"]
        assert entry.user == "user-42"
        assert entry.feature == "document_analysis"
        assert entry.metadata == {"team": "blue", "n": 3, "nested": {"ok": True}}
        r = await gw.client.get("/admin/v1/usage?group_by=feature", headers=gw.admin)
        assert [row["feature"] for row in r.json()["data"]] == ["document_analysis"]
        r = await gw.client.get("/admin/v1/usage?group_by=user", headers=gw.admin)
        assert [row["user"] for row in r.json()["data"]] == ["user-42"]


async def test_openai_user_field_lands_in_the_ledger(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        body = {**CHAT, "user": "end-user-7"}
        r = await gw.client.post("/v1/chat/completions", json=body, headers=bearer(key))
        assert r.status_code == 200, r.text
        (entry,) = await gw.ledger("acme")
        assert entry.user == "end-user-7"
        assert entry.feature is None
        assert entry.metadata == {}


async def test_attribution_on_streams_and_embeddings(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        headers = bearer(key, **{"X-Farebox-Feature": "search", "X-Farebox-User": "u9"})
        r = await gw.client.post("/v1/embeddings", json=EMBED, headers=headers)
        assert r.status_code == 200
        r = await gw.client.post(
            "/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers
        )
        assert r.status_code == 200
        assert r.text.rstrip().endswith("data: [DONE]")
        entries = await gw.ledger("acme")
        assert len(entries) == 2
        assert {(e.feature, e.user) for e in entries} == {("search", "u9")}


async def test_malformed_metadata_is_rejected(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        key = await gw.tenant_key("acme")
        for bad in ("{not json", "[1, 2]", '"a string"', "42", "null", '{"a": ' + "1" * 5000 + "}"):
            r = await chat(gw, key, **{"X-Farebox-Metadata": bad})
            assert r.status_code == 400, (bad, r.text)
            err = r.json()["error"]
            assert set(err) >= {"message", "type", "param", "code"}
            assert "Traceback" not in r.text
        r = await chat(gw, key, **{"X-Farebox-User": "u" * 1000})
        assert r.status_code == 400, r.text
        assert await gw.ledger() == []

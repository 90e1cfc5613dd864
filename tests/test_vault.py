"""Issue [14], acceptance 6: the provider-credential vault.

A created credential is nowhere in plaintext: not in the SQLite database (its file and WAL),
not in PostgreSQL (every column of every table of the schema as text, and ``pg_dump`` when it
is on the PATH), not in any log (the app's loggers and the access log), not in any API answer
(only its last 4). A rotation through one app instance is used by the next request through
another on the same database (the auth epoch every worker reads). KEK rotation re-encrypts
every credential, and rows not yet moved stay readable until it is done.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from farebox.core.credentials import Credential
from farebox.errors import VaultError
from farebox.identity.integrations import Integrations
from farebox.identity.vault import DERIVED, Vault, derive_kek, rekey
from farebox.providers.mock import MockOptions, MockProvider
from farebox.stores.memory.store import MemoryStore
from farebox.stores.sqlite.store import SQLiteStore
from tests.contracts.backends import PG_DSN, require

CHAT = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
K1, K2 = secrets.token_bytes(32), secrets.token_bytes(32)
KEK_V1 = f"v1:{base64.b64encode(K1).decode()}"
KEK_V2 = f"v2:{base64.b64encode(K2).decode()}"


def distinctive() -> str:
    return f"sk-vaulttest-{secrets.token_hex(16)}"


def config(api_key: str = "integration:openai-prod") -> dict[str, Any]:
    return {
        "providers": {"sim": {"kind": "mock", "api_key": api_key}},
        "plans": {"default": {"models": ["*"]}},
        "logging": {"access_log": True},
    }


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


async def chat(gw: Any, raw: str) -> Any:
    return await gw.client.post("/v1/chat/completions", json=CHAT, headers=bearer(raw))


def on_disk(directory: Path) -> bytes:
    """Every byte of every file the gateway wrote (database, WAL, shared memory, secret)."""
    return b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file())


@contextlib.asynccontextmanager
async def two_workers(make_gateway: Any, env: dict[str, str]) -> AsyncIterator[Any]:
    """Two app instances on one SQLite database, each with its own mock provider."""
    mocks = [MockProvider("sim", MockOptions(seed=1)), MockProvider("sim", MockOptions(seed=2))]
    async with (
        make_gateway(config(), env=env, providers={"sim": mocks[0]}) as a,
        make_gateway(config(), env=env, providers={"sim": mocks[1]}) as b,
    ):
        yield (a, mocks[0]), (b, mocks[1])


async def test_a_credential_is_nowhere_in_plaintext_and_a_rotation_reaches_every_worker(
    make_gateway: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG)
    first, second = distinctive(), distinctive()
    answers: list[str] = []
    env = {"FAREBOX_SECRET": secrets.token_hex(32), "FAREBOX_KEK": KEK_V1}
    async with two_workers(make_gateway, env) as ((a, mock_a), (b, mock_b)):
        raw = await a.tenant_key("acme")
        missing = await chat(a, raw)  # no such credential yet: a clear 503, no traceback
        assert missing.status_code == 503, missing.text
        assert missing.json()["error"]["code"] == "provider_credential_missing"
        body = {"name": "openai-prod", "provider": "openai", "api_key": first}
        made = await a.client.post("/admin/v1/integrations", json=body, headers=a.admin)
        assert made.status_code == 201, made.text
        assert made.json()["last4"] == first[-4:] and made.json()["kek_version"] == "v1"
        for gw, mock in ((a, mock_a), (b, mock_b)):
            r = await chat(gw, raw)
            assert r.status_code == 200, r.text
            assert mock.last_api_key == first
            answers.append(r.text)
        rotated = await a.client.post("/admin/v1/integrations/openai-prod/rotate",
                                      json={"api_key": second}, headers=a.admin)  # fmt: skip
        assert rotated.status_code == 200, rotated.text
        r = await chat(b, raw)  # the other worker's next request: the new key
        assert r.status_code == 200 and mock_b.last_api_key == second
        listed = await b.client.get("/admin/v1/integrations", headers=b.admin)
        assert [i["last4"] for i in listed.json()["data"]] == [second[-4:]]
        again = await a.client.post("/admin/v1/integrations", json=body, headers=a.admin)
        assert again.status_code == 409
        trail = await a.client.get("/admin/v1/audit", headers=a.admin)  # the audit trail
        assert trail.status_code == 200 and "POST /integrations" in trail.text
        answers += [made.text, rotated.text, listed.text, again.text, missing.text, trail.text]
    disk = on_disk(tmp_path)
    logs = caplog.text + "".join(capfd.readouterr())
    assert "req_" in logs and "provider_credential_missing" in logs  # the logs were captured
    for secret in (first, second):
        assert secret.encode() not in disk
        assert secret not in logs
        assert not any(secret in answer for answer in answers)


async def test_deleting_a_credential_makes_its_provider_a_clear_503(make_gateway: Any) -> None:
    env = {"FAREBOX_KEK": KEK_V1}
    async with make_gateway(config(), env=env) as gw:
        raw = await gw.tenant_key("acme")
        body = {"name": "openai-prod", "provider": "openai", "api_key": distinctive()}
        assert (await gw.client.post("/admin/v1/integrations", json=body,
                                     headers=gw.admin)).status_code == 201  # fmt: skip
        assert (await chat(gw, raw)).status_code == 200
        gone = await gw.client.delete("/admin/v1/integrations/openai-prod", headers=gw.admin)
        assert gone.status_code == 200 and "api_key" not in gone.json()
        r = await chat(gw, raw)
        assert r.status_code == 503 and r.json()["error"]["code"] == "provider_credential_missing"
        again = await gw.client.delete("/admin/v1/integrations/openai-prod", headers=gw.admin)
        assert again.status_code == 404


async def test_kek_rotation_moves_every_row_and_old_rows_stay_readable(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "kek.db")
    await store.open()
    try:
        clock = iter(range(1000)).__next__
        old = Vault([("v1", K1)])
        secrets_of = {f"int-{i}": distinctive() for i in range(5)}
        service = Integrations(store.credentials, old, lambda: float(clock()), ["openai"])
        for name, secret in secrets_of.items():
            await service.create(name, "openai", secret)
        await service.put_own("acme", "openai", "sk-tenant-own-0123456789")
        both = Vault([("v2", K2), ("v1", K1)])
        # halfway: one row moved by hand, the rest still under v1; every one opens
        row = await store.credentials.get_credential("", "int-0")
        assert await store.credentials.replace_credential(row, both.resealed(row))
        rows = await store.credentials.list_credentials(None)
        assert sorted(r.kek_version for r in rows) == ["v1"] * 5 + ["v2"]
        assert {r.name: both.open(r) for r in rows if r.owner == ""} == secrets_of
        moved, already = await rekey(store.credentials, both)
        assert (moved, already) == (5, 1)
        rows = await store.credentials.list_credentials(None)
        assert {r.kek_version for r in rows} == {"v2"}
        only_new = Vault([("v2", K2)])
        assert {r.name: only_new.open(r) for r in rows if r.owner == ""} == secrets_of
        assert only_new.open(await store.credentials.get_credential("acme", "openai")) == (
            "sk-tenant-own-0123456789"
        )
        with pytest.raises(VaultError, match="v2"):
            old.open(rows[0])  # a v1-only vault names the version it lacks
        assert await rekey(store.credentials, only_new) == (0, 6)
    finally:
        await store.close()


async def test_a_ciphertext_moved_to_another_row_does_not_open() -> None:
    vault = Vault.of((), b"server-secret-" * 4)
    assert vault.current == DERIVED
    store = MemoryStore()
    mine = vault.seal("acme", "openai", "openai", "sk-acme-0123456789", 1.0)
    theirs = vault.seal("globex", "openai", "openai", "sk-globex-0123456789", 1.0)
    await store.credentials.create_credential(mine)
    await store.credentials.create_credential(theirs)
    swapped = dataclasses.replace(theirs, ciphertext=mine.ciphertext, nonce=mine.nonce)
    with pytest.raises(VaultError, match="does not open") as caught:
        vault.open(swapped)
    assert "sk-" not in str(caught.value)
    assert mine.nonce != theirs.nonce and len(mine.nonce) == 12
    again = vault.seal("acme", "openai", "openai", "sk-acme-0123456789", 1.0)
    assert again.nonce != mine.nonce and again.ciphertext != mine.ciphertext
    # derived from the server secret: another secret, another key
    assert derive_kek(b"a" * 64) != derive_kek(b"b" * 64)


def pg_dump(schema: str) -> bytes:
    return subprocess.run(
        ["pg_dump", "--schema", schema, "--data-only", PG_DSN],
        capture_output=True, check=True, timeout=60,
        env={**os.environ, "PGCONNECT_TIMEOUT": "5"},
    ).stdout  # fmt: skip


async def test_the_postgres_dump_holds_no_plaintext() -> None:
    require("PostgreSQL vault", ("PostgreSQL", 5432))
    import asyncpg

    from farebox.stores.postgres.store import PostgresStore

    schema = f"farebox_vault_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(PG_DSN, schema=schema, pool_min=1, pool_max=2)
    await store.open()
    secret = distinctive()
    try:
        service = Integrations(store.credentials, Vault([("v1", K1)]), lambda: 1.0, ["openai"])
        await service.create("openai-prod", "openai", secret)
        await service.put_own("acme", "openai", secret[::-1])
        conn = await asyncpg.connect(PG_DSN)
        try:
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                schema,
            )
            dump = []
            for (table,) in tables:
                rows = await conn.fetch(f'SELECT t::text FROM "{schema}"."{table}" AS t')
                dump += [r[0] for r in rows]
        finally:
            await conn.close()
        text = "\n".join(dump)
        assert "openai-prod" in text  # the rows were read
        assert secret not in text and secret[::-1] not in text
        if shutil.which("pg_dump"):
            out = await asyncio.to_thread(pg_dump, schema)
            assert b"openai-prod" in out and secret.encode() not in out
        got = await store.credentials.get_credential("", "openai-prod")
        assert isinstance(got, Credential) and Vault([("v1", K1)]).open(got) == secret
    finally:
        await store.close()
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await conn.close()


class CountingCredentials:
    """A ``CredentialStore`` counting the reads the request path makes of it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads = 0
        self.owners: list[str | None] = []  # whose rows each list read asked for

    async def list_credentials(self, owner: str | None = None) -> list[Credential]:
        self.reads += 1
        self.owners.append(owner)
        return list(await self.inner.list_credentials(owner))

    async def get_credential(self, owner: str, name: str) -> Credential | None:
        self.reads += 1
        found: Credential | None = await self.inner.get_credential(owner, name)
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_the_hot_path_reads_each_owner_once_per_epoch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from farebox.errors import ProviderCredentialMissing
    from farebox.identity.credentials import ProviderKeys

    store = MemoryStore()
    counted = CountingCredentials(store.credentials)
    vault = Vault([("v1", K1)])
    keys = ProviderKeys(counted, store.auth_epoch, vault, {"openai": "openai-prod"})  # type: ignore[arg-type]
    platform = distinctive()
    await store.credentials.create_credential(vault.seal("", "openai-prod", "openai", platform, 1))
    for tenant in ("acme", "beta", "gamma") * 20:
        assert await keys.key(tenant, "openai") == (platform, False)
        assert await keys.key(tenant, "anthropic") == (None, False)  # its own env key
    # one read per owner asked for (each tenant's own, the platform's), never the whole table
    assert sorted(counted.owners, key=str) == ["", "acme", "beta", "gamma"]
    own = distinctive()
    await store.credentials.create_credential(vault.seal("acme", "openai", "openai", own, 2))
    assert await keys.key("acme", "openai") == (own, True)  # the next request sees it
    assert await keys.key("beta", "openai") == (platform, False)
    assert counted.owners[4:] == ["acme", "beta", ""]  # only the owners asked for again
    assert None not in counted.owners
    # a row that does not open (another KEK): a clear 503, a log line naming it, no secret
    other = Vault([("v9", K2)]).seal("globex", "openai", "openai", distinctive(), 3)
    await store.credentials.create_credential(other)
    with pytest.raises(ProviderCredentialMissing):
        await keys.key("globex", "openai")
    assert "v9" in caplog.text and "sk-" not in caplog.text


async def test_owners_are_cached_in_a_bounded_lru_and_unused_platform_keys_never_read() -> None:
    from farebox.identity.credentials import ProviderKeys

    store = MemoryStore()
    counted = CountingCredentials(store.credentials)
    vault = Vault([("v1", K1)])
    keys = ProviderKeys(counted, store.auth_epoch, vault, {}, max_owners=2)  # type: ignore[arg-type]
    own = distinctive()
    await store.credentials.create_credential(vault.seal("acme", "openai", "openai", own, 1))
    assert await keys.key("acme", "openai") == (own, True)
    assert await keys.key("beta", "openai") == (None, False)  # no integration named: no read
    assert counted.owners == ["acme", "beta"]
    assert await keys.key("acme", "openai") == (own, True)  # cached: acme most recent
    assert await keys.key("gamma", "openai") == (None, False)  # drops beta, the least recent
    assert await keys.key("acme", "openai") == (own, True)
    assert counted.owners == ["acme", "beta", "gamma"]
    assert await keys.key("beta", "openai") == (None, False)  # read again
    assert counted.owners == ["acme", "beta", "gamma", "beta"]


async def test_the_semantic_caches_hosted_embedder_uses_the_vault_key(tmp_path: Path) -> None:
    pytest.importorskip("numpy")
    from farebox.app import make_embedder
    from farebox.catalog import load_catalog
    from farebox.config.settings import parse_settings
    from farebox.gateway.routing_table import build_router
    from farebox.identity.credentials import ProviderKeys

    data = {**config(), "cache": {"semantic": {"embedder": "text-embedding-3-small"}}}
    settings = parse_settings(data, source="t.yaml", env={}, base_dir=tmp_path)
    store, vault, secret = MemoryStore(), Vault([("v1", K1)]), distinctive()
    keys = ProviderKeys(store.credentials, store.auth_epoch, vault, settings.provider_integrations)
    mock = MockProvider("sim", MockOptions())
    embedder = make_embedder(settings, {"sim": mock}, build_router(settings, load_catalog()), keys)
    await embedder.start()
    try:
        await store.credentials.create_credential(
            vault.seal("", "openai-prod", "openai", secret, 1)
        )
        assert await embedder.embed("what is the capital of France?") is not None
        assert mock.last_api_key == secret
    finally:
        await embedder.close()

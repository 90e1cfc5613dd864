"""The default SQLite mode: ``server.single_process`` unset means "single-process when it is
safe" (SQLite, one worker, nobody else on the database), chosen by ``farebox serve`` and
``farebox demo``; a second gateway is refused beside a single-process one; and local CLI
commands keep working on a database such a gateway owns, through its admin API."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import httpx
import pytest

from farebox.app import make_store
from farebox.cli.owner_api import OwnerApi, admin_file, owning_gateway, publish, read
from farebox.cli.serve import Mode, choose_mode, with_mode
from farebox.config.settings import Settings, load_settings
from farebox.errors import ConfigError
from farebox.stores.sqlite.single import SingleProcessSQLiteStore, owned_exclusively
from farebox.stores.sqlite.store import SQLiteStore
from tests.e2e import (
    ServerProcess,
    admin_headers,
    child_env,
    create_tenant_key,
    free_port,
    running,
    write_config,
)

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}
PLANS = {"pro": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "1"}]}}


def settings_for(tmp_path: Path, **server: Any) -> Settings:
    extra: dict[str, Any] = {"server": server} if server else {}
    return load_settings(str(write_config(tmp_path, plans=PLANS, **extra)))


def serve_args(config: Path, port: int, *more: str) -> list[str]:
    return ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port), *more]


def farebox(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m farebox ARGS`` on the local database, without an admin key."""
    return subprocess.run(
        [sys.executable, "-m", "farebox", *args], cwd=cwd, env=child_env(None),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


# --- the choice ------------------------------------------------------------------------


def test_unset_is_auto_and_a_free_database_gets_the_single_process_mode(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert settings.file.server.single_process is None
    mode = choose_mode(settings, 1)
    assert mode.single
    assert "single-process mode (SQLite, one worker, database not shared)" in mode.line
    assert "server.single_process: false" in mode.line
    assert isinstance(make_store(with_mode(settings, mode)), SingleProcessSQLiteStore)


def test_an_app_built_directly_with_the_mode_unset_gets_the_shared_store(tmp_path: Path) -> None:
    store = make_store(settings_for(tmp_path))
    assert type(store) is SQLiteStore  # safe beside any other process: only serve/demo choose


def test_several_workers_and_a_forced_false_get_the_shared_mode(tmp_path: Path) -> None:
    workers = choose_mode(settings_for(tmp_path), 2)
    assert not workers.single and "2 workers" in workers.line
    forced = choose_mode(settings_for(tmp_path, single_process=False), 1)
    assert forced == Mode(False, "shared mode (server.single_process: false)")
    assert type(make_store(with_mode(settings_for(tmp_path), forced))) is SQLiteStore


async def test_a_database_another_shared_process_uses_gets_the_shared_mode(
    tmp_path: Path,
) -> None:
    settings = settings_for(tmp_path)
    assert settings.database_path is not None
    other = SQLiteStore(settings.database_path)
    await other.open()  # a shared-mode gateway (or a CLI command) on it
    try:
        mode = choose_mode(settings, 1)
        assert not mode.single and "another farebox process" in mode.line
        with pytest.raises(click.ClickException, match="needs the database to itself"):
            choose_mode(settings_for(tmp_path, single_process=True), 1)
    finally:
        await other.close()
    assert choose_mode(settings, 1).single  # free again


async def test_nothing_starts_beside_a_single_process_gateway(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    path = settings.database_path
    assert path is not None
    owner = SingleProcessSQLiteStore(path)
    await owner.open()
    try:
        assert owned_exclusively(path)
        for configured, workers in ((settings, 1), (settings, 3),
                                    (settings_for(tmp_path, single_process=False), 1)):  # fmt: skip
            with pytest.raises(click.ClickException) as refused:
                choose_mode(configured, workers)
            message = refused.value.message
            assert str(path) in message and "single-process mode" in message
            assert "server.single_process: false" in message  # the fix
    finally:
        await owner.close()
    assert not owned_exclusively(path)


def test_forced_single_process_still_refuses_what_it_cannot_be(tmp_path: Path) -> None:
    with pytest.raises(click.ClickException, match="cannot run 2 workers"):
        choose_mode(settings_for(tmp_path, single_process=True), 2)
    memory = load_settings(None, overrides={"database": "memory"})
    assert choose_mode(memory, 1) == Mode(False)
    forced = load_settings(
        None, overrides={"database": "memory", "server": {"single_process": True}}
    )
    with pytest.raises(click.ClickException, match="SQLite database only"):
        choose_mode(forced, 1)


# --- the owner's admin API for local commands ------------------------------------------


async def test_a_local_command_finds_the_owner_and_waits_for_it_to_publish(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.db"
    assert owning_gateway(path, wait_s=0) is None  # never served: nobody owns it
    owner = SingleProcessSQLiteStore(path)
    await owner.open()
    try:
        with pytest.raises(ConfigError, match="has not published its admin API"):
            owning_gateway(path, wait_s=0.3)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            api = OwnerApi(f"http://127.0.0.1:{port}", "token", os.getpid())
            publish(path, api)
            assert stat.S_IMODE(admin_file(path).stat().st_mode) == 0o600
            assert owning_gateway(path, wait_s=0) == api
        with pytest.raises(ConfigError, match="has not published"):  # it does not listen (yet)
            owning_gateway(path, wait_s=0.3)
    finally:
        await owner.close()
    assert read(path) == api  # a file left behind by a dead owner is not used:
    assert owning_gateway(path, wait_s=0) is None  # nobody holds the lock


def test_the_plain_default_serves_single_process_and_the_cli_still_works(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path, plans=PLANS)
    database = tmp_path / "farebox.db"
    port = free_port()
    with running(serve_args(config, port), cwd=tmp_path, env=child_env(), port=port) as server:
        server.wait_for_line(r"runs in single-process mode \(SQLite, one worker")
        assert owned_exclusively(database)
        # the README's first hour, on the local database, while the gateway owns it
        created = farebox(tmp_path, "tenants", "create", "acme", "--plan", "pro")
        assert created.returncode == 0, created.stderr
        made = farebox(tmp_path, "keys", "create", "--tenant", "acme", "--config", str(config))
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
            assert client.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 200
            usage = farebox(tmp_path, "usage", "--group-by", "tenant", "--json")
            assert usage.returncode == 0, usage.stderr
            assert '"requests": 1' in usage.stdout
            budgets = farebox(tmp_path, "budgets", "show", "acme")
            assert budgets.returncode == 0 and "1.00" in budgets.stdout, budgets.stderr
            key_id = made.stderr.split("key id: ")[1].split()[0]
            revoked = farebox(tmp_path, "keys", "revoke", key_id)
            assert revoked.returncode == 0, revoked.stderr
            # the owner's own counters and key cache saw the change: no stale answer
            assert client.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 401
            # the local token is no admin key anywhere else, and a wrong one is refused
            wrong = client.get("/admin/v1/tenants", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert client.get("/admin/v1/tenants", headers=admin_headers()).status_code == 200
        # a second plain gateway on the database is refused, naming it and the fix
        other = free_port()
        with running(serve_args(config, other), cwd=tmp_path, env=child_env(), port=other,
                     wait=False) as second:  # fmt: skip
            assert second.proc.wait(timeout=60) == 1
            second.wait_for_line(
                rf"{re.escape(str(database))}.*single-process mode.*single_process: false"
            )
        assert server.proc.poll() is None
    assert not admin_file(database).exists()  # withdrawn at shutdown (SIGTERM)
    listed = farebox(tmp_path, "tenants", "list")  # and the CLI opens the database itself
    assert listed.returncode == 0 and "acme" in listed.stdout, listed.stderr


def test_workers_get_the_shared_mode_and_a_second_gateway_may_join(tmp_path: Path) -> None:
    config = write_config(tmp_path, plans=PLANS)
    port, other = free_port(), free_port()
    env = child_env()
    with (
        running(serve_args(config, port, "--workers", "2"), cwd=tmp_path, env=env,
                port=port) as first,
        running(serve_args(config, other), cwd=tmp_path, env=env, port=other) as second,
    ):  # fmt: skip
        first.wait_for_line(r"runs in shared mode \(SQLite, 2 workers")
        second.wait_for_line(r"runs in shared mode \(SQLite, another farebox process")
        key = create_tenant_key(first.base_url, "t", "pro")
        r = httpx.post(f"{second.base_url}/v1/chat/completions", json=CHAT,
                       headers={"Authorization": f"Bearer {key}"}, timeout=10.0)  # fmt: skip
        assert r.status_code == 200, r.text
        assert not admin_file(tmp_path / "farebox.db").exists()  # shared: nothing to publish


def test_the_demo_runs_single_process_when_it_can(tmp_path: Path) -> None:
    port = free_port()
    demo = ServerProcess(["demo", "--port", str(port)], cwd=tmp_path, env=child_env(None),
                         port=port)  # fmt: skip
    try:
        demo.wait_for_line(r"runs in single-process mode")
        demo.wait_ready()
        anomalies = farebox(tmp_path, "anomalies", "list")  # a hint the demo prints
        assert anomalies.returncode == 0, anomalies.stderr
    finally:
        demo.stop()

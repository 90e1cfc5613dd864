"""Issue 14, acceptance 5 (CLI half): ``farebox audit list`` and ``farebox audit verify`` on the
local database; CLI mutations are recorded as ``cli:<os user>``; editing or deleting one row
of the SQLite file makes ``verify`` exit 1 naming the row; two processes appending to one
SQLite file make one unbroken chain."""

from __future__ import annotations

import asyncio
import getpass
import json
import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from farebox.cli import main
from farebox.core.audit import AuditEntry
from farebox.identity.audit import AuditLog

ADMIN_KEY = "fba_cli_audit_admin_key_0123456789abcdef"


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FAREBOX_ADMIN_KEY", ADMIN_KEY)
    path = tmp_path / "farebox.yaml"
    path.write_text(
        f'database: "sqlite:///{tmp_path / "cli.db"}"\n'
        "plans:\n  pro: {models: ['*'], pricing: {markup: '2'}}\n"
    )
    return str(path)


def run(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def seed(cfg: str) -> str:
    assert run("tenants", "create", "acme", "--plan", "pro", "--config", cfg).exit_code == 0
    key = run("keys", "create", "--tenant", "acme", "--config", cfg)
    assert key.exit_code == 0
    assert run("tenants", "pause", "acme", "--reason", "r", "--config", cfg).exit_code == 0
    assert run("tenants", "create", "acme", "--plan", "pro", "--config", cfg).exit_code != 0
    return str(key.stdout.strip())


def test_cli_mutations_are_recorded_and_listed(cfg: str) -> None:
    raw = seed(cfg)
    listed = run("audit", "list", "--json", "--config", cfg)
    assert listed.exit_code == 0, listed.output
    records = json.loads(listed.output)["data"]
    assert raw not in listed.output
    actor = f"cli:{getpass.getuser()}"
    assert [(r["seq"], r["actor"], r["action"], r["outcome"]) for r in records] == [
        (4, actor, "POST /tenants", "failed"),
        (3, actor, "POST /tenants/{tenant_id}/pause", "ok"),  # through the in-process API
        (2, actor, "POST /tenants/{tenant_id}/keys", "ok"),
        (1, actor, "POST /tenants", "ok"),
    ]
    assert records[1]["change"]["before"]["paused"] is False
    assert records[3]["target"] == "tenant:acme"
    table = run("audit", "list", "--actor", actor, "--target", "tenant:acme", "--config", cfg)
    rows = table.output.strip().splitlines()[1:]  # past the header: seq 4, 3 and 1, not the key's
    assert table.exit_code == 0 and [r.split()[0] for r in rows] == ["4", "3", "1"]
    verified = run("audit", "verify", "--config", cfg)
    assert verified.exit_code == 0 and "chain intact: 4 records" in verified.output


def test_verify_names_an_edited_row(cfg: str, tmp_path: Path) -> None:
    seed(cfg)
    with sqlite3.connect(tmp_path / "cli.db") as db:
        db.execute("UPDATE audit_log SET change = replace(change, 'acme', 'evil') WHERE seq = 2")
    verified = run("audit", "verify", "--config", cfg)
    assert verified.exit_code == 1
    assert "chain broken at seq 2: hash mismatch: the record was edited" in verified.output


def test_verify_names_a_rewritten_row_by_the_one_after_it(cfg: str, tmp_path: Path) -> None:
    seed(cfg)
    with sqlite3.connect(tmp_path / "cli.db") as db:  # edited, and its hash made up again
        db.execute("UPDATE audit_log SET actor = 'someone', hash = ? WHERE seq = 2", ("f" * 64,))
    verified = run("audit", "verify", "--config", cfg)
    assert verified.exit_code == 1 and "chain broken at seq 2" in verified.output


def test_verify_names_a_deleted_row(cfg: str, tmp_path: Path) -> None:
    seed(cfg)
    with sqlite3.connect(tmp_path / "cli.db") as db:
        db.execute("DELETE FROM audit_log WHERE seq = 3")
    verified = run("audit", "verify", "--config", cfg)
    assert verified.exit_code == 1
    assert "chain broken at seq 3: missing" in verified.output


def _append_many(path: str, actor: str, count: int) -> None:
    """A second process's writer: its own store on the same SQLite file."""
    from farebox.stores.sqlite.store import SQLiteStore

    async def work() -> None:
        store = SQLiteStore(Path(path))
        await store.open()
        try:
            log = AuditLog(store.audit, lambda: 1_800_000_000.0)
            for n in range(count):
                entry = AuditEntry(actor, "owner", "POST /tenants", f"tenant:t{n}", {"n": n},
                                   "127.0.0.1", f"req_{actor}_{n}", "ok", 201)  # fmt: skip
                await log.record(entry)
        finally:
            await store.close()

    asyncio.run(work())


def test_two_processes_on_one_sqlite_file_make_one_chain(cfg: str, tmp_path: Path) -> None:
    seed(cfg)  # the file exists, migrated
    path = str(tmp_path / "cli.db")
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_append_many, args=(path, f"p{i}", 40)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
        assert w.exitcode == 0
    with sqlite3.connect(path) as db:
        seqs = [r[0] for r in db.execute("SELECT seq FROM audit_log ORDER BY seq")]
        actors = {r[0] for r in db.execute("SELECT actor FROM audit_log")}
    assert seqs == list(range(1, 85)) and {"p0", "p1"} <= actors
    verified = run("audit", "verify", "--config", cfg)
    assert verified.exit_code == 0 and "chain intact: 84 records" in verified.output


def test_a_local_mutation_failing_outside_the_error_tree_is_recorded(
    cfg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database (or OS) error is not a ``FareboxError``: the attempt is recorded all the
    same, ``failed`` with status 500."""
    from farebox.identity.tenancy import Tenancy

    async def broken(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Tenancy, "create_tenant", broken)
    failed = CliRunner().invoke(main, ["tenants", "create", "acme", "--config", cfg])
    assert failed.exit_code != 0 and isinstance(failed.exception, sqlite3.OperationalError)
    listed = run("audit", "list", "--json", "--config", cfg)
    assert listed.exit_code == 0, listed.output
    records = json.loads(listed.output)["data"]
    got = [(r["actor"], r["action"], r["target"], r["outcome"], r["status"]) for r in records]
    assert got == [(f"cli:{getpass.getuser()}", "POST /tenants", "tenant:acme", "failed", 500)]
    assert records[0]["change"]["after"] is None

"""Issue 7, item 7 (file modes): the SQLite database, its -wal and -shm files, the files next
to it and the server secret are created readable by their owner only (0600), whatever the
umask lets through."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from farebox.app import create_app
from farebox.config.secret_file import load_or_create_secret, secret_path
from farebox.config.settings import parse_settings
from tests.e2e import ADMIN_KEY


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The common default umask (022), which would leave new files world-readable."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_of(directory: Path, prefix: str) -> dict[str, int]:
    """The permission bits of every file in ``directory`` whose name starts with ``prefix``."""
    return {p.name: mode(p) for p in directory.iterdir() if p.name.startswith(prefix)}


@pytest.mark.parametrize("single_process", [False, True])
async def test_database_and_its_files_are_created_0600(
    tmp_path: Path, permissive_umask: None, single_process: bool
) -> None:
    settings = parse_settings(
        {"database": "sqlite:///farebox.db", "server": {"single_process": single_process}},
        source="test",
        env={"FAREBOX_ADMIN_KEY": ADMIN_KEY},
        base_dir=tmp_path,
    )
    app = create_app(settings)
    db = tmp_path / "farebox.db"
    async with app.router.lifespan_context(app):
        store = app.state.services.store
        await store.put_meta_if_absent("written", "1")  # a commit: the WAL is in use
        files = modes_of(tmp_path, "farebox.db")
    assert {"farebox.db", "farebox.db-wal", "farebox.db-shm", "farebox.db.secret"} <= set(files)
    assert files == dict.fromkeys(files, 0o600), {k: oct(v) for k, v in files.items()}
    assert mode(db) == 0o600


def test_secret_file_is_created_0600(tmp_path: Path, permissive_umask: None) -> None:
    path = secret_path(tmp_path / "x.db")
    assert len(load_or_create_secret(path)) >= 32
    assert mode(path) == 0o600


async def test_single_process_journal_stays_0600_after_compaction(
    tmp_path: Path, permissive_umask: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from farebox.stores.sqlite import single as sqlite_single
    from tests.contracts.builders import hold, reservation, settlement

    monkeypatch.setattr(sqlite_single, "COMPACT_AFTER_BYTES", 0)  # compact after every write
    store = sqlite_single.SingleProcessSQLiteStore(tmp_path / "s.db")
    await store.open()
    try:
        a = hold("tenant:acme:day", 10_000)
        assert (await store.reserve(reservation("r1", 300, [a]))).ok
        assert (await store.reserve(reservation("r2", 300, [a]))).ok
        await store.append_ledger([settlement("r1", 100)])  # compacts: the journal is rewritten
    finally:
        await store.close()
    journal = tmp_path / "s.db-inflight"
    assert b"r2" in journal.read_bytes() and b'"r1"' not in journal.read_bytes()
    assert mode(journal) == 0o600

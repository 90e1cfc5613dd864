"""The request log on SQLite reads on a connection and thread of its own: a page is answered
while the store's own thread (the one the data plane's writes wait in) is busy, and while
another connection holds the write lock."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from farebox.core.records import RequestQuery
from farebox.stores.sqlite.conn import connect
from farebox.stores.sqlite.store import SQLiteStore
from tests.contracts.builders import T0, entry


async def test_a_page_never_waits_for_the_store_thread_or_a_writer(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "x.db")
    await store.open()
    release = threading.Event()
    busy: asyncio.Future[bool] | None = None
    try:
        await store.append_ledger([entry(f"r{i}", started_at=T0 + i) for i in range(5)])
        busy = asyncio.ensure_future(store._run(release.wait))  # the store's only thread
        writer = connect(tmp_path / "x.db")
        writer.execute("BEGIN IMMEDIATE")  # another process's write transaction
        writer.execute("INSERT INTO meta(name, value) VALUES ('held', '1')")
        try:
            page = await asyncio.wait_for(store.requests(RequestQuery(limit=2)), timeout=10)
        finally:
            writer.execute("ROLLBACK")
            writer.close()
        assert [e.request_id for e in page.entries] == ["r4", "r3"]
        assert not busy.done()  # answered while the store's thread was still taken
    finally:
        release.set()
        if busy is not None:
            await busy
        await store.close()

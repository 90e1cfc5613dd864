"""Races between processes on one SQLite file: each worker process runs the same work."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from farebox.stores.sqlite.store import SQLiteStore

# a worker: (database path, worker number, barrier to wait on, queue for (number, result))
Worker = Callable[[str, int, Any, Any], None]


def race_on_sqlite(path: Path, worker: Worker, procs: int) -> dict[int, Any]:
    """Create the schema, start ``procs`` spawned processes at once, return each result."""

    async def prepare() -> None:
        store = SQLiteStore(path)
        await store.open()  # create the schema before the race
        await store.close()

    asyncio.run(prepare())
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(procs)
    results = ctx.Queue()
    started = [ctx.Process(target=worker, args=(str(path), w, barrier, results))
               for w in range(procs)]  # fmt: skip
    for p in started:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in started)
    for p in started:
        p.join(timeout=60)
        assert p.exitcode == 0
    results.close()
    results.join_thread()
    assert sorted(outcomes) == list(range(procs))
    return outcomes

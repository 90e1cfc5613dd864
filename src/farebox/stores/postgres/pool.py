"""The asyncpg pool behind ``PostgresStore``, with a deadline on every call.

Every statement runs under the pool's ``command_timeout``; waiting for a pooled connection
is bounded too (asyncpg waits forever by default). Any connection-level failure (refused,
dropped, timed out) marks the database down in ``health``, so the request path refuses
new requests before calling an upstream (see ``LedgerWriter.ensure_available``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from farebox.stores.health import Health

# errors that say "the database cannot be reached", as opposed to "this statement is wrong"
_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


async def keep_session(conn: Any) -> None:
    """The pool's ``reset``: nothing to send. asyncpg's default reset runs ``SELECT
    pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`` on every release, one round
    trip on the request path (after the ledger commit) that undoes nothing here: connections
    taken with ``acquire`` leave no session state behind (no ``LISTEN``, no cursor outside a
    transaction, no ``SET`` but ``SET LOCAL``, advisory locks only transaction-scoped, the
    ``search_path`` a startup setting). The pool still rolls back an open transaction itself
    before calling this (``Connection._reset``: local, no round trip unless one is open). The
    one session-level lock (the exporter's) is taken on a connection from ``take``, which
    ``give`` resets in full."""


def unreachable(exc: BaseException) -> bool:
    if isinstance(exc, _UNREACHABLE):
        return True
    # asyncpg reports a connection that closed under it as an InterfaceError
    return isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc)


class TimedPool:
    """The few pool methods the store uses, each bounded and reporting unreachability."""

    def __init__(self, pool: Any, health: Health, acquire_s: float) -> None:
        self._pool = pool
        self._health = health
        self._acquire_s = acquire_s

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        try:
            async with self._pool.acquire(timeout=self._acquire_s) as conn:
                yield conn
        except BaseException as exc:
            if unreachable(exc):
                self._health.down(f"{type(exc).__name__}: {exc}")
            raise

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self.acquire() as conn:
            return list(await conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self.acquire() as conn:
            return str(await conn.execute(sql, *args))

    async def executemany(self, sql: str, args: Any) -> None:
        async with self.acquire() as conn:
            await conn.executemany(sql, args)

    async def take(self) -> Any:
        """A connection kept out of the pool (the exporter's session lock); see ``give``."""
        try:
            return await self._pool.acquire(timeout=self._acquire_s)
        except BaseException as exc:
            if unreachable(exc):
                self._health.down(f"{type(exc).__name__}: {exc}")
            raise

    async def give(self, conn: Any) -> None:
        """Return a connection from ``take``, reset in full first (it may hold a session
        lock, even one whose answer never arrived); a connection that cannot be reset is
        closed rather than pooled."""
        try:
            await conn.reset(timeout=self._acquire_s)
        except BaseException:
            conn.terminate()  # the pool replaces it; releasing a terminated one is safe
            raise
        finally:
            await self._pool.release(conn)

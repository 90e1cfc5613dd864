"""Conditional pauses (``Store.pauses``): pause a tenant or a key only while it is not
paused, and resume one only while its pause reason carries a given mark, each as one atomic
step of the store: one SQL statement (SQLite, PostgreSQL; the scaled store then bumps its
shared auth epoch), or, in memory, no ``await`` between the test and the change.

Account multiplication's pauses, the anomaly incidents' pauses and resolves, and the
guardrail findings' key pauses use them, so that an operator's pause landing between a read
and a write is never overwritten, and resolving an incident resumes exactly what it paused.
Every caller gets them from ``pauses_of``, one behaviour: the store's own, or, for a store
without them (a test double), ``ReadThenWrite`` over its ``get_*`` and ``update_*``. Here,
not in ``stores.base`` (at its size cap).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from farebox.errors import NotFound

What = Literal["tenant", "key"]
TABLES: dict[str, str] = {"tenant": "tenants", "key": "api_keys"}


class PauseStore(Protocol):
    async def pause_unpaused(self, what: What, ident: str, reason: str) -> bool:
        """Pause the tenant or key ``ident`` with ``reason`` unless it is paused already (or
        gone), in one atomic step: True if this call paused it. Bumps the auth epoch then."""
        ...

    async def resume_paused_by(self, what: What, ident: str, mark: str) -> bool:
        """Resume ``ident`` only while it is paused with a reason containing ``mark``, in one
        atomic step: True if this call resumed it. Bumps the auth epoch then."""
        ...


def pauses_of(store: object) -> PauseStore:
    """The store's conditional pauses (``Store.pauses``: every store of the project has
    them), or, for a store without them, a read then a write (``ReadThenWrite``)."""
    found: PauseStore | None = getattr(store, "pauses", None)
    return found if found is not None else ReadThenWrite(store)


class ReadThenWrite:
    """A ``PauseStore`` made of a store's ``get_tenant``/``get_key`` then ``update_tenant``/
    ``update_key``. One atomic step only where nothing suspends between the two (the memory
    store, ``stores.memory.pausing``); over anything else (a test double) a change landing
    in between may be overwritten. A tenant or key gone in between is not changed (False)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    async def pause_unpaused(self, what: What, ident: str, reason: str) -> bool:
        found = await self._get(what, ident)
        if found is None or found.paused:
            return False
        return await self._update(what, ident, {"paused": True, "pause_reason": reason})

    async def resume_paused_by(self, what: What, ident: str, mark: str) -> bool:
        found = await self._get(what, ident)
        if found is None or not found.paused or mark not in (found.pause_reason or ""):
            return False
        return await self._update(what, ident, {"paused": False, "pause_reason": None})

    async def _get(self, what: What, ident: str) -> Any:
        if what == "tenant":
            return await self._store.get_tenant(ident)
        return await self._store.get_key(ident)

    async def _update(self, what: What, ident: str, changes: dict[str, Any]) -> bool:
        try:
            if what == "tenant":
                await self._store.update_tenant(ident, changes)
            else:
                await self._store.update_key(ident, changes)
        except NotFound:  # deleted since the read
            return False
        return True


class PausesThatBump:
    """A ``PauseStore`` whose every change is followed by ``bump`` (the scaled store's shared
    auth epoch, which lives beside its database)."""

    def __init__(self, inner: PauseStore, bump: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._bump = bump

    async def pause_unpaused(self, what: What, ident: str, reason: str) -> bool:
        done = await self._inner.pause_unpaused(what, ident, reason)
        if done:
            await self._bump()
        return done

    async def resume_paused_by(self, what: What, ident: str, mark: str) -> bool:
        done = await self._inner.resume_paused_by(what, ident, mark)
        if done:
            await self._bump()
        return done

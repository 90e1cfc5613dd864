"""Conditional pauses (``Store.pauses``): pause a tenant or a key only while it is not
paused, and resume one only while its pause reason carries a given mark, each as one atomic
step of the store: one SQL statement (SQLite, PostgreSQL; the scaled store then bumps its
shared auth epoch), or, in memory, no ``await`` between the test and the change.

Account multiplication's pauses and the anomaly incidents' resolves use them, so that an
operator's pause landing between a read and a write is never overwritten, and resolving an
incident resumes exactly what it paused. Here, not in ``stores.base`` (at its size cap).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

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


def pause_store(store: object) -> PauseStore | None:
    """The store's conditional pauses, when it has them."""
    found: PauseStore | None = getattr(store, "pauses", None)
    return found


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

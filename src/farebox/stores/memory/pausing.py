"""Conditional pauses (``stores.pausing``) in process memory, through the memory store's own
``get_*`` and ``update_*`` (so a subclass's overrides, e.g. a test's injected failure, apply):
none of them suspends (no I/O, nothing awaited that waits), so nothing else on the event loop
can run between the test and the change."""

from __future__ import annotations

from typing import Any

from farebox.stores.pausing import What


class MemoryPauses:
    def __init__(self, store: Any) -> None:
        self._store = store  # the MemoryStore: its reads and updates never suspend

    async def pause_unpaused(self, what: What, ident: str, reason: str) -> bool:
        found = await self._get(what, ident)
        if found is None or found.paused:
            return False
        await self._update(what, ident, {"paused": True, "pause_reason": reason})
        return True

    async def resume_paused_by(self, what: What, ident: str, mark: str) -> bool:
        found = await self._get(what, ident)
        if found is None or not found.paused or mark not in (found.pause_reason or ""):
            return False
        await self._update(what, ident, {"paused": False, "pause_reason": None})
        return True

    async def _get(self, what: What, ident: str) -> Any:
        if what == "tenant":
            return await self._store.get_tenant(ident)
        return await self._store.get_key(ident)

    async def _update(self, what: What, ident: str, changes: dict[str, Any]) -> None:
        if what == "tenant":
            await self._store.update_tenant(ident, changes)
        else:
            await self._store.update_key(ident, changes)

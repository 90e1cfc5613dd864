"""Conditional pauses (``stores.pausing``) in process memory, through the memory store's own
``get_*`` and ``update_*`` (so a subclass's overrides, e.g. a test's injected failure, apply):
none of them suspends (no I/O, nothing awaited that waits), so nothing else on the event loop
can run between the test and the change: ``ReadThenWrite`` is one atomic step here."""

from __future__ import annotations

from farebox.stores.pausing import ReadThenWrite


class MemoryPauses(ReadThenWrite):
    """The memory store's conditional pauses (``MemoryStore.pauses``)."""

"""A replica's copy of the semantic contexts' vectors it searched lately, opened.

A context's vectors live in Redis, sealed (``stores.redis.cache``); reading and opening them
all for every lookup costs a transfer and an AES-GCM open per vector. Each change to a
context sets its token in Redis (``S:vgen``, a random value per call: never one seen before),
so a replica keeps the opened vectors of a context with the token it read them under and
reads them again only when the token differs. Reading again opens only the vectors it has
not opened before (a sealed vector's nonce is new on every write).

Only vectors are kept: every candidate a search finds is still read from Redis (it must be
there, live, and open under its partition's key) before it is returned.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from farebox.stores.vectors import Stacked

MAX_ROWS = 100_000  # vectors kept, over every context (then the least recently searched go)
NONCE = slice(1, 13)  # a sealed blob's nonce (cache_crypto: version | nonce | ciphertext)

# (member, sealed blob) -> (entry key, vector), or None when it does not open
Opener = Callable[[str, bytes], tuple[str, bytes] | None]


@dataclass(slots=True)
class Opened:
    token: bytes
    rows: dict[str, tuple[bytes, str, bytes]]  # member -> (nonce, entry key, vector)
    stacked: Stacked


class VectorCopies:
    """Contexts by their hash's name; the least recently searched dropped past ``max_rows``."""

    def __init__(self, max_rows: int = MAX_ROWS) -> None:
        self._max = max_rows
        self._rows = 0
        self._contexts: OrderedDict[str, Opened] = OrderedDict()

    def fresh(self, name: str, token: bytes) -> Stacked | None:
        """The context's vectors if they were read under ``token``."""
        got = self._contexts.get(name)
        if got is None or got.token != token:
            return None
        self._contexts.move_to_end(name)
        return got.stacked

    def load(
        self, name: str, token: bytes, stored: Mapping[bytes, bytes], opener: Opener
    ) -> Stacked:
        """Keep the context's vectors as read (``stored``: its hash) under ``token``."""
        before = self.forget(name)
        rows: dict[str, tuple[bytes, str, bytes]] = {}
        for raw, blob in stored.items():
            member = raw.decode()
            nonce = blob[NONCE]
            old = before.rows.get(member) if before is not None else None
            if old is not None and old[0] == nonce:
                rows[member] = old
                continue
            got = opener(member, blob)
            if got is not None:
                rows[member] = (nonce, got[0], got[1])
        stacked = Stacked([r[1] for r in rows.values()], [r[2] for r in rows.values()])
        self._contexts[name] = Opened(token, rows, stacked)
        self._rows += len(rows)
        while self._rows > self._max and len(self._contexts) > 1:
            self.forget(next(iter(self._contexts)))
        return stacked

    def forget(self, name: str) -> Opened | None:
        got = self._contexts.pop(name, None)
        if got is not None:
            self._rows -= len(got.rows)
        return got

    def clear(self) -> None:
        self._contexts.clear()
        self._rows = 0

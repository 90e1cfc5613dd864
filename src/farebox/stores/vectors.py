"""Exact nearest-neighbour search over L2-normalised float32 vectors, for the response cache's
semantic lookups (``CacheStore.nearest``): a dot product is the cosine.

``VectorMatrix`` is one semantic context's vectors in a process (``stores.memory.cache``): a
float32 matrix grown in chunks, rows of removed entries marked dead (a ``-inf`` bias, so they
never rank) and compacted away once they are half of it; a search is one matrix-vector
product. ``Stacked`` (and ``rank``) searches vectors read from elsewhere
(``stores.redis.cache``).

numpy is the ``farebox[semantic]`` extra: imported when first needed, never at import time,
so the exact cache works without it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from farebox.errors import EmbedderUnavailable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Floats = npt.NDArray[np.float32]

DTYPE = "<f4"  # float32, little-endian: the vectors' bytes (stores.base.CacheStore)
CHUNK = 256  # rows a matrix starts with, and grows by at least
MIN_DEAD = 32  # dead rows tolerated before a compaction is considered


def numpy() -> Any:
    """The numpy module, or an error naming the extra that brings it."""
    try:
        import numpy
    except ImportError as exc:
        raise EmbedderUnavailable(
            "the semantic cache needs numpy: pip install 'farebox[semantic]'"
        ) from exc
    return numpy


def descending(sims: Floats, keys: Sequence[str | None]) -> Iterator[tuple[str, float]]:
    """``(key, similarity)`` from the best down, skipping ``-inf`` (dead rows) and rows whose
    key is None. Consumes ``sims`` (each row yielded is set to ``-inf``)."""
    if not len(sims):
        return
    inf = float("-inf")
    while True:
        i = int(sims.argmax())
        s = float(sims[i])
        if s == inf or s != s:  # nothing left (or a NaN vector)
            return
        sims[i] = inf
        key = keys[i]
        if key is not None:
            yield key, s


class Stacked:
    """Vectors read from elsewhere as one matrix (those of the first one's dimension)."""

    __slots__ = ("keys", "matrix")

    def __init__(self, keys: Sequence[str], vectors: Sequence[bytes]) -> None:
        np = numpy()
        size = len(vectors[0]) if vectors else 0
        kept = [(k, v) for k, v in zip(keys, vectors, strict=True) if len(v) == size]
        self.keys = [k for k, _ in kept]
        joined = b"".join(v for _, v in kept)
        self.matrix: Floats = np.frombuffer(joined, dtype=DTYPE).reshape(len(kept), size // 4)

    def __len__(self) -> int:
        return len(self.keys)

    def ranked(self, query: bytes) -> Iterator[tuple[str, float]]:
        """The keys by similarity to ``query``, best first; none for another dimension."""
        q = numpy().frombuffer(query, dtype=DTYPE)
        if not self.keys or q.size != self.matrix.shape[1]:
            return iter(())
        return descending(self.matrix @ q, self.keys)


def rank(
    keys: Sequence[str], vectors: Sequence[bytes], query: bytes
) -> Iterator[tuple[str, float]]:
    """The ``keys`` by the similarity of their ``vectors`` to ``query``, best first. Vectors
    of another dimension than the query's are left out."""
    size = len(query)
    kept = [(k, v) for k, v in zip(keys, vectors, strict=True) if len(v) == size]
    return Stacked([k for k, _ in kept], [v for _, v in kept]).ranked(query)


class VectorMatrix:
    """One context's vectors, by entry key. Not safe to change while a ``ranked`` iterator
    is being consumed (collect what to remove, remove after)."""

    def __init__(self, dim: int) -> None:
        np = numpy()
        self._np = np
        self.dim = dim
        self._rows: Floats = np.zeros((CHUNK, dim), dtype=np.float32)
        self._bias: Floats = np.zeros(CHUNK, dtype=np.float32)  # 0 live, -inf dead
        self._keys: list[str | None] = []
        self._at: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: object) -> bool:
        return key in self._at

    def add(self, key: str, vector: bytes) -> None:
        """Index (or re-index) ``key``. Raises ``ValueError`` for a vector of another
        dimension."""
        v = self._np.frombuffer(vector, dtype=DTYPE)
        if v.size != self.dim:
            raise ValueError(f"a vector of {v.size} dimensions in a matrix of {self.dim}")
        row = self._at.get(key)
        if row is None:
            if len(self._keys) == len(self._rows):
                self._make_room()
            row = len(self._keys)
            self._keys.append(key)
            self._at[key] = row
            self._bias[row] = 0.0
        self._rows[row] = v

    def remove(self, key: str) -> None:
        row = self._at.pop(key, None)
        if row is None:
            return
        self._keys[row] = None
        self._bias[row] = float("-inf")
        dead = len(self._keys) - len(self._at)
        if dead > MIN_DEAD and dead * 2 > len(self._keys):
            self._compact()

    def ranked(self, query: bytes) -> Iterator[tuple[str, float]]:
        """Every key by similarity to ``query``, best first (exact: one matrix product);
        nothing for a query of another dimension."""
        q = self._np.frombuffer(query, dtype=DTYPE)
        n = len(self._keys)
        if q.size != self.dim or not self._at:
            return iter(())
        sims = self._rows[:n] @ q
        sims += self._bias[:n]
        return descending(sims, self._keys)

    def _make_room(self) -> None:
        if len(self._keys) - len(self._at) > MIN_DEAD:
            self._compact()
            if len(self._keys) < len(self._rows):
                return
        grow = max(CHUNK, len(self._rows) // 2)
        np = self._np
        self._rows = np.concatenate([self._rows, np.zeros((grow, self.dim), dtype=np.float32)])
        self._bias = np.concatenate([self._bias, np.zeros(grow, dtype=np.float32)])

    def _compact(self) -> None:
        """Move the live rows to the front, in order."""
        live = [i for i, k in enumerate(self._keys) if k is not None]
        n = len(live)
        self._rows[:n] = self._rows[live]
        self._bias[:] = 0.0
        self._keys = [self._keys[i] for i in live]
        self._at = {k: i for i, k in enumerate(self._keys) if k is not None}

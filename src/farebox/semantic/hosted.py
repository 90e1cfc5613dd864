"""The hosted embedder: an embeddings model this gateway serves (``cache.semantic.embedder:
ALIAS``), called through an async ``embed_texts`` the wiring builds on a provider deployment.

The same bounded-queue rule as the local embedder: at most ``concurrency`` calls in flight and
``queue`` more waiting; beyond that ``embed()`` answers ``None`` at once (a skipped lookup).
A failed or malformed call is also ``None``, logged without the text. Vectors are
L2-normalised and packed as float32 little-endian bytes, with the standard library only, so
this embedder works without the ``farebox[semantic]`` extra."""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from array import array
from collections.abc import Awaitable, Callable, Sequence

log = logging.getLogger("farebox.semantic")

EmbedTexts = Callable[[list[str]], Awaitable[Sequence[Sequence[float]]]]


def unit_vector_bytes(values: Sequence[float]) -> bytes | None:
    """``values`` L2-normalised as float32 little-endian bytes; ``None`` for an empty, zero or
    non-finite vector."""
    norm = math.sqrt(math.fsum(v * v for v in values))
    if not values or not math.isfinite(norm) or norm == 0.0:
        return None
    packed = array("f", (v / norm for v in values))
    if sys.byteorder == "big":
        packed.byteswap()
    return packed.tobytes()


class HostedEmbedder:
    """An ``Embedder`` over ``embed_texts(texts) -> vectors``; ``name`` is the model alias."""

    def __init__(
        self,
        embed_texts: EmbedTexts,
        *,
        name: str,
        queue: int = 64,
        concurrency: int = 1,
        on_skip: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.skipped = 0
        self.failed = 0
        self.on_skip = on_skip
        self._embed_texts = embed_texts
        self._limit = queue + concurrency
        self._pending = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._closed = False

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True  # callers own their calls: those in flight finish, new ones skip

    async def embed(self, text: str) -> bytes | None:
        if self._closed or self._pending >= self._limit:
            self.skipped += 1
            if self.on_skip is not None:
                self.on_skip()
            return None
        self._pending += 1
        try:
            async with self._slots:
                vectors = await self._embed_texts([text])
            return unit_vector_bytes(vectors[0])
        except Exception as exc:  # a failed embedding is a miss, never an error
            self.failed += 1
            log.warning("hosted embedding %s failed: %s", self.name, type(exc).__name__)
            return None
        finally:
            self._pending -= 1

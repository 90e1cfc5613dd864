"""What the cache stage needs of an embedder."""

from __future__ import annotations

from typing import Protocol


class Embedder(Protocol):
    """Turns a question into a unit vector (float32 little-endian bytes, L2-normalised), off
    the event loop. ``None`` when the bounded queue is full or the embedding failed: the
    lookup is skipped (a miss), never delayed."""

    name: str  # what the embeddings come from (``local:all-MiniLM-L6-v2-int8``, a model alias)

    async def embed(self, text: str) -> bytes | None: ...

    async def start(self) -> None:
        """Load the model (a start-up error, ``EmbedderUnavailable``, names what is missing)."""
        ...

    async def close(self) -> None: ...

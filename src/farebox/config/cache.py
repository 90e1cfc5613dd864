"""The cache's sections of farebox.yaml: each plan's ``cache:`` (what a plan caches, for how
long, how much, per which partition, at what price) and the top-level ``cache:`` (the backend
and the semantic cache's embedder, threshold, veto and queue). Validated here; the request
path sees a plan's as ``farebox.core.cache.CachePolicy`` (``farebox.gateway.routing_table``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from farebox.config.base import Strict


class PlanCache(Strict):
    """``plans.NAME.cache``. ``hit_price``: what a hit earns of the original's revenue:
    ``free``, ``full`` or a fraction such as ``"0.5"``."""

    mode: Literal["off", "exact", "semantic"] = "off"
    ttl_s: int = Field(3600, ge=1, le=365 * 86400)
    max_entries: int = Field(10_000, ge=1)
    max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    partition: Literal["tenant", "key", "user"] = "tenant"
    hit_price: str = "full"
    # requests with a temperature above this skip the semantic cache (the exact one applies)
    semantic_max_temperature: str = Field("1.0", pattern=r"^\s*\d+(\.\d+)?\s*$")

    @field_validator("hit_price")
    @classmethod
    def _hit_price(cls, value: str) -> str:
        text = value.strip()
        if text in ("free", "full"):
            return text
        try:
            share = float(text)
        except ValueError:
            share = -1.0
        if not text.replace(".", "", 1).isdigit() or not 0 <= share <= 1:
            raise ValueError("hit_price is free, full, or a fraction between 0 and 1 ('0.5')")
        return text


class SemanticSettings(Strict):
    """``cache.semantic``: how the semantic cache embeds and compares questions.

    ``embedder``: ``local`` (all-MiniLM-L6-v2 int8 on onnxruntime, the ``farebox[semantic]``
    extra, offline) or the alias of an embeddings model this gateway serves."""

    embedder: str = "local"
    threshold: float = Field(0.95, gt=0.0, le=1.0)  # cosine similarity of the last user messages
    veto: bool = True  # refuse a hit when numbers, dates, negation or named entities differ
    queue: int = Field(64, ge=1, le=100_000)  # embeddings waiting; a full queue skips the lookup
    threads: int = Field(1, ge=1, le=64)  # threads that embed, off the event loop
    max_chars: int = Field(2000, ge=1)  # longer last messages skip the semantic cache
    # how long a lookup waits for its embedding; longer, it is a miss (the answer is still
    # indexed behind the reply)
    wait_ms: int = Field(100, ge=1, le=60_000)


class CacheSettings(Strict):
    """The top-level ``cache:`` section. ``backend``: ``auto`` is Redis when ``redis:`` is
    configured (a hit stored by one replica is found by another), else in-process."""

    backend: Literal["auto", "memory", "redis"] = "auto"
    semantic: SemanticSettings = Field(default_factory=SemanticSettings)
    max_entry_bytes: int = Field(1024 * 1024, ge=1024)  # larger answers are not stored

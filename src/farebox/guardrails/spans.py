"""Overlapping hits, one sweep by start shared by the PII engines and the secrets scanner: of
two hits that overlap the one ``rank`` puts higher is kept; empty spans are dropped."""

from __future__ import annotations

from collections.abc import Callable

from farebox.core.guardrails import Hit


def by_score(hit: Hit) -> tuple[float, int]:
    """The higher score wins, then the longer span (the PII engines)."""
    return hit.score, hit.end - hit.start


def by_length(hit: Hit) -> tuple[int, float]:
    """The longer span wins, then the higher score (the secrets scanner)."""
    return hit.end - hit.start, hit.score


def sweep(hits: list[Hit], rank: Callable[[Hit], tuple[float, float]]) -> list[Hit]:
    """The hits without overlaps, sorted by start."""
    kept: list[Hit] = []
    for hit in sorted(hits, key=lambda h: (h.start, h.start - h.end)):
        if hit.end <= hit.start:
            continue
        if kept and hit.start < kept[-1].end:
            if rank(hit) > rank(kept[-1]):
                kept[-1] = hit
            continue
        kept.append(hit)
    return kept

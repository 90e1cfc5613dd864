"""Batch abuse's shared burst counts (``Store.bursts``; issue 15): when the gateway runs
scaled out (PostgreSQL plus Redis), every process and replica counts one end user's
near-identical requests in the same place, so a burst spread over workers and replicas is
seen whole. The matching (MinHash sketches, their similarity, the clusters kept per end user)
is ``guardrails.abuse``'s; the store keeps each end user's clusters, at most ``rule.users``
end users per tenant (the least recently seen forgotten first: the end user may be the
body's ``user``, the client's to choose), and runs one match and count per request in one
round trip. Stores without it (memory, SQLite): the per-process
count. Here, not in ``stores.base`` (at its size cap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class BurstRule:
    """How one request is matched and counted (``guardrails.abuse``'s constants and the
    plan's policy)."""

    window_s: int  # the plan's batch_window_s
    keep: int  # times kept per cluster: batch_max + 1 (only "more than batch_max" matters)
    similar: float  # the estimated Jaccard similarity from which two texts are one cluster
    clusters: int  # clusters kept per end user
    sketch: int  # values of a bottom-k sketch
    users: int = 2_000  # end users kept per tenant, the least recently seen forgotten first


class BurstStore(Protocol):
    async def count(
        self, tenant: str, user: str, sketch: Sequence[int], now: float, rule: BurstRule
    ) -> int | None:
        """Count one request of ``user`` (of ``tenant``) whose text has ``sketch`` (a
        bottom-k MinHash sketch, ascending) at ``now``, in the cluster of its near-identical
        texts (a new one if none matches); return that cluster's requests in the last
        ``rule.window_s`` seconds, this one included (at most ``rule.keep``). None when the
        shared store cannot answer (the caller counts in process)."""
        ...


def burst_store(store: object) -> BurstStore | None:
    """The store's shared burst counts, when it has them (the scaled store)."""
    found: BurstStore | None = getattr(store, "bursts", None)
    return found

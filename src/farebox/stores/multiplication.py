"""Account multiplication's store role (``Store.multiplication``): which client (an IP, or a
device the SaaS names) used keys of which tenants, and the one claim per client that opens
its incident. Here, not in ``stores.base`` (at its size cap); the implementations live beside
each store's other roles (memory, SQLite, PostgreSQL; the scaled store uses PostgreSQL's:
sightings are flushed off the request path, like traffic).

A sighting is kept once per (client, tenant, key) with the last time it was seen, so a
client's rows are at most its tenants times their keys, whatever its request rate.

A **link** is a row whose tenant is ``LINK`` (no tenant id is empty): the IP and the device
seen on the same request, kept both ways (``(ip, LINK, device)`` and ``(device, LINK, ip)``)
with the last time, so the two are known to be one client. Links never count as tenants
(``crowded``) nor show among a client's sightings; ``linked`` reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

LINK = ""  # the tenant of a link row: never a tenant id (``identity.tenancy.TENANT_ID``)


@dataclass(frozen=True, slots=True)
class Sighting:
    client: str  # an IP, or ``device:<fingerprint>``
    tenant_id: str
    key_id: str
    seen_at: float


class Taken(Exception):
    """Inside ``claim_all``: a client of the group was claimed already, so the group's
    transaction is rolled back (never raised to the caller)."""


class SightingStore(Protocol):
    async def add(self, rows: Sequence[Sighting]) -> None:
        """Record each row, keeping the latest ``seen_at`` of a (client, tenant, key)."""
        ...

    async def crowded(
        self, since: float, more_than: int, touched: float | None = None
    ) -> list[str]:
        """The clients seen with keys of more than ``more_than`` distinct tenants since
        ``since``; only those seen at or after ``touched`` when given (a check reads only
        the clients active since the last one)."""
        ...

    async def sightings(self, client: str, since: float) -> list[Sighting]:
        """One client's rows seen since ``since``, oldest first."""
        ...

    async def linked(self, client: str, since: float) -> list[str]:
        """The clients linked to ``client`` (seen on the same requests) since ``since``."""
        ...

    async def claim(self, client: str, at: float, since: float) -> bool:
        """Claim ``client``'s incident at ``at`` unless it was claimed at or after ``since``:
        True for exactly one of any concurrent callers (every process and replica)."""
        ...

    async def claim_all(
        self, clients: Sequence[str], at: float, since: float, linked: Sequence[str] = ()
    ) -> bool:
        """Claim the incident of the clients of a group that crossed the limit: all of them at
        ``at``, in one transaction, unless any was claimed at or after ``since`` (then none
        is): True for exactly one of any concurrent callers whose ``clients`` or ``linked``
        share a client. In the same transaction, each of ``linked`` (the group's other
        clients) is claimed too when it is free; one that is claimed already is left as it
        is and fails nothing (a shared office IP claimed by another incident)."""
        ...

    async def prune(self, before: float) -> None:
        """Forget sightings and claims older than ``before``."""
        ...


def sighting_store(store: object) -> SightingStore | None:
    """The store's account-multiplication role, when it has one."""
    found: SightingStore | None = getattr(store, "multiplication", None)
    return found

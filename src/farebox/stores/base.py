"""The store's role protocols, and ``Store``, the composite every backend implements.

Each consumer is handed the role it needs, never the whole store: authentication and the
tenancy service take an ``AccountStore``, the ledger writer a ``LedgerStore``, admission a
``ReservationStore``, the breakers a ``BreakerStore``, the billing exporter an
``ExportStore``, anomaly detection a ``TrafficStore``, the Responses API a
``ResponseStore``. A new capability adds a role here, an implementation per backend and a
contract suite in ``tests/contracts/`` run against each. Only ``app.py`` picks a concrete
``Store``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from farebox.core.anomaly import Incident, TrafficRow
from farebox.core.audit import AuditQuery, AuditRecord
from farebox.core.budgets import Hold, HoldState
from farebox.core.cache import (
    CachedAnswer,
    CacheLimits,
    CacheTally,
    CacheUsage,
    Neighbour,
    Partition,
)
from farebox.core.credentials import Credential
from farebox.core.credits import CreditGrant
from farebox.core.inbound import ParkedGrant
from farebox.core.records import (
    ApiKey,
    LedgerEntry,
    RequestPage,
    RequestQuery,
    Reservation,
    ReserveOutcome,
    SeriesPoint,
    SeriesQuery,
    StoredResponse,
    Tenant,
    UsageQuery,
    UsageRow,
    Workspace,
)
from farebox.core.upsell import Moment, PlanChange, TopUp
from farebox.stores.health import Health


class AccountStore(Protocol):
    """Tenants and their API keys, and the auth epoch that every change to either bumps."""

    async def create_tenant(self, tenant: Tenant) -> None:
        """Raises ``Conflict`` when the id exists."""
        ...

    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...

    async def list_tenants(self) -> list[Tenant]: ...

    async def update_tenant(self, tenant_id: str, changes: dict[str, Any]) -> Tenant:
        """Raises ``NotFound``. Bumps the auth epoch."""
        ...

    async def create_key(self, key: ApiKey) -> None: ...

    async def get_key(self, key_id: str) -> ApiKey | None: ...

    async def get_key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    async def list_keys(self, tenant_id: str | None, kind: str | None = None) -> list[ApiKey]: ...

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> ApiKey:
        """Raises ``NotFound``. Bumps the auth epoch."""
        ...

    async def auth_epoch(self) -> int:
        """A counter bumped by every tenant or key change, cheap enough for every request."""
        ...


class LedgerStore(Protocol):
    """Writing the ledger (the writer's side), and knowing whether its database answers."""

    async def append_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        """Write all entries durably in one transaction; a repeated request id is ignored.
        An entry with a ``reservation_id`` settles that reservation to its cost, in the same
        transaction."""
        ...

    def append_ledger_now(self, entries: Sequence[LedgerEntry]) -> bool:
        """``append_ledger`` on the caller's thread, if the store can make the entries durable
        at once without waiting on anything (no network, no lock held elsewhere). Returns
        False, having written nothing, when it cannot; ``append_ledger`` then must be used."""
        ...

    @property
    def ledger_health(self) -> Health | None:
        """The ledger database's reachability when the store keeps (and probes) it itself;
        None when the ledger writer keeps the flag, probing with ``probe_write``."""
        ...

    async def probe_write(self) -> bool:
        """Whether a ledger write would succeed now: a write that reaches the disk where the
        store has one (a full or read-only disk fails it, where a read would not)."""
        ...


class UsageStore(Protocol):
    """The ledger read back: its entries, and their sums."""

    async def ledger(
        self, tenant_id: str | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        """Entries oldest first (by start, then request id); ``limit``: the newest ones."""
        ...

    async def usage(self, query: UsageQuery) -> list[UsageRow]: ...


class ReportStore(Protocol):
    """What reports read: hourly rollups of the ledger, kept exactly equal to it, and the
    request log. Neither reads a month of raw entries, and neither runs on the connection or
    thread the data plane writes with."""

    async def series(self, query: SeriesQuery) -> list[SeriesPoint]:
        """Sums per bucket and group, oldest bucket first, then by group (None last). Exactly
        the sums of the ledger entries the query selects, including the newest."""
        ...

    async def requests(self, query: RequestQuery) -> RequestPage:
        """The newest entries the query selects (by started_at, then request id), one page."""
        ...

    async def cache_tallies(
        self, tenant_id: str | None, start: float | None, end: float | None
    ) -> list[CacheTally]:
        """Per tenant (one tenant, or every tenant with cache traffic), over entries started
        in ``[start, end)`` (hour-aligned: read from the rollups): cache hits (status
        ``cache_hit``), misses (``cache`` = ``miss``) and USD saved, exactly the ledger's."""
        ...


class ReservationStore(Protocol):
    """Budget and rate-limit counters: leased reservations against them, and threshold alerts.
    Settlement is ``LedgerStore.append_ledger``'s, in the ledger entry's transaction."""

    async def reserve(self, reservation: Reservation, *, busy: bool = False) -> ReserveOutcome:
        """Hold ``reservation.amount`` against every hold, atomically, or against none.
        ``busy`` hints that other reservations are in flight (a store may batch them)."""
        ...

    async def settle_counters(self, reservation: Reservation) -> None:
        """Settle a ``ledger_free`` reservation (a token count: rate-limit counters only) as
        its placeholder entry (no cost, no tokens): one request counted, its slot in flight
        freed, and nothing written to the ledger. Idempotent, like a settle by the ledger."""
        ...

    async def extend_leases(self, ids: Sequence[str], expires_at: float) -> None: ...

    async def reclaim_expired(self, now: float) -> list[LedgerEntry]:
        """Release holds whose lease expired; write and return their unsettled entries (a
        ``ledger_free`` reservation's is neither written nor returned)."""
        ...

    async def budget_states(self, holds: Sequence[Hold]) -> list[HoldState]: ...

    async def record_alert(
        self, hold: Hold, threshold: int, tenant: str | None, now: float, detail: dict[str, Any]
    ) -> bool:
        """Remember a threshold alert; True only the first time per counter window."""
        ...

    async def alerts(self, tenant_id: str | None) -> list[dict[str, Any]]: ...


class BreakerStore(Protocol):
    """Circuit breakers, shared by every process using the store."""

    async def breakers(self) -> dict[str, float]:
        """Each deployment whose breaker is open, with the time it may be probed again."""
        ...

    async def set_breaker(self, deployment: str, open_until: float) -> None:
        """Open a deployment's breaker until ``open_until``; 0 closes it."""
        ...

    async def claim_probe(self, deployment: str, now: float, until: float) -> bool:
        """True for exactly one caller per half-open period: that caller sends the probe."""
        ...


class ExportStore(Protocol):
    """Billing export: the ledger is the outbox; each sink keeps a cursor into it."""

    async def ledger_since(self, seq: int, limit: int) -> list[tuple[int, LedgerEntry]]:
        """Ledger entries written after position ``seq``, in order, with their positions."""
        ...

    async def export_cursor(self, sink: str) -> int: ...

    async def claim_exporter(self) -> bool:
        """True for the one process that may run the exporter (until it closes the store)."""
        ...

    async def set_export_cursor(self, sink: str, seq: int) -> None: ...

    async def add_dead_letters(self, sink: str, items: Sequence[dict[str, Any]]) -> None:
        """Events a sink refused for good (each with ``key``, ``event``, ``reason``, ``at``)."""
        ...

    async def dead_letters(
        self, sink: str | None = None, since: int | None = None
    ) -> list[dict[str, Any]]:
        """Oldest first (by ``at``, then key); ``since``: only events stamped at or after it
        (the event's ``timestamp``, unix seconds)."""
        ...

    async def entries_by_id(self, request_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        """The ledger entries among ``request_ids``, by request id (a dead letter's entries)."""
        ...

    async def dead_letter_count(self, sink: str | None = None) -> int:
        """How many dead letters there are (of one sink, or all), without reading them."""
        ...

    async def remove_dead_letters(self, sink: str, keys: Sequence[str]) -> None: ...


class TrafficStore(Protocol):
    """Per-key traffic (minute and hour rows) and anomaly incidents (``Store.traffic``).

    Adding rows increments both resolutions. ``open_incident`` is atomic: at most one
    incident per tenant is open or inside its cooldown, however many processes detect the
    same anomaly at once."""

    async def add(self, rows: Sequence[TrafficRow]) -> None:
        """Add each row's counts to its minute and to its hour."""
        ...

    async def since(self, start: int) -> list[TrafficRow]:
        """Minute rows from ``start`` on, for every tenant and key."""
        ...

    async def totals_since(self, start: int) -> list[TrafficRow]:
        """The sums of the minute rows from ``start`` on, one row per tenant and key."""
        ...

    async def history(self, tenant_id: str, start: int) -> list[TrafficRow]:
        """One tenant's hour rows from ``start`` on."""
        ...

    async def prune(self, minutes_before: int, hours_before: int) -> None: ...

    async def open_incident(self, incident: Incident, since: float) -> bool:
        """Record ``incident`` unless the tenant has one open or opened at or after
        ``since`` (its cooldown); True for exactly one of any concurrent callers."""
        ...

    async def incidents(
        self, tenant_id: str | None = None, open_only: bool = False
    ) -> list[Incident]: ...

    async def resolve_incidents(self, ids: Sequence[str], at: float) -> list[Incident]:
        """Resolve the open ones among ``ids``; return those this call resolved."""
        ...


class MetaStore(Protocol):
    """Settings kept in the database (the admin key's hash, the demo's marks)."""

    async def get_meta(self, name: str) -> str | None: ...

    async def put_meta_if_absent(self, name: str, value: str) -> str:
        """Store ``value`` unless one exists; return the stored value."""
        ...


class ResponseStore(Protocol):
    """Stored Responses API answers (``Store.responses``), each its tenant's alone: another
    tenant's id reads exactly as an unknown one, and an expired one as a deleted one."""

    async def put(self, stored: StoredResponse) -> None:
        """Keep ``stored``; a repeated id replaces the earlier one."""
        ...

    async def put_many(self, stored: Sequence[StoredResponse]) -> None:
        """``put`` each, in order, in one write where the store has transactions."""
        ...

    async def get(self, tenant_id: str, response_id: str, now: float) -> StoredResponse | None:
        """The tenant's response, unless it is unknown, another tenant's or expired at ``now``."""
        ...

    async def delete(self, tenant_id: str, response_id: str) -> bool:
        """Forget the tenant's response; False when the tenant had none by that id."""
        ...

    async def purge(self, now: float) -> int:
        """Forget every response expired at ``now``; return how many."""
        ...


class CacheStore(Protocol):
    """The response cache's entries (``farebox.gateway.cache``), kept apart per partition.

    Isolation is structural: each tenant's entries (and each namespace's within it) live in
    structures of their own (in-process: their own LRU and vector matrices; Redis: their own
    key space, encrypted with the tenant's own key), never filtered out of a shared pool.
    Limits (entries, bytes) hold per tenant, least recently used evicted first, so a tenant
    evicts only its own entries. An entry past ``expires_at`` is never returned.

    Vectors are float32 little-endian bytes, L2-normalised (a dot product is the cosine).
    A backend that fails raises ``farebox.errors.CacheUnavailable``; the stage treats it as
    a miss, never as a failed request.
    """

    async def get(self, partition: Partition, key: str, now: float) -> CachedAnswer | None:
        """The live entry stored under ``key`` in ``partition`` (marked recently used)."""
        ...

    async def get_many(
        self, partition: Partition, keys: Sequence[str], now: float
    ) -> list[CachedAnswer | None]:
        """``get`` for several keys at once, in order (embedding batches)."""
        ...

    async def put(
        self,
        partition: Partition,
        answers: Sequence[CachedAnswer],
        limits: CacheLimits,
        now: float,
    ) -> None:
        """Store ``answers`` (replacing any under the same keys), then evict the tenant's
        least recently used entries until it is within ``limits``. An answer larger than
        ``limits.max_bytes`` is not stored."""
        ...

    async def add_vector(
        self, partition: Partition, context: str, key: str, vector: bytes, now: float
    ) -> None:
        """Index ``vector`` (the embedding of the entry ``key``'s last user message) under
        the semantic ``context`` of ``partition``. Evicting or expiring the entry drops it."""
        ...

    async def nearest(
        self, partition: Partition, context: str, vector: bytes, now: float
    ) -> Neighbour | None:
        """The live entry of ``partition``'s ``context`` whose vector is most similar to
        ``vector`` (exact search), or None when the context has none."""
        ...

    async def usage(self, tenant: str) -> CacheUsage:
        """What ``tenant``'s cache holds now."""
        ...

    async def purge(self, tenant: str, namespace: str | None = None) -> int:
        """Erase ``tenant``'s entries (and vectors): all, or one namespace's (the client's
        ``X-Farebox-Cache-Namespace``, exactly as sent). Returns how many were erased."""
        ...

    async def close(self) -> None: ...


class CreditStore(Protocol):
    """Prepaid credit grants (``farebox.billing.credits``). The balance itself is a budget
    counter of the ``ReservationStore`` (``farebox.core.credits``); this keeps the grants
    that set its limit. Every change bumps the auth epoch, so every worker and replica sees a
    new limit on its next request."""

    async def grant_credits(self, grant: CreditGrant) -> tuple[CreditGrant, bool]:
        """Record ``grant`` unless the tenant has one under the same ``key``: then return
        that one and False (``Conflict`` when its kind or amount differ). True: recorded."""
        ...

    async def credit_grants(self, tenant_id: str) -> list[CreditGrant]:
        """The tenant's grants, oldest first."""
        ...

    async def update_grant(self, before: CreditGrant, after: CreditGrant) -> bool:
        """Record ``after``'s expiry (``closed_at_burn``, ``forfeited``, ``pending``) if the
        grant's record still is ``before``'s: True for exactly one of any concurrent callers
        (the one that then takes the forfeit from the balance)."""
        ...


class InboxStore(Protocol):
    """Billing webhooks received (``Store.inbox``; ``farebox.billing.webhooks``): marks of
    what was seen (``event``: a delivery's event id, applied; ``void``: an upstream grant
    voided, perhaps before its grant arrived), and grants parked for review."""

    async def mark(self, sink: str, kind: str, ref: str, at: float) -> bool:
        """Remember ``ref``; True only for the first caller, however many race."""
        ...

    async def marked(self, sink: str, kind: str, ref: str) -> bool: ...

    async def park(self, parked: ParkedGrant) -> ParkedGrant:
        """Keep ``parked`` unless its sink and event id are parked already: then return
        that one (a replayed delivery parks once)."""
        ...

    async def parked(self, status: str | None = None) -> list[ParkedGrant]:
        """Oldest first (by ``parked_at``, then id); ``status``: only those in it."""
        ...

    async def get_parked(self, parked_id: str) -> ParkedGrant | None: ...

    async def settle_parked(self, parked_id: str, tenant_id: str, at: float) -> bool:
        """Mark a parked grant applied to ``tenant_id``; True for exactly one caller."""
        ...


class HasInbox(Protocol):
    """A store that keeps the billing webhooks' inbox beside its other roles."""

    @property
    def inbox(self) -> InboxStore: ...


class HasCredits(Protocol):
    """A store that keeps prepaid credit grants beside its other roles."""

    @property
    def credits(self) -> CreditStore: ...


class HasResponses(Protocol):
    """A store that keeps stored Responses API answers beside its other roles."""

    @property
    def responses(self) -> ResponseStore: ...


class HasTraffic(Protocol):
    """A store that keeps traffic counters and incidents beside its other roles."""

    @property
    def traffic(self) -> TrafficStore: ...


class UpsellStore(Protocol):
    """Upsell moments and what converts them (``farebox.billing.upsell``): refusals for want
    of money, one row per tenant, kind, budget and hour; plan changes; credit top-ups (read
    from the ``CreditStore``'s grants of kind ``top_up``)."""

    async def add_moments(self, moments: Sequence[Moment]) -> None:
        """Record each moment unless one with its ``key`` is kept (then: nothing changes)."""
        ...

    async def moments(self, start: float, end: float) -> list[Moment]:
        """The moments whose hour is in ``[start, end)``, by hour, tenant, kind, budget."""
        ...

    async def add_plan_change(self, change: PlanChange) -> None: ...

    async def plan_changes(self, start: float, end: float) -> list[PlanChange]:
        """The plan changes at ``[start, end)``, oldest first."""
        ...

    async def top_ups(self, start: float, end: float) -> list[TopUp]:
        """The credit grants of kind ``top_up`` created in ``[start, end)``, oldest first."""
        ...


class HasUpsell(Protocol):
    """A store that keeps upsell moments and plan changes beside its other roles."""

    @property
    def upsell(self) -> UpsellStore: ...


class AuditStore(Protocol):
    """The audit log (``farebox.identity.audit``): append-only, hash-chained records. There
    is no update and no delete."""

    async def append(self, seal: Callable[[int, str], AuditRecord]) -> AuditRecord:
        """Atomically, against every other writer (workers, replicas): read the last record
        (its seq and hash; ``0`` and ``core.audit.GENESIS`` when there is none), call
        ``seal(seq + 1, its hash)`` and store the record it returns."""
        ...

    async def query(self, query: AuditQuery) -> list[AuditRecord]:
        """The records passing the filters, past the cursor, by seq (newest first when
        ``query.descending``), at most ``query.limit``."""
        ...

    async def scan(self, after: int, limit: int) -> list[AuditRecord]:
        """At most ``limit`` records with seq above ``after``, oldest first (a verify's walk)."""
        ...


class HasAudit(Protocol):
    """A store that keeps the audit log beside its other roles."""

    @property
    def audit(self) -> AuditStore: ...


# issue 14: the provider-credential vault ---------------------------------------------------
class CredentialStore(Protocol):
    """Sealed provider keys (``farebox.identity.vault``): the platform's (owner ``""``) and
    tenants' own (owner: the tenant id, name: the provider). Only ciphertext is kept. Every
    change bumps the auth epoch, so every worker and replica sees a rotation on its next
    request (``farebox.identity.credentials`` caches opened keys by that epoch)."""

    async def create_credential(self, credential: Credential) -> None:
        """Record it; ``Conflict`` when its owner already has one of that name."""
        ...

    async def get_credential(self, owner: str, name: str) -> Credential | None: ...

    async def list_credentials(self, owner: str | None = None) -> list[Credential]:
        """The owner's credentials (None: everyone's), by owner then name."""
        ...

    async def replace_credential(self, before: Credential, after: Credential) -> bool:
        """Store ``after`` (its ciphertext, nonce, KEK version, last4 and rotation time) if
        the row still holds ``before``'s ciphertext: True for exactly one of any concurrent
        callers."""
        ...

    async def delete_credential(self, owner: str, name: str) -> bool:
        """True if there was one to delete."""
        ...


class HasCredentials(Protocol):
    """A store that keeps the vault's credentials."""

    @property
    def credentials(self) -> CredentialStore: ...


class WorkspaceStore(Protocol):
    """A tenant's workspaces (``Store.workspaces``; ``farebox.identity.workspaces``). Every
    tenant has the ``default`` workspace without it being stored (keys made before workspaces
    belong to it): ``get_workspace`` makes it up and ``list_workspaces`` lists it until it is
    stored (an update stores it). Every change bumps the auth epoch, as tenant and key
    changes do, so every worker and replica applies a workspace's budgets at once."""

    async def create_workspace(self, workspace: Workspace) -> None:
        """Raises ``Conflict`` when the tenant has a workspace of that id (``default`` too)."""
        ...

    async def get_workspace(self, tenant_id: str, workspace_id: str) -> Workspace | None: ...

    async def list_workspaces(self, tenant_id: str) -> list[Workspace]:
        """The tenant's workspaces by id, ``default`` always among them."""
        ...

    async def update_workspace(
        self, tenant_id: str, workspace_id: str, changes: dict[str, Any]
    ) -> Workspace:
        """Apply ``changes`` (name, budgets, rate_limits, metadata); raises ``NotFound``."""
        ...

    async def delete_workspace(self, tenant_id: str, workspace_id: str) -> bool:
        """Remove a stored workspace (never ``default``): True when one was removed."""

    async def delete_workspace_if_empty(self, tenant_id: str, workspace_id: str,
                                        now: float) -> tuple[bool, list[str]]:  # fmt: skip
        """As ``delete_workspace`` unless a tenant key of it is live at ``now``, checked in the
        same transaction: ``(removed, ids of its live keys)``, nothing removed when any."""


class HasWorkspaces(Protocol):
    """A store that keeps tenants' workspaces beside its other roles."""

    @property
    def workspaces(self) -> WorkspaceStore: ...


class Store(
    AccountStore,
    LedgerStore,
    UsageStore,
    ReportStore,
    ReservationStore,
    BreakerStore,
    ExportStore,
    MetaStore,
    HasCredits,
    HasInbox,
    HasTraffic,
    HasResponses,
    HasUpsell,
    HasAudit,
    HasCredentials,
    HasWorkspaces,
    Protocol,
):
    """Every role, and the store's lifecycle: what ``app.py`` wires."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> bool: ...

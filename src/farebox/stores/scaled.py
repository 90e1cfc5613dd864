"""The scaled-out store: PostgreSQL for tenants, keys and the ledger; Redis for budget
counters, leased reservations and the auth epoch. Correct across many replicas.

Settlement is two steps (the ledger commits in PostgreSQL, then Redis settles). Once the
ledger entry is committed the request is done: if the Redis step fails (or the replica dies
before it), the lease is no longer renewed and expires; reclaiming it finds the committed
ledger entry and settles from it, so the spend is neither lost nor counted twice, and the
client is told what the ledger says.

Deployment keys live under ``{<prefix>}`` and each tenant's counters, reservations and leases
under its own hash tag ``{<prefix>/t/<tenant>}`` (``stores.redis.layout``), so a Redis Cluster
spreads tenants over its nodes. The Redis settle runs behind the commit (``stores.settler``)
when ``settle_behind`` is set, as ``farebox serve`` does. Every PostgreSQL and
Redis call has a deadline (``StoreTimeouts``); a Redis call that fails or times out on the
request path is a 503 ``limiter_unavailable``, and a reservation whose outcome is unknown is
undone once Redis answers again.

Authentication makes no Redis command: the auth epoch is kept on each replica by an
``EpochWatch`` (``stores.redis.epoch``: pub/sub plus a poll), so a change made through any
replica reaches every other within 1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from farebox.core.budgets import Hold, HoldState
from farebox.core.cache import CacheTally
from farebox.core.records import (
    ApiKey,
    LedgerEntry,
    RequestPage,
    RequestQuery,
    Reservation,
    ReserveOutcome,
    SeriesPoint,
    SeriesQuery,
    Tenant,
    UsageQuery,
    UsageRow,
)
from farebox.errors import LimiterUnavailable
from farebox.stores.credential_rows import CredentialsThatBump
from farebox.stores.credit_rows import CreditsThatBump
from farebox.stores.health import Health
from farebox.stores.pausing import PausesThatBump
from farebox.stores.postgres.store import PostgresStore
from farebox.stores.redis.budgets import RedisBudgets
from farebox.stores.redis.bursts import RedisBursts
from farebox.stores.redis.cluster import (  # redis_client: where the tests find it too
    CLUSTER_DOWN,
    answers,
    is_key_layout_bug,
    redis_client,
)
from farebox.stores.redis.epoch import BOUND_S, EpochWatch
from farebox.stores.redis.migrate import ensure_layout
from farebox.stores.redis.namespace import choose_prefix, claim, database_id, database_label
from farebox.stores.settler import Settler, settle_failed
from farebox.stores.timeouts import StoreTimeouts
from farebox.stores.workspace_rows import WorkspacesThatBump

log = logging.getLogger("farebox.stores.scaled")
EPOCH_CONNECTIONS = 4  # the auth epoch watch's own: its subscriber, its poll, bumps
FREED = ("concurrent", "tokens")  # rate-limit units whose holds a settle frees or lowers
ABANDONED_MAX = 100_000  # reservations to undo remembered at most (beyond: their lease expires)
# what a Redis call that did not get its answer raises (on a cluster too)
REDIS_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
    *CLUSTER_DOWN,
)


class ScaledStore:
    def __init__(
        self,
        pg: PostgresStore,
        budgets: RedisBudgets,
        client: aioredis.Redis,
        *,
        prefix: str | None = None,
        derive_prefix: bool = False,
        epoch_client: aioredis.Redis | None = None,
        settle_behind: bool = False,
    ) -> None:
        """``budgets`` keeps its prefix unless ``prefix`` is given or ``derive_prefix`` asks
        for the database's own (chosen on open). ``epoch_client`` (closed with the store)
        carries the auth epoch watch, so that its poll never waits behind the requests for a
        pooled connection; without it the watch shares ``client``. ``settle_behind``:
        ``append_ledger`` returns once the ledger commits and its Redis settle runs behind it
        (see ``stores.settler``; what ``farebox serve`` uses); else the settle is done before
        it returns."""
        self._pg = pg
        self.traffic = pg.traffic  # counters are flushed off the request path: PostgreSQL
        self.responses = pg.responses  # stored Responses answers: PostgreSQL
        self.credits = CreditsThatBump(pg.credits, self._bump_epoch)  # grants: PostgreSQL
        self.inbox = pg.inbox  # billing webhooks' inbox: PostgreSQL
        self.upsell = pg.upsell  # upsell moments and plan changes: PostgreSQL
        self.audit = pg.audit  # the audit log: PostgreSQL
        self.findings = pg.findings  # guardrail findings and tallies: PostgreSQL (issue 15)
        self.credentials = CredentialsThatBump(pg.credentials, self._bump_epoch)  # the vault
        self.workspaces = WorkspacesThatBump(pg.workspaces, self._bump_epoch)  # PostgreSQL
        self.multiplication = pg.multiplication  # account multiplication: PostgreSQL
        self.pauses = PausesThatBump(pg.pauses, self._bump_epoch)  # conditional pauses
        self.bursts = RedisBursts(client, lambda: self._budgets.layout)  # batch abuse: shared
        self._budgets = budgets
        self._client = client
        self._prefix = prefix
        self._derive = derive_prefix or prefix is not None
        self._abandoned: dict[str, None] = {}  # reservations to undo once Redis answers
        self._backlog: list[LedgerEntry] = []  # reclaimed but not yet recorded in the ledger
        self._epoch_client = epoch_client
        self._epoch = EpochWatch(epoch_client or client)  # runs from open() to close()
        self._settle_behind = settle_behind
        self._settler = Settler(lambda entries: self._budgets.settle(entries), REDIS_DOWN)

    @classmethod
    def from_urls(
        cls,
        database_url: str,
        redis_url: str,
        *,
        outbox: bool = True,
        prefix: str | None = None,
        timeouts: StoreTimeouts | None = None,
        cluster: bool = False,
        settle_behind: bool = False,
        global_lease_s: float = 1.0,
    ) -> ScaledStore:
        t = timeouts or StoreTimeouts()
        client = redis_client(redis_url, t, cluster=cluster)
        watch = redis_client(redis_url, t, EPOCH_CONNECTIONS, cluster=cluster)
        pg = PostgresStore(database_url, outbox=outbox, timeouts=t)
        budgets = RedisBudgets(client, global_lease_s=global_lease_s)
        return cls(pg, budgets, client, prefix=prefix, derive_prefix=True, epoch_client=watch,
                   settle_behind=settle_behind)  # fmt: skip

    async def open(self) -> None:
        await self._pg.open()
        try:
            await self._client.ping()
            ident = await database_id(self._pg)
            if self._derive:
                self._budgets.use_prefix(await choose_prefix(self._pg, self._prefix))
            prefix = self._budgets.key_prefix[1:-1]
            await claim(self._client, prefix, ident, database_label(*self._pg.label))
            await ensure_layout(self._client, self._budgets.layout, self._key_tenant)
            await self._epoch.start(f"{self._budgets.key_prefix}:auth_epoch")  # the last step
        except BaseException:
            await self._epoch.stop()
            await self._pg.close()
            raise
        if self._settle_behind:
            self._settler.start()

    async def _key_tenant(self, key_id: str) -> str | None:
        """Whose counters a key's are: its tenant's, the home slot's ("") for a service
        key, None for a key that is gone (for ``stores.redis.migrate``)."""
        key = await self._pg.get_key(key_id)
        return None if key is None else (key.tenant_id or "")

    async def close(self) -> None:
        """Settle what is queued first (a clean shutdown leaves no reservation held) and give
        back the global allowance, then stop the epoch watch and close both databases."""
        async with contextlib.AsyncExitStack() as stack:  # LIFO, each step runs whatever failed
            if self._epoch_client is not None:
                stack.push_async_callback(self._epoch_client.aclose)
            stack.push_async_callback(self._client.aclose)
            stack.push_async_callback(self._pg.close)
            stack.push_async_callback(self._epoch.stop)
            stack.push_async_callback(self._give_back)  # after the last settle
            stack.push_async_callback(self._settler.stop)

    async def _give_back(self) -> None:
        """This replica's global allowance back to the budget (else its lease runs out)."""
        try:
            await self._budgets.grants.give_back()
        except REDIS_DOWN as exc:
            log.warning("global allowance not given back (its lease will expire): %s", exc)

    @property
    def ledger_health(self) -> Health:
        """The ledger database's reachability (kept by the PostgreSQL store's probe)."""
        return self._pg.ledger_health

    async def probe_write(self) -> bool:
        return await self._pg.probe_write()

    @property
    def key_prefix(self) -> str:
        return self._budgets.key_prefix

    async def ping(self) -> bool:
        """Both databases, at once; each bounded by its own timeout."""
        pg, rd = await asyncio.gather(self._pg.ping(), self._redis_ping(), return_exceptions=True)
        return pg is True and rd is True

    async def _redis_ping(self) -> bool:
        try:
            return await answers(self._client)  # on a cluster: every node, every slot
        except REDIS_DOWN:
            return False

    # tenants and keys: every change bumps the shared auth epoch -------------------------
    async def create_tenant(self, tenant: Tenant) -> None:
        await self._pg.create_tenant(tenant)
        await self._bump_epoch()

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return await self._pg.get_tenant(tenant_id)

    async def list_tenants(self) -> list[Tenant]:
        return await self._pg.list_tenants()

    async def update_tenant(self, tenant_id: str, changes: dict[str, Any]) -> Tenant:
        tenant = await self._pg.update_tenant(tenant_id, changes)
        await self._bump_epoch()
        return tenant

    async def create_key(self, key: ApiKey) -> None:
        await self._pg.create_key(key)
        await self._bump_epoch()

    async def get_key(self, key_id: str) -> ApiKey | None:
        return await self._pg.get_key(key_id)

    async def get_key_by_hash(self, key_hash: str) -> ApiKey | None:
        return await self._pg.get_key_by_hash(key_hash)

    async def list_keys(self, tenant_id: str | None, kind: str | None = None) -> list[ApiKey]:
        return await self._pg.list_keys(tenant_id, kind)

    async def update_key(self, key_id: str, changes: dict[str, Any]) -> ApiKey:
        key = await self._pg.update_key(key_id, changes)
        await self._bump_epoch()
        return key

    async def auth_epoch(self) -> int:
        """This replica's epoch: a local read, no Redis command. When it cannot be trusted
        (no answer from Redis for over 1 s, or a bump of ours not landed) it is read once more;
        if Redis does not answer the request is refused like any other that needs Redis,
        rather than served from a cache that may be stale."""
        epoch = await self._epoch.confirmed()
        if epoch is None:
            raise LimiterUnavailable(
                f"The gateway has not heard from its shared counters (Redis) for over {BOUND_S:g} "
                "s, so it cannot tell whether keys were revoked or tenants paused; the request "
                "was refused and not billed. Retry shortly.",
                headers={"Retry-After": "1"},
            )
        return epoch

    async def _bump_epoch(self) -> None:
        with _redis_required():
            await self._epoch.bump()

    # ledger ----------------------------------------------------------------------------
    async def append_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        """Commit the entries, then settle their reservations in Redis: behind the caller
        (``settle_behind``, unless the settler's queue is full) or before returning. Once
        the commit is done so is the request: a failed settle is logged and left to lease
        reclaim, which settles from the committed entry, so it never changes what the
        client is told."""
        await self._pg.append_ledger(entries)
        if self._settle_behind and self._settler.submit(entries):
            return
        try:
            await self._budgets.settle(entries)
        except Exception as exc:  # any failure after the commit is left to reclaim
            settle_failed(entries, exc)

    def append_ledger_now(self, entries: Sequence[LedgerEntry]) -> bool:
        return False  # PostgreSQL and Redis are over the network

    async def ledger(
        self, tenant_id: str | None = None, limit: int | None = None
    ) -> list[LedgerEntry]:
        return await self._pg.ledger(tenant_id, limit)

    async def usage(self, query: UsageQuery) -> list[UsageRow]:
        return await self._pg.usage(query)

    async def series(self, query: SeriesQuery) -> list[SeriesPoint]:
        """The rollups, which live (and are kept by triggers) beside the ledger."""
        return await self._pg.series(query)

    async def requests(self, query: RequestQuery) -> RequestPage:
        return await self._pg.requests(query)  # the ledger is PostgreSQL's

    async def cache_tallies(
        self, tenant_id: str | None, start: float | None, end: float | None
    ) -> list[CacheTally]:
        return await self._pg.cache_tallies(tenant_id, start, end)

    async def get_meta(self, name: str) -> str | None:
        return await self._pg.get_meta(name)

    async def put_meta_if_absent(self, name: str, value: str) -> str:
        return await self._pg.put_meta_if_absent(name, value)

    # budgets ---------------------------------------------------------------------------
    async def reserve(self, reservation: Reservation, *, busy: bool = False) -> ReserveOutcome:
        """A reserve that got no answer (or whose caller was cancelled waiting for it) may or
        may not have been applied: it is undone once Redis answers again, so a refused or
        cancelled request holds nothing."""
        try:
            with _redis_required():
                return await self._reserve_after_settles(reservation)
        except (LimiterUnavailable, asyncio.CancelledError):  # no answer, or no one to take it
            if len(self._abandoned) < ABANDONED_MAX:
                self._abandoned[reservation.id] = None
            raise

    async def _reserve_after_settles(self, reservation: Reservation) -> ReserveOutcome:
        """A reserve refused by a rate limit that a settle frees (a slot in flight, tokens
        held at the estimate) while settles are queued behind answered requests is tried
        once more after they land: a finished request's slot never refuses the next one, so
        a client sending one request after another sees the limits it saw with the settle
        before the answer. A refused reserve changed nothing, so trying it again is safe;
        one admitted never waits. A budget (pico-USD) refusal is not retried here: the
        admission waits for room itself (``budgets.wait_for_room_s``), and retrying every
        refusal would double the Redis work of requests waiting on an exhausted budget."""
        behind = self._settler.pending  # before the reserve: its answer may predate them
        outcome = await self._budgets.reserve(reservation)
        failed = outcome.failed
        if behind and not outcome.ok and failed is not None and failed.hold.unit in FREED:
            await self._settler.flush()
            outcome = await self._budgets.reserve(reservation)
        return outcome

    async def settle_counters(self, reservation: Reservation) -> None:
        """Redis alone (no ledger row to commit first): behind the caller like a request's
        settle (``settle_behind``), or before returning. A failed settle is logged and left
        to the lease, whose reclaim releases the slot and records nothing."""
        entries = [reservation.unsettled]
        if self._settle_behind and self._settler.submit(entries):
            return
        try:
            await self._budgets.settle(entries)
        except Exception as exc:
            log.warning("token count %s: its Redis settle failed (%s: %s) and is left to "
                        "lease reclaim", reservation.id, type(exc).__name__, exc)  # fmt: skip

    async def extend_leases(self, ids: Sequence[str], expires_at: float) -> None:
        await self._budgets.extend(ids, expires_at)

    async def reclaim_expired(self, now: float) -> list[LedgerEntry]:
        """Undo abandoned reservations; then, only while the ledger is reachable, release
        expired leases and record them: settled from the ledger when their entry is
        committed, else as ``unsettled``. Expired leases that could not be recorded are kept
        and recorded on the next round."""
        await self._undo_abandoned()
        if not self._pg.health.up:
            return []  # holds stay held rather than being released unrecorded
        expired = self._backlog + await self._budgets.expired(now)
        self._backlog = []
        try:
            return await self._record_reclaimed(expired)
        except BaseException:
            self._backlog = expired
            raise

    async def _undo_abandoned(self) -> None:
        while self._abandoned:
            chunk = list(self._abandoned)[:100]
            await asyncio.gather(*(self._budgets.cancel(rid) for rid in chunk))
            for rid in chunk:
                del self._abandoned[rid]

    async def _record_reclaimed(self, expired: list[LedgerEntry]) -> list[LedgerEntry]:
        if not expired:
            return []
        found = await self._pg.existing_entries([e.request_id for e in expired])
        committed = [
            found[e.request_id]
            for e in expired
            if e.request_id in found and found[e.request_id].status != "unsettled"
        ]
        if committed:  # the holder died after its ledger commit: settle from the ledger
            await self._budgets.settle(committed)
        unsettled = [e for e in expired if e.request_id not in found]
        await self._pg.insert_ledger_if_absent(unsettled)
        return unsettled

    # billing export: the outbox lives in PostgreSQL with the ledger
    async def ledger_since(self, seq: int, limit: int) -> list[tuple[int, LedgerEntry]]:
        return await self._pg.ledger_since(seq, limit)

    async def claim_exporter(self) -> bool:
        return await self._pg.claim_exporter()

    async def export_cursor(self, sink: str) -> int:
        return await self._pg.export_cursor(sink)

    async def set_export_cursor(self, sink: str, seq: int) -> None:
        await self._pg.set_export_cursor(sink, seq)

    async def add_dead_letters(self, sink: str, items: Sequence[dict[str, Any]]) -> None:
        await self._pg.add_dead_letters(sink, items)

    async def dead_letters(
        self, sink: str | None = None, since: int | None = None
    ) -> list[dict[str, Any]]:
        return await self._pg.dead_letters(sink, since)

    async def entries_by_id(self, request_ids: Sequence[str]) -> dict[str, LedgerEntry]:
        return await self._pg.existing_entries(request_ids)

    async def dead_letter_count(self, sink: str | None = None) -> int:
        return await self._pg.dead_letter_count(sink)

    async def remove_dead_letters(self, sink: str, keys: Sequence[str]) -> None:
        await self._pg.remove_dead_letters(sink, keys)

    async def breakers(self) -> dict[str, float]:
        with _redis_required():
            return await self._budgets.breakers()

    async def set_breaker(self, deployment: str, open_until: float) -> None:
        with _redis_required():
            await self._budgets.set_breaker(deployment, open_until)

    async def claim_probe(self, deployment: str, now: float, until: float) -> bool:
        with _redis_required():
            return await self._budgets.claim_probe(deployment, now, until)

    async def budget_states(self, holds: Sequence[Hold]) -> list[HoldState]:
        """The counters, once the settles queued before this call are done: a client that
        got its answer from this replica then reads its own spend (another replica's queued
        settles are not waited for: they land within a Redis round trip or two). A reserve
        does not wait so, unless refused (``_reserve_after_settles``)."""
        await self._settler.flush()
        with _redis_required():
            return await self._budgets.states(holds)

    async def record_alert(
        self, hold: Hold, threshold: int, tenant: str | None, now: float, detail: dict[str, Any]
    ) -> bool:
        return await self._pg.record_alert(hold, threshold, tenant, now, detail)

    async def alerts(self, tenant_id: str | None) -> list[dict[str, Any]]:
        return await self._pg.alerts(tenant_id)


@contextlib.contextmanager
def _redis_required() -> Iterator[None]:
    """Budgets, rate limits and key revocation live in Redis. Without it nothing can be
    checked, so requests are refused with a 503 (fail closed), never admitted unchecked."""
    try:
        yield
    except REDIS_DOWN as exc:
        if is_key_layout_bug(exc):  # keys of one call in several cluster slots: a bug
            raise
        raise LimiterUnavailable(
            "The gateway cannot reach its shared counters (Redis), so budgets and rate limits "
            "cannot be checked; the request was refused and not billed. Retry shortly.",
            headers={"Retry-After": "1"},
        ) from exc

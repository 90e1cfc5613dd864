"""Budget counters and leased reservations in Redis (same semantics as the in-memory store),
sharded by tenant so that tenants spread over a Redis Cluster.

Every operation that reads and then writes is one Lua script over the keys of one hash slot,
so it is atomic across every replica; nothing is locked in Python. The key layout is in
``stores.redis.layout``, the scripts and their arithmetic in ``stores.redis.lua``, the reserve
and settle scripts every request runs in ``stores.redis.hot``.

One request, one round trip. A reservation's holds are grouped by slot: a tenant's counters
(budgets at tenant, key, feature and user scope, and rate limits) live in the tenant's slot;
the global budget, the one counter every tenant shares, in the deployment's home slot. A
request without a global budget reserves with one script and settles with one.

The global budget. A reservation with holds in two slots reserves in the tenant slot first,
then in the home slot, and undoes the first if the second refuses (a request refused by its
own tenant's limits, the common refusal, never touches the shared slot). Each slot's script
checks and holds its counters atomically, so no counter, the global one included, ever holds
more than its limit; the price is that a request refused in the home slot briefly held its
tenant counters (conservative: it can refuse another request of the same tenant, never admit
one too many). Each slot keeps its own record and lease of the reservation; settling, cancelling
and reclaiming are per slot and idempotent, so a crash between two slots' steps leaves a hold
that its lease's reclaim releases (and records, as any reclaim does). If a reserve's outcome is
unknown (no answer), the caller undoes it in every slot (``cancel``, which knows the slots).

Which slots hold a reservation: this process remembers it from the reserve until the
settle or cancel (``_slots``); a settle of a reservation made elsewhere (reclaim settling from
the ledger) tries the entry's tenant slot and the home slot, which is harmless: settling is
idempotent and a slot without the reservation does nothing. It remembers the reservation too
(``_made``), so its settle passes each slot's holds to the script, which then need not read
and decode the stored record (a settle of a reservation made elsewhere reads it).

Settling a batch (``stores.settler`` settles many requests' entries at once): on a single
Redis, one script settles every entry, whatever its slot (a single server has no slots to
respect); on a Redis Cluster, one script per node for the slots it serves, at once (one per
slot should the slot map be stale: ``stores.redis.batching``).

Money is exact: counter buckets stay signed 64-bit integers (``HINCRBY``, or a decimal
string the script computed exactly and checked to fit) and the scripts compare with two-limb
integers (``stores.redis.lua``) whenever doubles cannot be sure (``stores.redis.hot``). A
script that would take a counter bucket out of the signed 64-bit range fails
(``FareboxError``) and undoes its writes, so one bucket holds up to 2^63 - 1 (about 9.2
million USD in pico-USD); sums and limits beyond it are exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError

from farebox.core.budgets import Hold, HoldState, held_amount, rollover, settled_amount
from farebox.core.records import LEDGER_FREE, LedgerEntry, Reservation, ReserveOutcome
from farebox.errors import Conflict, FareboxError
from farebox.stores.redis import batching, hot, lua
from farebox.stores.redis.allowance import Allowance, eligible
from farebox.stores.redis.batching import NodeScripts
from farebox.stores.redis.grants import Grants
from farebox.stores.redis.layout import Layout, field, hold_args, joined, kind, reserve_args
from farebox.stores.redis.leases import FAN_OUT, LeaseSlots
from farebox.stores.redis.scripts import Connections, Script

log = logging.getLogger("farebox.stores.redis")
RECLAIMED_TTL_S = 7 * 86400  # reclaimed reservations are kept this long for late settlement
LEGACY_PREFIX = "fbx"  # every deployment's keys before ``redis_prefix`` existed
TRACKED_MAX = 100_000  # reservations whose slots this process remembers, at most


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _state(hold: Hold, raw: Sequence[Any], held: int = 0) -> HoldState:
    """``uh, ul, rh, rl, oldest, rollover used`` from a script as a ``HoldState``."""
    oldest, before = _text(raw[4]), _text(raw[5])
    limit = hold.limit + rollover(hold, int(before)) if before else hold.limit
    return HoldState(
        hold,
        joined(raw[0], raw[1]),
        joined(raw[2], raw[3]) + held,
        limit,
        float(oldest) if oldest else None,
    )


def _found(hold: Hold, raw: Sequence[Any], held: int) -> HoldState:
    """``used, reserved, oldest, rollover used`` from ``hot.RESERVE`` as a ``HoldState``."""
    oldest, before = _text(raw[2]), _text(raw[3])
    limit = hold.limit + rollover(hold, int(before)) if before else hold.limit
    return HoldState(
        hold, int(raw[0]), int(raw[1]) + held, limit, float(oldest) if oldest else None
    )


class RedisBudgets:
    def __init__(
        self, client: aioredis.Redis, prefix: str = LEGACY_PREFIX, *, global_lease_s: float = 1.0
    ) -> None:
        """``global_lease_s``: seconds of this replica's spend it takes of the global budget at
        a time (``stores.redis.allowance``); 0 holds the global budget per request."""
        self._client = client
        # every call of these is one request's (``scripts.Script``: less client work)
        conns = Connections(client) if isinstance(client, aioredis.Redis) else None
        self._reserve = Script(client, hot.RESERVE, conns)
        self._states = Script(client, lua.STATES, conns)
        self._settle = Script(client, hot.SETTLE, conns)
        self._expired = Script(client, lua.EXPIRED, conns)
        self._claim = Script(client, lua.CLAIM, conns)
        self._cancel = Script(client, lua.CANCEL, conns)
        self._slots: dict[str, tuple[str, ...]] = {}  # reservation -> the slots it holds in
        # the holds, amount and token estimate of the reservations of ``_slots`` (not the
        # reservations: their unsettled entries would keep far more memory)
        self._made: dict[str, tuple[tuple[Hold, ...], int, int, int]] = {}
        # a single Redis runs one settle script for every slot; a cluster one per node
        self._nodes = NodeScripts(client) if isinstance(client, RedisCluster) else None
        self.leases = LeaseSlots(client, "", client.register_script(lua.FORGET))
        self.allowance = Allowance(global_lease_s)
        scripts = (self._reserve, Script(client, lua.FLUSH, conns), self._cancel)
        self.grants = Grants(
            self.allowance, self._run, scripts, lambda: self.layout, _found, self._read_one
        )
        self.use_prefix(prefix)

    def use_prefix(self, prefix: str) -> None:
        """Namespace every key under ``prefix`` (set before the first use)."""
        self.layout = Layout(prefix)
        self.leases.use_key(self.layout.tenants)

    @property
    def key_prefix(self) -> str:
        """The deployment's home slot, ``{prefix}``: every key starts with it or with
        ``{prefix/t/`` (a tenant's slot)."""
        return self.layout.home

    async def _run(self, script: Any, keys: list[str], args: Sequence[str | bytes]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except ResponseError as exc:
            message = str(exc)
            if "FAREBOX_CONFLICT" in message:
                raise Conflict(message.split("FAREBOX_CONFLICT", 1)[1].strip()) from exc
            if "FAREBOX_OVERFLOW" in message:
                detail = message.split("FAREBOX_OVERFLOW", 1)[1].strip()
                raise FareboxError(f"budget counter out of 64-bit range: {detail}") from exc
            raise

    def _groups(
        self, holds: Sequence[Hold], drawn: Sequence[int] = (), tenant: str = ""
    ) -> list[tuple[str, list[int]]]:
        """Hold indices by slot, but the ``drawn`` ones (served by global allowance): tenant
        slots first, the home slot last. A reservation with no hold left in any slot still
        keeps its record in one: its ``tenant``'s slot when it drew (so that a reclaim finds
        its draws), else the home slot."""
        groups: dict[str, list[int]] = {}
        for i, hold in enumerate(holds):
            if i not in drawn:
                groups.setdefault(self.layout.slot(hold.tenant), []).append(i)
        home = groups.pop(self.layout.home, None)
        out = list(groups.items())
        if home is not None or not out:
            out.append((self.layout.slot(tenant) if drawn and home is None else self.layout.home,
                        home or []))  # fmt: skip
        return out

    def _track(self, res: Reservation, slots: tuple[str, ...], drawn: Sequence[int] = ()) -> None:
        """Remember where ``res`` holds, and what: its holds but the ``drawn`` ones (those
        are settled through the allowance, never in a slot)."""
        if len(self._slots) >= TRACKED_MAX:
            self._forget(next(iter(self._slots)))
        self._slots[res.id] = slots
        holds = tuple(h for i, h in enumerate(res.holds) if i not in drawn) if drawn else res.holds
        self._made[res.id] = (holds, res.amount, res.tokens, res.revenue)

    def _forget(self, rid: str) -> None:
        self._slots.pop(rid, None)
        self._made.pop(rid, None)

    def _slots_of(self, rid: str, tenant: str) -> tuple[str, ...]:
        found = self._slots.get(rid)
        if found is not None:
            return found
        slot = self.layout.slot(tenant)
        return (slot,) if slot == self.layout.home else (slot, self.layout.home)

    # reserve ---------------------------------------------------------------------------
    async def reserve(self, reservation: Reservation) -> ReserveOutcome:
        """Hold the reservation against every hold (each in its unit), atomically, or
        against none: one script per slot, tenant slot first. The global budget is drawn on
        this replica's allowance when it can be (``stores.redis.allowance``); the draws are
        given back if the reservation is not held in the end."""
        async with self.grants.drawing(reservation) as drawn:
            tenant = reservation.unsettled.tenant_id
            groups = self._groups(reservation.holds, list(drawn), tenant)
            self._track(reservation, tuple(slot for slot, _ in groups), list(drawn))
            states: list[HoldState | None] = [None] * len(reservation.holds)
            for i, state in drawn.items():
                states[i] = state
            draws = self.grants.draws_json(self.allowance.draws(reservation.id))
            for n, (slot, idx) in enumerate(groups):
                ok, failed = await self._reserve_in(
                    slot, reservation, idx, states, draws if n == 0 else ""
                )
                if not ok:  # forgotten once undone: a failed undo is retried by ``cancel``
                    outcome = await self._refused(reservation, groups[:n], idx[failed - 1], states)
                    self._forget(reservation.id)
                    return outcome
            drawn.kept = True
            return ReserveOutcome(True, [s for s in states if s is not None])

    async def _reserve_in(
        self,
        slot: str,
        res: Reservation,
        idx: list[int],
        states: list[HoldState | None],
        draws: str = "",
    ) -> tuple[bool, int]:
        if slot != self.layout.home:
            await self.leases.register(slot)
        holds = [res.holds[i] for i in idx]
        if len({h.key for h in holds}) < len(holds):  # the scripts update each counter once
            raise FareboxError(f"reservation {res.id} holds one counter twice")
        keys = [self.layout.leases(slot), self.layout.record(slot, res.id)]
        stored: list[tuple[str, str, str, str, str]] = []  # the record's holds
        per_hold: list[str] = []
        for hold in holds:  # one pass over the holds
            held = res.held(hold)
            per_hold += reserve_args(hold, held)
            stored.append((hold.key, field(hold.bucket), str(held), hold.unit, kind(hold)))
            keys.append(self.layout.counter(slot, hold.key))
            if hold.buckets_from != hold.bucket:
                keys.append(self.layout.buckets(slot, hold.key))
        # the JSON goes as orjson's bytes (no decode here and encode again to send)
        args: list[str | bytes] = [res.id, repr(float(res.expires_at)), orjson.dumps(stored),
                orjson.dumps(res.unsettled), draws, *per_hold]  # fmt: skip
        raw = await self._run(self._reserve, keys, args)
        ok = int(raw[0]) == 1
        for j, (i, hold) in enumerate(zip(idx, holds, strict=True)):
            states[i] = _found(hold, raw[2 + 4 * j : 6 + 4 * j], res.held(hold) if ok else 0)
        return ok, int(raw[1])

    async def _refused(
        self,
        res: Reservation,
        done: list[tuple[str, list[int]]],
        failed: int,
        states: list[HoldState | None],
    ) -> ReserveOutcome:
        """A slot refused: undo the slots that held, and answer as the in-memory store does
        (every hold's state as found, and the first hold in order that does not fit)."""
        if not done and all(s is not None for s in states):
            found = [s for s in states if s is not None]
            return ReserveOutcome(False, found, found[failed])
        await asyncio.gather(*(self._cancel_in(slot, res.id) for slot, _ in done))
        found = await self.states(res.holds)
        first = next(
            (s for s in found if s.used + s.reserved + res.held(s.hold) > s.limit), found[failed]
        )
        return ReserveOutcome(False, found, first)

    # reads -----------------------------------------------------------------------------
    async def states(self, holds: Sequence[Hold]) -> list[HoldState]:
        """Every hold's counters: one script per slot (each a consistent snapshot). This
        replica's retired chunks of global allowance give back what they hold for no one
        first (best effort), so a rolling window reads as the in-memory store's would."""
        if not holds:
            return []
        if self.allowance.untidy() and any(eligible(h) for h in holds):
            with contextlib.suppress(Exception):  # retried by the next flush
                await self.grants.flush()
        out: list[HoldState | None] = [None] * len(holds)

        async def read(slot: str, idx: list[int]) -> None:
            keys: list[str] = []
            args: list[str] = []
            for i in idx:
                keys += self.layout.hold_keys(slot, holds[i])
                args += hold_args(holds[i])
            raw = await self._run(self._states, keys, args)
            for j, i in enumerate(idx):
                out[i] = _state(holds[i], raw[6 * j : 6 * j + 6])

        await asyncio.gather(*(read(slot, idx) for slot, idx in self._groups(holds) if idx))
        return [self._unhidden(s) for s in out if s is not None]

    def _unhidden(self, state: HoldState) -> HoldState:
        """The global budget as if this replica's chunks were not there: its spend not yet
        flushed counted as used, what its chunks hold for no one left out of reserved."""
        if not self.allowance.chunks or not eligible(state.hold):
            return state
        spent, unheld = self.allowance.hidden(state.hold)
        state.used += spent
        state.reserved = max(state.reserved - unheld, 0)
        if state.used == 0 and state.reserved == 0:
            state.oldest = None  # the bucket held only allowance no one used
        return state

    # settle, cancel, extend --------------------------------------------------------------
    async def settle(self, entries: Sequence[LedgerEntry]) -> None:
        """Turn each entry's reservation into spend of exactly its cost. Idempotent: an entry
        whose reservation is gone or already settled late changes nothing. One script on a
        single Redis, one per node of a cluster (``stores.redis.batching``), at once; each entry
        is all-or-nothing in each slot, and should one overflow a counter (``FareboxError``),
        the entries before it stay settled, so retrying is safe."""
        await self._settle_allowance(entries)
        by_slot: dict[str, list[tuple[str, LedgerEntry]]] = {}
        seen: dict[str, tuple[str, ...]] = {}
        for e in entries:
            rid = e.reservation_id
            if rid is None:
                continue
            if rid not in seen:
                seen[rid] = self._slots_of(rid, e.tenant_id)
            for slot in seen[rid]:
                by_slot.setdefault(slot, []).append((slot, e))
        if not by_slot:
            return
        if self._nodes is None:
            await self._settle_in([item for call in by_slot.values() for item in call])
        else:
            await asyncio.gather(*(
                self._settle_on(node, [by_slot[slot] for slot in slots])
                for node, slots in self._nodes.by_node(by_slot)
            ))  # fmt: skip
        for rid in seen:
            self._forget(rid)

    async def _settle_allowance(self, entries: Sequence[LedgerEntry]) -> None:
        """The entries' draws on global allowance: late spends of reclaimed reservations, then
        this replica's chunks flushed (every chunk in one script), before the slots settle.
        Should the flush not be confirmed this raises, and the slots are not settled: their
        records, which name the draws, stay until this replica's next flush lands or until
        reclaim counts them late. A crash between the flush and the slots' settle counts a
        spend twice (conservative), never not at all."""
        if self.allowance.late:
            self.grants.queue_late(entries)
        for e in entries:
            if e.reservation_id is not None:
                self.allowance.settled(e.reservation_id, e.cost)
        await self.grants.flush()

    async def _settle_on(
        self, node: ClusterNode | None, calls: list[list[tuple[str, LedgerEntry]]]
    ) -> None:
        """The slots of one cluster node: one script for all, or one per slot should that
        fail (a stale slot map, an overflow; ``batching.AGAIN_PER_SLOT``) or be one anyway."""
        if node is not None and self._nodes is not None and len(calls) > 1:
            try:
                await self._settle_in([item for call in calls for item in call], node)
                return
            except batching.NOT_AGAIN:
                raise
            except batching.AGAIN_PER_SLOT as exc:
                log.debug("settling per slot: the batch of node %s failed: %s", node.name, exc)
        await asyncio.gather(*(self._settle_in(call) for call in calls))

    async def _settle_in(
        self, items: list[tuple[str, LedgerEntry]], node: ClusterNode | None = None
    ) -> None:
        """One settle script: each entry's holds in its slot from the reservation this
        process made (no record to read and decode), else from the stored record. On a
        cluster ``node``, the script of its slots (no declared keys), else ``hot.SETTLE``."""
        keys: list[str] = []
        args: list[str] = []
        for slot, e in items:
            rid = e.reservation_id or ""
            if node is None:
                keys.append(self.layout.record(slot, rid))
            made = self._made.get(rid)
            holds = (
                [] if made is None else [h for h in made[0] if self.layout.slot(h.tenant) == slot]
            )
            if made is None or not holds:
                args += [slot, rid, "0", str(e.cost), str(e.tokens), str(e.revenue)]
                continue
            args += [slot, rid, str(len(holds))]
            for h in holds:
                held = held_amount(h.unit, made[1], made[2], made[3])
                spent = settled_amount(h.unit, e.cost, e.tokens, e.revenue)
                args += [h.key, field(h.bucket), kind(h), str(held), str(spent)]
        script = self._settle if node is None or self._nodes is None else self._nodes.on(node)
        await self._run(script, keys, args)

    async def cancel(self, reservation_id: str) -> bool:
        """Undo a reservation that is still held, in every slot it may hold in; False if
        there was none to undo."""
        self.allowance.undraw(reservation_id)
        slots = self._slots.get(reservation_id, (self.layout.home,))
        done = await asyncio.gather(*(self._cancel_in(s, reservation_id) for s in slots))
        self._forget(reservation_id)
        return any(done)

    async def _cancel_in(self, slot: str, rid: str) -> bool:
        keys = [self.layout.leases(slot), self.layout.record(slot, rid)]
        return bool(int(await self._run(self._cancel, keys, [slot, rid])))

    async def extend(self, ids: Sequence[str], expires_at: float) -> None:
        """Move the expiry of the reservations still held; others are left alone. Only held
        reservations are in a lease set, so ``ZADD XX`` is exactly "only held ones". This
        replica's chunks of global allowance are extended too (never shortened: a chunk's lease
        covers its draws'), then those that retired while it was idle are given back (best
        effort: a failure there is logged and retried at the next flush)."""
        by_slot: dict[str, list[str]] = {}
        for rid in ids:
            for slot in self._slots.get(rid, (self.layout.home,)):
                by_slot.setdefault(slot, []).append(rid)
        await asyncio.gather(
            *(
                self._client.zadd(
                    self.layout.leases(slot), dict.fromkeys(group, expires_at), xx=True
                )  # fmt: skip
                for slot, group in by_slot.items()
            )
        )
        chunks = dict.fromkeys(self.grants.chunk_ids(), expires_at)
        if chunks:
            await self._client.zadd(self.layout.leases(self.layout.home), chunks, xx=True, gt=True)
        self.allowance.extended(list(ids), expires_at)  # once Redis has them
        try:
            await self.grants.flush()
        except Exception as exc:  # the tenants' leases are renewed whatever this does
            log.warning("global allowance flush failed (retried at the next one): %s", exc)

    # reclaim ---------------------------------------------------------------------------
    async def expired(self, now: float, limit: int = 500) -> list[LedgerEntry]:
        """Release holds whose lease ran out (``expires_at < now``) in every slot, about
        ``limit`` at most; return their ``unsettled`` ledger entries (once per reservation,
        whichever of its slots expired). Reclaimed reservations are kept a week for late
        settlement, then expire."""
        self.allowance.expired(now)
        slots = [self.layout.home, *await self.leases.slots()]
        found: dict[str, LedgerEntry] = {}
        empty: list[str] = []
        for start in range(0, len(slots), FAN_OUT):
            left = limit - len(found)
            if left <= 0:
                break
            chunk = slots[start : start + FAN_OUT]
            share = max(-(-left // len(chunk)), 1)
            raws = await asyncio.gather(*(self._expire_in(s, now, share) for s in chunk))
            for slot, raw in zip(chunk, raws, strict=True):
                if int(raw[0]) == 0 and slot != self.layout.home:
                    empty.append(slot)
                for item, draws in zip(raw[1::2], raw[2::2], strict=True):
                    e = self._reclaimed(item, draws, now)
                    if e is not None:
                        found.setdefault(e.request_id, e)
        await self.leases.forget(empty)
        return list(found.values())

    def _reclaimed(self, item: Any, draws: Any, now: float) -> LedgerEntry | None:
        """A reclaimed reservation's unsettled entry; None for a chunk of global allowance
        (its reserve is back; if it was this replica's, no more is drawn on it) and for a
        ledger-free reservation (a token count: released, never recorded). A reservation's
        draws on chunks are remembered for its late settle."""
        data: dict[str, Any] | str = orjson.loads(item)
        if isinstance(data, str):  # a chunk's id
            self.allowance.lost_id(data)
            return None
        if data.get("status") == LEDGER_FREE:
            return None
        e = dataclasses.replace(LedgerEntry(**data), finished_at=now)
        rows = _text(draws)
        if rows and e.reservation_id is not None:
            late = [(str(k), float(b), str(kd)) for k, b, kd in orjson.loads(rows)]
            self.allowance.reclaimed(e.reservation_id, late)
        return e

    async def _read_one(self, hold: Hold) -> HoldState:
        [state] = await self.states([hold])
        return state

    async def _expire_in(self, slot: str, now: float, limit: int) -> Any:
        args = [slot, repr(float(now)), str(limit), str(RECLAIMED_TTL_S)]
        return await self._run(self._expired, [self.layout.leases(slot)], args)

    # the deployment's own keys ---------------------------------------------------------
    async def auth_epoch(self) -> int:
        value = await self._client.get(self.layout.epoch)
        return int(value) if value is not None else 0

    async def bump_epoch(self) -> None:
        await self._client.incr(self.layout.epoch)

    # circuit breakers: a hash of open deployments, and one short-lived key per probe
    async def breakers(self) -> dict[str, float]:
        raw = await self._client.hgetall(f"{self.layout.home}:breakers")
        out = {_text(k): float(_text(v)) for k, v in raw.items()}
        return {d: u for d, u in out.items() if u > 0}

    async def set_breaker(self, deployment: str, open_until: float) -> None:
        key = f"{self.layout.home}:breakers"
        if open_until > 0:
            await self._client.hset(key, deployment, repr(float(open_until)))
        else:
            await self._client.hdel(key, deployment)

    async def claim_probe(self, deployment: str, now: float, until: float) -> bool:
        ttl_ms = str(max(int((until - now) * 1000), 1) + 60_000)  # only for clean-up
        args = [repr(float(now)), repr(float(until)), ttl_ms]
        won = await self._claim(keys=[f"{self.layout.home}:probe:{deployment}"], args=args)
        return bool(int(won))

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
respect); on a Redis Cluster, one script per slot, at once.

Money is exact: counter buckets stay signed 64-bit integers (``HINCRBY``, or a decimal
string the script computed exactly and checked to fit) and the scripts compare with two-limb
integers (``stores.redis.lua``) whenever doubles cannot be sure (``stores.redis.hot``). A
script that would take a counter bucket out of the signed 64-bit range fails
(``FareboxError``) and undoes its writes, so one bucket holds up to 2^63 - 1 (about 9.2
million USD in pico-USD); sums and limits beyond it are exact.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from farebox.core.budgets import Hold, HoldState, held_amount, rollover, settled_amount
from farebox.core.records import LedgerEntry, Reservation, ReserveOutcome
from farebox.errors import Conflict, FareboxError
from farebox.stores.redis import hot, lua
from farebox.stores.redis.layout import Layout, field, hold_args, joined, kind, reserve_args
from farebox.stores.redis.leases import FAN_OUT, LeaseSlots
from farebox.stores.redis.scripts import Connections, Script

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
    def __init__(self, client: aioredis.Redis, prefix: str = LEGACY_PREFIX) -> None:
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
        self._made: dict[str, tuple[tuple[Hold, ...], int, int]] = {}
        # a single Redis runs one settle script for every slot; a cluster one per slot
        self._one_call = not isinstance(client, RedisCluster)
        self.leases = LeaseSlots(client, "", client.register_script(lua.FORGET))
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

    def _groups(self, holds: Sequence[Hold]) -> list[tuple[str, list[int]]]:
        """Hold indices by slot: tenant slots first, the home slot last."""
        groups: dict[str, list[int]] = {}
        for i, hold in enumerate(holds):
            groups.setdefault(self.layout.slot(hold.tenant), []).append(i)
        home = groups.pop(self.layout.home, None)
        out = list(groups.items())
        if home is not None or not out:
            out.append((self.layout.home, home or []))
        return out

    def _track(self, res: Reservation, slots: tuple[str, ...]) -> None:
        if len(self._slots) >= TRACKED_MAX:
            self._forget(next(iter(self._slots)))
        self._slots[res.id] = slots
        self._made[res.id] = (res.holds, res.amount, res.tokens)

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
        against none: one script per slot, tenant slot first."""
        groups = self._groups(reservation.holds)
        self._track(reservation, tuple(slot for slot, _ in groups))
        states: list[HoldState | None] = [None] * len(reservation.holds)
        for n, (slot, idx) in enumerate(groups):
            ok, failed = await self._reserve_in(slot, reservation, idx, states)
            if not ok:  # forgotten once undone: a failed undo is retried by ``cancel``
                outcome = await self._refused(reservation, groups[:n], idx[failed - 1], states)
                self._forget(reservation.id)
                return outcome
        return ReserveOutcome(True, [s for s in states if s is not None])

    async def _reserve_in(
        self, slot: str, res: Reservation, idx: list[int], states: list[HoldState | None]
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
                orjson.dumps(res.unsettled), *per_hold]  # fmt: skip
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
        """Every hold's counters: one script per slot (each a consistent snapshot)."""
        if not holds:
            return []
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
        return [s for s in out if s is not None]

    # settle, cancel, extend --------------------------------------------------------------
    async def settle(self, entries: Sequence[LedgerEntry]) -> None:
        """Turn each entry's reservation into spend of exactly its cost. Idempotent: an entry
        whose reservation is gone or already settled late changes nothing. One script per
        slot, at once; each entry is all-or-nothing in each slot, and should one overflow a
        counter (``FareboxError``), the entries before it stay settled, so retrying is safe."""
        by_slot: dict[str, list[LedgerEntry]] = {}
        seen: dict[str, tuple[str, ...]] = {}
        for e in entries:
            rid = e.reservation_id
            if rid is None:
                continue
            if rid not in seen:
                seen[rid] = self._slots_of(rid, e.tenant_id)
            for slot in seen[rid]:
                by_slot.setdefault(slot, []).append(e)
        if not by_slot:
            return
        calls = [[(slot, e) for e in group] for slot, group in by_slot.items()]
        if self._one_call:
            calls = [[item for call in calls for item in call]]
        await asyncio.gather(*(self._settle_in(call) for call in calls))
        for rid in seen:
            self._forget(rid)

    async def _settle_in(self, items: list[tuple[str, LedgerEntry]]) -> None:
        """One settle script: each entry's holds in its slot from the reservation this
        process made (no record to read and decode), else from the stored record."""
        keys: list[str] = []
        args: list[str] = []
        for slot, e in items:
            rid = e.reservation_id or ""
            keys.append(self.layout.record(slot, rid))
            made = self._made.get(rid)
            holds = (
                [] if made is None else [h for h in made[0] if self.layout.slot(h.tenant) == slot]
            )
            if made is None or not holds:
                args += [slot, rid, "0", str(e.cost), str(e.tokens)]
                continue
            args += [slot, rid, str(len(holds))]
            for h in holds:
                held = held_amount(h.unit, made[1], made[2])
                spent = settled_amount(h.unit, e.cost, e.tokens)
                args += [h.key, field(h.bucket), kind(h), str(held), str(spent)]
        await self._run(self._settle, keys, args)

    async def cancel(self, reservation_id: str) -> bool:
        """Undo a reservation that is still held, in every slot it may hold in; False if
        there was none to undo."""
        slots = self._slots.get(reservation_id, (self.layout.home,))
        done = await asyncio.gather(*(self._cancel_in(s, reservation_id) for s in slots))
        self._forget(reservation_id)
        return any(done)

    async def _cancel_in(self, slot: str, rid: str) -> bool:
        keys = [self.layout.leases(slot), self.layout.record(slot, rid)]
        return bool(int(await self._run(self._cancel, keys, [slot, rid])))

    async def extend(self, ids: Sequence[str], expires_at: float) -> None:
        """Move the expiry of the reservations still held; others are left alone. Only held
        reservations are in a lease set, so ``ZADD XX`` is exactly "only held ones"."""
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

    # reclaim ---------------------------------------------------------------------------
    async def expired(self, now: float, limit: int = 500) -> list[LedgerEntry]:
        """Release holds whose lease ran out (``expires_at < now``) in every slot, about
        ``limit`` at most; return their ``unsettled`` ledger entries (once per reservation,
        whichever of its slots expired). Reclaimed reservations are kept a week for late
        settlement, then expire."""
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
                for item in raw[1:]:
                    data: dict[str, Any] = orjson.loads(item)
                    e = dataclasses.replace(LedgerEntry(**data), finished_at=now)
                    found.setdefault(e.request_id, e)
        await self.leases.forget(empty)
        return list(found.values())

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

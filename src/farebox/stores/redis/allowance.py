"""Leases of global allowance: what one replica has taken of the global budget, kept in
this process, so that a request under a global budget does not touch the deployment's home
slot (``stores.redis.layout``), which every tenant shares.

The global budget is the one counter every tenant's requests hold against. Held directly,
every request would run a script in the home slot: on a Redis Cluster, one node would carry
every request. Instead a replica takes a *chunk* of it: a reservation of ``size`` pico-USD in
the home slot, made by the same reserve script as any other (so it fits under the limit
exactly as a request would), leased and reclaimed like one. Requests then *draw* on the chunk
in memory: a draw is admitted only if it fits in what the chunk has left (``free``).

The never-overspend proof is the old one, one level up: in Redis, ``used + reserved`` of the
global counter never exceeds its limit (each chunk and each direct hold is admitted by the
reserve script); in this process, the draws in flight plus the spend not yet moved into
Redis never exceed the chunk (``held + spent <= size``), and every chunk is counted in
``reserved`` until its spend is moved into ``used`` (a *flush*, with each settle batch) or
it is given back. So at every moment the spend the deployment is committed to is at most
``used + reserved <= limit``.

Exactness. A chunk belongs to one counter and one bucket (a new window or a changed limit
starts a new chunk), so spend lands in the bucket the in-memory store would put it in. A
flush moves exactly the settled costs from ``reserved`` to ``used``; a chunk's last flush
gives back what it has left. Reads (``visible``) count this replica's spend not yet flushed
and leave out what its chunks hold for no one, so a single replica reads what the in-memory
store would. When a chunk cannot be had (the budget is nearly spent) the replica gives back
what its chunks hold for no one and holds the global budget per request again, in Redis
(``tight``), until ``TIGHT_S`` later: near its limit the global budget refuses exactly what
the in-memory store refuses, whatever other replicas do.

Sizing. A chunk is about ``lease_s`` seconds of this replica's spend (measured on its last
chunk), at least ``MIN_DRAWS`` of the request that asked for it, and at most ``1/SHARE`` of
what the budget had left at the last grant. A request refused by the global budget can
therefore be refused while other replicas hold allowance no one uses: at most their chunks'
free part, each at most an eighth of what was left when it was taken; chunks are retired
after ``AGE_LEASES`` lease periods and given back once their draws settle.

A replica that dies holding chunks: their Redis leases run out and are reclaimed as any
reservation's (the chunk's record holds what it had not yet flushed, and gives it back). A
request's own reservation record in its tenant's slot names its draws, so a request that
committed its ledger entry but whose spend was not flushed before the death is counted
(``late``) when its reservation is reclaimed and settled from the ledger.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from farebox.core.budgets import Hold, HoldState
from farebox.stores.redis.layout import kind as kind_of

MIN_DRAWS = 8  # a chunk covers at least this many of the request that asks for it
SHARE = 8  # and at most this share of what the budget had left
TIGHT_S = 1.0  # a counter whose chunk was refused is held per request this long
AGE_LEASES = 2  # a chunk takes draws for this many lease periods, then is retired
TRACKED_MAX = 100_000  # draws and late spends remembered at most
SIZE_MAX = 2**62  # a chunk fits a counter bucket (signed 64-bit) with room to spare


def eligible(hold: Hold) -> bool:
    """The global budget (not a service key's counters, which live in the home slot too)."""
    return hold.scope == "global" and hold.unit == "usd" and not hold.tenant


@dataclass(slots=True, eq=False)
class Chunk:
    id: str  # its reservation id in the home slot
    hold: Hold  # the counter, bucket and limit it was granted under
    size: int  # what Redis holds for it now
    born: float  # monotonic
    found: HoldState  # the counter at the grant, this chunk included
    granted: int = 0  # its size at the grant
    expires: float = 0.0  # its lease in Redis (the callers' clock): no draw may outlive it
    held: int = 0  # drawn by requests in flight
    due: int = 0  # drawn by settled requests (at most their cost), to release from reserved
    spent: int = 0  # their costs, to move into used
    flushed: int = 0  # spent and flushed
    drawn: int = 0  # every draw ever made (the spend rate)
    retired: bool = False

    @property
    def free(self) -> int:
        return self.size - self.held - self.due


@dataclass(frozen=True, slots=True)
class Flush:
    """Move ``spend`` into used and ``release`` out of reserved; ``final`` drops the chunk."""

    chunk: Chunk
    release: int
    spend: int
    final: bool
    due: int  # of ``release``, what settled draws held


@dataclass(slots=True)
class Allowance:
    """This replica's chunks and the draws on them (no Redis here: ``RedisBudgets`` grants
    and flushes)."""

    lease_s: float = 1.0  # seconds of spend a chunk holds; 0 = every request holds directly
    clock: Callable[[], float] = time.monotonic
    _live: dict[tuple[str, float], Chunk] = field(default_factory=dict)
    chunks: dict[str, Chunk] = field(default_factory=dict)  # every chunk Redis holds, by id
    _draws: dict[str, list[tuple[Chunk, int]]] = field(default_factory=dict)
    _until: dict[str, float] = field(default_factory=dict)  # each drawing reservation's lease
    _tight: dict[tuple[str, float], float] = field(default_factory=dict)
    _rate: dict[str, float] = field(default_factory=dict)  # pico-USD per s, by counter
    late: dict[str, list[tuple[str, float, str]]] = field(default_factory=dict)
    grants: int = 0  # chunks granted (for tests and the bench)

    def enabled(self, hold: Hold) -> bool:
        return self.lease_s > 0 and eligible(hold) and not self.is_tight(hold)

    def is_tight(self, hold: Hold) -> bool:
        until = self._tight.get((hold.key, hold.bucket))
        return until is not None and until > self.clock()

    # draws -------------------------------------------------------------------------------
    def take(self, rid: str, hold: Hold, need: int, until: float) -> HoldState | None:
        """Draw ``need`` for reservation ``rid`` (leased until ``until``) from the live chunk
        of ``hold``'s counter; the counter's state as this replica knows it, or None (no
        chunk, or too little)."""
        chunk = self._live.get((hold.key, hold.bucket))
        if chunk is None:
            return None
        if (
            chunk.hold != hold
            or until > chunk.expires
            or self.clock() - chunk.born > AGE_LEASES * self.lease_s
        ):
            self.retire(chunk)  # a new limit, a lease beyond its own, or old: a fresh one
            return None
        if need > chunk.free:
            return None
        chunk.held += need
        chunk.drawn += need
        if len(self._draws) >= TRACKED_MAX:
            self.undraw(next(iter(self._draws)))
        self._draws.setdefault(rid, []).append((chunk, need))
        self._until[rid] = until
        return self.state_of(chunk, need)

    @staticmethod
    def state_of(chunk: Chunk, need: int = 0) -> HoldState:
        """The counter after the grant, with this chunk's draws and spend moved in."""
        f = chunk.found
        used = f.used + chunk.flushed + chunk.spent
        reserved = f.reserved - chunk.granted + chunk.held
        return HoldState(f.hold, used, max(reserved, need), f.limit, f.oldest)

    def draws(self, rid: str) -> list[tuple[Chunk, int]]:
        return self._draws.get(rid, [])

    def undraw(self, rid: str) -> None:
        """A reservation refused or cancelled: its draws are free again."""
        self._until.pop(rid, None)
        for chunk, need in self._draws.pop(rid, ()):
            chunk.held -= need

    def settled(self, rid: str, cost: int) -> bool:
        """The request's exact cost is now spend to flush; False if it drew nothing."""
        drawn = self._draws.pop(rid, None)
        if drawn is None:
            return False
        self._until.pop(rid, None)
        for chunk, need in drawn:
            chunk.held -= need
            chunk.due += min(cost, need)  # a cost past its hold takes nothing from other draws
            chunk.spent += cost
        return True

    # chunks ------------------------------------------------------------------------------
    def size_for(self, hold: Hold, need: int, room: int | None) -> int:
        """The size of a new chunk for ``hold``: ``lease_s`` of spend, at least MIN_DRAWS
        draws of ``need``, at most 1/SHARE of the ``room`` last seen (when known)."""
        size = max(int(self._rate.get(hold.key, 0.0) * self.lease_s), need * MIN_DRAWS, 1)
        if room is not None:
            size = min(size, room // SHARE)
        return min(size, SIZE_MAX)

    def granted(self, cid: str, hold: Hold, size: int, found: HoldState, expires: float) -> Chunk:
        key = (hold.key, hold.bucket)
        old = self._live.get(key)
        if old is not None:
            self.retire(old)
        chunk = Chunk(cid, hold, size, self.clock(), found, size, expires)
        self._live[key] = chunk
        self.chunks[cid] = chunk
        self.grants += 1
        return chunk

    def live(self, hold: Hold) -> Chunk | None:
        return self._live.get((hold.key, hold.bucket))

    def retire(self, chunk: Chunk) -> None:
        """No more draws on ``chunk``; it is given back once they settle (``flushes``)."""
        if chunk.retired:
            return
        chunk.retired = True
        if self._live.get((chunk.hold.key, chunk.hold.bucket)) is chunk:
            del self._live[(chunk.hold.key, chunk.hold.bucket)]
        age = max(self.clock() - chunk.born, 1e-3)
        self._rate[chunk.hold.key] = chunk.drawn / age

    def tighten(self, hold: Hold) -> list[Chunk]:
        """Hold ``hold``'s counter per request for ``TIGHT_S``; its chunks to give back."""
        self._tight[(hold.key, hold.bucket)] = self.clock() + TIGHT_S
        if len(self._tight) > 1000:
            now = self.clock()
            self._tight = {k: t for k, t in self._tight.items() if t > now}
        mine = [c for c in self.chunks.values() if c.hold.key == hold.key]
        for chunk in mine:
            self.retire(chunk)
        return mine

    def expire_idle(self) -> None:
        """Retire chunks past their age (their draws settle, then they are given back)."""
        now = self.clock()
        for chunk in list(self._live.values()):
            if now - chunk.born > AGE_LEASES * self.lease_s:
                self.retire(chunk)

    def flushes(self, *, giving_back: Iterator[Chunk] | None = None) -> list[Flush]:
        """What to move into Redis now: each chunk's settled spend; and for a retired chunk
        whose draws all settled, or one given back, what it holds for no one."""
        back = {c.id for c in giving_back or ()}
        out = []
        for chunk in list(self.chunks.values()):
            final = chunk.retired and chunk.held == 0
            release = chunk.size - chunk.held if final or chunk.id in back else chunk.due
            if chunk.spent or release or final:
                out.append(Flush(chunk, release, chunk.spent, final, chunk.due))
        return out

    def apply(self, flush: Flush) -> None:
        """Account a flush before it is sent (``undo`` if it fails)."""
        chunk = flush.chunk
        chunk.size -= flush.release
        chunk.due -= flush.due
        chunk.spent -= flush.spend
        chunk.flushed += flush.spend
        if flush.final:
            self.chunks.pop(chunk.id, None)

    def undo(self, flush: Flush) -> None:
        chunk = flush.chunk
        chunk.size += flush.release
        chunk.due += flush.due
        chunk.spent += flush.spend
        chunk.flushed -= flush.spend
        if flush.final:
            self.chunks[chunk.id] = chunk

    def extended(self, ids: list[str], until: float) -> None:
        """Leases moved to ``until``: the chunks' (never shortened) and these draws'."""
        for chunk in self.chunks.values():
            chunk.expires = max(chunk.expires, until)
        for rid in ids:
            if rid in self._until:
                self._until[rid] = until

    def expired(self, now: float) -> None:
        """Draws whose reservation's lease ran out are reclaimed (by this replica or any):
        free again, and remembered so that a late settle still counts their spend."""
        for rid in [r for r, until in self._until.items() if until < now]:
            rows = [(c.hold.key, c.hold.bucket, kind_of(c.hold)) for c, _ in self._draws[rid]]
            self.undraw(rid)
            self.remember_late(rid, rows)

    def lost_id(self, cid: str) -> None:
        chunk = self.chunks.get(cid)
        if chunk is not None:
            self.lost(chunk)

    def lost(self, chunk: Chunk) -> None:
        """Redis no longer holds ``chunk`` (its lease was reclaimed): draw no more on it."""
        self.retire(chunk)
        chunk.size = chunk.held + chunk.due  # nothing free; the spend still goes into used

    def hidden(self, hold: Hold) -> tuple[int, int]:
        """What this replica's chunks of ``hold``'s counter and bucket keep from Redis: spend
        not yet flushed (a read adds it to used) and reserve held for no request in flight
        (a read takes it out of reserved)."""
        spent = unheld = 0
        for chunk in self.chunks.values():
            if chunk.hold.key == hold.key and chunk.hold.bucket == hold.bucket:
                spent += chunk.spent
                unheld += chunk.size - chunk.held
        return spent, unheld

    def remember_late(self, rid: str, draws: list[tuple[str, float, str]]) -> None:
        """A reclaimed reservation's draws (counter, bucket, kind), for its late settle."""
        if len(self.late) >= TRACKED_MAX:
            self.late.pop(next(iter(self.late)))
        self.late[rid] = draws


def chunk_id() -> str:
    return f"alw_{os.urandom(12).hex()}"

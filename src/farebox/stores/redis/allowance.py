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
Redis never exceed the chunk (``held + due <= size``, where ``due`` is what settled draws
held, at most their costs; a cost past its hold overruns as it does when held directly), and
every chunk is counted in ``reserved`` until its spend is moved into ``used`` (a *flush*,
with each settle batch) or it is given back. So at every moment the spend the deployment is
committed to is at most ``used + reserved <= limit``.

Exactness. A chunk serves one exact hold (counter, bucket, limit, rollover: a new window or a
changed limit starts a new chunk, and holds that differ draw on different chunks), so spend
lands in the bucket the in-memory store would put it in. A flush moves exactly the settled
costs from ``reserved`` to ``used``; a chunk's last flush gives back what it has left. Reads
(``RedisBudgets.states``) count this replica's spend not yet flushed and leave out what its
chunks hold for no one, so a single replica reads what the in-memory store would. When a chunk
cannot be had (the budget is nearly spent) the replica's chunks of the counter retire, what
they hold for no one goes back, and the counter is held per request again, in Redis
(``tight``), until ``TIGHT_S`` later: near its limit the global budget then refuses what the
in-memory store refuses, except that other replicas' chunks can make it refuse early (never
admit too many).

Sizing. A chunk is about ``lease_s`` seconds of this replica's spend (measured on its last
chunk), at least ``MIN_DRAWS`` of the request that asked for it, and at most ``1/SHARE`` of
what the budget had left (read once per counter, then as seen at each grant). A request
refused by the global budget can therefore be refused while other replicas hold allowance
no one uses: at most their chunks' free part, each at most an eighth of what was left when it
was taken. A chunk is retired after ``AGE_LEASES`` lease periods: its free part is given
back at the next flush, the rest as its draws settle.

Flushes are idempotent (``stores.redis.grants``): each carries the chunk's next sequence
number and the script applies it once; one whose answer was lost (a timeout, a cancel) is
sent again as it was, never undone and redone, so nothing is released or spent twice.

A replica that dies holding chunks: their Redis leases run out and are reclaimed as any
reservation's (the chunk's record holds what it had not yet flushed, and gives it back). A
request's own reservation record in its tenant's slot names its draws, and is settled only
after a flush carrying its spend succeeded, so a request that committed its ledger entry but
whose spend was not flushed before the death is counted (``late``, once per request) when its
reservation is reclaimed and settled from the ledger.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from farebox.core.budgets import Hold, HoldState
from farebox.stores.redis.layout import kind as kind_of

MIN_DRAWS = 8  # a chunk covers at least this many of the request that asks for it
SHARE = 8  # and at most this share of what the budget had left
TIGHT_S = 1.0  # a counter whose chunk was refused is held per request this long
AGE_LEASES = 2  # a chunk takes draws for this many lease periods, then is retired
TRACKED_MAX = 100_000  # draws in flight (beyond: held per request), late spends remembered
SIZE_MAX = 2**62  # a chunk fits a counter bucket (signed 64-bit) with room to spare

Late = tuple[str, float, str]  # a draw as a reservation record names it: counter, bucket, kind


def eligible(hold: Hold) -> bool:
    """The global budget (not a service key's counters, which live in the home slot too)."""
    return hold.scope == "global" and hold.unit == "usd" and not hold.tenant


@dataclass(slots=True, eq=False)
class Chunk:
    id: str  # its reservation id in the home slot
    hold: Hold  # the counter, bucket and limit it was granted under
    size: int  # what Redis holds for it now (as of the flushes sent)
    born: float  # monotonic
    found: HoldState  # the counter at the grant, this chunk included
    granted: int = 0  # its size at the grant
    expires: float = 0.0  # its lease in Redis (the callers' clock): no draw may outlive it
    held: int = 0  # drawn by requests in flight
    open: int = 0  # requests in flight drawing on it (a draw of 0 keeps it open too)
    due: int = 0  # drawn by settled requests (at most their cost), to release from reserved
    spent: int = 0  # their costs, to move into used
    flushed: int = 0  # spent and flushed
    drawn: int = 0  # every draw ever made (the spend rate)
    seq: int = 0  # the last flush's sequence number
    retired: bool = False

    @property
    def free(self) -> int:
        return self.size - self.held - self.due

    @property
    def row(self) -> Late:
        """Its counter as a draw's record names it."""
        return self.hold.key, self.hold.bucket, kind_of(self.hold)


@dataclass(frozen=True, slots=True)
class Flush:
    """Move ``spend`` into used and ``release`` out of reserved, as the chunk's flush ``seq``;
    ``final`` ends the chunk. ``late``: a dead replica's request's spend (no chunk: ``rid``)."""

    chunk: Chunk | None
    release: int
    spend: int
    final: bool
    seq: int
    late: tuple[str, Late] | None = None


@dataclass(slots=True)
class Allowance:
    """This replica's chunks and the draws on them (no Redis here: ``stores.redis.grants``
    grants and flushes)."""

    lease_s: float = 1.0  # seconds of spend a chunk holds; 0 = every request holds directly
    clock: Callable[[], float] = time.monotonic
    _live: dict[Hold, Chunk] = field(default_factory=dict)  # by the exact hold it serves
    chunks: dict[str, Chunk] = field(default_factory=dict)  # every chunk Redis holds, by id
    _draws: dict[str, list[tuple[Chunk, int]]] = field(default_factory=dict)
    _until: dict[str, float] = field(default_factory=dict)  # each drawing reservation's lease
    _tight: dict[tuple[str, float], float] = field(default_factory=dict)
    _rate: dict[str, float] = field(default_factory=dict)  # pico-USD per s, by counter
    _room: dict[tuple[str, float], int] = field(default_factory=dict)  # left, as last seen
    late: dict[str, list[Late]] = field(default_factory=dict)
    mine: dict[str, None] = field(default_factory=dict)  # settled here: counted by a flush
    grants: int = 0  # chunks granted (for tests and the bench)

    def enabled(self, hold: Hold) -> bool:
        return self.lease_s > 0 and eligible(hold) and not self.is_tight(hold)

    def is_tight(self, hold: Hold) -> bool:
        until = self._tight.get((hold.key, hold.bucket))
        return until is not None and until > self.clock()

    # draws -------------------------------------------------------------------------------
    def take(self, rid: str, hold: Hold, need: int, until: float) -> HoldState | None:
        """Draw ``need`` for reservation ``rid`` (leased until ``until``) from the live chunk
        of ``hold``; the counter's state as this replica knows it, or None (no chunk, too
        little, or too many draws in flight to track: held per request then)."""
        chunk = self._live.get(hold)
        if chunk is None or len(self._draws) >= TRACKED_MAX:
            return None
        if until > chunk.expires or self.clock() - chunk.born > AGE_LEASES * self.lease_s:
            self.retire(chunk)  # a lease beyond its own, or old: a fresh one is granted
            return None
        if need > chunk.free:
            return None
        chunk.held += need
        chunk.open += 1
        chunk.drawn += need
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
        """A reservation refused, cancelled or reclaimed: its draws are free again."""
        self._until.pop(rid, None)
        for chunk, need in self._draws.pop(rid, ()):
            chunk.held -= need
            chunk.open -= 1

    def settled(self, rid: str, cost: int) -> bool:
        """The request's exact cost is now spend to flush; False if it drew nothing."""
        drawn = self._draws.pop(rid, None)
        if drawn is None:
            return False
        self._until.pop(rid, None)
        for chunk, need in drawn:
            chunk.held -= need
            chunk.open -= 1
            # the cost leaves the chunk: its hold, and a cost past it out of the chunk's free
            # part as far as that goes (as the budget would have less room), never out of
            # the other draws' holds
            free = max(chunk.free, 0)
            chunk.due += min(cost, free)
            chunk.spent += cost
            if cost > free:  # the overrun may have taken the budget past its limit
                self.retire(chunk)
        if len(self.mine) >= TRACKED_MAX:
            self.mine.pop(next(iter(self.mine)))
        self.mine[rid] = None
        return True

    # chunks ------------------------------------------------------------------------------
    def room(self, hold: Hold) -> int | None:
        return self._room.get((hold.key, hold.bucket))

    def saw(self, state: HoldState) -> None:
        """What the budget had left at a grant or a read (caps the next chunk)."""
        if len(self._room) > 1000:
            self._room.clear()
        self._room[(state.hold.key, state.hold.bucket)] = state.remaining

    def size_for(self, hold: Hold, need: int, room: int | None) -> int:
        """The size of a new chunk for ``hold``: ``lease_s`` of spend, at least MIN_DRAWS
        draws of ``need``, at most 1/SHARE of the ``room`` last seen (when known)."""
        size = max(int(self._rate.get(hold.key, 0.0) * self.lease_s), need * MIN_DRAWS, 1)
        if room is not None:
            size = min(size, room // SHARE)
        return min(size, SIZE_MAX)

    def granted(self, cid: str, hold: Hold, size: int, found: HoldState, expires: float) -> Chunk:
        for served, old in list(self._live.items()):  # this hold's, and older windows'
            if served == hold or (served.key == hold.key and served.bucket != hold.bucket):
                self.retire(old)
        chunk = Chunk(cid, hold, size, self.clock(), found, size, expires)
        self._live[hold] = chunk
        self.chunks[cid] = chunk
        self.saw(HoldState(hold, found.used, found.reserved, found.limit))
        self.grants += 1
        return chunk

    def retire(self, chunk: Chunk) -> None:
        """No more draws on ``chunk``; its free part goes back at the next flush, the rest
        as its draws settle."""
        if chunk.retired:
            return
        chunk.retired = True
        if self._live.get(chunk.hold) is chunk:
            del self._live[chunk.hold]
        age = max(self.clock() - chunk.born, 1e-3)
        self._rate[chunk.hold.key] = chunk.drawn / age

    def tighten(self, hold: Hold) -> None:
        """Hold ``hold``'s counter per request for ``TIGHT_S``; its chunks retire (what
        they hold for no one goes back at the next flush)."""
        self._tight[(hold.key, hold.bucket)] = self.clock() + TIGHT_S
        if len(self._tight) > 1000:
            now = self.clock()
            self._tight = {k: t for k, t in self._tight.items() if t > now}
        for chunk in list(self.chunks.values()):
            if chunk.hold.key == hold.key:
                self.retire(chunk)

    def untidy(self) -> bool:
        """Some retired chunk still holds reserve for no one (a flush gives it back)."""
        return any(c.retired and c.size > c.held for c in self.chunks.values())

    def expire_idle(self) -> None:
        """Retire chunks past their age."""
        now = self.clock()
        for chunk in list(self._live.values()):
            if now - chunk.born > AGE_LEASES * self.lease_s:
                self.retire(chunk)

    def flushes(self, busy: Iterable[str] = ()) -> list[Flush]:
        """What to move into Redis now, chunk by chunk (those in ``busy``, whose last flush
        is unconfirmed, wait): each chunk's settled spend; a retired chunk's free part too;
        and a retired chunk with no draw left ends."""
        skip = set(busy)
        out = []
        for chunk in list(self.chunks.values()):
            if chunk.id in skip:
                continue
            final = chunk.retired and chunk.open == 0
            release = chunk.size - chunk.held if chunk.retired else chunk.due
            if chunk.spent or release or final:
                chunk.seq += 1
                out.append(Flush(chunk, release, chunk.spent, final, chunk.seq))
        return out

    def apply(self, flush: Flush) -> None:
        """Account a flush as it is sent: it will be sent again until Redis confirms it."""
        chunk = flush.chunk
        if chunk is None:
            return
        chunk.due = max(chunk.due - flush.release, 0)
        chunk.size -= flush.release
        chunk.spent -= flush.spend
        chunk.flushed += flush.spend
        if flush.final:
            self.chunks.pop(chunk.id, None)

    def lost(self, chunk: Chunk) -> None:
        """Redis no longer holds ``chunk`` (its lease was reclaimed): draw no more on it."""
        self.retire(chunk)
        chunk.size = chunk.held + chunk.due  # nothing free; the spend still goes into used

    def lost_id(self, cid: str) -> None:
        chunk = self.chunks.get(cid)
        if chunk is not None:
            self.lost(chunk)

    def hidden(self, hold: Hold) -> tuple[int, int]:
        """What this replica's chunks of ``hold``'s counter and window keep from Redis: spend
        not yet flushed (a read adds it to used) and reserve held for no request in flight
        (a read takes it out of reserved)."""
        spent = unheld = 0
        for chunk in self.chunks.values():
            h = chunk.hold
            if h.key == hold.key and hold.counts(h.bucket):
                spent += chunk.spent
                unheld += chunk.size - chunk.held
        return spent, unheld

    # leases and reclaim ------------------------------------------------------------------
    def extended(self, ids: list[str], until: float) -> None:
        """Leases moved to ``until`` in Redis: the chunks' (never shortened) and these
        draws'."""
        for chunk in self.chunks.values():
            chunk.expires = max(chunk.expires, until)
        for rid in ids:
            if rid in self._until:
                self._until[rid] = until

    def expired(self, now: float) -> None:
        """Draws whose reservation's lease ran out are reclaimed (by this replica or any):
        free again, and remembered so that a late settle still counts their spend."""
        for rid in [r for r, until in self._until.items() if until < now]:
            rows = [c.row for c, _ in self._draws[rid]]
            self.undraw(rid)
            self.remember_late(rid, rows)

    def reclaimed(self, rid: str, rows: list[Late]) -> None:
        """A reservation naming draws was reclaimed: counted late when it settles, unless
        this replica settled it already (its flush counts it) or still holds its draws (then
        they are given up: the late settle counts it instead)."""
        if rid in self.mine:
            return
        self.undraw(rid)
        self.remember_late(rid, rows)

    def remember_late(self, rid: str, rows: list[Late]) -> None:
        if len(self.late) >= TRACKED_MAX:
            self.late.pop(next(iter(self.late)))
        self.late[rid] = rows


def chunk_id() -> str:
    return f"alw_{os.urandom(12).hex()}"

"""The Redis side of global allowance (``stores.redis.allowance``, where the design is):
granting chunks in the home slot, drawing on them for a reservation, and flushing spend.

Every call here runs in the deployment's home slot, one script each: a grant when a chunk
runs out (about once per ``lease_s`` of a replica's spend), and one flush per settle batch
for every chunk at once. A request that draws on a chunk runs nothing here.

Unknown outcomes. A flush (or a late spend) whose answer is lost, by a timeout, a dropped
connection or a cancel, may have been applied: it is kept and sent again, exactly as it was,
before anything newer for its chunk, and the script applies each at most once (by the chunk's
flush number, or the late spend's marker). A grant whose answer is lost may have left a chunk
in Redis that this replica does not know: it is cancelled (given back) at the next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import orjson

from farebox.core.budgets import Hold, HoldState, settled_amount
from farebox.core.records import LedgerEntry, Reservation
from farebox.errors import FareboxError
from farebox.stores.redis.allowance import AGE_LEASES, Allowance, Chunk, Flush, chunk_id
from farebox.stores.redis.layout import Layout, field, kind, reserve_args

Run = Callable[[Any, list[str], list[str]], Awaitable[Any]]
Found = Callable[[Hold, Sequence[Any], int], HoldState]
DONE_TTL_S = 3600  # a finished chunk's record and a late spend's marker are kept this long


class Drawn(dict[int, HoldState]):
    """The holds a reservation drew on allowance, by index; ``kept`` once it is held."""

    kept = False


class Grants:
    def __init__(
        self,
        allowance: Allowance,
        run: Run,
        scripts: tuple[Any, Any, Any],  # hot.RESERVE, lua.FLUSH, lua.CANCEL
        layout: Callable[[], Layout],
        found: Found,
        read: Callable[[Hold], Awaitable[HoldState]],
    ) -> None:
        self.allowance = allowance
        self._run = run
        self._reserve, self._flush, self._cancel = scripts
        self._layout = layout
        self._found = found
        self._read = read  # the counter as Redis has it (sizes a first chunk)
        self._pending: list[Flush] = []  # sent, answer unknown: sent again first
        self._orphans: dict[str, None] = {}  # chunks granted, answer unknown: given back
        self._locks: dict[str, asyncio.Lock] = {}
        # one flush at a time: each is sent after the unconfirmed ones it may follow
        self._flushing = asyncio.Lock()

    # drawing -----------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def drawing(self, res: Reservation) -> AsyncIterator[Drawn]:
        """Draw each global hold of ``res`` on this replica's chunks (granting one where
        needed): yields ``{hold index: state}`` of the holds drawn (the others are held in
        Redis). The draws are given back unless the body marks them ``kept`` (the
        reservation is held), whatever ends it: a refusal, an error, a cancel."""
        drawn = Drawn()
        try:
            for i, hold in enumerate(res.holds):
                if self.allowance.enabled(hold):
                    state = await self._draw(res, hold)
                    if state is not None:
                        drawn[i] = state
            yield drawn
        finally:
            if not drawn.kept:
                self.allowance.undraw(res.id)

    async def _draw(self, res: Reservation, hold: Hold) -> HoldState | None:
        need = res.held(hold)
        state = self.allowance.take(res.id, hold, need, res.expires_at)
        if state is not None:
            return state
        lock = self._locks.setdefault(hold.key, asyncio.Lock())
        async with lock:  # one grant at a time per counter; the others draw on it
            state = self.allowance.take(res.id, hold, need, res.expires_at)
            if state is None and self.allowance.enabled(hold):
                await self._grant(res, hold, need)
                state = self.allowance.take(res.id, hold, need, res.expires_at)
        return state

    async def _grant(self, res: Reservation, hold: Hold, need: int) -> None:
        """A new chunk for ``hold``, at most 1/SHARE of what the budget has left (read once
        per counter, then as each grant finds it); if the budget cannot spare one, this
        replica's chunks of the counter retire, what they hold for no one goes back, and the
        counter is held per request for a while."""
        room = self.allowance.room(hold)
        if room is None:
            self.allowance.saw(await self._read(hold))
            room = self.allowance.room(hold)
        # the chunk's lease outlives the leases of every draw it can take (``AGE_LEASES``)
        expires = res.expires_at + AGE_LEASES * self.allowance.lease_s + 1
        for _ in range(2):
            size = self.allowance.size_for(hold, need, room)
            if size < need:
                break
            cid = chunk_id()
            try:
                ok, state = await self._reserve_chunk(cid, hold, size, expires)
            except FareboxError:  # the bucket cannot take a chunk (64-bit): held per request
                break
            if ok:
                self.allowance.granted(cid, hold, size, state, expires)
                return
            self.allowance.saw(state)
            room = state.remaining
        self.allowance.tighten(hold)
        await self.flush()

    async def _reserve_chunk(
        self, cid: str, hold: Hold, size: int, expires_at: float
    ) -> tuple[bool, HoldState]:
        layout = self._layout()
        home = layout.home
        keys = [layout.leases(home), layout.record(home, cid), layout.counter(home, hold.key)]
        if hold.buckets_from != hold.bucket:
            keys.append(layout.buckets(home, hold.key))
        stored = [[hold.key, field(hold.bucket), str(size), hold.unit, kind(hold)]]
        # its "unsettled entry" is its id: a reclaim tells a chunk from a request by it
        args = [cid, repr(float(expires_at)), orjson.dumps(stored).decode(),
                orjson.dumps(cid).decode(), ""]  # fmt: skip
        try:
            raw = await self._run(self._reserve, keys, args + reserve_args(hold, size))
        except FareboxError:
            raise  # the script failed: nothing was granted
        except BaseException:  # no answer: the chunk may exist; give it back at the next flush
            self._orphans[cid] = None
            raise
        ok = int(raw[0]) == 1
        return ok, self._found(hold, raw[2:6], size if ok else 0)

    @staticmethod
    def draws_json(draws: list[tuple[Chunk, int]]) -> str:
        """A reservation's draws as its record keeps them (for a late settle after a crash)."""
        if not draws:
            return ""
        rows = [(key, field(bucket), k) for key, bucket, k in (c.row for c, _ in draws)]
        return orjson.dumps(rows).decode()

    # flushing ----------------------------------------------------------------------------
    async def flush(self) -> None:
        """Move every chunk's settled spend into Redis, and give back what retired chunks
        hold for no one: one script for all of them, after what is unconfirmed is sent again.
        Raises if Redis did not confirm it (all of it is sent again next time)."""
        async with self._flushing:
            await self._give_back_orphans()
            self.allowance.expire_idle()
            busy = [f.chunk.id for f in self._pending if f.chunk is not None]
            fresh = self.allowance.flushes(busy)
            for f in fresh:
                self.allowance.apply(f)
            self._pending += fresh
            if not self._pending:
                return
            todo = list(self._pending)
            answers = await self._send(todo)  # raises: all of ``todo`` stays pending
            self._pending = self._pending[len(todo) :]
            for f, answer in zip(todo, answers, strict=True):
                if f.chunk is not None and int(answer) == 0 and not f.final:
                    self.allowance.lost(f.chunk)

    async def _give_back_orphans(self) -> None:
        layout = self._layout()
        home = layout.home
        for cid in list(self._orphans):
            keys = [layout.leases(home), layout.record(home, cid)]
            await self._run(self._cancel, keys, [home, cid])
            del self._orphans[cid]

    async def _send(self, todo: list[Flush]) -> list[Any]:
        layout = self._layout()
        home = layout.home
        keys: list[str] = []
        args: list[str] = [str(DONE_TTL_S)]
        for f in todo:
            if f.chunk is not None:
                cid, (key, bucket, k) = f.chunk.id, f.chunk.row
                record, seq = layout.record(home, cid), str(f.seq)
            else:
                assert f.late is not None
                cid, (key, bucket, k) = f.late
                record, seq = f"{home}:late:{cid}", ""
            keys += [layout.leases(home), record, layout.counter(home, key),
                     layout.buckets(home, key)]  # fmt: skip
            args += [cid, field(bucket), k, str(f.release), str(f.spend),
                     "1" if f.final else "0", seq]  # fmt: skip
        return list(await self._run(self._flush, keys, args))

    def queue_late(self, entries: Sequence[LedgerEntry]) -> None:
        """The spend of reclaimed reservations whose draws were not counted (their replica
        died, or gave them up), from their committed ledger entries: into used at the next
        flush, once per request and counter (the chunks' reclaim gave their reserve back)."""
        for e in entries:
            rid = e.reservation_id or ""
            rows = self.allowance.late.pop(rid, None)
            spent = settled_amount("usd", e.cost, e.tokens)
            for n, row in enumerate(rows or ()):
                self._pending.append(Flush(None, 0, spent, False, 0, (f"{rid}:{n}", row)))

    def chunk_ids(self) -> Iterator[str]:
        return iter(list(self.allowance.chunks))

    async def give_back(self) -> None:
        """Every chunk: its spend flushed and what it holds for no one given back (a clean
        shutdown, after the last settle)."""
        for chunk in list(self.allowance.chunks.values()):
            self.allowance.retire(chunk)
        await self.flush()

"""The Redis side of global allowance (``stores.redis.allowance``, where the design is):
granting chunks in the home slot, drawing on them for a reservation, and flushing spend.

Every call here runs in the deployment's home slot, one script each: a grant when a chunk
runs out (about once per ``lease_s`` of a replica's spend), and one flush per settle batch
for every chunk at once. A request that draws on a chunk runs nothing here.
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
LATE = "-"  # the id of no chunk: a late spend's record, which never exists


class Drawn(dict[int, HoldState]):
    """The holds a reservation drew on allowance, by index; ``kept`` once it is held."""

    kept = False


class Grants:
    def __init__(
        self,
        allowance: Allowance,
        run: Run,
        scripts: tuple[Any, Any],  # hot.RESERVE, lua.FLUSH
        layout: Callable[[], Layout],
        found: Found,
    ) -> None:
        self.allowance = allowance
        self._run = run
        self._reserve, self._flush = scripts
        self._layout = layout
        self._found = found
        self._locks: dict[str, asyncio.Lock] = {}
        # one flush at a time: two in flight could reach Redis out of order, and a chunk's
        # last flush, arriving first, would leave the other's release undone
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
        """A new chunk for ``hold``'s counter; if the budget cannot spare one, give back what
        this replica's chunks hold for no one and hold the counter per request for a while."""
        live = self.allowance.live(hold)
        room = None if live is None else live.found.remaining
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
            room = state.remaining
        await self.flush(giving_back=self.allowance.tighten(hold))

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
        raw = await self._run(self._reserve, keys, args + reserve_args(hold, size))
        ok = int(raw[0]) == 1
        return ok, self._found(hold, raw[2:6], size if ok else 0)

    @staticmethod
    def draws_json(draws: list[tuple[Chunk, int]]) -> str:
        """A reservation's draws as its record keeps them (for a late settle after a crash)."""
        if not draws:
            return ""
        rows = [[c.hold.key, field(c.hold.bucket), kind(c.hold)] for c, _ in draws]
        return orjson.dumps(rows).decode()

    # flushing ----------------------------------------------------------------------------
    async def flush(self, *, giving_back: Sequence[Chunk] = ()) -> None:
        """Move every chunk's settled spend into Redis, and give back what retired chunks (and
        ``giving_back``) hold for no one: one script for all of them. Accounted first and
        undone if the script fails, so spend is never moved twice nor lost."""
        async with self._flushing:
            await self._flush_now(giving_back)

    async def _flush_now(self, giving_back: Sequence[Chunk]) -> None:
        self.allowance.expire_idle()
        todo = self.allowance.flushes(giving_back=iter(giving_back))
        if not todo:
            return
        for f in todo:
            self.allowance.apply(f)
        try:
            live = await self._send(todo)
        except BaseException:
            for f in todo:
                self.allowance.undo(f)
            raise
        for f, held in zip(todo, live, strict=True):
            if not int(held) and not f.final:
                self.allowance.lost(f.chunk)

    async def _send(self, todo: list[Flush]) -> list[Any]:
        layout = self._layout()
        home = layout.home
        keys: list[str] = []
        args: list[str] = []
        for f in todo:
            h = f.chunk.hold
            keys += [layout.leases(home), layout.record(home, f.chunk.id),
                     layout.counter(home, h.key), layout.buckets(home, h.key)]  # fmt: skip
            args += [home, f.chunk.id, field(h.bucket), kind(h), str(f.release), str(f.spend),
                     "1" if f.final else "0"]  # fmt: skip
        return list(await self._run(self._flush, keys, args))

    async def late(self, entries: Sequence[LedgerEntry]) -> None:
        """The spend of reclaimed reservations that drew on a dead replica's chunks, from their
        committed ledger entries: into used (the chunk's reclaim gave its reserve back)."""
        layout = self._layout()
        home = layout.home
        keys: list[str] = []
        args: list[str] = []
        taken: list[tuple[str, list[tuple[str, float, str]]]] = []
        for e in entries:
            rid = e.reservation_id or ""
            rows = self.allowance.late.pop(rid, None)
            if not rows:
                continue
            taken.append((rid, rows))
            spent = settled_amount("usd", e.cost, e.tokens)
            for key, bucket, k in rows:
                keys += [layout.leases(home), layout.record(home, LATE),
                         layout.counter(home, key), layout.buckets(home, key)]  # fmt: skip
                args += [home, LATE, field(bucket), k, "0", str(spent), "0"]
        if not keys:
            return
        try:
            await self._run(self._flush, keys, args)
        except BaseException:
            for rid, rows in taken:
                self.allowance.late[rid] = rows
            raise

    def chunk_ids(self) -> Iterator[str]:
        return iter(list(self.allowance.chunks))

    async def give_back(self) -> None:
        """Every chunk: its spend flushed and what it holds for no one given back (a clean
        shutdown, after the last settle)."""
        for chunk in list(self.allowance.chunks.values()):
            self.allowance.retire(chunk)
        await self.flush(giving_back=list(self.allowance.chunks.values()))

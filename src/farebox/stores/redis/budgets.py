"""Budget counters and leased reservations in Redis (same semantics as SQLite).

Every operation that reads and then writes is one Lua script, so it is atomic across every
replica sharing the Redis server; nothing is locked in Python.

Keys (``P`` is ``{prefix}``, a Redis Cluster hash tag):

- ``P:used:<counter>`` and ``P:reserved:<counter>``: hashes, field = the bucket, value = an
  integer of pico-USD kept with ``HINCRBY``;
- ``P:buckets:<counter>``: a sorted set of the counter's buckets scored by the bucket, so a
  rolling window's buckets ``buckets_from..bucket`` are one ``ZRANGEBYSCORE``;
- ``P:res:<id>``: a hash per reservation (``amount``, ``holds``, ``state``, ``unsettled``);
- ``P:leases``: a sorted set of the held reservations scored by ``expires_at``;
- ``P:auth_epoch``: the auth epoch.

Every key carries the same hash tag, so every key lands in one cluster slot and each script
may touch counters it finds in a reservation record without naming them up front. That puts
all budgets on one node; that is acceptable until one node is too small.

A bucket is stored as ``repr(float(bucket))``, which round-trips exactly through Python's
``float`` and Redis's score parsing alike.

Money is exact. Counters change only with ``HINCRBY`` (exact signed 64-bit integers). Lua
numbers are doubles, exact only below 2^53, so the scripts never do money arithmetic with
them: sums, rollover and the limit comparison use a small arbitrary-precision decimal
integer (base 10^7 limbs) written in Lua, and values cross the script boundary as decimal
strings. Before any write a script checks that no ``HINCRBY`` would leave the signed 64-bit
range, and fails without writing if one would, so a script never stops half-way through
its writes. One counter bucket therefore holds up to 2^63 - 1 pico-USD (about 9.2 million
USD); sums over buckets and limits are unbounded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from farebox.core.budgets import Hold, HoldState
from farebox.core.records import LedgerEntry, Reservation, ReserveOutcome
from farebox.errors import Conflict, FareboxError

RECLAIMED_TTL_S = 7 * 86400  # reclaimed reservations are kept this long for late settlement
LEGACY_PREFIX = "fbx"  # every deployment's keys before ``redis_prefix`` existed

_BIGINT = """
local BASE = 10000000
local INT64_MAX, INT64_MIN

local function mk(neg, d)
  if #d == 1 and d[1] == 0 then neg = false end
  return {neg = neg, d = d}
end

local function big(s)
  if not s then s = '0' end
  s = tostring(s)
  local neg = false
  if string.sub(s, 1, 1) == '-' then neg = true; s = string.sub(s, 2) end
  local d = {}
  local i = #s
  while i >= 1 do
    local j = i - 6
    if j < 1 then j = 1 end
    d[#d + 1] = tonumber(string.sub(s, j, i))
    i = j - 1
  end
  while #d > 1 and d[#d] == 0 do d[#d] = nil end
  if #d == 0 then d[1] = 0 end
  return mk(neg, d)
end

local function cmpmag(a, b)
  if #a ~= #b then if #a < #b then return -1 else return 1 end end
  for i = #a, 1, -1 do
    if a[i] ~= b[i] then if a[i] < b[i] then return -1 else return 1 end end
  end
  return 0
end

local function addmag(a, b)
  local r, c = {}, 0
  for i = 1, math.max(#a, #b) do
    local s = (a[i] or 0) + (b[i] or 0) + c
    if s >= BASE then r[i] = s - BASE; c = 1 else r[i] = s; c = 0 end
  end
  if c > 0 then r[#r + 1] = c end
  return r
end

local function submag(a, b)  -- |a| >= |b|
  local r, c = {}, 0
  for i = 1, #a do
    local s = a[i] - (b[i] or 0) - c
    if s < 0 then r[i] = s + BASE; c = 1 else r[i] = s; c = 0 end
  end
  while #r > 1 and r[#r] == 0 do r[#r] = nil end
  return r
end

local function add(a, b)
  if a.neg == b.neg then return mk(a.neg, addmag(a.d, b.d)) end
  if cmpmag(a.d, b.d) >= 0 then return mk(a.neg, submag(a.d, b.d)) end
  return mk(b.neg, submag(b.d, a.d))
end

local function neg(a) return mk(not a.neg, a.d) end
local function sub(a, b) return add(a, neg(b)) end

local function cmp(a, b)
  if a.neg ~= b.neg then if a.neg then return -1 else return 1 end end
  local c = cmpmag(a.d, b.d)
  if a.neg then return -c end
  return c
end

local function str(a)
  local parts = {tostring(a.d[#a.d])}
  for i = #a.d - 1, 1, -1 do parts[#parts + 1] = string.format('%07d', a.d[i]) end
  return (a.neg and '-' or '') .. table.concat(parts)
end

INT64_MAX = big('9223372036854775807')
INT64_MIN = big('-9223372036854775808')
local ZERO = big('0')

-- would HINCRBY of delta on this stored value leave the signed 64-bit range?
local function overflows(value, delta)
  local r = add(big(value), delta)
  return cmp(r, INT64_MAX) > 0 or cmp(r, INT64_MIN) < 0
end

local function hmget(key, fields)
  local out = {}
  for i = 1, #fields, 500 do
    local chunk = {}
    for j = i, math.min(i + 499, #fields) do chunk[#chunk + 1] = fields[j] end
    local got = redis.call('HMGET', key, unpack(chunk))
    for j = 1, #got do out[#out + 1] = got[j] end
  end
  return out
end

-- One hold's counters: used, reserved, limit (with rollover) as bigints, oldest bucket ('' if
-- none). ARGV slice: from, to, limit, rollover bucket ('' if none), cap, base limit.
local function hold_state(ukey, rkey, bkey, from, to, limit, rb, cap, base)
  local used, reserved, oldest = ZERO, ZERO, ''
  local fields = redis.call('ZRANGEBYSCORE', bkey, from, to)
  if #fields > 0 then
    local u, r = hmget(ukey, fields), hmget(rkey, fields)
    for i = 1, #fields do
      local ui, ri = big(u[i]), big(r[i])
      used = add(used, ui)
      reserved = add(reserved, ri)
      if oldest == '' and (cmp(ui, ZERO) > 0 or cmp(ri, ZERO) > 0) then oldest = fields[i] end
    end
  end
  local lim = big(limit)
  local c = big(cap)
  if rb ~= '' and cmp(c, ZERO) ~= 0 then
    local carry = sub(big(base), big(redis.call('HGET', ukey, rb)))
    if cmp(carry, ZERO) < 0 then carry = ZERO end
    if cmp(c, carry) < 0 then carry = c end
    lim = add(lim, carry)
  end
  return used, reserved, lim, oldest
end

local HOLD_ARGS = 9  -- per hold in ARGV: bucket field, from, to, limit, rb, cap, base, held, unit

-- a stored hold {key, bucket field, held, unit}; rows from before rate limits were
-- {key, bucket field} and held the reservation's amount in pico-USD
local function held_of(h, amount)
  if h[3] == nil then return amount, 'usd' end
  return big(h[3]), h[4]
end

-- what a settled request adds to a counter's spend, by the counter's unit
local function spent(unit, cost, tokens)
  if unit == 'usd' then return cost end
  if unit == 'tokens' then return tokens end
  if unit == 'requests' then return big('1') end
  return ZERO
end
"""

# KEYS: leases, the reservation, then used, reserved, buckets per hold.
# ARGV: amount, id, expires_at, holds JSON, unsettled JSON, then HOLD_ARGS per hold.
# Returns {ok, failed index (0 = none), used, reserved, limit, oldest, ...}.
_RESERVE = (
    _BIGINT
    + """
local n = (#KEYS - 2) / 3
local found = {}
local failed = 0
for h = 1, n do
  local k, a = 2 + (h - 1) * 3, 5 + (h - 1) * HOLD_ARGS
  local used, reserved, lim, oldest = hold_state(
    KEYS[k + 1], KEYS[k + 2], KEYS[k + 3],
    ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7])
  found[h] = {used, reserved, lim, oldest}
  if failed == 0 and cmp(add(add(used, reserved), big(ARGV[a + 8])), lim) > 0 then failed = h end
end
local ok = 0
if failed == 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return redis.error_reply('FAREBOX_CONFLICT reservation ' .. ARGV[2] .. ' exists')
  end
  for h = 1, n do
    local k, a = 2 + (h - 1) * 3, 5 + (h - 1) * HOLD_ARGS
    if overflows(redis.call('HGET', KEYS[k + 2], ARGV[a + 1]), big(ARGV[a + 8])) then
      return redis.error_reply('FAREBOX_OVERFLOW reserved counter of ' .. KEYS[k + 2])
    end
  end
  for h = 1, n do
    local k, a = 2 + (h - 1) * 3, 5 + (h - 1) * HOLD_ARGS
    redis.call('HINCRBY', KEYS[k + 2], ARGV[a + 1], ARGV[a + 8])
    redis.call('ZADD', KEYS[k + 3], 'NX', ARGV[a + 3], ARGV[a + 1])
    if ARGV[a + 9] ~= 'usd' then
      -- a rate limit's buckets that left its window and hold nothing are dropped
      for _, old in ipairs(redis.call('ZRANGEBYSCORE', KEYS[k + 3], '-inf', '(' .. ARGV[a + 2])) do
        local r = redis.call('HGET', KEYS[k + 2], old)
        if not r or r == '0' then
          redis.call('HDEL', KEYS[k + 1], old)
          redis.call('HDEL', KEYS[k + 2], old)
          redis.call('ZREM', KEYS[k + 3], old)
        end
      end
    end
    found[h][2] = add(found[h][2], big(ARGV[a + 8]))
  end
  redis.call('HSET', KEYS[2], 'amount', ARGV[1], 'holds', ARGV[4], 'state', 'held',
    'unsettled', ARGV[5])
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  ok = 1
end
local out = {ok, failed}
for h = 1, n do
  local s = found[h]
  out[#out + 1] = str(s[1]); out[#out + 1] = str(s[2]); out[#out + 1] = str(s[3])
  out[#out + 1] = s[4]
end
return out
"""
)

# KEYS: used, reserved, buckets per hold. ARGV: HOLD_ARGS per hold.
# Returns {used, reserved, limit, oldest, ...}.
_STATES = (
    _BIGINT
    + """
local out = {}
for h = 1, #KEYS / 3 do
  local k, a = (h - 1) * 3, (h - 1) * HOLD_ARGS
  local used, reserved, lim, oldest = hold_state(
    KEYS[k + 1], KEYS[k + 2], KEYS[k + 3],
    ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7])
  out[#out + 1] = str(used); out[#out + 1] = str(reserved); out[#out + 1] = str(lim)
  out[#out + 1] = oldest
end
return out
"""
)

# KEYS: leases, then one reservation per entry. ARGV: key prefix, then (id, cost, tokens) per
# entry.
# Each entry is all-or-nothing; entries before an overflowing one stay settled.
_SETTLE = (
    _BIGINT
    + """
local P = ARGV[1]
for i = 2, #KEYS do
  local rec = redis.call('HMGET', KEYS[i], 'amount', 'holds', 'state')
  local state = rec[3]
  if state == 'held' or state == 'reclaimed' then
    local a = 3 * (i - 1)
    local id, cost, tokens = ARGV[a - 1], big(ARGV[a]), big(ARGV[a + 1])
    local amount = big(rec[1])
    local holds = cjson.decode(rec[2])
    local deltas = {}
    for j, h in ipairs(holds) do
      local held, unit = held_of(h, amount)
      if state ~= 'held' then held = ZERO end  -- a reclaimed hold was already released
      local add_used = spent(unit, cost, tokens)
      deltas[j] = {held, add_used}
      if overflows(redis.call('HGET', P .. ':reserved:' .. h[1], h[2]), neg(held))
        or overflows(redis.call('HGET', P .. ':used:' .. h[1], h[2]), add_used) then
        return redis.error_reply('FAREBOX_OVERFLOW counter of ' .. h[1])
      end
    end
    for j, h in ipairs(holds) do
      if state == 'held' then
        redis.call('HINCRBY', P .. ':reserved:' .. h[1], h[2], str(neg(deltas[j][1])))
      end
      redis.call('HINCRBY', P .. ':used:' .. h[1], h[2], str(deltas[j][2]))
    end
    if state == 'held' then
      redis.call('DEL', KEYS[i])
      redis.call('ZREM', KEYS[1], id)
    else
      redis.call('HSET', KEYS[i], 'state', 'settled_late')
    end
  end
end
return 0
"""
)

# KEYS: leases. ARGV: key prefix, now, limit, ttl of reclaimed records.
# Returns the unsettled entries (JSON) of the reclaimed reservations.
_EXPIRED = (
    _BIGINT
    + """
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
local out = {}
for _, id in ipairs(ids) do
  local key = P .. ':res:' .. id
  local rec = redis.call('HMGET', key, 'amount', 'holds', 'state', 'unsettled')
  if rec[3] == 'held' then
    local amount = big(rec[1])
    for _, h in ipairs(cjson.decode(rec[2])) do
      local held = held_of(h, amount)
      redis.call('HINCRBY', P .. ':reserved:' .. h[1], h[2], str(neg(held)))
    end
    redis.call('HSET', key, 'state', 'reclaimed')
    redis.call('EXPIRE', key, ARGV[4])
    out[#out + 1] = rec[4]
  end
  redis.call('ZREM', KEYS[1], id)
end
return out
"""
)


# KEYS: leases, the reservation. ARGV: id. Releases a reservation still held (one whose
# reserve may or may not have reached Redis before the caller gave up), as if never made.
_CANCEL = (
    _BIGINT
    + """
local rec = redis.call('HMGET', KEYS[2], 'amount', 'holds', 'state')
if rec[3] ~= 'held' then return 0 end
local amount = big(rec[1])
for _, h in ipairs(cjson.decode(rec[2])) do
  local held = held_of(h, amount)
  redis.call('HINCRBY', ARGV[2] .. ':reserved:' .. h[1], h[2], str(neg(held)))
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""
)

# KEYS: the probe key. ARGV: now, until, ttl in ms. 1 if this caller holds the probe now.
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held and tonumber(held) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(bucket: float) -> str:
    """A bucket as a hash field and score: round-trips exactly."""
    return repr(float(bucket))


class RedisBudgets:
    def __init__(self, client: aioredis.Redis, prefix: str = LEGACY_PREFIX) -> None:
        self._client = client
        self.use_prefix(prefix)
        self._reserve = client.register_script(_RESERVE)
        self._states = client.register_script(_STATES)
        self._settle = client.register_script(_SETTLE)
        self._expired = client.register_script(_EXPIRED)
        self._claim = client.register_script(_CLAIM)
        self._cancel = client.register_script(_CANCEL)

    def use_prefix(self, prefix: str) -> None:
        """Namespace every key under ``{prefix}`` (set before the first use)."""
        self._p = "{" + prefix + "}"
        self._leases = f"{self._p}:leases"
        self._epoch = f"{self._p}:auth_epoch"

    @property
    def key_prefix(self) -> str:
        """What every key of this store starts with."""
        return self._p

    def _res(self, rid: str) -> str:
        return f"{self._p}:res:{rid}"

    def _hold_keys(self, hold: Hold) -> list[str]:
        return [f"{self._p}:{kind}:{hold.key}" for kind in ("used", "reserved", "buckets")]

    @staticmethod
    def _hold_args(hold: Hold, held: int = 0) -> list[str]:
        rollover = _field(hold.rollover_bucket) if hold.rollover_bucket is not None else ""
        return [
            _field(hold.bucket),
            _field(hold.buckets_from),
            _field(hold.bucket),
            str(hold.limit),
            rollover,
            str(hold.rollover_cap),
            str(hold.base_limit),
            str(held),
            hold.unit,
        ]

    @staticmethod
    def _decode(holds: Sequence[Hold], raw: Sequence[Any]) -> list[HoldState]:
        out = []
        for i, hold in enumerate(holds):
            used, reserved, limit, oldest = (_text(v) for v in raw[4 * i : 4 * i + 4])
            out.append(
                HoldState(
                    hold, int(used), int(reserved), int(limit), float(oldest) if oldest else None
                )
            )
        return out

    async def _run(self, script: Any, keys: list[str], args: list[str]) -> Any:
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

    async def reserve(self, reservation: Reservation) -> ReserveOutcome:
        """Hold the reservation against every hold (each in its unit), atomically, or
        against none."""
        keys = [self._leases, self._res(reservation.id)]
        args = [
            str(reservation.amount),
            reservation.id,
            repr(float(reservation.expires_at)),
            orjson.dumps(
                [
                    [h.key, _field(h.bucket), str(reservation.held(h)), h.unit]
                    for h in reservation.holds
                ]
            ).decode(),
            orjson.dumps(reservation.unsettled).decode(),
        ]
        for hold in reservation.holds:
            keys += self._hold_keys(hold)
            args += self._hold_args(hold, reservation.held(hold))
        raw = await self._run(self._reserve, keys, args)
        states = self._decode(reservation.holds, raw[2:])
        failed = int(raw[1])
        if int(raw[0]) == 1:
            return ReserveOutcome(True, states)
        return ReserveOutcome(False, states, states[failed - 1])

    async def states(self, holds: Sequence[Hold]) -> list[HoldState]:
        """Every hold's counters, read in one script (a consistent snapshot)."""
        if not holds:
            return []
        keys: list[str] = []
        args: list[str] = []
        for hold in holds:
            keys += self._hold_keys(hold)
            args += self._hold_args(hold)
        raw = await self._run(self._states, keys, args)
        return self._decode(holds, raw)

    async def settle(self, entries: Sequence[LedgerEntry]) -> None:
        """Turn each entry's reservation into spend of exactly its cost. Idempotent: an entry
        whose reservation is gone or already settled late changes nothing. One script for
        the batch; each entry is all-or-nothing, and should one overflow a counter
        (``FareboxError``), the entries before it stay settled, so retrying is safe."""
        settling = [e for e in entries if e.reservation_id is not None]
        if not settling:
            return
        keys = [self._leases, *(self._res(e.reservation_id or "") for e in settling)]
        args = [self._p]
        for e in settling:
            args += [e.reservation_id or "", str(e.cost), str(e.tokens)]
        await self._run(self._settle, keys, args)

    async def cancel(self, reservation_id: str) -> bool:
        """Undo a reservation that is still held; False if there was none to undo."""
        keys = [self._leases, self._res(reservation_id)]
        return bool(int(await self._cancel(keys=keys, args=[reservation_id, self._p])))

    async def extend(self, ids: Sequence[str], expires_at: float) -> None:
        """Move the expiry of the reservations still held; others are left alone. Only held
        reservations are in the lease set, so ``ZADD XX`` is exactly "only held ones"."""
        if ids:
            await self._client.zadd(self._leases, dict.fromkeys(ids, expires_at), xx=True)

    async def expired(self, now: float, limit: int = 500) -> list[LedgerEntry]:
        """Release holds whose lease ran out (``expires_at < now``), at most ``limit``; return
        their ``unsettled`` ledger entries. Reclaimed reservations are kept a week for late
        settlement, then expire."""
        args = [self._p, repr(float(now)), str(limit), str(RECLAIMED_TTL_S)]
        raw = await self._run(self._expired, [self._leases], args)
        entries = []
        for item in raw:
            data: dict[str, Any] = orjson.loads(item)
            entries.append(dataclasses.replace(LedgerEntry(**data), finished_at=now))
        return entries

    async def auth_epoch(self) -> int:
        value = await self._client.get(self._epoch)
        return int(value) if value is not None else 0

    async def bump_epoch(self) -> None:
        await self._client.incr(self._epoch)

    # circuit breakers: a hash of open deployments, and one short-lived key per probe
    async def breakers(self) -> dict[str, float]:
        raw = await self._client.hgetall(f"{self._p}:breakers")
        out = {_text(k): float(_text(v)) for k, v in raw.items()}
        return {d: u for d, u in out.items() if u > 0}

    async def set_breaker(self, deployment: str, open_until: float) -> None:
        key = f"{self._p}:breakers"
        if open_until > 0:
            await self._client.hset(key, deployment, repr(float(open_until)))
        else:
            await self._client.hdel(key, deployment)

    async def claim_probe(self, deployment: str, now: float, until: float) -> bool:
        ttl_ms = str(max(int((until - now) * 1000), 1) + 60_000)  # only for clean-up
        args = [repr(float(now)), repr(float(until)), ttl_ms]
        won = await self._claim(keys=[f"{self._p}:probe:{deployment}"], args=args)
        return bool(int(won))

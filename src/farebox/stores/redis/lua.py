"""The Lua of the Redis budget store: exact integer money with cheap arithmetic, and window
sums kept incrementally (the key layout is in ``stores.redis.layout``, the design in
``stores.redis.budgets``).

Numbers. Counters change only with ``HINCRBY`` (exact signed 64-bit integers, stored as
decimal strings). Lua numbers are doubles, exact below 2^53, so a value is read as two limbs,
``h * 10^9 + l`` with ``0 <= l < 10^9`` (``num``): a stored counter has at most 19 digits, so
``h`` has at most 10 and every limb is exact; sums add limbs and carry once. Python passes
its numbers (limits, amounts) as decimal strings clamped to +-2^51 * 10^9 (``layout.dec``),
far above any sum of counters, so every comparison the scripts make is the exact one.
Values leave a script as limb pairs (integers) and Python joins them exactly.

Window sums. A rolling counter's hash keeps ``lo`` (the window start the sums were last moved
to), ``top`` (its newest bucket), ``su``/``sr`` (the exact sums of used and reserved over
every bucket at or after ``lo``) and ``old`` (the oldest of those buckets holding anything,
for ``resets_at``). Every write to a bucket at or after ``lo`` updates them, so they stay
exact; moving the window start subtracts each bucket that leaves, once (and drops a
rate-limit bucket that leaves holding nothing, as the in-memory store does). A call whose
window starts at ``lo`` or later and ends at or after ``top`` (every call but those of a replica
whose clock lags) reads the counter with one ``HMGET``: O(1), where the old scripts added up
21 buckets; any other call adds up the buckets from its window start on (the newer ones
too: a lagging clock must still see them), exactly, and writes nothing but its own bucket.
A calendar window, a lifetime or a concurrency count is one bucket: read directly.
"""

from __future__ import annotations

NUM = """
local B = 1000000000

-- a decimal integer string (or nil/false) as limbs h, l: value = h * B + l, 0 <= l < B
local function num(s)
  if not s then return 0, 0 end
  local n = #s
  if n < 16 then
    local v = tonumber(s)
    local h = math.floor(v / B)
    return h, v - h * B
  end
  local neg = string.byte(s, 1) == 45
  if neg then s = string.sub(s, 2); n = n - 1 end
  local h, l = tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
  if neg then
    if l == 0 then return -h, 0 end
    return -h - 1, B - l
  end
  return h, l
end

local function add(ah, al, bh, bl)
  local h, l = ah + bh, al + bl
  if l >= B then return h + 1, l - B end
  return h, l
end

local function neg(h, l)
  if l == 0 then return -h, 0 end
  return -h - 1, B - l
end

local function lt(ah, al, bh, bl)
  return ah < bh or (ah == bh and al < bl)
end

local function fmt(h, l)
  if h < 0 then return '-' .. fmt(neg(h, l)) end
  if h == 0 then return string.format('%d', l) end
  return string.format('%d%09d', h, l)
end

local function negs(s)
  if string.byte(s, 1) == 45 then return string.sub(s, 2) end
  return '-' .. s
end

local function nonzero(s) return s and s ~= '0' end

local MAXH, MAXL = 9223372036, 854775807  -- 2^63 - 1
local MINH, MINL = -9223372037, 145224192  -- -2^63
local function fits(h, l)
  return not lt(MAXH, MAXL, h, l) and not lt(h, l, MINH, MINL)
end
"""

WINDOW = """
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

-- used and reserved summed over the buckets of z scored from..to, and the oldest of them
-- holding anything ('' if none)
local function sum(c, z, from, to)
  local uh, ul, rh, rl, oldest = 0, 0, 0, 0, ''
  local members = redis.call('ZRANGEBYSCORE', z, from, to)
  if #members == 0 then return uh, ul, rh, rl, oldest end
  local fields = {}
  for i, m in ipairs(members) do fields[2 * i - 1] = 'u' .. m; fields[2 * i] = 'r' .. m end
  local v = hmget(c, fields)
  for i, m in ipairs(members) do
    local u, r = v[2 * i - 1], v[2 * i]
    uh, ul = add(uh, ul, num(u))
    rh, rl = add(rh, rl, num(r))
    if oldest == '' and (nonzero(u) or nonzero(r)) then oldest = m end
  end
  return uh, ul, rh, rl, oldest
end

-- the oldest bucket from ``from`` up holding anything ('' if none)
local function first_live(c, z, from)
  local skip = 0
  while true do
    local m = redis.call('ZRANGEBYSCORE', z, from, '+inf', 'LIMIT', skip, 1)[1]
    if not m then return '' end
    local v = redis.call('HMGET', c, 'u' .. m, 'r' .. m)
    if nonzero(v[1]) or nonzero(v[2]) then return m end
    skip = skip + 1
  end
end

-- buckets from lo (inclusive) to upto (exclusive) leave the sums; a rate limit's that hold
-- nothing are dropped
local function leave(c, z, lo, upto, kind, s)
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', z, lo, '(' .. upto)) do
    local v = redis.call('HMGET', c, 'u' .. m, 'r' .. m)
    s[1], s[2] = add(s[1], s[2], neg(num(v[1])))
    s[3], s[4] = add(s[3], s[4], neg(num(v[2])))
    if kind == 'w' and not nonzero(v[2]) then
      redis.call('HDEL', c, 'u' .. m, 'r' .. m)
      redis.call('ZREM', z, m)
    end
  end
end

-- One hold's counter as found: {uh, ul, rh, rl, oldest} (window sums and the oldest bucket
-- holding anything, '' if none), with cu, cr (bucket f as stored) and, for rolling windows,
-- lo, top, old (the counter's fields after the call), s (its running sums) and live (whether
-- the sums cover bucket f). A rolling counter keeps ``old``, the oldest bucket at or after
-- ``lo`` holding anything, so the common call reads everything with one HMGET.
local function state(c, z, f, from, kind)
  if kind == 's' then
    local v = redis.call('HMGET', c, 'u' .. f, 'r' .. f)
    local uh, ul = num(v[1])
    local rh, rl = num(v[2])
    local oldest = ''
    if nonzero(v[1]) or nonzero(v[2]) then oldest = f end
    return {uh, ul, rh, rl, oldest, cu = v[1], cr = v[2]}
  end
  local v = redis.call('HMGET', c, 'lo', 'top', 'su', 'sr', 'old', 'u' .. f, 'r' .. f)
  local lo, top, old = v[1], v[2] or '', v[5] or ''
  local fromn = tonumber(from)
  local s = {0, 0, 0, 0}
  if not lo then
    -- first use: the sums start at this window; older rate-limit buckets holding nothing go
    if kind == 'w' then leave(c, z, '-inf', from, kind, {0, 0, 0, 0}) end
    s[1], s[2], s[3], s[4], old = sum(c, z, from, '+inf')
    lo = from
    redis.call('HSET', c, 'lo', lo, 'su', fmt(s[1], s[2]), 'sr', fmt(s[3], s[4]), 'old', old)
  else
    s[1], s[2] = num(v[3])
    s[3], s[4] = num(v[4])
    if fromn > tonumber(lo) then
      leave(c, z, lo, from, kind, s)
      lo = from
      if old ~= '' and tonumber(old) < fromn then old = first_live(c, z, from) end
      redis.call('HSET', c, 'lo', lo, 'su', fmt(s[1], s[2]), 'sr', fmt(s[3], s[4]), 'old', old)
    end
  end
  local out
  if fromn >= tonumber(lo) and (top == '' or tonumber(f) >= tonumber(top)) then
    out = {s[1], s[2], s[3], s[4], old}
  else  -- a window behind the sums (a lagging clock): add up its buckets and every later one
    local uh, ul, rh, rl, oldest = sum(c, z, from, '+inf')
    out = {uh, ul, rh, rl, oldest}
  end
  out.cu, out.cr, out.lo, out.top, out.old, out.s = v[6], v[7], lo, top, old, s
  out.live = tonumber(f) >= tonumber(lo)
  return out
end

-- apply HINCRBY, remembering it (``done``) so an entry can be undone; nil on overflow
local function incr(c, field, d, done)
  local v = redis.pcall('HINCRBY', c, field, d)
  if type(v) == 'table' and v.err then return nil end
  done[#done + 1] = {c, field, d}
  return v
end

local function undo(done)
  for i = #done, 1, -1 do redis.call('HINCRBY', done[i][1], done[i][2], negs(done[i][3])) end
end

-- bucket f of a rolling counter changed by dr (reserved) and du (used), strings or nil:
-- keep the sums and ``old`` exact; a rate-limit bucket that left the window and holds nothing
-- goes. Amounts are never negative: a bucket gaining spend holds something.
local function resum(c, z, f, kind, dr, du, r_after)
  if kind == 's' then return end
  local v = redis.call('HMGET', c, 'lo', 'su', 'sr', 'old')
  if not v[1] then return end
  if tonumber(f) >= tonumber(v[1]) then
    local uh, ul = num(v[2])
    local rh, rl = num(v[3])
    if du then uh, ul = add(uh, ul, num(du)) end
    if dr then rh, rl = add(rh, rl, num(dr)) end
    local old = v[4] or ''
    if du and (old == '' or tonumber(f) < tonumber(old)) then
      old = f
    elseif f == old and r_after == 0 and not du
        and not nonzero(redis.call('HGET', c, 'u' .. f)) then
      old = first_live(c, z, v[1])
    end
    redis.call('HSET', c, 'su', fmt(uh, ul), 'sr', fmt(rh, rl), 'old', old)
  elseif kind == 'w' then
    if r_after == nil then r_after = tonumber(redis.call('HGET', c, 'r' .. f) or '0') end
    if r_after == 0 then
      redis.call('HDEL', c, 'u' .. f, 'r' .. f)
      redis.call('ZREM', z, f)
    end
  end
end

-- give back what a stored hold {key, bucket, held, unit, kind} holds (a cancel or a reclaim)
local function release(pfx, h)
  if h[3] == '0' then return end
  local c = pfx .. ':c:' .. h[1]
  local r = redis.call('HINCRBY', c, 'r' .. h[2], negs(h[3]))
  resum(c, pfx .. ':z:' .. h[1], h[2], h[5], negs(h[3]), nil, r)
end
"""

PER_HOLD = 8  # ARGV per hold of STATES: bucket, from, kind, limit, held, rollover bucket,
# cap, base. The reserve and the settle, every request's scripts, are in ``stores.redis.hot``.

# KEYS: counter and buckets per hold. ARGV: PER_HOLD per hold (held unused).
# Returns {uh, ul, rh, rl, oldest, rollover used} per hold.
STATES = (
    NUM
    + WINDOW
    + """
local out = {}
for i = 1, #KEYS / 2 do
  local k, a = 2 * i - 1, (i - 1) * 8
  local st = state(KEYS[k], KEYS[k + 1], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
  for j = 1, 5 do out[#out + 1] = st[j] end
  local ub = ''
  if ARGV[a + 6] ~= '' then ub = redis.call('HGET', KEYS[k], 'u' .. ARGV[a + 6]) or '0' end
  out[#out + 1] = ub
end
return out
"""
)

# KEYS: leases. ARGV: the slot's key prefix, now, limit, ttl of reclaimed records.
# Returns {leases left, then per reclaimed reservation: its unsettled entry (JSON; ``null``
# for a chunk of global allowance) and its draws on such chunks (JSON, '' none)}.
EXPIRED = (
    NUM
    + WINDOW
    + """
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
local out = {0}
for _, id in ipairs(ids) do
  local key = P .. ':res:' .. id
  local rec = redis.call('HMGET', key, 'holds', 'state', 'unsettled', 'draws')
  if rec[2] == 'held' then
    for _, h in ipairs(cjson.decode(rec[1])) do release(P, h) end
    redis.call('HSET', key, 'state', 'reclaimed')
    redis.call('EXPIRE', key, ARGV[4])
    out[#out + 1] = rec[3]
    out[#out + 1] = rec[4] or ''
  end
  redis.call('ZREM', KEYS[1], id)
end
out[1] = redis.call('ZCARD', KEYS[1])
return out
"""
)

# KEYS: leases, the reservation. ARGV: the slot's key prefix, id. Releases a reservation
# still held (one whose reserve may or may not have reached Redis), as if never made.
CANCEL = (
    NUM
    + WINDOW
    + """
local rec = redis.call('HMGET', KEYS[2], 'holds', 'state')
if rec[2] ~= 'held' then return 0 end
for _, h in ipairs(cjson.decode(rec[1])) do release(ARGV[1], h) end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[2])
return 1
"""
)

# KEYS per item: the home slot's leases, a chunk of global allowance (its record) or a late
# spend's marker, the counter, its bucket set. ARGV: the ttl of finished records and markers,
# then per item: the chunk's id, bucket, kind, release, spend, final ('1' ends the chunk), seq
# (the chunk's flush number; '' for a late spend). Idempotent: a chunk's flush is applied only
# if its seq follows the record's (a resend of one applied is skipped), a late spend only if
# its marker is new. Moves ``spend`` into used and ``release`` out of reserved, and lowers the
# chunk's recorded hold by ``release``; a chunk no longer held (reclaimed) gave its reserve
# back: only the spend is added. Returns per item 1 (applied to a held chunk, or a late
# spend), 0 (applied, the chunk was reclaimed), 2 (applied before: skipped). Fails (that item
# unchanged, the items before it applied, so a resend skips them) should a counter leave the
# 64-bit range.
FLUSH = (
    NUM
    + WINDOW
    + """
local ttl, out = ARGV[1], {}
for i = 1, #KEYS / 4 do
  local k, a = 4 * i - 3, 7 * i - 5
  local id, f, kind, rel, spend = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local final, seq, rec = ARGV[a + 5], ARGV[a + 6], KEYS[k + 1]
  local go, live, r = true, false, nil
  if seq == '' then
    go = redis.call('SET', rec, '1', 'NX', 'EX', ttl) ~= false
    live = true
  else
    r = redis.call('HMGET', rec, 'holds', 'state', 'seq')
    go = r[2] ~= 'done' and tonumber(seq) > tonumber(r[3] or '0')
    live = r[2] == 'held'
  end
  if go then
    local dr, du = nil, nil
    if live and seq ~= '' and rel ~= '0' then dr = negs(rel) end
    if spend ~= '0' then du = spend end
    if dr or du then
      local c, done, v = KEYS[k + 2], {}, nil
      if dr then v = incr(c, 'r' .. f, dr, done) end
      if (dr and not v) or (du and not incr(c, 'u' .. f, du, done)) then
        undo(done)
        if seq == '' then redis.call('DEL', rec) end
        return redis.error_reply('FAREBOX_OVERFLOW counter of ' .. c)
      end
      resum(c, KEYS[k + 3], f, kind, dr, du, v)
    end
    if seq ~= '' and r[2] then
      if live and final == '1' then
        redis.call('HSET', rec, 'state', 'done', 'seq', seq)
        redis.call('EXPIRE', rec, ttl)
        redis.call('ZREM', KEYS[k], id)
      elseif dr then
        local holds = cjson.decode(r[1])
        local hh, hl = num(holds[1][3])
        holds[1][3] = fmt(add(hh, hl, neg(num(rel))))
        redis.call('HSET', rec, 'holds', cjson.encode(holds), 'seq', seq)
      else
        redis.call('HSET', rec, 'seq', seq)
      end
    end
    out[i] = live and 1 or 0
  else
    out[i] = 2
  end
end
return out
"""
)

# KEYS: the tenants with leases. ARGV: before, then tenant slots whose lease sets were empty.
# A slot is forgotten only when no replica has registered it since ``before``.
FORGET = """
local gone = 0
for i = 2, #ARGV do
  local at = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if at and tonumber(at) < tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], ARGV[i]); gone = gone + 1
  end
end
return gone
"""

# KEYS: the probe key. ARGV: now, until, ttl in ms. 1 if this caller holds the probe now.
CLAIM = """
local held = redis.call('GET', KEYS[1])
if held and tonumber(held) > tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
"""

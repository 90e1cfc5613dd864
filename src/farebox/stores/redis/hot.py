"""The two scripts every request runs, reserve and settle, written for few Redis calls and
few Lua allocations (the arithmetic, the stored format and the slow paths are those of
``stores.redis.lua``; see there).

Where the time went (``bench/redis_cpu.py``, ``INFO commandstats``): a script's cost is
about one microsecond per ``redis.call``, a tenth of one per ARGV/KEYS string, per Lua
string built and per table field, so these scripts

- take variable-length per-hold arguments (a one-bucket counter needs no window start, no
  bucket set key and, without rollover, no rollover arguments);
- read a rolling counter once (``HMGET`` of its window fields and its bucket) and, when its
  window has not moved (every call but the first of each bucket), write it once (one
  ``HSET`` of the bucket and the sums), where the general code used up to four calls;
- answer the stored decimal strings as found, not limb pairs.

The general code (``lua.state``, ``lua.resum``) still handles every other case: a counter's
first use, a window that moved, a replica whose clock lags, a bucket that left the window.
"""

from __future__ import annotations

from farebox.stores.redis.lua import NUM, WINDOW

# the general code, made only by a call that needs it (making ``WINDOW``'s functions costs
# every call of a script that includes them a few microseconds)
LAZY = (
    """
local made = nil
local function general()
  if made then return made end
"""
    + WINDOW
    + """
  made = {state = state, resum = resum, first_live = first_live}
  return made
end
"""
)

# decimal strings: exact sums and checks that take the doubles' answer whenever it is sure
QUICK = """
local abs = math.abs

-- a + b (decimal integer strings, either may be negative) as a decimal string, exactly:
-- below 10^15 each, doubles add them exactly
local function plus(a, b)
  if #a < 16 and #b < 16 then return string.format('%d', tonumber(a) + tonumber(b)) end
  local ah, al = num(a)
  return fmt(add(ah, al, num(b)))
end

-- add d to a window sum: HINCRBY while it is a 64-bit integer, else exact decimal strings
local function sumadd(c, name, d)
  if type(redis.pcall('HINCRBY', c, name, d)) == 'table' then
    redis.call('HSET', c, name, plus(redis.call('HGET', c, name) or '0', d))
  end
end

-- whether a + b is a signed 64-bit integer (HINCRBY's range)
local function fits2(a, b)
  if #a < 18 and #b < 18 then return true end
  local ah, al = num(a)
  return fits(add(ah, al, num(b)))
end

-- whether u + r + h > limit (decimal strings), exactly. The doubles' difference is off by
-- less than 1e-15 of the magnitudes (five correctly rounded steps of 2^-53 each), so its
-- sign is the exact one whenever it is further than 1e-14 of them from 0; else the limbs.
local function over(u, r, h, limit)
  local x, y, z, l = tonumber(u), tonumber(r), tonumber(h), tonumber(limit)
  local d, m = l - (x + y + z), abs(l) + abs(x) + abs(y) + abs(z)
  if d > m * 1e-14 then return false end
  if d < -m * 1e-14 then return true end
  local th, tl = num(u)
  th, tl = add(th, tl, num(r))
  th, tl = add(th, tl, num(h))
  local lh, ll = num(limit)
  return lt(lh, ll, th, tl)
end
"""

# a counter as found, in the reserve: a table {used, reserved (the window's sums or the
# bucket's: decimal strings), oldest ('' none), cu, cr (bucket f as stored), and for a
# rolling window top, old, live, sr (the stored reserved sum)}. A rolling counter whose
# window has not moved is read with one HMGET; any other with the general ``state``.
FAST = """
local function window(c, z, f, from, kind, held)
  local v = redis.call('HMGET', c, 'lo', 'top', 'su', 'sr', 'old')
  local lo, top = v[1], v[2] or ''
  if lo == from and (top == f or top == '' or tonumber(f) > tonumber(top)) then
    local sr, old = v[4] or '0', v[5] or ''
    -- top == f: the bucket is in the set, and holds at most the reserved sum (every bucket
    -- of the window holds >= 0), a bound for the 64-bit check; else read it
    local cu, cr, bound, exact = true, nil, sr, false
    if top ~= f then
      local b = redis.call('HMGET', c, 'u' .. f, 'r' .. f)
      cu, cr, exact = b[1], b[2], true
      bound = cr or '0'
    end
    return {v[3] or '0', sr, old, '', cu = cu, cr = cr, top = top, old = old, live = true,
            sr = sr, c = c, z = z, f = f, kind = kind, held = held, bound = bound,
            exact = exact}
  end
  local st = general().state(c, z, f, from, kind)
  local s = st.s
  return {fmt(st[1], st[2]), fmt(st[3], st[4]), st[5], '', cu = st.cu, cr = st.cr,
          top = st.top, old = st.old, live = st.live, sr = fmt(s[3], s[4]), c = c, z = z,
          f = f, kind = kind, held = held, bound = st.cr or '0', exact = true}
end

local function single(c, f, held)
  local v = redis.call('HMGET', c, 'u' .. f, 'r' .. f)
  local cu, cr = v[1], v[2]
  local oldest = ''
  if nonzero(cu) or nonzero(cr) then oldest = f end
  return {cu or '0', cr or '0', oldest, '', c = c, f = f, kind = 's', held = held,
          bound = cr or '0', exact = true}
end

-- a limit with rollover (mode ``.r``; ARGV[a] the previous window, then cap, base limit):
-- the limit plus what the previous window left, at most the cap; and that window's spend
local function rolled(c, limit, a)
  local ub = redis.call('HGET', c, 'u' .. ARGV[a]) or '0'
  local bh, bl = num(ARGV[a + 2])
  local xh, xl = add(bh, bl, neg(num(ub)))
  if xh < 0 then xh, xl = 0, 0 end
  local ch, cl = num(ARGV[a + 1])
  if lt(ch, cl, xh, xl) then xh, xl = ch, cl end
  local lh, ll = num(limit)
  return fmt(add(lh, ll, xh, xl)), ub
end
"""

# KEYS: leases, the reservation, then per hold its counter (and its bucket set, for a
# rolling window). ARGV: id, expires_at, holds JSON, unsettled JSON, draws JSON (the
# reservation's draws on chunks of global allowance, '' none), then per hold: mode
# (kind, plus ``r`` with rollover), bucket, limit, held, [window start unless kind ``s``],
# [rollover bucket, cap, base limit with ``r``]. Returns {ok, failed index (0 = none), then
# per hold: used, reserved (as found: decimal strings), oldest ('' none), rollover used}.
RESERVE = (
    NUM
    + LAZY
    + QUICK
    + FAST
    + """
local found, failed, n, k, a = {}, 0, 0, 3, 6
while a <= #ARGV do
  n = n + 1
  local mode, f, limit, held = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local kind, c, st = mode, KEYS[k], nil
  if #mode == 2 then kind = string.sub(mode, 1, 1) end
  if kind == 's' then
    st = single(c, f, held); k = k + 1; a = a + 4
  else
    st = window(c, KEYS[k + 1], f, ARGV[a + 4], kind, held); k = k + 2; a = a + 5
  end
  if #mode == 2 then
    limit, st[4] = rolled(c, limit, a)
    a = a + 3
  end
  if failed == 0 and over(st[1], st[2], held, limit) then failed = n end
  found[n] = st
end
if failed == 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return redis.error_reply('FAREBOX_CONFLICT reservation ' .. ARGV[1] .. ' exists')
  end
  for i = 1, n do
    local st = found[i]
    if st.held ~= '0' and not fits2(st.bound, st.held) then
      local cr = st.bound
      if not st.exact then cr = redis.call('HGET', st.c, 'r' .. st.f) or '0' end
      if not fits2(cr, st.held) then
        return redis.error_reply('FAREBOX_OVERFLOW reserved counter of ' .. st.c)
      end
    end
  end
  for i = 1, n do
    local st = found[i]
    local f, held = st.f, st.held
    if st.kind == 's' then
      if held ~= '0' then redis.call('HINCRBY', st.c, 'r' .. f, held) end
    else
      if held ~= '0' then
        redis.call('HINCRBY', st.c, 'r' .. f, held)  -- checked above to fit
        if st.live then
          sumadd(st.c, 'sr', held)
          local old = st.old
          if old == '' or (old ~= f and tonumber(f) < tonumber(old)) then
            redis.call('HSET', st.c, 'old', f)
          end
        end
      end
      local top = st.top
      if top ~= f and (top == '' or tonumber(f) > tonumber(top)) then
        redis.call('HSET', st.c, 'top', f)
      end
      if not st.cu and not st.cr then redis.call('ZADD', st.z, f, f) end
    end
  end
  if ARGV[5] == '' then
    redis.call('HSET', KEYS[2], 'holds', ARGV[3], 'state', 'held', 'unsettled', ARGV[4])
  else
    redis.call('HSET', KEYS[2], 'holds', ARGV[3], 'state', 'held', 'unsettled', ARGV[4],
               'draws', ARGV[5])
  end
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
end
local out, m = {failed == 0 and 1 or 0, failed}, 2
for i = 1, n do
  local st = found[i]
  out[m + 1], out[m + 2], out[m + 3], out[m + 4], m = st[1], st[2], st[3], st[4], m + 4
end
return out
"""
)

# KEYS: one reservation per entry, or none (then entry i's is ``<slot>:res:<id>``, as on a
# cluster node: ``SETTLE_NODE``). ARGV per entry: its slot's key prefix, its id, the number
# of its holds in that slot n, then n x (counter, bucket, kind, held, spent: '' none) when the
# caller knows its holds (it made the reservation), else (cost, tokens, revenue) and the holds are
# read from the reservation. Each entry is all-or-nothing; should one overflow a counter, the
# entries before it stay settled and the script fails. A rolling counter whose bucket is in
# its window is read once, checked, and written once after every other counter of the entry
# changed; any other counter changes with ``HINCRBY`` (undone should a later one fail).
SETTLE = (
    NUM
    + LAZY
    + QUICK
    + """
local function spent(unit, cost, tokens, revenue)
  if unit == 'usd' then return cost end
  if unit == 'revenue' then return revenue end
  if unit == 'tokens' then return tokens end
  if unit == 'requests' then return '1' end
  return ''
end

local function inc(c, field, d, done)
  local v = redis.pcall('HINCRBY', c, field, d)
  if type(v) == 'table' then return nil end
  local n = #done
  done[n + 1], done[n + 2], done[n + 3] = c, field, d
  return v
end

local function back(done)
  for i = #done - 2, 1, -3 do redis.call('HINCRBY', done[i], done[i + 1], negs(done[i + 2])) end
end

-- a rolling counter's sums and oldest bucket after its bucket f changed by dr (reserved) and
-- du (used), with r reserved left in it; ``old`` the oldest bucket with anything, before
local function resum_quick(c, z, f, dr, du, r, old, lo)
  if du then sumadd(c, 'su', du) end
  if dr then sumadd(c, 'sr', dr) end
  if du and (old == '' or (old ~= f and tonumber(f) < tonumber(old))) then
    redis.call('HSET', c, 'old', f)
  elseif dr and not du and f == old and r == 0
      and not nonzero(redis.call('HGET', c, 'u' .. f)) then
    redis.call('HSET', c, 'old', general().first_live(c, z, lo))
  end
end

-- settle one entry's holds H[j..] (n of them, five strings each) in slot P; nil, or the
-- counter that would leave the 64-bit range (nothing changed then). Buckets change first
-- (HINCRBY, undone should one fail), then the window sums (which cannot fail).
local function apply(P, H, j, n, live)
  local done, later = {}, {}
  for x = j, j + 5 * (n - 1), 5 do
    local key, f, kind, held, du = H[x], H[x + 1], H[x + 2], H[x + 3], H[x + 4]
    local dr = nil
    if du == '' or du == '0' then du = nil end
    if live and held ~= '0' then dr = negs(held) end
    if dr or du then
      local c = P .. ':c:' .. key
      local v = nil
      if kind ~= 's' then v = redis.call('HMGET', c, 'lo', 'old') end
      local r, ok = nil, true
      if dr then r = inc(c, 'r' .. f, dr, done); ok = r ~= nil end
      if ok and du then ok = inc(c, 'u' .. f, du, done) ~= nil end
      if not ok then
        back(done)
        return key
      end
      if v then later[#later + 1] = {c, P .. ':z:' .. key, f, kind, dr, du, r, v[1], v[2]} end
    end
  end
  for _, x in ipairs(later) do
    local lo = x[8]
    if lo and tonumber(x[3]) >= tonumber(lo) then
      resum_quick(x[1], x[2], x[3], x[5], x[6], x[7], x[9] or '', lo)
    else
      general().resum(x[1], x[2], x[3], x[4], x[5], x[6], x[7])
    end
  end
  return nil
end

local a, i, argc = 1, 0, #ARGV
while a <= argc do
  i = i + 1
  local P, id, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  local H, j, rec, R = ARGV, a + 3, nil, KEYS[i] or (P .. ':res:' .. id)
  if n > 0 then
    rec = {false, redis.call('HGET', R, 'state')}
    a = a + 3 + 5 * n
  else
    rec = redis.call('HMGET', R, 'holds', 'state')
    a = a + 6
  end
  local live = rec[2] == 'held'
  if live or rec[2] == 'reclaimed' then
    if n == 0 then
      local cost, tokens, revenue = ARGV[j], ARGV[j + 1], ARGV[j + 2]
      H, j = {}, 1
      for _, h in ipairs(cjson.decode(rec[1])) do
        local m = #H
        H[m + 1], H[m + 2], H[m + 3], H[m + 4], H[m + 5] = h[1], h[2], h[5], h[3],
          spent(h[4], cost, tokens, revenue)
        n = n + 1
      end
    end
    local bad = apply(P, H, j, n, live)
    if bad then return redis.error_reply('FAREBOX_OVERFLOW counter of ' .. bad) end
    if live then
      redis.call('DEL', R)
      redis.call('ZREM', P .. ':leases', id)
    else
      redis.call('HSET', R, 'state', 'settled_late')
    end
  end
end
return 0
"""
)

# ``SETTLE`` for one Redis Cluster node (``stores.redis.batching``): entries of several slots
# that the node serves, their reservations named by no KEYS (declared keys must share a slot).
# The flag (Redis 7) lets a script touch keys of several slots, all on its node. An entry of a
# slot the node does not serve fails the script at its first key, the reservation's, before it
# changed anything (the entries before it stay settled: settling again is a no-op).
SETTLE_NODE = "#!lua flags=allow-cross-slot-keys\n" + SETTLE

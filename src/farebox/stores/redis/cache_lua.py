"""The Lua of the Redis response cache (``stores.redis.cache``): every change to a tenant's
cache is one script, atomic, over keys of that tenant's slot only (one hash tag, so it runs on
a Redis Cluster). ``ARGV[1]`` is the slot ``S`` (``{<prefix>/c/<tenant>}``), ``ARGV[2]`` a
random token of the call; ``KEYS[1]`` is ``S:meta``, declared so a cluster routes the call to
the slot's node.

A tenant's keys (``m`` an entry's member, ``<nsid>:<kid>``, both HMACs: see ``cache_crypto``):

- ``S:meta``: a hash, ``entries``, ``bytes`` (the tenant's totals) and ``seq`` (the use clock);
- ``S:lru``: a sorted set of members by last use (``seq``), the eviction order;
- ``S:exp``: a sorted set of members by ``expires_at``, to sweep expired entries first;
- ``S:size``: a hash, member -> the bytes it counts;
- ``S:e:<m>``: the entry, a sealed blob (with a Redis TTL at its expiry, as a safety net);
- ``S:v:<nsid>:<cid>``: one semantic context's vectors, a hash member -> sealed vector;
- ``S:vidx``: a hash, member -> the context hash holding its vector;
- ``S:vgen``: a hash, context hash -> the token of the last call that changed it (a replica
  keeps a context's vectors opened until its token changes; a context emptied loses it);
- ``S:nss``: the set of the tenant's namespace ids; ``S:n:<nsid>`` a namespace's members;
  ``S:x:<nsid>`` its context hashes (what a purge removes).
"""

from __future__ import annotations

COMMON = """
local S = ARGV[1]
local TOKEN = ARGV[2]
local META = KEYS[1]

-- drop member m's vector from the context hash ctx (and forget a context left empty)
local function unindex(m, ctx)
  redis.call('HDEL', ctx, m)
  if redis.call('EXISTS', ctx) == 1 then
    redis.call('HSET', S .. ':vgen', ctx, TOKEN)
  else
    redis.call('HDEL', S .. ':vgen', ctx)
    redis.call('SREM', S .. ':x:' .. string.match(m, '^[^:]+'), ctx)
  end
end

-- remove an entry and its vector; 1 if it was counted
local function remove(m)
  local size = redis.call('HGET', S .. ':size', m)
  redis.call('DEL', S .. ':e:' .. m)
  redis.call('ZREM', S .. ':lru', m)
  redis.call('ZREM', S .. ':exp', m)
  redis.call('SREM', S .. ':n:' .. string.match(m, '^[^:]+'), m)
  local ctx = redis.call('HGET', S .. ':vidx', m)
  if ctx then
    unindex(m, ctx)
    redis.call('HDEL', S .. ':vidx', m)
  end
  if size then
    redis.call('HDEL', S .. ':size', m)
    redis.call('HINCRBY', META, 'entries', -1)
    redis.call('HINCRBY', META, 'bytes', -tonumber(size))
    return 1
  end
  return 0
end

-- remove up to `limit` entries expired at `now`
local function sweep(now, limit)
  local gone = redis.call('ZRANGEBYSCORE', S .. ':exp', '-inf', now, 'LIMIT', 0, limit)
  for _, m in ipairs(gone) do remove(m) end
end

local function totals()
  local t = redis.call('HMGET', META, 'entries', 'bytes')
  return tonumber(t[1] or '0'), tonumber(t[2] or '0')
end
"""

# ARGV: S, token, now, max_entries, max_bytes, sweep_limit, then per entry: member, blob, size,
# px (its Redis TTL in ms), expires_at. Stores them (replacing), sweeps, evicts by LRU.
PUT = (
    COMMON
    + """
local now = ARGV[3]
local max_entries, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
for i = 7, #ARGV, 5 do
  local m, size = ARGV[i], tonumber(ARGV[i + 2])
  local old = redis.call('HGET', S .. ':size', m)
  if old then
    redis.call('HINCRBY', META, 'entries', -1)
    redis.call('HINCRBY', META, 'bytes', -tonumber(old))
  end
  redis.call('SET', S .. ':e:' .. m, ARGV[i + 1], 'PX', ARGV[i + 3])
  redis.call('HSET', S .. ':size', m, size)
  redis.call('ZADD', S .. ':exp', ARGV[i + 4], m)
  redis.call('ZADD', S .. ':lru', redis.call('HINCRBY', META, 'seq', 1), m)
  local nsid = string.match(m, '^[^:]+')
  redis.call('SADD', S .. ':n:' .. nsid, m)
  redis.call('SADD', S .. ':nss', nsid)
  redis.call('HINCRBY', META, 'entries', 1)
  redis.call('HINCRBY', META, 'bytes', size)
end
sweep(now, ARGV[6])
local entries, bytes = totals()
while entries > max_entries or bytes > max_bytes do
  local first = redis.call('ZRANGE', S .. ':lru', 0, 0)
  if #first == 0 then break end
  remove(first[1])
  entries, bytes = totals()
end
return entries
"""
)

# ARGV: S, token, now, members... The live entries' blobs (false for none), each marked used.
GET = (
    COMMON
    + """
local now = tonumber(ARGV[3])
local out = {}
for i = 4, #ARGV do
  local m = ARGV[i]
  local exp = redis.call('ZSCORE', S .. ':exp', m)
  local blob = false
  if exp then
    if tonumber(exp) <= now then
      remove(m)
    else
      blob = redis.call('GET', S .. ':e:' .. m)
      if blob then
        redis.call('ZADD', S .. ':lru', 'XX', redis.call('HINCRBY', META, 'seq', 1), m)
      else
        remove(m)
      end
    end
  end
  out[i - 3] = blob
end
return out
"""
)

# ARGV: S, token, member, context hash, sealed vector. Indexes it if the entry is there.
ADD_VECTOR = (
    COMMON
    + """
local m, ctx = ARGV[3], ARGV[4]
if not redis.call('HGET', S .. ':size', m) then return 0 end
local before = redis.call('HGET', S .. ':vidx', m)
if before and before ~= ctx then unindex(m, before) end
redis.call('HSET', ctx, m, ARGV[5])
redis.call('HSET', S .. ':vgen', ctx, TOKEN)
redis.call('HSET', S .. ':vidx', m, ctx)
redis.call('SADD', S .. ':x:' .. string.match(m, '^[^:]+'), ctx)
return 1
"""
)

# ARGV: S, token, now, sweep_limit. Sweeps, then the tenant's entries and bytes.
USAGE = (
    COMMON
    + """
sweep(ARGV[3], ARGV[4])
local entries, bytes = totals()
return {entries, bytes}
"""
)

# ARGV: S, token, nsid, limit, all ("1": the last namespace done, drop the tenant's own keys).
# Removes up to `limit` of a namespace's entries: {removed, done}.
PURGE = (
    COMMON
    + """
local nsid = ARGV[3]
local members = redis.call('SPOP', S .. ':n:' .. nsid, tonumber(ARGV[4]))
local n = 0
for _, m in ipairs(members) do n = n + remove(m) end
if redis.call('SCARD', S .. ':n:' .. nsid) > 0 then return {n, 0} end
for _, c in ipairs(redis.call('SMEMBERS', S .. ':x:' .. nsid)) do
  redis.call('DEL', c)
  redis.call('HDEL', S .. ':vgen', c)
end
redis.call('DEL', S .. ':x:' .. nsid)
redis.call('SREM', S .. ':nss', nsid)
if ARGV[5] == '1' and redis.call('SCARD', S .. ':nss') == 0 then
  redis.call('DEL', META, S .. ':lru', S .. ':exp', S .. ':size', S .. ':vidx', S .. ':nss')
  redis.call('DEL', S .. ':vgen')
end
return {n, 1}
"""
)

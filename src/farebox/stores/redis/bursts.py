"""Batch abuse's shared burst counts in Redis (``stores.bursts``): two keys per tenant, in the
tenant's slot (``{P/t/<tenant>}``, so a Redis Cluster spreads the tenants and one script call
touches one slot):

- ``{P/t/<tenant>}:bursts``, a hash: one field per end user (a hash of the user), holding
  the user's clusters of near-identical texts (MessagePack: at most ``clusters`` of them,
  each its first text's sketch and its last ``keep`` request times);
- ``{P/t/<tenant>}:bursts:seen``, a sorted set: the same fields, scored by when each user
  was last seen.

One script call per request matches the sketch, counts it, marks the user seen, forgets the
users quiet for a whole window and, past ``rule.users`` users, the least recently seen ones
(an LRU, as the per-process count keeps), then sets both keys' expiry to the window. So a
tenant's memory is bounded whatever its end users are (the body's ``user`` is the client's
to choose: a new one per request adds a field, never a key): at most ``rule.users`` users of
at most about ``clusters * (sketch + keep) * 9`` bytes each (``guardrails.abuse`` sizes
``users`` to about ``SHARED_BYTES``, 16 MiB, per tenant). Rotating ``user`` can only evict
the same tenant's own quietest users.

A Redis that does not answer is logged (at most once a minute) and answered with None: the
caller counts that request in process, so a burst is still seen per process while Redis is
out.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from farebox.stores.bursts import BurstRule
from farebox.stores.redis.layout import Layout
from farebox.stores.redis.scripts import Script

log = logging.getLogger("farebox.stores.scaled")

# KEYS[1]: the tenant's clusters (a hash, one field per end user); KEYS[2]: when each user
# was last seen (a sorted set). ARGV: now, window_s, keep, similar, clusters, k, ttl_s,
# users, the user's field, then the request's sketch, ascending. Returns the matched
# cluster's count in the window.
COUNT = """
local now, window, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local similar, most, k, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7])
local users, who = tonumber(ARGV[8]), ARGV[9]
local mine = {}
for i = 10, #ARGV do mine[#mine + 1] = tonumber(ARGV[i]) end

-- the bottom-k estimate of the Jaccard similarity: of the k smallest of the union of the
-- two ascending sketches, the share both hold
local function sim(a, b)
  local i, j, n, both = 1, 1, 0, 0
  while n < k and (i <= #a or j <= #b) do
    local x, y = a[i], b[j]
    if x ~= nil and y ~= nil and x == y then
      both = both + 1; i = i + 1; j = j + 1
    elseif y == nil or (x ~= nil and x < y) then
      i = i + 1
    else
      j = j + 1
    end
    n = n + 1
  end
  if n == 0 then return 0 end
  return both / n
end

local raw = redis.call('HGET', KEYS[1], who)
local clusters = {}
if raw then clusters = cmsgpack.unpack(raw) end
local cluster = nil
for idx, c in ipairs(clusters) do
  if sim(c[1], mine) >= similar then
    cluster = table.remove(clusters, idx)
    break
  end
end
if cluster == nil then cluster = {mine, {}} end
table.insert(clusters, 1, cluster)
while #clusters > most do table.remove(clusters) end
local kept = {}
for _, t in ipairs(cluster[2]) do
  if t > now - window then kept[#kept + 1] = t end
end
kept[#kept + 1] = now
while #kept > keep do table.remove(kept, 1) end
cluster[2] = kept
redis.call('HSET', KEYS[1], who, cmsgpack.pack(clusters))
redis.call('ZADD', KEYS[2], now, who)
-- forget the users quiet for a whole window, then, past the cap, the least recently seen
-- (a few per call: each call adds at most one user)
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - window, 'LIMIT', 0, 16)
local over = redis.call('ZCARD', KEYS[2]) - #gone - users
if over > 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], #gone, #gone + math.min(over, 256) - 1)
  -- never the user just written: a worker whose clock lags would score it oldest
  for _, field in ipairs(oldest) do
    if field ~= who then gone[#gone + 1] = field end
  end
end
if #gone > 0 then
  redis.call('HDEL', KEYS[1], unpack(gone))
  redis.call('ZREM', KEYS[2], unpack(gone))
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return #kept
"""


class RedisBursts:
    def __init__(self, client: Any, layout: Callable[[], Layout]) -> None:
        self._count = Script(client, COUNT)
        self._layout = layout  # the store's key layout, once its prefix is chosen
        self._warned = 0.0

    async def count(
        self, tenant: str, user: str, sketch: Sequence[int], now: float, rule: BurstRule
    ) -> int | None:
        who = hashlib.blake2b(user.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
        slot = self._layout().slot(tenant)
        keys = [f"{slot}:bursts", f"{slot}:bursts:seen"]  # one slot: the tenant's
        ttl = max(1, math.ceil(rule.window_s)) + 1
        args = [repr(now), str(rule.window_s), str(rule.keep), repr(rule.similar),
                str(rule.clusters), str(rule.sketch), str(ttl), str(rule.users), who,
                *map(str, sketch)]  # fmt: skip
        try:
            return int(await self._count(keys=keys, args=args))
        except (RedisError, OSError, TimeoutError) as exc:
            if time.monotonic() - self._warned > 60:
                self._warned = time.monotonic()
                log.warning("batch abuse: Redis did not answer (%s); counting per process",
                            type(exc).__name__)  # fmt: skip
            return None

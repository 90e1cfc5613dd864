"""Batch abuse's shared burst counts in Redis (``stores.bursts``): one key per end user,
``{P/t/<tenant>}:burst:<hash of the user>`` (the tenant's slot, so a Redis Cluster spreads
the tenants), holding the user's clusters of near-identical texts (MessagePack: at most
``clusters`` of them, each its first text's sketch and its last ``keep`` request times). One
script call per request matches the sketch, counts it and sets the key's expiry to the
window: memory is bounded by the end users active in the last window, at most about
``clusters * (sketch + keep) * 9`` bytes each (5 KiB with the defaults).

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

# KEYS[1]: the end user's clusters. ARGV: now, window_s, keep, similar, clusters, k, ttl_s,
# then the request's sketch, ascending. Returns the matched cluster's count in the window.
COUNT = """
local now, window, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local similar, most, k, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]),
  tonumber(ARGV[7])
local mine = {}
for i = 8, #ARGV do mine[#mine + 1] = tonumber(ARGV[i]) end

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

local raw = redis.call('GET', KEYS[1])
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
redis.call('SET', KEYS[1], cmsgpack.pack(clusters), 'EX', ttl)
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
        key = f"{self._layout().slot(tenant)}:burst:{who}"
        ttl = max(1, math.ceil(rule.window_s)) + 1
        args = [repr(now), str(rule.window_s), str(rule.keep), repr(rule.similar),
                str(rule.clusters), str(rule.sketch), str(ttl), *map(str, sketch)]  # fmt: skip
        try:
            return int(await self._count(keys=[key], args=args))
        except (RedisError, OSError, TimeoutError) as exc:
            if time.monotonic() - self._warned > 60:
                self._warned = time.monotonic()
                log.warning("batch abuse: Redis did not answer (%s); counting per process",
                            type(exc).__name__)  # fmt: skip
            return None

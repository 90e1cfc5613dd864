"""A billing sink that appends meter events to a Redis stream (``XADD``), exactly once.

Each event is added only if its idempotency key has not been added before: one Lua script
per batch sets ``{stream}:sent:<key>`` (NX, kept ``dedup_ttl_s``) and appends the event only
when that set succeeded, so a resent batch adds nothing twice. Consumers read the stream with
``XREAD`` / consumer groups; every entry carries ``key`` and the event as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from farebox.sinks.base import DELIVERED, DUPLICATE, Outcome, Status, Verdict
from farebox.sinks.events import MeterEvent, event_json

DEDUP_TTL_S = 35 * 86400

_ADD = """
local added = {}
for i = 1, #ARGV - 1, 2 do
  local key, event = ARGV[i], ARGV[i + 1]
  if redis.call('SET', KEYS[2] .. key, '1', 'NX', 'EX', KEYS[3]) then
    redis.call('XADD', KEYS[1], '*', 'key', key, 'event', event)
    added[#added + 1] = 1
  else
    added[#added + 1] = 0
  end
end
return added
"""


class RedisStreamSink:
    """Delivers directly (no HTTP): the exporter calls :meth:`deliver`."""

    name = "redis_stream"
    max_batch = 500

    def __init__(self, client: Any, stream: str, dedup_ttl_s: int = DEDUP_TTL_S) -> None:
        self._client = client
        self._stream = stream
        self._ttl = dedup_ttl_s
        self._add = client.register_script(_ADD)

    def check(self, event: MeterEvent, now: int) -> str | None:
        return None

    async def deliver(self, events: Sequence[MeterEvent]) -> Outcome:
        argv: list[str] = []
        for e in events:
            argv += [e.key, orjson.dumps(event_json(e)).decode()]
        keys = [self._stream, "{" + self._stream + "}:sent:", str(self._ttl)]
        try:
            added = await self._add(keys=keys, args=argv)
        except Exception as exc:  # unreachable or refusing: retried like a 5xx
            retry = Verdict(Status.RETRY, f"redis: {type(exc).__name__}")
            return Outcome.every([e.key for e in events], retry)
        return Outcome({e.key: DELIVERED if int(a) else DUPLICATE
                        for e, a in zip(events, added, strict=True)})  # fmt: skip

    async def aclose(self) -> None:
        await self._client.aclose()

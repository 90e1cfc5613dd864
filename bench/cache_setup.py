"""The cache bench's gateway (``bench.cache``): its config, tenants, and the request bodies.

The config is ``python -m bench``'s (``bench.fleet_config.plan_body``: the mock upstream,
budgets, rate limits, the tool policy and anomaly detection, all on) with the ``bench`` plan
copied three times: ``off`` (no cache), ``exact`` and ``semantic``, each with the per-tenant
limits raised so nothing the bench stores is evicted; and ``cache: {backend: memory}`` (the
in-process store a plain ``farebox serve`` uses without Redis), with the default semantic
settings (the local MiniLM embedder, threshold 0.95, veto on).
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import yaml

from bench.fleet_config import PLAN_NAME, plan_body
from bench.gateway import Gateway, GatewayError, http, start_serve
from bench.procs import pin_pid

PLANS = ("off", "exact", "semantic")
ROOMY = {"max_entries": 1_000_000, "max_bytes": 1024**3, "ttl_s": 86_400}
CACHE_SECTION: dict[str, Any] = {"backend": "memory", "semantic": {"embedder": "local"}}
# words for prompts with nothing in common: random 8-word draws are far apart for MiniLM, so a
# semantic lookup finds no neighbour above the threshold (every request goes the whole way)
WORDS = """apple river quantum ledger violet engine harbor pencil galaxy thunder marble
cactus blanket orbit canyon lantern saddle puzzle walnut glacier trumpet velvet anchor
meadow rocket tunnel falcon pepper statue copper jungle mirror basket cotton dragon ember
feather garlic hammer island jacket kettle lemon magnet needle oyster parrot quilt radar
silver tiger umbrella vessel wagon yogurt zebra acorn bridge candle desert forest garden
helmet igloo jigsaw koala ladder mango nectar olive piano quartz raven spider tomato
unicorn valley walrus xylophone yacht zipper almond bamboo cherry dolphin eagle fossil
ginger hazel iris jasmine kiwi lotus maple nutmeg orchid papaya quince rosemary saffron
tulip vanilla willow yarrow zinnia compass ferry glider harness mosaic nozzle paddle
ribbon shovel tripod voltage whistle beacon cobalt drizzle eclipse fjord granite horizon
lagoon monsoon nebula plateau quasar summit tundra vortex""".split()


def config_text(directory: Path, upstream_base_url: str) -> str:
    """``farebox.yaml``: the bench's own config, with three plans that differ in ``cache``."""
    doc = yaml.safe_load(plan_body(upstream_base_url))
    base = doc["plans"].pop(PLAN_NAME)
    for name in PLANS:
        doc["plans"][name] = {**copy.deepcopy(base), "cache": {"mode": name, **ROOMY}}
    doc["cache"] = CACHE_SECTION
    db = json.dumps(f"sqlite:///{directory / 'farebox.db'}")
    return f"database: {db}\n" + yaml.safe_dump(doc, sort_keys=False)


class CacheGateway(Gateway):
    """``farebox serve`` (one worker, SQLite, the default mode) with the cache plans."""

    def start(self, ready_timeout_s: float = 90.0) -> CacheGateway:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="farebox-bench-cache-"))
        config = self.dir / "farebox.yaml"
        config.write_text(config_text(self.dir, self._upstream))
        self.port, self.proc = start_serve(self.dir, config, self._env())
        pin_pid(self.proc.pid, self._cpus)
        self._wait_ready(ready_timeout_s)
        return self

    def tenant_key(self, tenant: str, plan: str) -> str:
        """Create ``tenant`` on ``plan`` and a key for it; return the secret."""
        made = http("POST", self.url + "/admin/v1/tenants", {"id": tenant, "plan": plan},
                    self.admin_key)  # fmt: skip
        if made.status not in (200, 201):
            raise GatewayError(f"create tenant {tenant}: HTTP {made.status}: {made.body[:300]!r}")
        url = f"{self.url}/admin/v1/tenants/{tenant}/keys"
        keyed = http("POST", url, {"name": "bench"}, self.admin_key)
        secret = keyed.json().get("key") if keyed.status in (200, 201) else None
        if not isinstance(secret, str):
            raise GatewayError(f"create key for {tenant}: HTTP {keyed.status}: {keyed.body!r}")
        return secret

    def cache_stats(self, tenant: str) -> dict[str, Any]:
        """``GET /admin/v1/tenants/{tenant}/cache``: entries, bytes, hits, misses, ..."""
        got = http("GET", f"{self.url}/admin/v1/tenants/{tenant}/cache", None, self.admin_key)
        if got.status != 200:
            raise GatewayError(f"cache stats of {tenant}: HTTP {got.status}: {got.body!r}")
        stats: dict[str, Any] = got.json()
        return stats

    def ledger_counts(self, tenant: str) -> dict[str, int]:
        """``tenant``'s ledger entries per status, read from the gateway's SQLite file (read
        only): ``cache_hit`` are hits, ``ok`` the misses that went upstream."""
        assert self.dir is not None
        uri = f"file:{self.dir / 'farebox.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10.0)) as db:
            sql = "SELECT status, COUNT(*) FROM ledger WHERE tenant_id = ? GROUP BY status"
            return {str(k): int(v) for k, v in db.execute(sql, (tenant,))}

    def wait_entries(self, tenant: str, entries: int, timeout_s: float = 10.0) -> dict[str, Any]:
        """The tenant's cache stats once it holds ``entries`` (answers are stored in the
        background, just after each reply), or as they are at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            stats = self.cache_stats(tenant)
            if (stats.get("entries") or 0) >= entries or time.monotonic() > deadline:
                return stats
            time.sleep(0.05)


def chat(prompt: str) -> dict[str, Any]:
    """The bench's chat request (``bench.gateway.CHAT_BODY``) asking ``prompt``."""
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 16}  # fmt: skip


def prompts(tag: str, count: int, seed: int) -> list[str]:
    """``count`` distinct prompts of 8 random words each (no digits), none shared with any
    other ``tag``: every one misses the exact cache, and the semantic one too."""
    rng = random.Random(f"{tag}:{seed}")
    out: dict[str, None] = {}
    while len(out) < count:
        out[f"{tag} " + " ".join(rng.choices(WORDS, k=8))] = None
    return list(out)

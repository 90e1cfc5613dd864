"""The configuration the fleet bench gives ``farebox serve``: one plan, three backends.

Every mode gets the providers, models and plan that ``python -m bench`` uses too
(``plan_body``: two USD budgets, a key and an IP rate limit, far above what the bench sends,
so nothing is refused) and nothing else: no ``server`` section, so the embedded row is a
plain ``farebox serve`` with its default settings. What differs is where the state lives:

- embedded: ``database: sqlite:///...`` (the default backend);
- scaled: ``database: postgresql://...`` plus ``redis: redis://...``;
- cluster: the same with ``redis: {url: ..., cluster: true}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

PLAN_NAME = "bench"

_BODY = """\
# anomaly detection on: every request is counted, the counts flushed every 5 s and checked
# every 5 s (the bench's tenants are new, so a detection would page, never pause)
anomaly: {{check_interval_s: 5}}
providers:
  up: {{kind: openai, base_url: {upstream}, api_key: "env:BENCH_UPSTREAM_KEY"}}
models:
  gpt-4o-mini:
    - {{provider: up, model: gpt-4o-mini}}
  text-embedding-3-small:
    - {{provider: up, model: text-embedding-3-small}}
plans:
  {plan}:
    models: ["*"]
    # every request reserves against two budgets and settles in the ledger transaction
    budgets:
      - {{period: day, limit_usd: "1000000"}}
      - {{period: month, limit_usd: "10000000"}}
    # and against request, token and in-flight limits per key and per client IP, in the same
    # atomic step; the limits are far above what the bench sends, so nothing is refused
    rate_limits:
      - {{scope: key, requests_per_minute: 100000000, tokens_per_minute: 1000000000000,
          concurrent: 100000}}
      - {{scope: ip, requests_per_minute: 100000000}}
    max_input_tokens: 100000
    tools: {{deny: ["database.delete*"], require_approval: ["payments.*"]}}
"""


@dataclass(frozen=True)
class Backend:
    """Where a gateway keeps its state: a SQLite file, or PostgreSQL plus Redis."""

    database: str | None = None  # postgresql://...; None: SQLite in the gateway's directory
    redis_url: str | None = None
    cluster: bool = False
    # a global budget too (far above what the bench spends), each replica leasing this many
    # seconds of its spend of it (``budgets.global_lease_s``; 0: held per request); None: none
    global_lease_s: float | None = None

    @property
    def scaled(self) -> bool:
        return self.database is not None

    def stores_yaml(self, directory: Path) -> str:
        return self._stores(directory) + self._global_budget()

    def _global_budget(self) -> str:
        if self.global_lease_s is None:
            return ""
        return (
            'budgets: {global: [{scope: global, period: day, limit_usd: "100000000"}], '
            f"global_lease_s: {self.global_lease_s}}}\n"
        )

    def _stores(self, directory: Path) -> str:
        if self.database is None:
            sqlite = "sqlite:///" + str(directory / "farebox.db")
            return f"database: {json.dumps(sqlite)}\n"
        assert self.redis_url is not None, "PostgreSQL needs Redis"
        url = json.dumps(self.redis_url)
        redis = f"{{url: {url}, cluster: true}}" if self.cluster else url
        return (
            f"database: {json.dumps(self.database)}\n"
            f"redis: {redis}\n"
            'secret: "env:FAREBOX_SECRET"   # the replicas share the key-hashing secret\n'
        )


def plan_body(upstream_base_url: str) -> str:
    """Anomaly detection, providers, models and the bench plan: the part of the config every
    bench gateway shares (``python -m bench`` adds its ``server`` lines, the fleet its stores)."""
    return _BODY.format(upstream=json.dumps(upstream_base_url), plan=PLAN_NAME)


def config_text(backend: Backend, directory: Path, upstream_base_url: str) -> str:
    return backend.stores_yaml(directory) + plan_body(upstream_base_url)


def write_config(backend: Backend, directory: Path, upstream_base_url: str) -> Path:
    path = directory / "farebox.yaml"
    path.write_text(config_text(backend, directory, upstream_base_url))
    return path

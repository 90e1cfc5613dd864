"""The soak's gateway: its config (a healthy upstream, a failing one, plans that refuse), the
``farebox serve`` process, and the tenants and keys the traffic uses."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.gateway import Gateway, GatewayError, free_port, http

# tenant -> plan; "churn" gets keys created and revoked while the soak runs
TENANTS = {"steady": "steady", "limited": "limited", "tight": "tight", "churn": "steady"}
TRAFFIC_TENANTS = {"steady": 0.6, "limited": 0.15, "tight": 0.25}
LIMITED_CONCURRENT = 2
SCRUBBED_ENV = ("FAREBOX_DATABASE", "FAREBOX_CONFIG", "FAREBOX_OVERRIDES", "FAREBOX_SECRET")


@dataclass(frozen=True)
class Settings:
    """What the generated config depends on."""

    upstream_url: str
    max_body_bytes: int = 256 * 1024
    single_process: bool = False


def config_text(directory: Path, settings: Settings, dead_port: int) -> str:
    """farebox.yaml for the soak. ``dead_port`` is a loopback port nothing listens on."""
    db = json.dumps(f"sqlite:///{directory / 'farebox.db'}")
    up = json.dumps(settings.upstream_url)
    dead = json.dumps(f"http://127.0.0.1:{dead_port}/v1")
    single = "true" if settings.single_process else "false"
    return f"""\
database: {db}
server: {{max_body_bytes: {settings.max_body_bytes}, single_process: {single}}}
anomaly: {{action: alert, check_interval_s: 10}}   # detections page, never pause a tenant
budgets:
  wait_for_room_s: 0.5
  global: [{{period: day, limit_usd: "100000"}}]
routing:
  retries: 1
  backoff_s: 0.02
  max_backoff_s: 0.2
  breaker: {{failures: 5, cooldown_s: 5}}
providers:
  up: {{kind: openai, base_url: {up}, api_key: "env:BENCH_UPSTREAM_KEY"}}
  # nothing listens there: connection refused, breaker open, 502/503 to the client
  dead: {{kind: openai, base_url: {dead}, api_key: "env:BENCH_UPSTREAM_KEY", timeout_s: 2}}
  # fault injection: 5xx, upstream 429s and streams cut after their third chunk
  flaky: {{kind: mock, seed: 7, error_rate: 0.3, error_statuses: [500, 503],
          rate_limit_rate: 0.02, retry_after_s: 0.2, disconnect_rate: 0.2, disconnect_after: 3,
          tokens_per_second: 400, output_tokens: {{distribution: uniform, min: 4, max: 40}}}}
models:
  gpt-4o-mini: [{{provider: up, model: gpt-4o-mini}}]
  text-embedding-3-small: [{{provider: up, model: text-embedding-3-small}}]
  smart: [{{provider: flaky, model: gpt-4o-mini}}, {{provider: up, model: gpt-4o-mini}}]
  shaky: [{{provider: flaky, model: gpt-4o-mini}}]
  doomed: [{{provider: dead, model: gpt-4o-mini}}]
plans:
  steady:
    budgets:
      - {{period: day, limit_usd: "100000"}}
      - {{scope: user, period: "rolling:1h", limit_usd: "1000"}}
    rate_limits:
      - {{scope: key, requests_per_minute: 1000000, concurrent: 1000}}
  limited:
    budgets: [{{period: month, limit_usd: "100000"}}]
    rate_limits: [{{scope: key, concurrent: {LIMITED_CONCURRENT}}}]
  tight:
    max_tokens: 64
    budgets: [{{period: "rolling:1m", limit_usd: "0.0005"}}]
    rate_limits: [{{scope: key, requests_per_minute: 300, tokens_per_minute: 20000}}]
"""


class SoakGateway(Gateway):
    """``farebox serve`` with the soak's config, in its own session so that a Ctrl-C in the
    terminal reaches the soak (which then checks and stops the gateway) and not the gateway."""

    def __init__(self, settings: Settings, upstream_key: str, keep_dir: bool = False) -> None:
        super().__init__(settings.upstream_url, upstream_key, 1, None, keep_dir)
        self.settings = settings

    def _env(self) -> dict[str, str]:
        env = super()._env()
        for name in SCRUBBED_ENV:  # would point the gateway at another config or database
            env.pop(name, None)
        return env

    @property
    def database(self) -> Path | None:
        return self.dir / "farebox.db" if self.dir else None

    def start(self, ready_timeout_s: float = 60.0) -> SoakGateway:
        self.dir = Path(tempfile.mkdtemp(prefix="farebox-soak-"))
        config = self.dir / "farebox.yaml"
        config.write_text(config_text(self.dir, self.settings, free_port()))
        self.port = free_port()
        cmd = [sys.executable, "-m", "farebox", "serve", "--config", str(config)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.dir / "gateway.log", "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=self.dir,
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(ready_timeout_s)
        return self

    def provision(self) -> dict[str, str]:
        """Create the tenants and one key each; map tenant id -> key secret."""
        keys: dict[str, str] = {}
        for tenant, plan in TENANTS.items():
            body = {"id": tenant, "name": tenant.title(), "plan": plan}
            made = http("POST", self.url + "/admin/v1/tenants", body, self.admin_key)
            if made.status not in (200, 201):
                problem = f"HTTP {made.status} {made.body[:200]!r}"
                raise GatewayError(f"create tenant {tenant}: {problem}")
            path = f"/admin/v1/tenants/{tenant}/keys"
            keyed = http("POST", self.url + path, {"name": "soak"}, self.admin_key)
            secret = keyed.json().get("key") if keyed.status in (200, 201) else None
            if not isinstance(secret, str):
                raise GatewayError(f"create key for {tenant}: HTTP {keyed.status}")
            keys[tenant] = secret
        return keys

    def tracebacks(self) -> Counter[str]:
        """Tracebacks in the gateway's log, by the exception line that ends each one."""
        found: Counter[str] = Counter()
        path = self.log_path
        if path is None or not path.exists():
            return found
        inside = False
        with open(path, errors="replace") as log:
            for line in log:
                if line.startswith("Traceback"):
                    inside = True
                elif inside and line.strip() and not line.startswith((" ", "\t")):
                    found[line.strip()[:200]] += 1
                    inside = False
        return found

"""``farebox serve`` processes for the fleet bench: one embedded gateway or N replicas.

Each replica is one ``farebox serve`` process with one worker, in a temporary directory of its
own, on its own port, with the same admin key and key-hashing secret as its siblings; with a
PostgreSQL backend they share the database and Redis. ``provision`` creates the bench tenants
(all on the same plan) and one key each through the first replica's admin API.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.fleet_config import PLAN_NAME, Backend, write_config
from bench.gateway import GatewayError, http, start_serve
from bench.procs import stop_popen

READY_TIMEOUT_S = 60.0


class Replica:
    """One ``farebox serve`` process; ``start`` raises GatewayError with the reason."""

    def __init__(self, backend: Backend, upstream: tuple[str, str], shared: dict[str, str]):
        self._backend = backend
        self._upstream_url, self._upstream_key = upstream
        self._shared = shared  # FAREBOX_ADMIN_KEY and FAREBOX_SECRET, the same on every replica
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> Replica:
        self.dir = Path(tempfile.mkdtemp(prefix="farebox-bench-fleet-"))
        config = write_config(self._backend, self.dir, self._upstream_url)
        env = dict(os.environ) | self._shared
        env["BENCH_UPSTREAM_KEY"] = self._upstream_key
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        self.port, self.proc = start_serve(self.dir, config, env)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise GatewayError(f"exited with code {self.proc.returncode}: {self.reason()}")
            with contextlib.suppress(OSError):
                if http("GET", self.url + "/readyz", timeout_s=1.0).status == 200:
                    return
            time.sleep(0.05)
        raise GatewayError(f"not ready after {READY_TIMEOUT_S:.0f}s: {self.reason()}")

    def reason(self, lines: int = 3) -> str:
        """The last few lines of the log, on one line (why it exited, usually)."""
        path = self.dir / "gateway.log" if self.dir else None
        if path is None or not path.exists():
            return "no log"
        text = path.read_text(errors="replace").replace(f"{self.dir}/", "")
        tail = [line.strip() for line in text.splitlines()]
        return " | ".join([line for line in tail if line][-lines:]) or "empty log"

    def stop(self) -> int | None:
        code = stop_popen(self.proc) if self.proc is not None else None
        self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        return code


class Fleet:
    """A growing set of replicas on one backend; every one is stopped by ``close``."""

    def __init__(self, backend: Backend, upstream: tuple[str, str]) -> None:
        self.backend = backend
        self._upstream = upstream
        self._shared = {
            "FAREBOX_ADMIN_KEY": "fbx_admin_" + secrets.token_urlsafe(24),
            "FAREBOX_SECRET": secrets.token_urlsafe(32),
        }
        self.replicas: list[Replica] = []

    @property
    def admin_key(self) -> str:
        return self._shared["FAREBOX_ADMIN_KEY"]

    def add(self) -> Replica:
        replica = Replica(self.backend, self._upstream, self._shared)
        self.replicas.append(replica)  # before start: a failed start is still stopped
        return replica.start()

    def close(self) -> None:
        for replica in self.replicas:
            replica.stop()
        self.replicas.clear()


@contextlib.contextmanager
def fleet(backend: Backend, upstream: tuple[str, str]) -> Iterator[Fleet]:
    group = Fleet(backend, upstream)
    try:
        yield group
    finally:
        group.close()


def provision(base_url: str, admin_key: str, tenants: int) -> list[str]:
    """Create ``tenants`` tenants on the bench plan and a key for each; return the secrets."""
    keys = []
    for index in range(tenants):
        tenant_id = f"bench{index:03d}"
        body = {"id": tenant_id, "name": f"Bench {index}", "plan": PLAN_NAME}
        made = http("POST", base_url + "/admin/v1/tenants", body, admin_key)
        if made.status not in (200, 201, 409):
            raise GatewayError(f"create tenant: HTTP {made.status}: {made.body[:300]!r}")
        url = f"{base_url}/admin/v1/tenants/{tenant_id}/keys"
        keyed = http("POST", url, {"name": "bench"}, admin_key)
        secret = keyed.json().get("key") if keyed.status in (200, 201) else None
        if not isinstance(secret, str):
            raise GatewayError(f"create key: HTTP {keyed.status}: {keyed.body[:300]!r}")
        keys.append(secret)
    return keys

"""Start ``farebox serve`` in its own process, wait for it, and provision a tenant key."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.fleet_config import plan_body
from bench.procs import pin_pid, stop_popen

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "hello"}],
    "max_tokens": 16,
}
STREAM_BODY: dict[str, Any] = {
    **CHAT_BODY,
    "stream": True,
    "stream_options": {"include_usage": True},
}
EMBED_BODY: dict[str, Any] = {"model": "text-embedding-3-small", "input": "hello"}
# the chat request above, as OpenAI's Responses API (the gateway serves it through the chat
# path), stored as by default (``store`` omitted): the answer is kept for a continuation, which
# a single-process gateway does beside the reply (``responses.store_before_reply: auto``)
RESPONSES_BODY: dict[str, Any] = {"model": "gpt-4o-mini", "input": "hello", "max_output_tokens": 16}


class GatewayError(RuntimeError):
    """The gateway could not be started or provisioned."""


@dataclass(frozen=True)
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(
    method: str, url: str, body: Any = None, key: str | None = None, timeout_s: float = 10.0
) -> HttpResult:
    """One blocking request with no proxy; HTTP errors are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with OPENER.open(request, timeout=timeout_s) as resp:
            return HttpResult(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        return HttpResult(err.code, dict(err.headers), err.read())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_serve(
    directory: Path, config: Path, env: dict[str, str], *extra: str
) -> tuple[int, subprocess.Popen[bytes]]:
    """``farebox serve --config config`` on a free loopback port, logging to
    ``directory/gateway.log``; returns the port and the process (not yet ready)."""
    port = free_port()
    cmd = [sys.executable, "-m", "farebox", "serve", "--config", str(config)]
    cmd += ["--host", "127.0.0.1", "--port", str(port), *extra]
    with open(directory / "gateway.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT)
    return port, proc


# the server line for each --mode: none (a plain `farebox serve` chooses), or forced
SERVER_LINES = {
    "default": "",
    "shared": "server: {single_process: false}   # counters in the database, shared\n",
    "single": "server: {single_process: true}   # one worker owns the database\n",
}


def write_config(
    directory: Path, upstream_base_url: str, mode: str = "default", plan_extra: str = ""
) -> Path:
    """The bench config; ``plan_extra``: more lines of the bench plan (``--guardrails``)."""
    db = json.dumps(f"sqlite:///{directory / 'farebox.db'}")
    server = SERVER_LINES[mode]
    text = f"database: {db}\n{server}" + plan_body(upstream_base_url) + plan_extra
    path = directory / "farebox.yaml"
    path.write_text(text)
    return path


def farebox_available() -> tuple[bool, str]:
    """Whether ``python -m farebox serve --help`` works, with its output when it does not."""
    cmd = [sys.executable, "-m", "farebox", "serve", "--help"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return False, "`farebox serve --help` timed out"
    output = (done.stdout + done.stderr).decode(errors="replace").strip()
    return done.returncode == 0, output


class Gateway:
    """A ``farebox serve`` process in a temporary working directory."""

    def __init__(
        self,
        upstream_base_url: str,
        upstream_key: str,
        workers: int = 1,
        cpus: set[int] | None = None,
        keep_dir: bool = False,
        mode: str = "default",
        plan_extra: str = "",
    ) -> None:
        self._plan_extra = plan_extra
        self._upstream = upstream_base_url
        self._upstream_key = upstream_key
        self._workers = workers
        self._mode = mode
        self._cpus = cpus
        self._keep_dir = keep_dir
        self.admin_key = "fbx_admin_" + secrets.token_urlsafe(24)
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self.dir / "gateway.log" if self.dir else None

    def start(self, ready_timeout_s: float = 60.0) -> Gateway:
        self.dir = Path(tempfile.mkdtemp(prefix="farebox-bench-"))
        config = write_config(self.dir, self._upstream, self._mode, self._plan_extra)
        workers = ("--workers", str(self._workers)) if self._workers != 1 else ()
        self.port, self.proc = start_serve(self.dir, config, self._env(), *workers)
        pin_pid(self.proc.pid, self._cpus)
        self._wait_ready(ready_timeout_s)
        return self

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FAREBOX_ADMIN_KEY"] = self.admin_key
        env["BENCH_UPSTREAM_KEY"] = self._upstream_key
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise GatewayError(f"gateway exited with code {self.proc.returncode}")
            try:
                status = http("GET", self.url + "/healthz", timeout_s=1.0).status
            except OSError as err:
                last = str(err)
            else:
                if status < 500:
                    return
                last = f"/healthz answered {status}"
            time.sleep(0.05)
        raise GatewayError(f"gateway not ready after {timeout_s:.0f}s ({last})")

    def log_tail(self, lines: int = 30) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def mode_line(self) -> str:
        """What the gateway said about its SQLite mode ("Farebox runs in ...")."""
        path = self.log_path
        text = path.read_text(errors="replace") if path is not None and path.exists() else ""
        return next((line for line in text.splitlines() if "runs in" in line), "")

    def provision_key(self) -> str:
        """Create the ``bench`` tenant (if missing) and a key for it; return the secret."""
        tenant = {"id": "bench", "name": "Bench", "plan": "bench"}
        made = http("POST", self.url + "/admin/v1/tenants", tenant, self.admin_key)
        if made.status not in (200, 201, 409):
            raise GatewayError(f"create tenant: HTTP {made.status}: {made.body[:300]!r}")
        keyed = http(
            "POST", self.url + "/admin/v1/tenants/bench/keys", {"name": "bench"}, self.admin_key
        )
        if keyed.status not in (200, 201):
            raise GatewayError(f"create key: HTTP {keyed.status}: {keyed.body[:300]!r}")
        secret = keyed.json().get("key")
        if not isinstance(secret, str):
            raise GatewayError(f"create key: no 'key' in {keyed.body[:300]!r}")
        return secret

    def stop(self) -> int | None:
        code = stop_popen(self.proc) if self.proc is not None else None
        self.proc = None
        if self.dir is not None and not self._keep_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        return code


def probe(base_url: str, key: str | None) -> dict[str, str]:
    """Check chat, streamed chat, embeddings and the Responses API once; map each to 'ok' or
    what went wrong."""
    api = base_url.rstrip("/")
    api = api if api.endswith("/v1") else api + "/v1"
    return {
        "chat": _check_chat(http("POST", api + "/chat/completions", CHAT_BODY, key)),
        "stream": _check_stream(http("POST", api + "/chat/completions", STREAM_BODY, key)),
        "embeddings": _check_embeddings(http("POST", api + "/embeddings", EMBED_BODY, key)),
        "responses": _check_response(http("POST", api + "/responses", RESPONSES_BODY, key)),
    }


def _check_response(result: HttpResult) -> str:
    problem = _status_problem(result)
    if problem:
        return problem
    doc = result.json()
    if doc.get("object") != "response" or "usage" not in doc:
        return f"not a Responses object with usage: {result.body[:200]!r}"
    return "ok"


def _status_problem(result: HttpResult) -> str | None:
    if result.status != 200:
        return f"HTTP {result.status}: {result.body[:200].decode(errors='replace')}"
    return None


def _check_chat(result: HttpResult) -> str:
    problem = _status_problem(result)
    if problem:
        return problem
    doc = result.json()
    if doc.get("object") != "chat.completion" or "usage" not in doc:
        return f"not a chat.completion with usage: {result.body[:200]!r}"
    return "ok"


def _check_stream(result: HttpResult) -> str:
    problem = _status_problem(result)
    if problem:
        return problem
    if not result.body.endswith(b"data: [DONE]\n\n"):
        return f"stream does not end with data: [DONE]: {result.body[-120:]!r}"
    events = [e for e in result.body.split(b"\n\n") if e.startswith(b"data: {")]
    last = json.loads(events[-1][6:]) if events else {}
    if last.get("choices") != [] or not last.get("usage"):
        return "no final usage chunk with choices: []"
    return "ok"


def _check_embeddings(result: HttpResult) -> str:
    problem = _status_problem(result)
    if problem:
        return problem
    doc = result.json()
    if doc.get("object") != "list" or not doc.get("data"):
        return f"not an embeddings list: {result.body[:200]!r}"
    return "ok"

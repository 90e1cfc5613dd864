"""A throwaway Redis Cluster on loopback, for the fleet benchmark and the cluster tests.

``with redis_cluster(3) as ports:`` starts ``redis-server --cluster-enabled yes`` nodes on free
loopback ports (each with its bus port, ``port + 10000``, free too), joins them with
``redis-cli --cluster create`` (no replicas), waits until every node reports
``cluster_state:ok``, yields the ports, and stops the nodes and deletes their directory on the
way out, whatever happened. It never touches the shared Redis on 6379.

Run it by hand with ``python -m bench.redis_cluster [nodes]``: it prints the URL and holds the
cluster until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 30.0


def available() -> str | None:
    """Why a cluster cannot be started here (a missing program), or None."""
    for program in ("redis-server", "redis-cli"):
        if shutil.which(program) is None:
            return f"{program} is not installed (Debian package redis-server / redis-tools)"
    return None


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """``count`` ports whose cluster bus ports (``+10000``) are free as well."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 <= 65535 and port not in ports and _free(port + 10000):
            ports.append(port)
    return ports


def _cli(port: int, *args: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return out.stdout


def _wait(predicate: object, what: str, deadline: float) -> None:
    assert callable(predicate)
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis cluster: timed out waiting for {what}")
        time.sleep(0.05)


def _start_node(directory: Path, port: int) -> subprocess.Popen[bytes]:
    node_dir = directory / str(port)
    node_dir.mkdir()
    cmd = [
        "redis-server", "--port", str(port), "--bind", "127.0.0.1",
        "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
        "--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no",
        "--dir", str(node_dir), "--logfile", str(node_dir / "redis.log"),
        "--protected-mode", "no",
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[list[int]]:
    """Start a cluster of ``nodes`` masters; yield their ports; stop it on the way out."""
    missing = available()
    if missing:
        raise RuntimeError(f"cannot start a Redis Cluster: {missing}")
    directory = Path(tempfile.mkdtemp(prefix="farebox-redis-cluster-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = free_ports(nodes)
        procs = [_start_node(directory, port) for port in ports]
        deadline = time.monotonic() + START_TIMEOUT_S
        for port in ports:
            _wait(lambda p=port: _cli(p, "PING").strip() == "PONG", f"node {port}", deadline)
        create = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {create.stdout[-2000:]}")
        for port in ports:
            _wait(
                lambda p=port: "cluster_state:ok" in _cli(p, "CLUSTER", "INFO"),
                f"cluster_state:ok on {port}",
                deadline,
            )
        yield ports
    finally:
        _stop(procs)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with redis_cluster(count) as ports:
        print(f"redis cluster up: redis://127.0.0.1:{ports[0]} (nodes {ports}); Ctrl-C stops it")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


if __name__ == "__main__":
    main()

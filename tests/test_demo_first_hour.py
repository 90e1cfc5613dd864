"""``farebox demo`` as a new user meets it: a taken port is one clear line and no key; a key
for a tenant on each demo plan, with what the plan gives; hints that work from a shell whose
PATH lacks the venv; and ``--traffic`` ending on Ctrl-C with a summary per tenant."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from farebox.cli.demo import farebox_command
from farebox.demo.seed import DEMO_PLANS, DEMO_TENANTS
from tests.e2e import (
    POLL_INTERVAL_S,
    READY_TIMEOUT_S,
    child_env,
    db_path,
    free_port,
    ledger_rows,
    running,
    usd_to_pico,
)

SRC = Path(__file__).resolve().parents[1] / "src"
SCRIPTS = Path(sysconfig.get_path("scripts"))
KEY_TABLE_HEAD = r"^tenant\s+plan\s+budget\s+rate_limit\s+key$"
SUMMARY_HEAD = r"^tenant\s+plan\s+served\s+rate_limited\s+over_budget\s+paused\s+failed"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}


def demo_env(**extra: str) -> dict[str, str]:
    """The environment of a ``python -m farebox`` child that imports this worktree."""
    path = os.environ.get("PYTHONPATH")
    return child_env(
        None, PYTHONPATH=os.pathsep.join([str(SRC)] + ([path] if path else [])), **extra
    )


def path_without_venv() -> str:
    """PATH as a shell that has not activated the venv sees it."""
    kept = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and Path(p) != SCRIPTS]
    return os.pathsep.join(kept or ["/usr/bin", "/bin"])


def farebox(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "farebox", *args],
        cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def table_after(output: str, head: str) -> list[dict[str, str]]:
    """The rows of the printed table whose header line matches ``head`` (columns are
    separated by two spaces or more; the table ends at a blank line)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(head, line))
    names = lines[start].split()
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(names), line
        rows.append(dict(zip(names, cells, strict=True)))
    return rows


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port with a listening socket on it, as another program would hold it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_demo_on_a_taken_port_says_so_in_one_line_and_prints_no_key(
    tmp_path: Path, taken_port: int
) -> None:
    done = farebox("demo", "--port", str(taken_port), cwd=tmp_path, env=demo_env())
    assert done.returncode != 0, done.stdout + done.stderr
    said = done.stderr.strip().splitlines()
    assert len(said) == 1, done.stderr
    assert f"127.0.0.1:{taken_port}" in said[0] and "--port" in said[0], said
    suggested = re.search(r"--port (\d+)", said[0])
    assert suggested and int(suggested.group(1)) != taken_port, said
    everything = done.stdout + done.stderr
    assert "fbx_" not in everything and "fba_" not in everything  # no tenant or admin key
    assert "Traceback" not in everything
    assert not db_path(tmp_path).exists()  # nothing was seeded either


def test_demo_help_documents_port_and_host(tmp_path: Path) -> None:
    done = farebox("demo", "--help", cwd=tmp_path, env=demo_env())
    assert done.returncode == 0, done.stderr
    port_help = re.search(r"--port\s+INTEGER RANGE\s+(.*?)(?=\n\s*--|\Z)", done.stdout, re.S)
    assert port_help and "8787" in port_help.group(1) and "taken" in port_help.group(1)
    assert re.search(r"--host\s+TEXT\s+\S", done.stdout)


RACE = """
import sys
import farebox.cli.demo as demo
from farebox.cli import main
demo.check_port = lambda host, port: None  # the port is taken between the check and the bind
main(["demo", "--port", sys.argv[1]])
"""


def test_a_port_taken_after_the_check_still_fails_in_one_line(
    tmp_path: Path, taken_port: int
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", RACE, str(taken_port)], cwd=tmp_path, env=demo_env(),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and f"127.0.0.1:{taken_port}" in last and "--port" in last
    assert "Traceback" not in done.stderr
    assert "Errno" not in done.stderr  # uvicorn's own log line is not printed as well


def test_demo_prints_a_working_key_for_a_tenant_on_each_plan(tmp_path: Path) -> None:
    port = free_port()
    env = demo_env(PATH=path_without_venv())
    with running(["demo", "--port", str(port)], cwd=tmp_path, env=env, port=port) as demo:
        demo.wait_for_line(r"^\s*curl ")
        rows = table_after(demo.output, KEY_TABLE_HEAD)
        assert [r["tenant"] for r in rows] == [t for t, _, _ in DEMO_TENANTS]
        assert {r["plan"] for r in rows} == set(DEMO_PLANS)
        assert all(r["key"].startswith("fbx_") for r in rows)
        free = next(r for r in rows if r["plan"] == "free")
        assert free["budget"] == "$0.50/day, $15/month"
        assert free["rate_limit"] == "10 requests/minute per ip"
        assert next(r for r in rows if r["plan"] == "pro")["budget"] == "none"
        with httpx.Client(base_url=demo.base_url, timeout=10.0) as client:
            for row in rows:
                r = client.post("/v1/chat/completions", json=CHAT,
                                headers={"Authorization": f"Bearer {row['key']}"})  # fmt: skip
                assert r.status_code == 200, (row, r.text)
            # what the table says the free plan gives is what it gives: 10 a minute
            answers = [
                client.post(
                    "/v1/chat/completions",
                    json=CHAT,
                    headers={"Authorization": f"Bearer {free['key']}"},
                )  # fmt: skip
                for _ in range(10)
            ]
        assert [a.status_code for a in answers] == [200] * 9 + [429]
        assert answers[-1].json()["error"]["code"] == "rate_limit_exceeded"
        hint = demo.wait_for_line(r"Usage so far:\s+(.+)$").group(1)
    command = shlex.split(hint)
    assert command[-3:] == ["usage", "--group-by", "tenant"]
    assert command[0] != "farebox" and Path(command[0]).is_absolute()  # not on this PATH
    usage = subprocess.run([*command[:-3], "usage", "--help"], capture_output=True, text=True,
                           env=env, timeout=60)  # fmt: skip
    assert usage.returncode == 0 and "Usage" in usage.stdout, usage.stderr
    if sys.prefix != sys.base_prefix:
        assert f"source {SCRIPTS / 'activate'}" in demo.output


def test_farebox_command_is_the_bare_name_only_when_path_finds_this_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not (SCRIPTS / "farebox").exists():
        pytest.skip("farebox is not installed as a script beside this Python")
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS / "farebox"), "demo"])
    monkeypatch.setenv("PATH", os.pathsep.join([str(SCRIPTS), path_without_venv()]))
    assert farebox_command() == ("farebox", None)
    monkeypatch.setenv("PATH", path_without_venv())
    command, activate = farebox_command()
    assert command == shlex.quote(str(SCRIPTS / "farebox"))
    assert (activate is not None) == (sys.prefix != sys.base_prefix)


def wait_healthy(base_url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=base_url, timeout=2.0) as client:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(POLL_INTERVAL_S)  # readiness polling interval
    raise AssertionError(f"demo not ready (exit code {proc.poll()})")


def wait_for_spend(database: Path, tenants: int, proc: subprocess.Popen[str]) -> set[str]:
    """Poll the ledger until ``tenants`` tenants have requests in it; their ids."""
    deadline = time.monotonic() + 30.0
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            seen = {row["tenant_id"] for row in ledger_rows(database, "status = 'ok'")}
        except sqlite3.OperationalError:  # not created yet, or busy
            seen = set()
        if len(seen) >= tenants:
            return seen
        time.sleep(POLL_INTERVAL_S)  # ledger polling interval
    raise AssertionError(f"no spend from {tenants} tenants (exit code {proc.poll()})")


def test_demo_traffic_ends_on_ctrl_c_with_a_summary_per_tenant(tmp_path: Path) -> None:
    port = free_port()
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "farebox", "demo", "--port", str(port), "--traffic"],
            cwd=tmp_path, env=demo_env(), stdin=subprocess.DEVNULL, stdout=stdout,
            stderr=stderr, text=True,
        )  # fmt: skip
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc)
            spent = wait_for_spend(db_path(tmp_path), 3, proc)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)  # the traffic thread was stopped, or this times out
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    printed, logged = out.read_text(), err.read_text()
    assert code == 0, logged
    assert "Traceback" not in logged and "Traceback" not in printed
    rows = table_after(printed, SUMMARY_HEAD)
    assert [r["tenant"] for r in rows] == [t for t, _, _ in DEMO_TENANTS]
    ledger = ledger_rows(db_path(tmp_path))
    for row in rows:
        counts = [
            int(row[c]) for c in ("served", "rate_limited", "over_budget", "paused", "failed")
        ]
        assert min(counts) >= 0, row
        if row["tenant"] in spent:
            assert counts[0] > 0, row
        # money comes from the ledger, to the pico-dollar
        mine = [e for e in ledger if e["tenant_id"] == row["tenant"]]
        assert usd_to_pico(row["cost_usd"]) == sum(e["cost"] for e in mine), row
        assert usd_to_pico(row["revenue_usd"]) == sum(e["revenue"] for e in mine), row
    assert sum(usd_to_pico(r["cost_usd"]) for r in rows) > 0

"""``farebox serve --workers 2``: prometheus-client's multiprocess mode makes one scrape of
either worker cover both; the serve command makes the directory and removes it; each worker
writes its access-log lines (JSON, stdout is not a terminal) with no key and no prompt."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from farebox.cli.serve import MULTIPROC_ENV, metrics_dir
from tests.e2e import (
    ADMIN_KEY,
    admin_headers,
    child_env,
    free_port,
    ledger_rows,
    running,
    write_config,
)

PROMPT = "a prompt that must never be logged"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": PROMPT}]}
SENT = 40


def totals(page: str) -> tuple[float, float]:
    """(requests counted, request-duration observations) on a scraped page."""
    requests = durations = 0.0
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            if s.name == "farebox_requests_total":
                requests += s.value
            elif s.name == "farebox_request_duration_seconds_count":
                durations += s.value
    return requests, durations


def test_one_scrape_covers_both_workers(tmp_path: Path) -> None:
    config = write_config(tmp_path, logging={"access_log": True, "format": "auto"})
    port = free_port()
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    env = child_env(TMPDIR=str(tmp_path))  # where the serve command makes its metrics dir
    with running([*args, "--workers", "2"], cwd=tmp_path, env=env, port=port) as server:
        base = server.base_url
        r = httpx.post(base + "/admin/v1/tenants", json={"id": "t", "plan": "pro"},
                       headers=admin_headers())  # fmt: skip
        assert r.status_code == 201
        made = httpx.post(base + "/admin/v1/tenants/t/keys", json={"name": "k"},
                          headers=admin_headers())  # fmt: skip
        key = made.json()["key"]
        auth = {"Authorization": f"Bearer {key}"}
        # fresh connections: the kernel hands them to both workers
        sent = [httpx.post(base + "/v1/chat/completions", json=CHAT, headers=auth)
                for _ in range(SENT)]  # fmt: skip
        assert {r.status_code for r in sent} == {200}
        [directory] = tmp_path.glob("farebox-metrics-*")
        pids = {p.stem.rsplit("_", 1)[1] for p in directory.glob("counter_*.db")}
        assert len(pids) == 2, sorted(directory.iterdir())  # both workers counted requests
        scrapes = [httpx.get(base + "/metrics") for _ in range(6)]  # whichever worker answers
    assert {r.status_code for r in scrapes} == {200}
    assert {totals(r.text) for r in scrapes} == {(SENT, SENT)}
    assert len(ledger_rows(tmp_path / "farebox.db")) == SENT
    assert not list(tmp_path.glob("farebox-metrics-*"))  # removed when the server stopped
    lines = [orjson.loads(line) for line in server.lines if line.startswith('{"ts"')]
    assert len(lines) == SENT and {line["tenant"] for line in lines} == {"t"}
    assert all(key not in line and PROMPT not in line and ADMIN_KEY not in line
               for line in server.lines)  # fmt: skip


def test_the_metrics_dir_is_made_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # read TMPDIR again
    try:
        with metrics_dir(True) as made:
            assert made is not None and Path(made).is_dir() and Path(made).parent == tmp_path
            assert os.environ[MULTIPROC_ENV] == made
        assert not Path(made).exists() and MULTIPROC_ENV not in os.environ
    finally:
        tempfile.tempdir = None
    with metrics_dir(False) as off:
        assert off is None and MULTIPROC_ENV not in os.environ


def test_an_operators_metrics_dir_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    with metrics_dir(True) as given:
        assert given == str(tmp_path)
    assert tmp_path.is_dir() and os.environ[MULTIPROC_ENV] == str(tmp_path)

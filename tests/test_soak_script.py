"""Issue [7], acceptance 7: the soak script (``python -m bench.soak``) itself.

The 30-minute soak is run by hand, not in CI. These tests run it for a few seconds with tiny
settings and check that it does what it says: every kind of traffic is sent, RSS is sampled,
the slope in the report is the least-squares slope of its own samples over the last two
thirds, the after-traffic checks ran, the verdict follows from the checks, and Ctrl-C stops it
early with the report still written. They do not require the gateway to pass the soak (other
work on the gateway is what makes it pass); they do require what already holds: revoked keys
are refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench.soak import parse_mix
from bench.soak_report import slope_per_min
from bench.soak_traffic import DEFAULT_WEIGHTS, KINDS

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 240.0
# every kind weighted enough to be sent in a few seconds at a low rate
EVEN_MIX = ",".join(f"{kind}=1" for kind in KINDS)
TINY = ["--rate", "40", "--concurrency", "8", "--churn-s", "1", "--settle-s", "5"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Soak:
    """``python -m bench.soak`` as a child; stderr lines collected by a reader thread."""

    def __init__(self, args: list[str]) -> None:
        cmd = [sys.executable, "-m", "bench.soak", *args]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.err_lines: list[str] = []
        self._out: list[bytes] = []
        self._seen = threading.Condition()
        # each pipe has one reader: communicate() would also read stderr and take lines from
        # the stderr thread (a race that lost the last lines now and then)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self._out_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._out_reader.start()

    def _read_stdout(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        for chunk in iter(lambda: stdout.read(65536), b""):
            self._out.append(chunk)

    def _close_pipes(self) -> None:
        self._reader.join(5)
        self._out_reader.join(5)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._seen:
                self.err_lines.append(raw.decode(errors="replace").rstrip())
                self._seen.notify_all()

    def wait_for_samples(self, count: int, timeout_s: float) -> None:
        def enough() -> bool:
            return sum(" rss=" in line for line in self.err_lines) >= count

        with self._seen:
            if not self._seen.wait_for(enough, timeout_s):
                raise AssertionError("no RSS samples reported:\n" + "\n".join(self.err_lines))

    def finish(self, timeout_s: float = RUN_TIMEOUT_S) -> tuple[int, str]:
        self.proc.wait(timeout=timeout_s)
        self._close_pipes()
        return self.proc.returncode, b"".join(self._out).decode(errors="replace")

    def stop(self) -> None:
        """Bounded clean-up when a test failed half-way: the soak stops its own children."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_pipes()


@pytest.fixture
def soak_run() -> Iterator[list[Soak]]:
    runs: list[Soak] = []
    yield runs
    for run in runs:
        run.stop()


def _report(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def test_slope_is_the_least_squares_slope_in_mib_per_minute() -> None:
    line = [(t, 50.0 + 0.25 * t / 60.0) for t in range(0, 600, 10)]
    assert slope_per_min(line) == pytest.approx(0.25)
    noisy = [(t, v + (0.5 if i % 2 else -0.5)) for i, (t, v) in enumerate(line)]
    assert slope_per_min(noisy) == pytest.approx(0.25, abs=0.01)
    assert slope_per_min([(0.0, 1.0)]) is None
    assert slope_per_min([(5.0, 1.0), (5.0, 2.0)]) is None


def test_mix_overrides_named_kinds_and_refuses_unknown_ones() -> None:
    mix = parse_mix("malformed=0, burst=7.5")
    assert mix["malformed"] == 0 and mix["burst"] == 7.5
    assert mix["chat"] == DEFAULT_WEIGHTS["chat"]
    for bad in ("nope=1", "chat", "chat=-1", ",".join(f"{k}=0" for k in KINDS)):
        with pytest.raises(ValueError):
            parse_mix(bad)


def test_short_soak_sends_every_kind_samples_rss_and_reports(
    tmp_path: Path, soak_run: list[Soak]
) -> None:
    out = tmp_path / "soak.json"
    args = ["--minutes", "0.12", "--sample-s", "1", *TINY, "--mix", EVEN_MIX, "--output", str(out)]
    run = Soak(args)
    soak_run.append(run)
    code, stdout = run.finish()
    doc = _report(out)

    assert code == (0 if doc["verdict"] == "PASS" else 1), stdout
    assert f"SOAK {doc['verdict']}" in stdout
    assert not doc["interrupted"] and doc["gateway_exit_code"] is None
    assert 6.0 <= doc["duration_s"] < 30.0

    counts = doc["traffic"]["counts"]
    for kind in KINDS:
        assert sum(counts.get(kind, {}).values()) > 0, (kind, counts)
    assert doc["traffic"]["total"] == sum(sum(c.values()) for c in counts.values())
    malformed_shapes = [k for k in doc["traffic"]["shapes"] if k.startswith("malformed/")]
    assert len(malformed_shapes) >= 3

    samples = doc["samples"]
    assert len(samples) >= 6 and all(s["rss_mib"] > 0 for s in samples)
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    window = [(s["t_s"], s["rss_mib"]) for s in samples if s["t_s"] >= doc["duration_s"] / 3]
    assert doc["memory"]["points_in_window"] == len(window)
    assert doc["memory"]["slope_mib_per_min"] == pytest.approx(slope_per_min(window), abs=1e-3)

    assert doc["churn"]["created"] >= 2
    assert doc["churn"]["revoked_refused"] >= 2 and doc["churn"].get("revoked_served", 0) == 0
    after = doc["after"]
    assert set(after["settle"]["held"]) == {"steady", "limited", "tight"}
    assert isinstance(after["unsettled"]["count"], int)
    assert len(after["slots"]["outcomes"]) == 6
    assert sum(after["ledger"].values()) > 0

    statuses = {c["name"]: c["status"] for c in doc["checks"]}
    assert set(statuses.values()) <= {"PASS", "FAIL"}
    for topic in ("RSS slope", "5xx", "timed out", "revoked", "reservation", "unsettled", "slots"):
        assert any(topic in name for name in statuses), (topic, statuses)
    assert doc["verdict"] == ("FAIL" if "FAIL" in statuses.values() else "PASS")


def test_interrupt_stops_traffic_early_and_still_writes_the_report(
    tmp_path: Path, soak_run: list[Soak]
) -> None:
    out = tmp_path / "soak.json"
    run = Soak(["--minutes", "10", "--sample-s", "1", *TINY, "--output", str(out)])
    soak_run.append(run)
    run.wait_for_samples(3, timeout_s=120)
    interrupted_at = time.monotonic()
    run.proc.send_signal(signal.SIGINT)
    code, stdout = run.finish()

    assert time.monotonic() - interrupted_at < RUN_TIMEOUT_S
    doc = _report(out)
    assert doc["interrupted"] is True
    assert doc["duration_s"] < 120
    assert doc["traffic"]["total"] > 0 and len(doc["samples"]) >= 3
    assert doc["after"]["settle"].get("skipped") is None  # one signal: still checked
    assert code in (0, 1) and "SOAK " in stdout
    assert any("gateway stopped" in line for line in run.err_lines)

"""The traffic simulator drives the real anomaly detector through weeks of simulated time.

Acceptance of issue [6]:
1. thirty days of diurnal traffic for fifty tenants pauses nobody;
2. a runaway at ten times the baseline is paused within fifteen simulated minutes, the page
   reaches a loopback PagerDuty fake in the Events v2 format, and the operator's resume sends
   ``resolve`` with the same ``dedup_key``;
3. onboarding ramps are not runaways;
4. the simulator reports precision, recall and time to pause.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from click.testing import CliRunner

from fakes.paging import PagerDutyFake, pagerduty_errors
from farebox.cli import main
from farebox.config.settings import parse_settings
from farebox.core.anomaly import DAY, HOUR, MINUTE
from farebox.demo.simulate import START, report, simulate
from farebox.demo.synthetic import Anomaly, profiles

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"


def settings(tmp_path: Path, pd: PagerDutyFake | None = None) -> object:
    anomaly: dict[str, object] = {"retry_backoff_s": 0.01}
    if pd is not None:
        anomaly["pagerduty"] = {"routing_key": "env:PD_KEY", "base_url": pd.root_url}
    return parse_settings({"anomaly": anomaly}, source="test.yaml",
                          env={"PD_KEY": ROUTING_KEY}, base_dir=tmp_path)  # fmt: skip


async def test_thirty_days_of_diurnal_traffic_for_fifty_tenants_pauses_nobody(
    tmp_path: Path,
) -> None:
    result = await simulate(
        settings(tmp_path), tenants=50, ramps=0, days=30, history_days=30, kinds=[], seed=7
    )  # type: ignore[arg-type]
    assert result.incidents == [], report(result)
    assert result.anomalies == [] and result.false_positives == []
    # the traffic was real diurnal traffic: every tenant sent every day, with deep troughs
    assert len(result.daily) == 50 and all(
        all(d > 0 for d in days) for days in result.daily.values()
    )
    assert result.requests > 10_000_000


async def test_a_runaway_is_paused_within_fifteen_minutes_paged_and_resolved(
    tmp_path: Path,
) -> None:
    cast = profiles(20, 0, START, 4, random.Random(3))  # the cast simulate(seed=3) will use
    busy = [p for p in cast if p.rate_per_hour >= 150][:5]
    runaways = [  # 10x the tenant's normal rate, for an hour, at different times of the week
        Anomaly("runaway", p.tenant, p.keys[0], at, at + HOUR, 10.0)
        for p, at in zip(
            busy,
            [START + DAY + 2 * HOUR + 17 * MINUTE, START + DAY + 14 * HOUR, START + 2 * DAY,
             START + 2 * DAY + 20 * HOUR + 41 * MINUTE, START + 3 * DAY + 9 * HOUR],
            strict=True,
        )
    ]  # fmt: skip
    assert len(runaways) == 5
    async with PagerDutyFake(ROUTING_KEY) as pd:
        result = await simulate(
            settings(tmp_path, pd),
            tenants=20,
            ramps=0,
            days=4,
            anomalies=runaways,
            seed=3,
            page=True,
        )  # type: ignore[arg-type]
    assert result.recall() == 1.0 and result.precision() == 1.0, report(result)
    assert all(t <= 15 * MINUTE for t in result.times_to_pause_s()), report(result)
    assert len(result.times_to_pause_s()) == 5
    triggers = pd.triggers()
    assert len(triggers) == 5 and pd.invalid == []
    for event in triggers:
        assert pagerduty_errors(event, ROUTING_KEY) == []
        assert event["event_action"] == "trigger" and event["payload"]["severity"] == "critical"
    by_tenant = {e["payload"]["group"]: e["dedup_key"] for e in triggers}
    assert set(by_tenant) == {a.tenant for a in runaways}
    # the operator resumed each tenant: PagerDuty got resolve with the trigger's own key
    resolves = [e for e in pd.events if e["event_action"] == "resolve"]
    assert sorted(e["dedup_key"] for e in resolves) == sorted(by_tenant.values())
    assert pd.open == {} and sorted(pd.resolved) == sorted(by_tenant.values())
    assert {i.id for i in result.resolved} == {i.id for i in result.incidents}


async def test_onboarding_ramps_are_not_runaways(tmp_path: Path) -> None:
    result = await simulate(
        settings(tmp_path), tenants=10, ramps=10, days=14, history_days=30, kinds=[], seed=11
    )  # type: ignore[arg-type]
    assert result.incidents == [], report(result)
    ramps = {t: d for t, d in result.daily.items() if t.startswith("new")}
    assert len(ramps) == 10
    for tenant, days in ramps.items():
        started = next(i for i, d in enumerate(days) if d)
        # each grew from a trickle: its busiest day is at least 10x its first full day
        assert max(days) >= 10 * max(days[started + 1], 1), (tenant, days)


async def test_every_kind_of_anomaly_is_scored(tmp_path: Path) -> None:
    result = await simulate(settings(tmp_path), tenants=30, ramps=3, days=5, seed=2)  # type: ignore[arg-type]
    assert sorted(a.kind for a in result.anomalies) == ["power_user", "runaway", "stuffing"]
    found = {a.kind: result.detection(a) for a in result.anomalies}
    assert found["runaway"] is not None and found["runaway"].metric == "requests"
    # same request rate, stuffed prompts: only spend shows it
    assert found["stuffing"] is not None and found["stuffing"].metric == "spend"
    caught = sum(1 for f in found.values() if f is not None)
    assert result.recall() == caught / 3 and result.precision() == 1.0, report(result)
    text = report(result)
    assert f"detected: {caught};" in text and "false positives: 0" in text
    assert ("missed" in text) == (caught < 3)


def test_the_cli_prints_precision_recall_and_time_to_pause() -> None:
    runner = CliRunner()
    done = runner.invoke(main, ["simulate", "--tenants", "15", "--days", "3", "--seed", "4"])
    assert done.exit_code == 0, done.output
    assert "precision 1.000" in done.output and "recall 1.000" in done.output
    assert "time to pause: min" in done.output
    for kind in ("runaway", "power_user", "stuffing"):
        assert kind in done.output
    as_json = runner.invoke(main, ["simulate", "--tenants", "10", "--days", "2", "--json",
                                   "--anomalies", "runaway"])  # fmt: skip
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["recall"] == 1.0 and data["false_positives"] == 0
    assert [a["kind"] for a in data["anomalies"]] == ["runaway"]
    assert 0 < data["times_to_pause_s"][0] <= 15 * MINUTE
    bad = runner.invoke(main, ["simulate", "--anomalies", "meteor"])
    assert bad.exit_code == 2 and "unknown kind" in bad.output

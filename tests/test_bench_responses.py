"""Issue 10: ``python -m bench`` measures the Responses API beside chat completions, and checks
that at c=1 it adds at most 0.05 ms p50 more than chat does (the report's logic; the bench
itself runs outside the suite, see README "Benchmark")."""

from __future__ import annotations

import pytest
from bench.load import JobResult
from bench.report import RESPONSES_SLACK_MS, Results, check_responses
from bench.stats import Latency


def job(name: str, p50: float) -> JobResult:
    lat = Latency(100, p50, p50, p50, p50, p50, p50)
    return JobResult(name, 1, 100, 0, 1.0, 100.0, lat, lat, {200: 100}, {}, None)


def results(direct: float, chat: float, responses: float | None) -> Results:
    r = Results(meta={})
    r.direct["c1"] = job("c1", direct)
    r.gateway["c1"] = job("c1", chat)
    if responses is not None:
        r.gateway["responses"] = job("responses", responses)
    return r


@pytest.mark.parametrize(
    ("responses", "status"),
    [(0.50, "PASS"), (0.50 + RESPONSES_SLACK_MS - 0.001, "PASS"), (0.60, "FAIL"), (0.40, "PASS")],
)
def test_the_responses_path_is_read_against_the_chat_path(responses: float, status: str) -> None:
    check = check_responses(results(0.05, 0.50, responses))
    assert check.status == status, check
    assert f"{responses - 0.50:+.3f} ms" in check.measured


def test_a_responses_path_not_measured_fails_the_check() -> None:
    assert check_responses(results(0.05, 0.50, None)).status == "FAIL"

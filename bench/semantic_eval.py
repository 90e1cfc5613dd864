"""The semantic cache's quality and speed, measured (issue 21, acceptance 3 and 6).

``python -m bench.semantic_eval [--json] [--threshold 0.95] [--latency-runs 300]``

Scores the 600 labelled question pairs of the PyPI package ``fow-cache`` (paraphrases and near
repeats that should hit; negation, entity-swap, number/date and scope traps that must not) with
the local embedder (all-MiniLM-L6-v2 int8 on onnxruntime, the one the gateway runs), through
``fow_cache.evaluate``: the hit rate on should-hit pairs and the false-hit rate on traps at the
threshold, with and without ``farebox.core.cache_veto``, per category; a precision/recall
table over thresholds; and the embedding latency of one short question on this machine.
Ambiguous pairs (fow-cache's ``complementary`` and ``context_dependent``) count as traps,
fow-cache's strict default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.stats import summarize
from farebox.core.cache_veto import vetoed
from farebox.semantic.local import DIMENSIONS, NAME, LocalEmbedder, load_minilm

THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99)
MAX_FALSE_HITS = 0.05
SHORT_QUESTION = "How do I reset my password?"


@dataclass(frozen=True)
class Row:
    threshold: float
    veto: bool
    hit_rate: float  # recall: should-hit pairs served
    false_hit_rate: float  # traps served
    precision: float  # served pairs that were right to serve
    served: int


class Scorer:
    """Cosine similarity of two questions with the local model, each text embedded once."""

    def __init__(self) -> None:
        self._model = load_minilm()
        self._vectors: dict[str, Any] = {}
        self.vetoes: dict[str, int] = {}

    def _vector(self, text: str) -> Any:
        import numpy as np

        if text not in self._vectors:
            self._vectors[text] = np.frombuffer(self._model.encode(text), dtype="<f4")
        return self._vectors[text]

    def similarity(self, cached: str, new: str) -> float:
        return float(self._vector(cached) @ self._vector(new))

    def with_veto(self, cached: str, new: str) -> float:
        """The similarity, or 0.0 (never served) when the veto refuses the pair."""
        reason = vetoed(cached, new)
        if reason is None:
            return self.similarity(cached, new)
        self.vetoes[reason] = self.vetoes.get(reason, 0) + 1
        return 0.0


def evaluate(check: Callable[[str, str], float], threshold: float) -> Any:
    from fow_cache.evaluate import evaluate as fow_evaluate

    return fow_evaluate(check, dataset="questions", threshold=threshold, ambiguous="different")


def curve(report: Any, veto: bool) -> list[Row]:
    rows = []
    for threshold in THRESHOLDS:
        at = report.at_threshold(threshold)
        good = sum(r.served for r in at.results if r.same_answer)
        bad = sum(r.served for r in at.results if not r.same_answer)
        precision = good / (good + bad) if good + bad else float("nan")
        rows.append(Row(threshold, veto, at.hit_rate, at.wrong_rate, precision, good + bad))
    return rows


def latency(runs: int) -> dict[str, Any]:
    """Embedding one short question: the model alone (one thread, this one) and through the
    gateway's embedder (event loop -> bounded queue -> worker thread -> back)."""
    model = load_minilm()
    for _ in range(20):
        model.encode(SHORT_QUESTION)
    direct = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        model.encode(SHORT_QUESTION)
        direct.append(time.perf_counter_ns() - start)
    queued = asyncio.run(_queued_latency(runs))
    return {
        "question": SHORT_QUESTION,
        "runs": runs,
        "cpus": os.cpu_count(),
        "model": _ms(direct),
        "embedder": _ms(queued),
    }


async def _queued_latency(runs: int) -> list[int]:
    embedder = LocalEmbedder(queue=8, threads=1)
    await embedder.start()
    try:
        for _ in range(20):
            await embedder.embed(SHORT_QUESTION)
        samples = []
        for _ in range(runs):
            start = time.perf_counter_ns()
            vector = await embedder.embed(SHORT_QUESTION)
            samples.append(time.perf_counter_ns() - start)
            assert vector is not None and len(vector) == 4 * DIMENSIONS
        return samples
    finally:
        await embedder.close()


def veto_latency(pairs: list[tuple[str, str]]) -> dict[str, float]:
    samples = []
    for a, b in pairs:
        start = time.perf_counter_ns()
        vetoed(a, b)
        samples.append(time.perf_counter_ns() - start)
    stats = summarize(samples)
    return {"p50_us": stats.p50_ms * 1000, "p99_us": stats.p99_ms * 1000}


def _ms(samples: list[int]) -> dict[str, float]:
    stats = summarize(samples)
    return {"p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms, "mean_ms": stats.mean_ms}


def run(threshold: float, latency_runs: int) -> dict[str, Any]:
    scorer = Scorer()
    plain = evaluate(scorer.similarity, threshold)
    vetoed_report = evaluate(scorer.with_veto, threshold)
    best_plain = plain.best_threshold(MAX_FALSE_HITS)
    best_veto = vetoed_report.best_threshold(MAX_FALSE_HITS)
    from fow_cache.data import load_questions

    pairs = [(q["a"], q["b"]) for q in load_questions()]
    return {
        "embedder": NAME,
        "pairs": len(plain.results),
        "threshold": threshold,
        "without_veto": plain.to_dict(),
        "with_veto": vetoed_report.to_dict(),
        "vetoes": dict(sorted(scorer.vetoes.items())),
        "curve": [row.__dict__ for row in curve(plain, False) + curve(vetoed_report, True)],
        "best_threshold_max_5pct": {
            "without_veto": {"threshold": best_plain[0], "hit_rate": best_plain[1]},
            "with_veto": {"threshold": best_veto[0], "hit_rate": best_veto[1]},
        },
        "passes": vetoed_report.wrong_rate <= MAX_FALSE_HITS,
        "latency": latency(latency_runs) if latency_runs else None,
        "veto_latency": veto_latency(pairs * 5),
    }


def render(result: dict[str, Any]) -> str:
    plain, veto = result["without_veto"], result["with_veto"]
    lines = [
        f"semantic cache quality: fow-cache questions, {result['pairs']} pairs, "
        f"{result['embedder']}, threshold {result['threshold']}",
        "",
        f"  {'':28}{'no veto':>10}{'veto':>10}",
        f"  {'should-hit served':28}{plain['hit_rate']:>10.1%}{veto['hit_rate']:>10.1%}",
    ]
    groups = list(plain["by_group"])
    hit_groups = [g for g in groups if g in ("near_repeat", "paraphrase", "context_dependent")]
    for group in hit_groups:
        lines.append(_group_line(group, plain, veto))
    lines.append(f"  {'traps served (false hits)':28}{plain['wrong_rate']:>10.1%}"
                 f"{veto['wrong_rate']:>10.1%}")  # fmt: skip
    for group in groups:
        if group not in hit_groups:
            lines.append(_group_line(group, plain, veto))
    verdict = "PASS" if result["passes"] else "FAIL"
    lines += [
        "",
        f"  false hits with the veto <= {MAX_FALSE_HITS:.0%} of traps: {verdict}",
        f"  vetoes by reason (all 600 pairs): {result['vetoes']}",
        "",
        "  threshold   recall  false-hit  precision   | veto: recall  false-hit  precision",
    ]
    rows = {(row["threshold"], row["veto"]): row for row in result["curve"]}
    for threshold in THRESHOLDS:
        a, b = rows[(threshold, False)], rows[(threshold, True)]
        lines.append(
            f"  {threshold:9.2f} {a['hit_rate']:8.1%} {a['false_hit_rate']:10.1%} "
            f"{a['precision']:10.1%}   | {b['hit_rate']:12.1%} {b['false_hit_rate']:10.1%} "
            f"{b['precision']:10.1%}"
        )
    best = result["best_threshold_max_5pct"]
    lines += ["", f"  most hits with false hits <= 5% (picked on this data): {best}"]
    lines += _latency_lines(result)
    return "\n".join(lines)


def _group_line(group: str, plain: dict[str, Any], veto: dict[str, Any]) -> str:
    return f"    {group:26}{plain['by_group'][group]:>10.1%}{veto['by_group'][group]:>10.1%}"


def _latency_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    veto_us = result["veto_latency"]
    lines += ["", f"  veto: p50 {veto_us['p50_us']:.1f} us, p99 {veto_us['p99_us']:.1f} us"]
    timing = result["latency"]
    if timing:
        lines.append(
            f"  embedding {timing['question']!r} ({timing['runs']} runs, {timing['cpus']} CPUs):"
        )
        for key in ("model", "embedder"):
            t = timing[key]
            lines.append(f"    {key:9} p50 {t['p50_ms']:.2f} ms  p99 {t['p99_ms']:.2f} ms")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.semantic_eval", description=__doc__)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--latency-runs", type=int, default=300, help="0 skips the latency")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    result = run(args.threshold, args.latency_runs)
    print(json.dumps(result, indent=2) if args.json else render(result))
    return 0 if result["passes"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""PII and secrets detection, measured (issue 15, acceptance 2).

``python -m bench.pii_eval [--n 600] [--seed 15] [--engines builtin,presidio,secrets]
[--json] [--latency-runs 300]``

Scores each engine on the seeded generated set of ``bench.pii_data`` (Faker-style templates
with known spans and hard negatives): per entity type, precision (predicted spans that
overlap a gold span of that type) and recall (gold spans that a prediction of that type
overlaps). Engines: ``builtin`` (``farebox.guardrails.pii_patterns``, no extra), ``presidio``
(``farebox[pii]``: presidio on the packaged small spaCy model) and ``secrets``
(``farebox.guardrails.secrets``, scored as the type SECRET). Then the latency of one
200-character message per engine (p50 and p99), and presidio's load time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.pii_data import Sample, generate
from farebox.core.guardrails import Hit
from farebox.guardrails import pii_patterns, secrets

BUILTIN = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS")
PRESIDIO = (*BUILTIN, "PERSON")
ScanFn = Callable[[str], Sequence[Hit]]


@dataclass
class Score:
    predicted: int = 0
    true_pos: int = 0  # predictions that overlap a gold span of their type
    gold: int = 0
    found: int = 0  # gold spans some prediction of their type overlaps

    @property
    def precision(self) -> float | None:
        return self.true_pos / self.predicted if self.predicted else None

    @property
    def recall(self) -> float | None:
        return self.found / self.gold if self.gold else None


@dataclass
class EngineResult:
    name: str
    scores: dict[str, Score] = field(default_factory=dict)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    load_s: float | None = None


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def score(samples: Sequence[Sample], scan: ScanFn, types: Sequence[str]) -> dict[str, Score]:
    scores = {t: Score() for t in types}
    for sample in samples:
        preds = [(h.start, h.end, h.category) for h in scan(sample.text) if h.category in scores]
        gold = [g for g in sample.spans if g[2] in scores]
        for s, e, t in preds:
            scores[t].predicted += 1
            if any(gt == t and _overlaps((s, e), (gs, ge)) for gs, ge, gt in gold):
                scores[t].true_pos += 1
        for gs, ge, gt in gold:
            scores[gt].gold += 1
            if any(t == gt and _overlaps((s, e), (gs, ge)) for s, e, t in preds):
                scores[gt].found += 1
    return scores


def messages_200(samples: Sequence[Sample], count: int) -> list[str]:
    """``count`` messages of exactly 200 characters, from consecutive samples."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        text = ""
        while len(text) < 200:
            text += samples[i % len(samples)].text + " "
            i += 1
        out.append(text[:200])
    return out


def latency(scan: ScanFn, messages: Sequence[str]) -> tuple[float, float]:
    scan(messages[0])  # warm
    times = []
    for m in messages:
        t0 = time.perf_counter()
        scan(m)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def _secret_scan(text: str) -> list[Hit]:
    return [Hit(h.detector, "SECRET", h.score, h.start, h.end) for h in secrets.scan(text)]


def engines(names: Sequence[str]) -> list[tuple[str, ScanFn, tuple[str, ...], float | None]]:
    out: list[tuple[str, ScanFn, tuple[str, ...], float | None]] = []
    for name in names:
        if name == "builtin":
            out.append((name, lambda t: pii_patterns.scan(t, BUILTIN), BUILTIN, None))
        elif name == "secrets":
            out.append((name, _secret_scan, ("SECRET",), None))
        elif name == "presidio":
            from farebox.guardrails.pii_presidio import load_presidio

            t0 = time.perf_counter()
            engine = load_presidio(PRESIDIO)
            out.append((name, engine.scan, PRESIDIO, time.perf_counter() - t0))
        else:
            raise SystemExit(f"unknown engine {name!r} (builtin, presidio, secrets)")
    return out


def run(n: int, seed: int, names: Sequence[str], latency_runs: int) -> list[EngineResult]:
    samples = generate(n, seed)
    msgs = messages_200(samples, latency_runs)
    results = []
    for name, scan, types, load_s in engines(names):
        result = EngineResult(name, score(samples, scan, types), load_s=load_s)
        result.p50_ms, result.p99_ms = latency(scan, msgs)
        results.append(result)
    return results


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.1f}%"


def markdown(results: Sequence[EngineResult], n: int, seed: int) -> str:
    lines = [
        f"PII detection on {n} generated sentences (seed {seed}), `python -m bench.pii_eval`",
        "",
        "| engine | entity | gold | predicted | precision | recall |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        for entity, s in r.scores.items():
            lines.append(
                f"| {r.name} | {entity} | {s.gold} | {s.predicted} | "
                f"{_pct(s.precision)} | {_pct(s.recall)} |"
            )
    lines += ["", "| engine | p50 (200 chars) | p99 | load |", "| --- | ---: | ---: | ---: |"]
    for r in results:
        load = "-" if r.load_s is None else f"{r.load_s:.2f} s"
        lines.append(f"| {r.name} | {r.p50_ms:.3f} ms | {r.p99_ms:.3f} ms | {load} |")
    return "\n".join(lines)


def as_json(results: Sequence[EngineResult]) -> list[dict[str, Any]]:
    return [
        {
            "engine": r.name,
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "load_s": r.load_s,
            "scores": {
                e: {"gold": s.gold, "predicted": s.predicted, "precision": s.precision,
                    "recall": s.recall}
                for e, s in r.scores.items()
            },
        }
        for r in results
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pii_eval", description=__doc__)
    parser.add_argument("--n", type=int, default=600, help="sentences (at least 500)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--engines", default="builtin,presidio,secrets")
    parser.add_argument("--latency-runs", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results = run(args.n, args.seed, args.engines.split(","), args.latency_runs)
    if args.json:
        json.dump(as_json(results), sys.stdout, indent=2)
        print()
    else:
        print(markdown(results, args.n, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

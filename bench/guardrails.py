"""``python -m bench --guardrails off|rules|classifier``: the request path with prompt
injection's guardrail on, and the added cost read against a run without it.

With ``--guardrails`` every chat request (direct and through the gateway) carries a typical
200-character user message instead of ``hello``, so the three runs compare like with like:

```
.venv/bin/python -m bench --guardrails off        --output bench/results/guard-off.json
.venv/bin/python -m bench --guardrails rules      --output bench/results/guard-rules.json
.venv/bin/python -m bench --guardrails classifier --output bench/results/guard-classifier.json
.venv/bin/python -m bench.guardrails bench/results/guard-off.json \\
    bench/results/guard-rules.json bench/results/guard-classifier.json
```

``rules`` gives the bench plan ``guardrails: {prompt_injection: {mode: block}}`` (layer 1);
``classifier`` adds ``classifier: on`` (layer 2, ``farebox[guard-model]``) with
``--guard-timeout-ms`` (the plan's ``timeout_ms``, 200) and ``on_timeout: flag``, so that a
request the classifier cannot answer in time is forwarded (and flagged), not refused, and
``guard_model: {cache: 0}``: the bench sends the same message every time, and each must be
scored, not answered from the score cache. The last
command prints what each run adds over the first: p50 and p99 at c=1, and the c=64 throughput.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MODES = ("off", "rules", "classifier")
# 200 characters, the shape of an ordinary user question
MESSAGE = (
    "Hi! We're planning a weekend in Lisbon with two kids (6 and 10). Could you suggest three "
    "family-friendly activities, a good area to stay in, and the cheapest way to get from the "
    "airport to the centre?"
)


def plan_lines(mode: str | None, timeout_ms: int = 200) -> str:
    """The bench plan's ``guardrails:`` line (indented as a key of the plan), or nothing."""
    if mode in (None, "off"):
        return ""
    injection, top = "mode: block", ""
    if mode == "classifier":
        injection += f", classifier: on, timeout_ms: {timeout_ms}, on_timeout: flag"
        # the bench sends one message again and again: no score cache, every request scored
        top = "guard_model: {cache: 0}\n"
    return f"    guardrails: {{prompt_injection: {{{injection}}}}}\n" + top


def chat_body(base: dict[str, Any], mode: str | None) -> dict[str, Any]:
    """``base`` with the 200-character message when ``--guardrails`` is given at all."""
    if mode is None:
        return base
    return {**base, "messages": [{"role": "user", "content": MESSAGE}]}


def _get(doc: dict[str, Any], side: str, job: str, *path: str) -> float | None:
    value: Any = doc.get(side, {}).get(job)
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


def compare(paths: list[str]) -> str:
    """What each run adds over the first (its baseline): c=1 p50/p99, c=64 req/s."""
    docs = [json.loads(Path(p).read_text()) for p in paths]
    base = docs[0]
    head = f"{'run':<36}{'c=1 p50':>10}{'+p50':>9}{'c=1 p99':>10}{'+p99':>9}{'c=64 req/s':>12}"
    lines = [head + f"{'errors':>8}"]
    for path, doc in zip(paths, docs, strict=True):
        mode = doc.get("meta", {}).get("options", {}).get("guardrails") or "-"
        row = f"{mode + ' (' + Path(path).stem + ')':<36}"
        for pct in ("p50_ms", "p99_ms"):
            value = _get(doc, "gateway", "c1", "latency", pct)
            baseline = _get(base, "gateway", "c1", "latency", pct)
            row += f"{value:>10.3f}" if value is not None else f"{'-':>10}"
            more = None if value is None or baseline is None else value - baseline
            row += f"{more:>+9.3f}" if more is not None else f"{'-':>9}"
        rps, errors = _get(doc, "gateway", "c64", "rps"), _get(doc, "gateway", "c64", "errors")
        row += f"{rps:>12.0f}" if rps is not None else f"{'-':>12}"
        row += f"{errors:>8.0f}" if errors is not None else f"{'-':>8}"
        lines.append(row)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if len(paths) < 2:
        print("usage: python -m bench.guardrails BASELINE.json RUN.json [RUN.json ...]")
        return 2
    print(compare(paths))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

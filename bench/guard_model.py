"""Prompt injection's classifier alone (``farebox[guard-model]``): ``ClassifierRunner.scores``
on a typical 200-character user message, in process, no HTTP.

```
.venv/bin/python -m bench.guard_model                     # nanoguard, c=1 then c=64
.venv/bin/python -m bench.guard_model --path DIR          # an operator's own checkpoint
.venv/bin/python -m bench.guard_model --threads 2 --max-batch 32 --duration 20
```

It reports, per request (one message, queue and thread hand-off included): p50/p99 at
concurrency 1 (``--requests`` sequential calls after a warm-up), and at concurrency
``--concurrency`` for ``--duration`` seconds the throughput, p50/p99 and the timeouts (a
request waits at most ``--timeout-ms``, as a plan's ``timeout_ms``; a full queue is a timeout
at once). The model's own time on the same message (no runner) is the first line, for
comparison. Results go to ``bench/results/guard-model-latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.guardrails import MESSAGE
from bench.run import machine_meta
from bench.stats import Latency, summarize
from farebox.guardrails.classifier import ClassifierRunner, ClassifierTimeout, load_classifier

RESULTS = Path(__file__).resolve().parent / "results" / "guard-model-latest.json"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.guard_model", description=__doc__)
    p.add_argument("--path", help="a local checkpoint directory (default: nanoguard)")
    p.add_argument("--requests", type=int, default=300, help="sequential requests at c=1")
    p.add_argument("--warmup", type=int, default=20, help="warm-up requests")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of c=N load")
    p.add_argument("--threads", type=int, default=1, help="runner threads (guard_model.threads)")
    p.add_argument("--queue", type=int, default=64, help="texts that may wait (guard_model.queue)")
    p.add_argument("--max-batch", type=int, default=16, help="texts per model call")
    p.add_argument("--int8", action="store_true", help="nanoguard with int8 weights")
    p.add_argument("--timeout-ms", type=int, default=200, help="a plan's timeout_ms (200)")
    p.add_argument("--output", help=f"JSON results path (default {RESULTS})")
    return p


def message(i: int) -> str:
    """The message, varied a little per request (same length, different tokens)."""
    return MESSAGE[:-4] + f"{i % 1000:03d}?"


def cpu_ms() -> float:
    """CPU time of this process so far (every thread), in milliseconds: what a request costs
    whatever else the machine runs."""
    return time.process_time() * 1000


def model_alone(model: Any, n: int) -> Latency:
    samples = []
    for i in range(n):
        start = time.perf_counter_ns()
        model.scores([message(i)])
        samples.append(time.perf_counter_ns() - start)
    return summarize(samples)


async def sequential(runner: ClassifierRunner, n: int) -> Latency:
    samples = []
    for i in range(n):
        start = time.perf_counter_ns()
        await runner.scores([message(i)], timeout_ms=60_000)
        samples.append(time.perf_counter_ns() - start)
    return summarize(samples)


async def loaded(
    runner: ClassifierRunner, concurrency: int, duration: float, timeout_ms: int
) -> dict[str, Any]:
    samples: list[int] = []
    timeouts = 0
    stop = time.monotonic() + duration

    async def client(c: int) -> None:
        nonlocal timeouts
        i = c
        while time.monotonic() < stop:
            start = time.perf_counter_ns()
            try:
                await runner.scores([message(i)], timeout_ms=timeout_ms)
            except ClassifierTimeout:
                timeouts += 1
                # refused at once: in the gateway the request goes on (upstream: about 1 ms)
                await asyncio.sleep(0.001)
            else:
                samples.append(time.perf_counter_ns() - start)
            i += concurrency

    began, cpu = time.monotonic(), cpu_ms()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    elapsed, cpu = time.monotonic() - began, cpu_ms() - cpu
    return {
        "cpu_ms_per_scored": cpu / max(1, len(samples)),
        "scored_per_s": len(samples) / elapsed,
        "answered_per_s": (len(samples) + timeouts) / elapsed,
        "timeouts": timeouts,
        "latency": dataclasses.asdict(summarize(samples)),
    }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    model = load_classifier("local" if args.path else "nanoguard", args.path,
                            max_batch=args.max_batch, int8=args.int8)  # fmt: skip
    load_s = time.perf_counter() - began
    model_alone(model, args.warmup)
    cpu = cpu_ms()
    alone = model_alone(model, min(args.requests, 100))
    alone_cpu = (cpu_ms() - cpu) / min(args.requests, 100)
    runner = ClassifierRunner(
        model, args.queue, threads=args.threads, max_batch=args.max_batch, cache=0
    )  # no score cache: every request is scored
    try:
        await sequential(runner, args.warmup)
        cpu = cpu_ms()
        c1 = await sequential(runner, args.requests)
        c1_cpu = (cpu_ms() - cpu) / args.requests
        load = await loaded(runner, args.concurrency, args.duration, args.timeout_ms)
        unbounded = await loaded(runner, args.concurrency, args.duration / 2, 600_000)
    finally:
        await runner.close()
    return {
        "meta": machine_meta() | {"options": vars(args), "message_chars": len(MESSAGE)},
        "load_s": load_s,
        "model_alone_c1": dataclasses.asdict(alone) | {"cpu_ms_per_request": alone_cpu},
        "runner_c1": dataclasses.asdict(c1) | {"cpu_ms_per_request": c1_cpu},
        "load_average": os.getloadavg(),
        f"runner_c{args.concurrency}": load,
        f"runner_c{args.concurrency}_no_timeout": unbounded,
    }


def render(doc: dict[str, Any], concurrency: int) -> str:
    def row(name: str, lat: dict[str, Any], extra: str = "") -> str:
        cpu = lat.get("cpu_ms_per_request")
        extra = f"CPU {cpu:.1f} ms/request" if cpu is not None else extra
        return f"{name:<46} p50 {lat['p50_ms']:8.2f} ms  p99 {lat['p99_ms']:8.2f} ms  {extra}"

    load, free = doc[f"runner_c{concurrency}"], doc[f"runner_c{concurrency}_no_timeout"]
    timeout_ms = doc["meta"]["options"]["timeout_ms"]
    return "\n".join([
        f"guard model: {doc['meta']['options']['path'] or 'nanoguard'}"
        f"{' int8' if doc['meta']['options']['int8'] else ''} "
        f"(loaded in {doc['load_s']:.1f} s), a {doc['meta']['message_chars']}-char message",
        row("model alone, c=1", doc["model_alone_c1"]),
        row("ClassifierRunner.scores, c=1", doc["runner_c1"]),
        row(f"ClassifierRunner.scores, c={concurrency}, timeout {timeout_ms} ms", load["latency"],
            f"{load['scored_per_s']:.1f} scored/s, {load['timeouts']} timeouts, "
            f"CPU {load['cpu_ms_per_scored']:.1f} ms/scored"),
        row(f"ClassifierRunner.scores, c={concurrency}, no timeout", free["latency"],
            f"{free['scored_per_s']:.1f} scored/s, CPU {free['cpu_ms_per_scored']:.1f} ms/scored"),
        "load average during the run (1, 5, 15 min): "
        + ", ".join(f"{x:.2f}" for x in doc["load_average"]),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    doc = asyncio.run(measure(args))
    print(render(doc, args.concurrency))
    path = Path(args.output) if args.output else RESULTS
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2))
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

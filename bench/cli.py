"""Command line of ``python -m bench``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Options:
    duration: float
    requests: int
    concurrency: int
    warmup_requests: int
    warmup_duration: float
    timeout: float
    workers: int
    mode: str
    pin: bool
    gateway_url: str | None
    key: str | None
    upstream_url: str | None
    upstream_key: str | None
    gateway_pid: int | None
    upstream_only: bool
    stream_delay_ms: float
    keep_tmp: bool
    output: str | None
    guardrails: str | None = None
    guard_timeout_ms: int = 200


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure the overhead Farebox adds over a fast mock OpenAI upstream "
        "and compare it with the DESIGN.md section 7 performance budget.",
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds of c=N load (10)")
    p.add_argument("--requests", type=int, default=2000, help="sequential requests at c=1 (2000)")
    p.add_argument("--concurrency", type=int, default=64, help="clients in the load test (64)")
    p.add_argument("--warmup-requests", type=int, default=200, help="c=1 warm-up requests (200)")
    p.add_argument("--warmup-duration", type=float, default=2.0, help="load warm-up seconds (2)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout seconds (10)")
    p.add_argument("--workers", type=int, default=1, help="passed to `farebox serve --workers`")
    p.add_argument(
        "--mode",
        choices=("default", "shared", "single"),
        default="default",
        help="SQLite mode of the gateway: default (no server.single_process line, what a plain "
        "`farebox serve` picks), shared (single_process: false) or single (true)",
    )
    p.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not give the gateway a CPU of its own (default: pin when workers == 1)",
    )
    _external_args(p)
    p.add_argument("--stream-delay-ms", type=float, default=0.0, help="mock delay between events")
    p.add_argument("--keep-tmp", action="store_true", help="keep the gateway's temp dir and log")
    p.add_argument("--output", help="JSON results path (default bench/results/latest.json)")
    p.add_argument(
        "--guardrails",
        choices=("off", "rules", "classifier"),
        help="prompt injection's guardrail in the bench plan (rules: mode block; classifier: "
        "and classifier on), with a 200-char message in every chat request; compare runs with "
        "python -m bench.guardrails (see bench/guardrails.py)",
    )
    p.add_argument(
        "--guard-timeout-ms", type=int, default=200, help="--guardrails classifier: timeout_ms"
    )
    return p


def _external_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("measuring something already running")
    group.add_argument("--gateway-url", help="measure this running gateway (needs --key)")
    group.add_argument("--key", help="tenant key for --gateway-url")
    group.add_argument("--upstream-url", help="upstream base URL the running gateway uses")
    group.add_argument("--upstream-key", help="bearer key for --upstream-url, if it needs one")
    group.add_argument("--gateway-pid", type=int, help="pid of --gateway-url, to read its RSS")
    group.add_argument(
        "--upstream-only", action="store_true", help="only measure the mock upstream"
    )


def parse(argv: list[str] | None = None) -> Options:
    p = parser()
    args = p.parse_args(argv)
    if args.gateway_url and not (args.key and args.upstream_url):
        p.error("--gateway-url needs --key and --upstream-url")
    if args.concurrency < 1 or args.requests < 1 or args.duration <= 0:
        p.error("--concurrency, --requests and --duration must be positive")
    return Options(**vars(args))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["fleet"]:  # python -m bench fleet ...: the scaled-out bench (bench/fleet.py)
        from bench.fleet import main as fleet_main

        return fleet_main(args[1:])
    from bench.run import run

    return run(parse(args))

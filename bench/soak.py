"""Soak test: ``python -m bench.soak [--minutes 30]``.

Starts the mock upstream and ``farebox serve`` (embedded SQLite, one worker) on loopback,
drives a modest, bounded mix of traffic for ``--minutes`` (chat, streams read fully and
abandoned, embeddings, /v1/messages, requests to deployments that fail, malformed requests,
bursts over a concurrency limit, admin reads, and keys created, used and revoked), samples the
gateway's RSS every ``--sample-s`` seconds, and then checks the state traffic left behind.
Prints a summary, writes ``bench/results/soak-latest.json``, exits 0 on PASS and 1 on FAIL.
Ctrl-C stops the traffic early and still checks and reports (twice: report without checking).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import soak_probe as probe
from bench import soak_report as report
from bench.gateway import GatewayError
from bench.procs import new_event_loop
from bench.run import machine_meta
from bench.soak_setup import Settings, SoakGateway
from bench.soak_traffic import DEFAULT_WEIGHTS, KINDS, Driver, Tally, TrafficPlan
from bench.upstream import Upstream, UpstreamOptions


@dataclass(frozen=True)
class Options:
    minutes: float
    sample_s: float
    rate: float
    concurrency: int
    timeout: float
    churn_s: float
    settle_s: float
    max_body_bytes: int
    stream_delay_ms: float
    single_process: bool
    seed: int
    mix: dict[str, float]
    keep_tmp: bool
    output: str | None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0, help="minutes of traffic (30)")
    p.add_argument("--sample-s", type=float, default=10.0, help="seconds between RSS samples (10)")
    p.add_argument("--rate", type=float, default=100.0, help="requests per second in all (100)")
    p.add_argument("--concurrency", type=int, default=32, help="most requests at once (32)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout seconds (30)")
    p.add_argument("--churn-s", type=float, default=5.0, help="seconds between key churns (5)")
    p.add_argument(
        "--settle-s", type=float, default=30.0, help="how long holds may take to clear (30)"
    )
    p.add_argument("--max-body-bytes", type=int, default=256 * 1024, help="server.max_body_bytes")
    p.add_argument("--stream-delay-ms", type=float, default=5.0, help="mock delay between events")
    p.add_argument(
        "--single-process", action="store_true", help="server.single_process (default: shared)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--mix",
        default="",
        help="weight overrides, e.g. malformed=0,burst=5 (kinds: " + ", ".join(KINDS) + ")",
    )
    p.add_argument("--keep-tmp", action="store_true", help="keep the gateway's temp dir and log")
    p.add_argument("--output", help="JSON results path (default bench/results/soak-latest.json)")
    return p


def parse(argv: list[str] | None = None) -> Options:
    p = parser()
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.sample_s <= 0 or args.rate <= 0 or args.concurrency < 1:
        p.error("--minutes, --sample-s, --rate and --concurrency must be positive")
    if args.timeout <= 0 or args.settle_s < 0 or args.churn_s < 0:
        p.error("--timeout must be positive, --settle-s and --churn-s not negative")
    try:
        args.mix = parse_mix(args.mix)
    except ValueError as err:
        p.error(f"--mix: {err}")
    return Options(**vars(args))


def parse_mix(text: str) -> dict[str, float]:
    """``kind=weight,...`` over the default weights."""
    weights = dict(DEFAULT_WEIGHTS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, value = item.partition("=")
        if not sep or kind.strip() not in KINDS:
            raise ValueError(f"expected KIND=WEIGHT with KIND one of {', '.join(KINDS)}: {item!r}")
        weight = float(value)
        if not weight >= 0:
            raise ValueError(f"weight must be a number >= 0: {item!r}")
        weights[kind.strip()] = weight
    if not any(weights.values()):
        raise ValueError("every weight is 0")
    return weights


def log(message: str) -> None:
    print(f"[soak] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    opts = parse(argv)
    signal.signal(signal.SIGTERM, lambda signum, _frame: _raise_exit(signum))
    upstream_key = "sk-soak-" + secrets.token_hex(8)
    with contextlib.ExitStack() as stack:
        upstream = Upstream(UpstreamOptions(upstream_key, opts.stream_delay_ms))
        stack.callback(upstream.stop)
        upstream.start()
        settings = Settings(upstream.base_url, opts.max_body_bytes, opts.single_process)
        gateway = SoakGateway(settings, upstream_key, opts.keep_tmp)
        stack.callback(_stop_gateway, gateway)
        try:
            gateway.start()
            keys = gateway.provision()
        except GatewayError as err:
            log(f"{err}\n--- gateway log tail ---\n{gateway.log_tail()}")
            return 2
        assert gateway.proc is not None
        log(f"gateway {gateway.url} pid {gateway.proc.pid}, dir {gateway.dir}")
        doc = _run_loop(opts, gateway, keys)
        tracebacks = gateway.tracebacks()
    doc["tracebacks"] = sum(tracebacks.values())
    doc["traceback_lines"] = dict(tracebacks.most_common(20))
    return _finish(opts, doc)


def _raise_exit(signum: int) -> None:
    raise SystemExit(128 + signum)


def _stop_gateway(gateway: SoakGateway) -> None:
    code = gateway.stop()
    log(f"gateway stopped (exit code {code})")


def _run_loop(opts: Options, gateway: SoakGateway, keys: dict[str, str]) -> dict[str, Any]:
    loop = new_event_loop()
    try:
        return loop.run_until_complete(soak(opts, gateway, keys))
    finally:
        loop.close()


async def soak(opts: Options, gateway: SoakGateway, keys: dict[str, str]) -> dict[str, Any]:
    """Traffic for ``opts.minutes`` (or until a signal), then the checks; the JSON document."""
    assert gateway.proc is not None
    stop, hurry, signalled = asyncio.Event(), asyncio.Event(), asyncio.Event()
    restore = _on_signals(stop, hurry, signalled)
    tally = Tally()
    plan = TrafficPlan(
        opts.rate,
        opts.concurrency,
        opts.timeout,
        opts.churn_s,
        opts.max_body_bytes,
        opts.seed,
        opts.mix,
    )
    driver = Driver(gateway.port, keys, gateway.admin_key, plan, tally, stop)
    samples: list[probe.Sample] = []
    started = time.monotonic()
    sampling = asyncio.create_task(
        probe.sampler(
            gateway.proc, gateway.database, opts.sample_s, started, lambda: tally.total,
            samples, stop,
        )
    )  # fmt: skip
    timer = asyncio.get_running_loop().call_later(opts.minutes * 60.0, stop.set)
    try:
        await driver.run()
        duration = time.monotonic() - started
        stalls = await sampling
        after = await _after(opts, gateway, keys, hurry)
    finally:
        timer.cancel()
        sampling.cancel()
        restore()
    doc = _document(opts, duration, samples, tally, driver, after)
    doc["stalls"] = stalls
    doc["interrupted"] = signalled.is_set()
    doc["gateway_exit_code"] = gateway.proc.poll()
    return doc


def _on_signals(
    stop: asyncio.Event, hurry: asyncio.Event, signalled: asyncio.Event
) -> Callable[[], None]:
    """First SIGINT/SIGTERM: stop traffic, then check and report. Second: skip the checks."""
    loop = asyncio.get_running_loop()

    def handler() -> None:
        if signalled.is_set():
            hurry.set()
            log("second signal: reporting without the after-traffic checks")
        else:
            log("signal: stopping traffic, then checking and reporting (again to hurry)")
        signalled.set()
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, handler)

    def restore() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

    return restore


async def _after(
    opts: Options, gateway: SoakGateway, keys: dict[str, str], hurry: asyncio.Event
) -> dict[str, Any]:
    traffic_keys = {t: k for t, k in keys.items() if t != "churn"}
    skipped = {"skipped": True}
    if hurry.is_set():
        return {
            "settle": {"clear": False, "held": {}, **skipped},
            "unsettled": {"count": None, "error": "skipped"},
            "slots": {"ok": False, "outcomes": ["skipped"]},
            "settle_s": opts.settle_s,
            "ledger": "skipped",
        }
    log("traffic stopped; checking holds, unsettled entries and concurrency slots")
    settle = await probe.settle(gateway.port, traffic_keys, opts.settle_s)
    return {
        "settle": settle,
        "unsettled": await probe.unsettled(gateway.port, gateway.admin_key),
        "slots": await probe.slots_free(gateway.port, keys["limited"]),
        "settle_s": opts.settle_s,
        "ledger": probe.ledger_statuses(gateway.database),
    }


def _document(
    opts: Options,
    duration: float,
    samples: list[probe.Sample],
    tally: Tally,
    driver: Driver,
    after: dict[str, Any],
) -> dict[str, Any]:
    rows = [s.to_json() for s in samples]
    return {
        "meta": _meta(opts),
        "duration_s": round(duration, 1),
        "samples": rows,
        "memory": report.memory(rows, duration).to_json(),
        "traffic": tally.to_json(),
        "unexpected_5xx": tally.unexpected_5xx(),
        "timeouts": tally.timeouts(),
        "churn": dict(driver.churned),
        "after": after,
    }


def _meta(opts: Options) -> dict[str, Any]:
    return {**machine_meta(), "options": dataclasses.asdict(opts)}


def _finish(opts: Options, doc: dict[str, Any]) -> int:
    verdicts = report.checks(doc)
    doc["checks"] = [dataclasses.asdict(c) for c in verdicts]
    doc["verdict"] = "FAIL" if any(c.status == "FAIL" for c in verdicts) else "PASS"
    print(report.render(doc, verdicts))
    path = report.write_json(doc, Path(opts.output) if opts.output else report.RESULTS_PATH)
    print(f"\nresults written to {path}")
    return 0 if doc["verdict"] == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())

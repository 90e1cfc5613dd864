"""One benchmark run: start the processes, measure direct vs gateway, report, clean up."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report
from bench.cli import Options
from bench.gateway import (
    CHAT_BODY,
    RESPONSES_BODY,
    STREAM_BODY,
    Gateway,
    GatewayError,
    farebox_available,
    probe,
)
from bench.guardrails import chat_body, plan_lines
from bench.load import Endpoint, Job, JobResult, LoadWorker
from bench.procs import CpuPlan, loop_name, plan_cpus, rss_mib
from bench.upstream import Upstream, UpstreamOptions


@dataclass(frozen=True)
class Target:
    """Where the gateway under test listens, and how to reach and observe it."""

    url: str
    key: str
    pid: int | None


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _exit_on_sigterm() -> None:
    """Turn SIGTERM (and SIGINT, even when inherited as ignored) into a clean unwind."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run(opts: Options) -> int:
    _exit_on_sigterm()
    plan = plan_cpus(opts.pin, opts.workers, external_gateway=bool(opts.gateway_url))
    results = report.Results(meta=_meta(opts, plan), plan=plan, skip_gateway=opts.upstream_only)
    with contextlib.ExitStack() as stack:
        upstream_url, upstream_key = _upstream(opts, plan, stack)
        loader = load_worker(plan, stack)
        target = _gateway(opts, plan, upstream_url, upstream_key, results, stack)
        _measure(opts, loader, Endpoint.from_url(upstream_url), upstream_key, target, results)
    return finish(report, results, opts.output)


def finish(reporting: Any, results: Any, output: str | None) -> int:
    """Print the table and the budgets with PASS/FAIL, write the JSON (to ``output``, else the
    report's ``RESULTS_PATH``); 1 when a budget fails. ``reporting``: ``bench.report`` or a
    module like it (``checks``, ``render``, ``to_json``, ``write_json``, ``RESULTS_PATH``)."""
    verdicts = reporting.checks(results)
    print(reporting.render(results, verdicts))
    doc = reporting.to_json(results, verdicts)
    path = reporting.write_json(doc, Path(output) if output else reporting.RESULTS_PATH)
    print(f"\nresults written to {path}")
    return 1 if any(c.status == "FAIL" for c in verdicts) else 0


def machine_meta(plan: CpuPlan | None = None) -> dict[str, Any]:
    """Where and when a bench ran: the time, Python, platform, CPUs, event loop and (given
    ``plan``) the CPU placement."""
    meta: dict[str, Any] = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "loop": loop_name(),
    }
    if plan is not None:
        meta["pinning"] = plan.describe()
    return meta


def _meta(opts: Options, plan: CpuPlan) -> dict[str, Any]:
    options = dataclasses.asdict(opts) | {"key": None, "upstream_key": None}
    return {**machine_meta(plan), "options": options}


def mock_upstream(
    plan: CpuPlan, stack: contextlib.ExitStack, **options: Any
) -> tuple[Upstream, str]:
    """The mock upstream on the helpers' CPUs under a new key (``options``: the rest of its
    ``UpstreamOptions``), stopped when ``stack`` closes; it and its key."""
    key = "sk-bench-" + secrets.token_hex(8)
    upstream = Upstream(UpstreamOptions(api_key=key, **options), plan.helpers)
    stack.callback(upstream.stop)
    upstream.start()
    return upstream, key


def load_worker(plan: CpuPlan, stack: contextlib.ExitStack) -> LoadWorker:
    """The load generator on the helpers' CPUs, stopped when ``stack`` closes."""
    loader = LoadWorker(plan.helpers).start()
    stack.callback(loader.stop)
    return loader


def _upstream(opts: Options, plan: CpuPlan, stack: contextlib.ExitStack) -> tuple[str, str | None]:
    if opts.upstream_url:
        return opts.upstream_url, opts.upstream_key
    upstream, key = mock_upstream(plan, stack, stream_delay_ms=opts.stream_delay_ms)
    log(f"mock upstream on {upstream.base_url} (pid {upstream.pid})")
    return upstream.base_url, key


def _gateway(
    opts: Options,
    plan: CpuPlan,
    upstream_url: str,
    upstream_key: str | None,
    results: report.Results,
    stack: contextlib.ExitStack,
) -> Target | None:
    if opts.upstream_only:
        return None
    if opts.gateway_url and opts.key:
        return Target(opts.gateway_url, opts.key, opts.gateway_pid)
    ok, output = farebox_available()
    if not ok:
        last = output.splitlines()[-1] if output else "no output"
        results.gateway_error = f"`python -m farebox serve --help` fails: {last}"
        log(results.gateway_error)
        return None
    gateway = Gateway(
        upstream_url, upstream_key or "", opts.workers, plan.gateway, opts.keep_tmp, opts.mode,
        plan_lines(opts.guardrails, opts.guard_timeout_ms),
    )  # fmt: skip
    stack.callback(_stop_gateway, gateway)
    return _start_gateway(gateway, results)


def _start_gateway(gateway: Gateway, results: report.Results) -> Target | None:
    try:
        gateway.start()
        assert gateway.proc is not None
        results.rss_mib["start"] = rss_mib(gateway.proc.pid)
        log(f"gateway on {gateway.url} (pid {gateway.proc.pid}, log {gateway.log_path})")
        results.meta["gateway_mode"] = gateway.mode_line()
        log(results.meta["gateway_mode"] or "gateway mode: not reported")
        key = gateway.provision_key()
    except GatewayError as err:
        results.gateway_error = f"{err}\n--- gateway log tail ---\n{gateway.log_tail()}"
        log(results.gateway_error)
        return None
    return Target(gateway.url, key, gateway.proc.pid)


def _stop_gateway(gateway: Gateway) -> None:
    code = gateway.stop()
    log(f"gateway stopped (exit code {code})")


# --- measurements ---------------------------------------------------------------------


def _job(
    opts: Options,
    name: str,
    ep: Endpoint,
    key: str | None,
    body: dict[str, Any],
    path: str = "/chat/completions",
) -> Job:
    request = ep.request(path, json.dumps(body).encode(), key)
    return Job(name, ep.host, ep.port, request, timeout_s=opts.timeout)


def _sequential(opts: Options, job: Job) -> Job:
    return dataclasses.replace(job, requests=opts.requests, warmup_requests=opts.warmup_requests)


def _loaded(opts: Options, job: Job, warmup: bool = True) -> Job:
    return dataclasses.replace(
        job,
        concurrency=opts.concurrency,
        duration_s=opts.duration,
        warmup_s=opts.warmup_duration if warmup else 0.0,
    )


def _measure(
    opts: Options,
    loader: LoadWorker,
    upstream: Endpoint,
    upstream_key: str | None,
    target: Target | None,
    results: report.Results,
) -> None:
    if target is not None:
        results.probes = probe(target.url, target.key)
        log(f"probes: {results.probes}")
    chat = chat_body(CHAT_BODY, opts.guardrails)
    for name, body in (("c1", chat), ("stream", chat_body(STREAM_BODY, opts.guardrails))):
        direct = _sequential(opts, _job(opts, name, upstream, upstream_key, body))
        results.direct[name] = _run(loader, direct, "direct")
        if target and _probe_ok(results, name):
            _measure_sequential(opts, loader, name, body, target, results)
    if target and results.probes.get("responses") == "ok":
        _measure_responses(opts, loader, target, results)
    direct = _loaded(opts, _job(opts, "c64", upstream, upstream_key, chat))
    results.direct["c64"] = _run(loader, direct, "direct")
    if target and _probe_ok(results, "c64"):
        job = _job(opts, "c64", Endpoint.from_url(target.url), target.key, chat)
        _measure_load(opts, loader, job, target, results)


def _measure_sequential(
    opts: Options,
    loader: LoadWorker,
    name: str,
    body: dict[str, Any],
    target: Target,
    results: report.Results,
) -> None:
    """c=1 through the gateway: on the load generator's CPU, then (for c1) on its own."""
    job = _sequential(opts, _job(opts, name, Endpoint.from_url(target.url), target.key, body))
    shared = results.plan.place_gateway(target.pid, shared=True)
    try:
        results.gateway[name] = _run(loader, job, "gateway")
    finally:
        results.plan.place_gateway(target.pid, shared=False)
    if shared and name == "c1":
        split = dataclasses.replace(job, name="c1-split")
        results.gateway["c1-split"] = _run(loader, split, "gateway (own CPU)")


def _measure_responses(
    opts: Options, loader: LoadWorker, target: Target, results: report.Results
) -> None:
    """c=1 through the gateway's Responses API (the chat request of ``c1`` as Responses), on
    the load generator's CPU as ``c1`` is: its added latency is read against the same direct
    chat call, so the two differ by what the Responses path costs."""
    ep = Endpoint.from_url(target.url)
    job = _sequential(opts, _job(opts, "responses", ep, target.key, RESPONSES_BODY, "/responses"))
    results.plan.place_gateway(target.pid, shared=True)
    try:
        results.gateway["responses"] = _run(loader, job, "gateway")
    finally:
        results.plan.place_gateway(target.pid, shared=False)


def _probe_ok(results: report.Results, name: str) -> bool:
    probe_name = "stream" if name == "stream" else "chat"
    return results.probes.get(probe_name) == "ok"


def _run(loader: LoadWorker, job: Job, side: str) -> JobResult:
    log(f"{side} {job.name}: c={job.concurrency} " + _extent(job))
    result = loader.run(job)
    log(f"  -> {result.rps:.0f} req/s, p50 {result.latency.p50_ms:.3f} ms, errors {result.errors}")
    return result


def _extent(job: Job) -> str:
    return f"{job.duration_s:g}s" if job.duration_s else f"{job.requests} requests"


def _measure_load(
    opts: Options, loader: LoadWorker, job: Job, target: Target, results: report.Results
) -> None:
    pid = target.pid
    if pid:
        results.rss_mib["before load"] = rss_mib(pid)
    warm = dataclasses.replace(job, name="c64-warmup", concurrency=opts.concurrency)
    _run(loader, dataclasses.replace(warm, duration_s=opts.warmup_duration), "gateway")
    if pid:
        results.rss_mib["after warm-up"] = rss_mib(pid)
    main = _loaded(opts, job, warmup=False)
    log(f"gateway c64: c={main.concurrency} {main.duration_s:g}s (sampling RSS)")
    result, samples = _sampled(loader, main, pid)
    log(f"  -> {result.rps:.0f} req/s, p50 {result.latency.p50_ms:.3f} ms, errors {result.errors}")
    results.gateway["c64"] = result
    results.rss_samples = samples
    if pid:
        results.rss_mib["after load"] = rss_mib(pid)


def _sampled(
    loader: LoadWorker, job: Job, pid: int | None
) -> tuple[JobResult, list[tuple[float, float]]]:
    """Run ``job`` while sampling the gateway's RSS twice a second."""
    loader.submit(job)
    start = time.monotonic()
    deadline = start + job.max_seconds()
    samples: list[tuple[float, float]] = []
    while time.monotonic() < deadline:
        if pid:
            samples.append((round(time.monotonic() - start, 2), round(rss_mib(pid), 2)))
        result = loader.poll(0.5)
        if result is not None:
            return result, samples
    raise TimeoutError(f"load job {job.name!r} did not finish in {job.max_seconds():.0f}s")

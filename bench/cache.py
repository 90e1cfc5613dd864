"""The response cache's bench (``python -m bench.cache``): issue [12] acceptance 6.

On 127.0.0.1 it starts the mock upstream and the load generator (``bench.upstream``,
``bench.load``) and one ``farebox serve`` (SQLite, one worker, in-process cache) whose plans
differ only in ``cache.mode`` (``bench.cache_setup``), then measures:

1. an exact hit at c=1: p50 total latency as the client sees it (budget 0.3 ms);
2. the exact cache on a miss: c=1 runs of distinct prompts (every one a miss, each stored),
   alternating with the same runs on the plan with the cache off; the difference of the
   runs' median p50 (budget 0.05 ms);
3. the semantic lookup: the same c=1 runs on the semantic plan (prompts with nothing in
   common: each misses the exact cache, is embedded by the local MiniLM, searched and stored),
   p50 and p99, and what they add over the cache-off runs;
4. throughput at c=64 for a 50% hit mix (every other request one of 32 stored prompts, the
   others new), beside the same load with every request new on the plan with the cache off;
5. memory per 10,000 cached entries: the gateway's RSS growth over 10,000 new prompts on the
   exact plan, less its growth over 10,000 on the cache-off plan (what requests alone cost),
   and the store's own bytes per entry (``GET /admin/v1/tenants/{id}/cache``).

As in ``python -m bench``, the c=1 runs put the gateway on the load generator's CPU and the
c=64 runs give it a CPU of its own (``--no-pin``: neither). It prints a table and the budgets
with PASS/FAIL, writes ``bench/results/cache-latest.json`` and exits 1 when a budget fails.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from bench import cache_report as report
from bench.cache_setup import CacheGateway, chat, prompts
from bench.gateway import GatewayError, http
from bench.load import Endpoint, Job, JobResult, LoadWorker
from bench.procs import CpuPlan, plan_cpus, rss_mib
from bench.run import _exit_on_sigterm, finish, load_worker, log, machine_meta, mock_upstream

HIT_PROMPTS = 32  # the stored prompts of the c=64 mix
NEW_PER_S = 8000  # new prompts made per second of c=64 load (half the requests of 16,000/s)


@dataclass(frozen=True)
class CacheOptions:
    requests: int
    warmup_requests: int
    rounds: int
    semantic_requests: int
    duration: float
    concurrency: int
    entries: int
    timeout: float
    pin: bool
    keep_tmp: bool
    output: str | None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.cache",
        description="The response cache's latency, throughput and memory (issue 12).",
    )
    p.add_argument("--requests", type=int, default=1000, help="c=1 requests per run (1000)")
    p.add_argument("--warmup-requests", type=int, default=200, help="c=1 warm-up (200)")
    p.add_argument("--rounds", type=int, default=4, help="alternating miss runs per plan (4)")
    p.add_argument(
        "--semantic-requests", type=int, default=250, help="c=1 semantic requests per run (250)"
    )
    p.add_argument("--duration", type=float, default=3.0, help="seconds of each c=64 load (3)")
    p.add_argument("--concurrency", type=int, default=64, help="clients of the mix load (64)")
    p.add_argument("--entries", type=int, default=10_000, help="entries for memory (10000)")
    p.add_argument("--timeout", type=float, default=10.0, help="per-request timeout seconds")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="no CPU placement")
    p.add_argument("--keep-tmp", action="store_true", help="keep the gateway's dir and log")
    p.add_argument("--output", help="JSON results path (bench/results/cache-latest.json)")
    return p


@dataclass
class Bench:
    opts: CacheOptions
    plan: CpuPlan
    loader: LoadWorker
    gateway: CacheGateway
    endpoint: Endpoint
    keys: dict[str, str]
    results: report.CacheResults

    @property
    def pid(self) -> int | None:
        return self.gateway.proc.pid if self.gateway.proc is not None else None

    def job(self, name: str, tenant: str, bodies: list[dict[str, Any]], **kw: Any) -> Job:
        key = self.keys[tenant]
        raw = [self.endpoint.request("/chat/completions", json.dumps(b).encode(), key)
               for b in bodies]  # fmt: skip
        e = self.endpoint
        return Job(name, e.host, e.port, raw[0], rotate=tuple(raw), timeout_s=self.opts.timeout,
                   **kw)  # fmt: skip

    def run(self, job: Job, sequential: bool = True) -> JobResult:
        log(f"{job.name}: c={job.concurrency} " + (f"{job.duration_s:g}s" if job.duration_s
            else f"{job.requests} requests"))  # fmt: skip
        shared = sequential and self.plan.place_gateway(self.pid, shared=True)
        try:
            result = self.loader.run(job)
        finally:
            if shared:
                self.plan.place_gateway(self.pid, shared=False)
        log(f"  -> {result.rps:.0f} req/s, p50 {result.latency.p50_ms:.3f} ms, "
            f"p99 {result.latency.p99_ms:.3f} ms, errors {result.errors}")  # fmt: skip
        self.results.jobs[job.name] = result
        return result

    def sequential(self, name: str, tenant: str, texts: list[str]) -> JobResult:
        """``texts`` asked one after another (c=1), each once."""
        return self.run(self.job(name, tenant, [chat(t) for t in texts], requests=len(texts)))


def _verdict(bench: Bench, tenant: str, prompt: str) -> str:
    url = bench.gateway.url + "/v1/chat/completions"
    got = http("POST", url, chat(prompt), bench.keys[tenant])
    if got.status != 200:
        raise GatewayError(f"{tenant}: HTTP {got.status}: {got.body[:300]!r}")
    lower = {k.lower(): v for k, v in got.headers.items()}
    return str(lower.get("x-farebox-cache", "(no x-farebox-cache header)"))


def probe(bench: Bench) -> None:
    """The cache answers as it should before anything is timed: a new prompt misses on each
    plan, the same one then hits the exact cache."""
    seen = {
        "off": _verdict(bench, "off", "probe off"),
        "exact miss": _verdict(bench, "exact", "probe exact"),
        "exact hit": _verdict(bench, "exact", "probe exact"),
        "semantic miss": _verdict(bench, "semantic", "probe semantic lantern"),
    }
    bench.results.probes = seen
    log(f"probes: {seen}")
    wanted = {"exact miss": "miss", "exact hit": "hit-exact", "semantic miss": "miss"}
    wrong = {k: v for k, v in wanted.items() if seen[k] != v}
    if wrong:
        raise GatewayError(f"the cache does not answer as expected: {seen}")


def measure_hit(bench: Bench) -> None:
    """1. One stored prompt, asked again and again at c=1."""
    prompt = "hit " + secrets.token_hex(4)
    _verdict(bench, "exact", prompt)
    o = bench.opts
    bodies = [chat(prompt)]
    job = bench.job("hit-c1", "exact", bodies, requests=o.requests,
                    warmup_requests=o.warmup_requests)  # fmt: skip
    bench.run(job)


def measure_misses(bench: Bench) -> None:
    """2 and 3. Distinct prompts at c=1, the plans' runs alternating round by round."""
    o = bench.opts
    for plan in ("off", "exact", "semantic"):  # warm each plan's path once
        count = o.warmup_requests if plan != "semantic" else min(o.warmup_requests, 50)
        bench.sequential(f"warm-{plan}", plan, prompts(f"warm {plan}", count, 0))
    for r in range(o.rounds):
        for plan in ("off", "exact", "semantic"):
            count = o.semantic_requests if plan == "semantic" else o.requests
            if plan == "semantic" and r >= max(1, o.rounds // 2):
                continue  # the embedder is slow: half the rounds give p50 and p99 enough
            texts = prompts(f"{plan} round {'abcdefghij'[r % 10]}", count, r + 1)
            result = bench.sequential(f"miss-{plan}-{r + 1}", plan, texts)
            bench.results.rounds.setdefault(plan, []).append(result)


def mix_job(bench: Bench, tenant: str, hit_share: bool, tag: str, duration: float) -> Job:
    """c=64 for ``duration``, each client alternating (``hit_share``) between a stored prompt
    and a new one, so exactly half the requests are hits whatever their speed; else all new.
    Enough new prompts that none repeats below ``NEW_PER_S`` new prompts a second."""
    c = bench.opts.concurrency
    fresh = [chat(t) for t in prompts(tag, int(NEW_PER_S * duration) + 1000, 7)]
    bodies = fresh
    if hit_share:  # client i sends rotate[i + n * c]: blocks of c, stored and new in turn
        stored = [chat(f"stored {n % HIT_PROMPTS}") for n in range(c)]
        bodies = []
        for start in range(0, len(fresh), c):
            bodies += stored + fresh[start : start + c]
    return bench.job(f"load-{tag}", tenant, bodies, concurrency=c, duration_s=duration)


def measure_mix(bench: Bench) -> None:
    """4. c=64: the cache-off plan, all new prompts; then the exact plan, half stored."""
    for n in range(HIT_PROMPTS):
        _verdict(bench, "mix", f"stored {n}")
    o = bench.opts
    bench.run(mix_job(bench, "mix", True, "warm", 1.0), sequential=False)
    before = bench.gateway.ledger_counts("mix")
    bench.run(mix_job(bench, "off", False, "offload", o.duration), sequential=False)
    bench.run(mix_job(bench, "mix", True, "mix", o.duration), sequential=False)
    after = bench.gateway.ledger_counts("mix")
    bench.results.mix_stats = {"ledger_before": before, "ledger_after": after}


def measure_memory(bench: Bench) -> None:
    """5. RSS over ``entries`` new prompts: cache off twice (steady state, then what requests
    cost), then the exact plan (what requests and entries cost)."""
    pid, o = bench.pid, bench.opts
    if pid is None:
        return
    rss = bench.results.rss_mib
    for step, tenant in (("warm", "mem-off"), ("off", "mem-off"), ("exact", "mem-exact")):
        texts = prompts(f"memory {step}", o.entries, 3)
        job = bench.job(f"fill-{step}", tenant, [chat(t) for t in texts], concurrency=16,
                        requests=o.entries)  # fmt: skip
        bench.run(job, sequential=False)
        if step == "exact":  # the last answers are stored just after their replies
            bench.results.memory_stats = bench.gateway.wait_entries(tenant, o.entries)
        rss[f"after {step}"] = rss_mib(pid)


def run(opts: CacheOptions) -> int:
    _exit_on_sigterm()
    plan = plan_cpus(opts.pin, 1, external_gateway=False)
    results = report.CacheResults(meta=_meta(opts, plan))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        try:
            bench = _start(opts, plan, results, stack)
            probe(bench)
            for part in (measure_hit, measure_misses, measure_mix, measure_memory):
                part(bench)
        except GatewayError as err:
            results.error = str(err)
            log(results.error)
    results.meta["seconds"] = round(time.monotonic() - started, 1)
    results.meta["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return finish(report, results, opts.output)


def _start(
    opts: CacheOptions, plan: CpuPlan, results: report.CacheResults, stack: contextlib.ExitStack
) -> Bench:
    upstream, key = mock_upstream(plan, stack)
    loader = load_worker(plan, stack)
    gateway = CacheGateway(upstream.base_url, key, 1, plan.gateway, opts.keep_tmp)
    stack.callback(gateway.stop)
    try:
        gateway.start()
    except GatewayError as err:
        raise GatewayError(f"{err}\n--- gateway log tail ---\n{gateway.log_tail()}") from None
    log(f"gateway on {gateway.url} (log {gateway.log_path})")
    tenants = {"off": "off", "exact": "exact", "semantic": "semantic", "mix": "exact",
               "mem-off": "off", "mem-exact": "exact"}  # fmt: skip
    keys = {t: gateway.tenant_key(t, p) for t, p in tenants.items()}
    assert gateway.proc is not None
    results.rss_mib["start"] = rss_mib(gateway.proc.pid)
    endpoint = Endpoint.from_url(gateway.url)
    return Bench(opts, plan, loader, gateway, endpoint, keys, results)


def _meta(opts: CacheOptions, plan: CpuPlan) -> dict[str, Any]:
    return {
        **machine_meta(plan),
        # other work on the machine moves every number here: the 1, 5, 15 min load averages
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "options": dataclasses.asdict(opts),
    }


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if min(args.requests, args.rounds, args.semantic_requests, args.entries) < 1:
        parser().error("counts must be positive")
    return run(CacheOptions(**vars(args)))


if __name__ == "__main__":
    raise SystemExit(main())

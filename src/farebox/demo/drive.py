"""Simulated tenant traffic for ``farebox demo --traffic``.

Several tenants send a realistic mix (models, features, end users, streams, embeddings) at
rates that swing through a compressed two-minute "day", so usage visibly moves.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from farebox.core.money import format_usd, parse_usd
from farebox.errors import FareboxError
from farebox.http.client import HttpClient, parse_error_body

DAY_S = 120.0  # one simulated day


@dataclass(frozen=True, slots=True)
class Profile:
    tenant: str
    key: str
    rate_per_s: float
    models: tuple[str, ...]
    features: tuple[str, ...] = ("chat",)
    users: int = 10
    stream_share: float = 0.2
    runaway_after_s: float | None = None  # from then on, send ``runaway_factor`` times more
    runaway_factor: float = 1.0


@dataclass(slots=True)
class Tally:
    requests: int = 0
    errors: int = 0
    cost: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    by_code: dict[str, int] = field(default_factory=dict)  # error codes of the answers >= 400

    def served(self) -> int:
        return sum(n for status, n in self.by_status.items() if 200 <= status < 300)

    def refused(self, codes: tuple[str, ...]) -> int:
        return sum(self.by_code.get(code, 0) for code in codes)


def _body(profile: Profile, rng: random.Random) -> tuple[str, bytes]:
    model = rng.choice(profile.models)
    if model.startswith("text-embedding"):
        return "/v1/embeddings", orjson.dumps({"model": model, "input": "quarterly report " * 20})
    words = " ".join(rng.choice(("invoice", "summarise", "contract", "policy")) for _ in range(40))
    body: dict[str, object] = {
        "model": model,
        "messages": [{"role": "user", "content": words}],
        "max_tokens": rng.choice((64, 128, 256)),
        "user": f"user-{rng.randrange(profile.users)}",
    }
    if rng.random() < profile.stream_share:
        body["stream"] = True
    return "/v1/chat/completions", orjson.dumps(body)


async def _one(
    http: HttpClient, base: str, profile: Profile, rng: random.Random, tally: Tally
) -> None:
    path, body = _body(profile, rng)
    headers = {
        "authorization": f"Bearer {profile.key}",
        "content-type": "application/json",
        "x-farebox-feature": rng.choice(profile.features),
    }
    try:
        response = await http.post_json(base + path, headers, body, 30.0)
    except FareboxError:
        tally.errors += 1
        return
    tally.requests += 1
    tally.by_status[response.status] = tally.by_status.get(response.status, 0) + 1
    if response.status >= 400:
        code = str(parse_error_body(response.body).get("code") or response.status)
        tally.by_code[code] = tally.by_code.get(code, 0) + 1
    cost = response.headers.get("x-farebox-cost-usd")
    if cost:
        tally.cost += parse_usd(cost)


async def _tenant_loop(
    http: HttpClient, base: str, profile: Profile, tally: Tally, seed: int, stop: asyncio.Event
) -> None:
    rng = random.Random(seed)
    started = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        elapsed = time.monotonic() - started
        rate = profile.rate_per_s * (1.0 + 0.7 * math.sin(elapsed / DAY_S * 2 * math.pi))
        if profile.runaway_after_s is not None and elapsed >= profile.runaway_after_s:
            rate = profile.rate_per_s * profile.runaway_factor
        wait = rng.expovariate(max(rate, 0.05))
        try:
            await asyncio.wait_for(stop.wait(), timeout=wait)
        except TimeoutError:
            task = asyncio.create_task(_one(http, base, profile, rng, tally))
            pending.add(task)
            task.add_done_callback(pending.discard)
    await asyncio.gather(*pending, return_exceptions=True)


async def drive(
    base_url: str,
    profiles: list[Profile],
    stop: asyncio.Event,
    report: Callable[[str], None],
    every_s: float = 10.0,
    tallies: dict[str, Tally] | None = None,
) -> dict[str, Tally]:
    """Send traffic until ``stop`` is set, reporting per-tenant totals every ``every_s``.
    Counts go into ``tallies`` (one per profile's tenant, added where missing)."""
    http = HttpClient()
    tallies = {} if tallies is None else tallies
    for p in profiles:
        tallies.setdefault(p.tenant, Tally())
    loops = [
        asyncio.create_task(_tenant_loop(http, base_url, p, tallies[p.tenant], i, stop))
        for i, p in enumerate(profiles)
    ]
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=every_s)
            except TimeoutError:
                report(summary(tallies))
        await asyncio.gather(*loops)
    finally:
        await http.aclose()
    return tallies


def summary(tallies: dict[str, Tally]) -> str:
    parts = [
        f"{tenant}: {t.requests} req ${format_usd(t.cost)}"
        + (f" ({t.errors} failed)" if t.errors else "")
        + (f" ({t.by_status[403]} refused: paused)" if t.by_status.get(403) else "")
        for tenant, t in tallies.items()
    ]
    return "traffic  " + " | ".join(parts)


class TrafficThread:
    """``drive`` in a thread with its own event loop, beside a server that holds the main
    thread. ``request_stop`` only asks (a signal handler may call it); ``stop`` asks and waits
    for the requests in flight, so the process never exits with the thread still sending."""

    def __init__(
        self, base_url: str, profiles: list[Profile], report: Callable[[str], None]
    ) -> None:
        self.tallies = {p.tenant: Tally() for p in profiles}
        self._args = base_url, profiles, report
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="demo-traffic")

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()

    def request_stop(self) -> None:
        if self._loop is None or self._stop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._stop.set)
        except RuntimeError:
            pass  # the loop has already finished

    def stop(self, timeout_s: float = 45.0) -> dict[str, Tally]:
        """Stop sending, wait for the answers in flight, return the counts per tenant."""
        self.request_stop()
        if self._thread.ident is not None:  # it was started
            self._thread.join(timeout_s)
        return self.tallies

    def _run(self) -> None:
        report = self._args[2]
        try:
            asyncio.run(self._main())
        except Exception as exc:  # the demo's server keeps running; say why traffic stopped
            report(f"traffic stopped: {exc!r}")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        base_url, profiles, report = self._args
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        await drive(base_url, profiles, self._stop, report, tallies=self.tallies)

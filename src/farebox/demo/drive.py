"""Simulated tenant traffic for ``farebox demo --traffic``.

Several tenants send a realistic mix (models, features, end users, streams, embeddings) at
rates that swing through a compressed two-minute "day", so usage visibly moves.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from farebox.core.money import format_usd, parse_usd
from farebox.errors import FareboxError
from farebox.http.client import HttpClient

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
) -> dict[str, Tally]:
    """Send traffic until ``stop`` is set, reporting per-tenant totals every ``every_s``."""
    http = HttpClient()
    tallies = {p.tenant: Tally() for p in profiles}
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

"""Synthetic tenant traffic for ``farebox simulate``: who sends how much, and when.

Every tenant has a daily curve (a business-hours peak in its own time zone), a weekend dip,
day-to-day drift and Poisson noise, one to three keys, and a typical cost per request.
Onboarding tenants ramp up from a trickle over days. Anomalies are layered on top, each
labelled with its start and end so that detections can be scored:

- ``runaway``: a CI script loops on one key at ``factor`` times the tenant's normal rate;
- ``power_user``: one end user's client loops, adding ``factor`` times the normal rate of
  ordinary-sized requests;
- ``stuffing``: the request rate stays normal but each prompt is stuffed, so spend per
  request is ``factor`` times normal.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from farebox.core.anomaly import DAY, HOUR, MINUTE

KINDS = ("runaway", "power_user", "stuffing")
PICO = 10**12


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str
    tenant: str
    key: str
    start: int
    end: int
    factor: float

    def active(self, at: int) -> bool:
        return self.start <= at < self.end


@dataclass(slots=True)
class TenantProfile:
    tenant: str
    keys: tuple[str, ...]
    weights: tuple[float, ...]
    rate_per_hour: float  # the mean of the daily curve, at full size
    amplitude: float  # 0..1: how deep the night trough is
    peak_hour: float  # UTC hour of the daily peak
    weekend: float  # weekend traffic as a share of weekday traffic
    cost_pico: int  # typical cost of one request
    onboard_at: int | None = None  # a ramping tenant's first traffic
    ramp_days: float = 0.0
    drift: dict[int, float] = field(default_factory=dict)  # day -> day-to-day factor

    def size(self, at: int) -> float:
        """0..1: how far an onboarding tenant has ramped at ``at``."""
        if self.onboard_at is None:
            return 1.0
        if at < self.onboard_at:
            return 0.0
        days = (at - self.onboard_at) / DAY
        # exponential growth from 2% to full size over the ramp: about x1.5 a day for 10 days
        return min(1.0, 0.02 * math.exp(math.log(50.0) * days / self.ramp_days))

    def rate(self, at: int, rng: random.Random) -> float:
        """Requests per hour the tenant would normally send at ``at``."""
        day = at // DAY
        if day not in self.drift:
            self.drift[day] = math.exp(rng.gauss(0.0, 0.1))
        hour = (at % DAY) / HOUR
        curve = 1.0 + self.amplitude * math.cos(2 * math.pi * (hour - self.peak_hour) / 24)
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 is Monday
        week = self.weekend if weekday >= 5 else 1.0
        return self.rate_per_hour * curve * week * self.drift[day] * self.size(at)


def poisson(lam: float, rng: random.Random) -> int:
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def spend(requests: int, cost_pico: int, rng: random.Random) -> int:
    """The cost of ``requests`` requests of a typical size: the mean, with noise."""
    if requests <= 0:
        return 0
    jitter = max(0.2, rng.gauss(1.0, 0.5 / math.sqrt(requests)))
    return int(requests * cost_pico * jitter)


def profiles(
    count: int, ramps: int, start: int, days: int, rng: random.Random
) -> list[TenantProfile]:
    """``count`` established tenants and ``ramps`` onboarding ones (ramping inside the run)."""
    out = []
    for i in range(count + ramps):
        name = f"t{i:03d}" if i < count else f"new{i - count:02d}"
        n_keys = rng.choice((1, 1, 2, 3))
        weights = [rng.uniform(0.2, 1.0) for _ in range(n_keys)]
        total = sum(weights)
        profile = TenantProfile(
            tenant=name,
            keys=tuple(f"key_{name}_{k}" for k in range(n_keys)),
            weights=tuple(w / total for w in weights),
            rate_per_hour=math.exp(rng.uniform(math.log(40), math.log(4000))),
            amplitude=rng.uniform(0.3, 0.9),
            peak_hour=(14 + rng.uniform(-9, 9)) % 24,
            weekend=rng.uniform(0.25, 1.0),
            cost_pico=int(math.exp(rng.uniform(math.log(0.0003), math.log(0.02))) * PICO),
        )
        if i >= count:
            profile.onboard_at = start + int(rng.uniform(0, max(days - 7, 1) * 0.5) * DAY)
            profile.ramp_days = rng.uniform(7, 14)
        out.append(profile)
    return out


def schedule(
    tenants: list[TenantProfile], kinds: list[str], start: int, days: int, rng: random.Random
) -> list[Anomaly]:
    """One anomaly of each kind in ``kinds``, on distinct established tenants, at random
    times after the first live day, lasting one to three hours."""
    established = [t for t in tenants if t.onboard_at is None]
    chosen = rng.sample(established, min(len(kinds), len(established)))
    out = []
    for kind, profile in zip(kinds, chosen, strict=False):
        at = start + DAY + int(rng.uniform(0, max(days - 1.5, 0.1)) * DAY) // MINUTE * MINUTE
        length = rng.choice((1, 2, 3)) * HOUR
        factor = {"runaway": 10.0, "power_user": 8.0, "stuffing": 12.0}[kind]
        key = profile.keys[0]
        out.append(Anomaly(kind, profile.tenant, key, at, at + length, factor))
    return out

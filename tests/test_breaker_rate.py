"""The failure-rate trigger of a circuit breaker, over a sliding window of seconds."""

from __future__ import annotations

from farebox.config.settings import BreakerSettings
from farebox.core.pricing import Price
from farebox.core.routing import Target
from farebox.gateway.breakers import Breakers
from farebox.stores.memory.store import MemoryStore

PRICE = Price.from_per_million({"input": "1", "output": "1"}, where="t")
TARGET = Target("up", "m", PRICE)


class Clock:
    now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_failure_rate_over_enough_calls_opens_the_breaker() -> None:
    clock = Clock()
    settings = BreakerSettings(failures=100, failure_rate=0.5, min_requests=10, window_s=10)
    breakers = Breakers(MemoryStore(), settings, clock=clock)
    for i in range(8):  # alternating: 50% failures, but fewer than min_requests calls
        breakers.record(TARGET, ok=i % 2 == 0)
        clock.now += 0.25
    assert breakers.state(TARGET) == "closed"
    breakers.record(TARGET, ok=True)
    breakers.record(TARGET, ok=False)  # 10 calls, 5 failed: 50%
    assert breakers.state(TARGET) == "open"
    assert not await breakers.acquire(TARGET)


async def test_old_calls_leave_the_window() -> None:
    clock = Clock()
    settings = BreakerSettings(failures=100, failure_rate=0.5, min_requests=10, window_s=10)
    breakers = Breakers(MemoryStore(), settings, clock=clock)
    for _ in range(9):
        breakers.record(TARGET, ok=False)  # 9 failures...
    clock.now += 60  # ...long ago
    for _ in range(20):
        breakers.record(TARGET, ok=True)
    breakers.record(TARGET, ok=False)
    assert breakers.state(TARGET) == "closed"  # 1 failure in 21 calls in the window
    assert breakers.snapshot()[0]["failures"] == 10 and breakers.snapshot()[0]["successes"] == 20

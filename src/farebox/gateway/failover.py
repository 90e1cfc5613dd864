"""Failover: try a request's deployments in order, skip those whose breaker is open, go round
again after a jittered backoff, and give up with the error the client should see.

Only retryable upstream errors fail over; any other error ends the loop at once. A request that
gives up is metered (an unbilled entry) before its error is raised.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from random import random
from typing import TypeVar

from farebox.config.settings import RoutingSettings
from farebox.core.plans import Plan
from farebox.core.routing import Target
from farebox.errors import FareboxError, NoDeployment, UpstreamError, UpstreamRateLimited
from farebox.gateway.breakers import Breakers
from farebox.gateway.call import Call
from farebox.gateway.metering import Metering
from farebox.identity.credentials import ProviderKeys

DEFAULT_DEADLINE_S = 60.0  # how long retries may go on when the plan sets no timeout
T = TypeVar("T")


class Failover:
    """The failover loop over one request's deployments; made once, by the ``Gateway``."""

    __slots__ = ("_breakers", "_keys", "_metering", "_routing")

    def __init__(
        self, routing: RoutingSettings, breakers: Breakers | None, metering: Metering,
        keys: ProviderKeys | None = None,
    ) -> None:  # fmt: skip
        self._routing = routing
        self._breakers = breakers
        self._metering = metering
        self._keys = keys  # issue 14: each attempt's provider key, from the vault

    async def run(
        self,
        call: Call,
        targets: tuple[Target, ...],
        attempt: Callable[[Target], Awaitable[T]],
    ) -> tuple[Target, T]:
        """Try each usable deployment in order; fail over on retryable upstream errors only.
        Deployments whose breaker is open are skipped. When a whole round failed, wait with
        jittered exponential backoff (or as long as the upstream asked, within the plan's
        timeout) and go round again, up to ``routing.retries`` times."""
        routing, breakers = self._routing, self._breakers
        deadline = time.monotonic() + (call.plan.timeout_s or DEFAULT_DEADLINE_S)
        last: tuple[Target, UpstreamError] | None = None
        own_only = False  # a BYOK attempt failed: only the tenant's own keys from then on
        for round_ in range(routing.retries + 1):
            tried = False
            for target in targets:
                if breakers is not None and not await breakers.acquire(target):
                    if call.trace is not None:
                        call.trace.skipped(target)
                    continue  # its breaker is open: skipped at no cost
                tried = True
                try:
                    if not await self._keyed(call, target, own_only):
                        continue  # no key of the tenant's own here: not onto the platform's
                    result = await self._attempt(call, target, attempt)
                except UpstreamError as exc:
                    self._outcome(call, target, not exc.retryable)
                    if not exc.retryable:
                        await self._metering.record_failure(call, target, exc)
                        raise
                    own_only = own_only or call.byok
                    last = (target, exc)
                    continue
                except BaseException:
                    if breakers is not None:
                        breakers.release(target)
                    raise
                self._outcome(call, target, True)
                return target, result
            delay = backoff(routing, round_, last[1] if last else None)
            if not tried or round_ == routing.retries or time.monotonic() + delay > deadline:
                break
            await asyncio.sleep(delay)
        raise await self._given_up(call, last)

    async def _keyed(self, call: Call, target: Target, own_only: bool) -> bool:
        """Set the attempt's target and provider key: the tenant's own for that provider, else
        the platform's. After a BYOK attempt failed (``own_only``), a deployment where the
        tenant has no key of its own is skipped (its breaker slot released): the tenant asked
        for its own key, so its traffic never fails over onto the platform's key and cost."""
        before, call.target = call.target, target
        if self._keys is None:
            return True
        call.byok = False  # until the tenant's own key is found (a missing platform one: not)
        key, byok = await self._keys.key(call.principal.tenant.id, target.provider)
        if own_only and not byok:
            if self._breakers is not None:
                self._breakers.release(target)
            call.target, call.byok = before, True  # the failed BYOK attempt stays the last
            return False
        call.api_key, call.byok = key, byok
        return True

    @staticmethod
    async def _attempt(call: Call, target: Target, attempt: Callable[[Target], Awaitable[T]]) -> T:
        if call.trace is None:
            return await attempt(target)
        return await traced(call, target, attempt)

    def _outcome(self, call: Call, target: Target, healthy: bool) -> None:
        """Feed an attempt's outcome to the deployment's breaker, shared by every tenant. An
        attempt on the tenant's own key (BYOK) only releases its slot: a tenant's exhausted or
        revoked key must not take the deployment from every other tenant."""
        if self._breakers is None:
            return
        if call.byok:
            self._breakers.release(target)
        else:
            self._breakers.record(target, healthy)

    async def _given_up(
        self, call: Call, last: tuple[Target, UpstreamError] | None
    ) -> FareboxError:
        """Every round failed: meter the last failure, and say what the client should see."""
        if last is None:
            return NoDeployment(
                f"Every deployment of {call.model!r} is unavailable (circuit breakers open); "
                "retry shortly.",
                headers={"Retry-After": "1"},
            )
        target, error = last
        await self._metering.record_failure(call, target, error)
        if error.upstream_status == 429:  # the upstream's own rate limit: let the client wait
            return UpstreamRateLimited(error.message, headers=error.headers, extra=error.extra)
        return error


async def traced(call: Call, target: Target, attempt: Callable[[Target], Awaitable[T]]) -> T:
    """``attempt`` in its own CLIENT span, whose context the upstream request carries
    (``call.upstream_headers``, read where the provider request is made)."""
    assert call.trace is not None
    with call.trace.attempt(target) as span:
        call.upstream_headers = span.headers
        result = await attempt(target)
        span.succeeded(result)
        return result


def backoff(routing: RoutingSettings, round_: int, error: UpstreamError | None) -> float:
    """Jittered exponential backoff, or what the upstream asked for when it asked for more."""
    delay = min(routing.backoff_s * 2.0**round_, routing.max_backoff_s) * (0.5 + random() / 2)
    if error is not None and error.retry_after is not None:
        delay = max(delay, error.retry_after)
    return delay


def timeout(plan: Plan, target: Target) -> float:
    """The plan's upstream timeout, never longer than the provider's own."""
    return min(plan.timeout_s or target.timeout_s, target.timeout_s)

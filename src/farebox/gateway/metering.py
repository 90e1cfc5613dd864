"""Metering: the ledger entry that ends a request's admission, on every way out.

A reservation is settled by the store in the same transaction that writes the request's ledger
entry, so metering is what ends an admission: ``settle`` for a served request, an unbilled entry
for one that failed, an entry written behind one whose client went away. ``owned`` makes sure
exactly one of those happens for every admitted request. The response headers that report a
request's cost, its budget left and its rate limits are made here too.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from farebox.core.money import format_usd
from farebox.core.records import LedgerEntry
from farebox.core.routing import Target
from farebox.core.tokens import estimate_input, estimate_messages
from farebox.core.usage import Usage
from farebox.errors import FareboxError, UpstreamTranslationFailed
from farebox.gateway.admission import Budgets
from farebox.gateway.call import Call, entry, estimated, replace
from farebox.gateway.ledger import LedgerWriter
from farebox.gateway.rate_limits import headers as limit_headers

UNLIMITED = "unlimited"
Observer = Callable[[LedgerEntry, str], None]  # an entry and the name of its plan
log = logging.getLogger("farebox.pipeline")  # the name operators filter on


class Metering:
    """Writes the ledger entries of the request path; made once, by the ``Gateway``."""

    __slots__ = ("_budgets", "_clock", "_ledger", "_observe")

    def __init__(
        self,
        ledger: LedgerWriter,
        budgets: Budgets | None,
        clock: Callable[[], float] = time.time,
        observe: Observer | None = None,
    ) -> None:
        self._ledger = ledger
        self._budgets = budgets
        self._clock = clock
        # sees every entry, with the plan it was served under: the anomaly detector's
        # counter, the metrics, the access log (``observe.metrics.fan_out``)
        self._observe = observe

    # owning the admission ------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def owned(self, call: Call, targets: tuple[Target, ...]) -> AsyncIterator[None]:
        """Own ``call``'s admission from ``admit`` until its ledger entry settles it, on every
        way out: an error answers with an unbilled entry, a bug in a provider or translator
        with a 502, a cancellation (the client went away) with an entry written behind it."""
        try:
            yield
        except FareboxError as exc:
            if _unended(call):
                await self.record_failure(call, call.target or targets[0], exc)
            raise
        except Exception:
            log.exception("request %s: a provider or translator failed", call.request_id)
            billed = call.settled
            if not billed:
                await self.record_bug(call, call.target or targets[0])
            raise _translation_failed(call.request_id, billed) from None
        except BaseException:  # cancelled: write its entry behind it, without awaiting
            if _unended(call):
                self.abandon(call, call.target or targets[0])
            raise

    def abandon(self, call: Call, target: Target) -> None:
        """End the admission of a request that went away before its entry was written: the
        prompt is metered (estimated) if it was sent upstream, nothing otherwise."""
        call.settled = True
        sent = call.target is not None
        usage = Usage(input_tokens=_prompt_tokens(call)) if sent else Usage()
        gone = self.entry(call, target, usage, "client_disconnected", 499, 0.0)
        gone = estimated(gone) if sent else gone
        self._ledger.submit(gone)
        self.finished(gone, call)
        if call.trace is not None:
            call.trace.settled(gone)

    # settling ------------------------------------------------------------------------------
    async def settle(self, call: Call, record: LedgerEntry) -> None:
        """Write the entry durably; the store settles its reservation in that transaction.
        Once this starts, the admission's end is taken care of (``call.settled``)."""
        call.settled = True
        try:
            if call.trace is None:
                await self._ledger.append(record)
            else:  # in a ``settle`` span; the entry's usage and cost go on the request's span
                await call.trace.settle(record, self._ledger.append)
        finally:
            self.finished(record, call)

    async def settle_logged(self, call: Call, record: LedgerEntry) -> None:
        """``settle``, for when nobody is left to tell that the write failed."""
        try:
            await self.settle(call, record)
        except Exception:
            log.exception("could not record ledger entry %s", record.request_id)

    def submit(self, record: LedgerEntry) -> None:
        """Write ``record`` behind the request, without waiting for it to be durable."""
        self._ledger.submit(record)

    def finished(self, entry: LedgerEntry, call: Call) -> None:
        """``call`` ended with ``entry``: observers see it, the budgets' holds are let go."""
        if self._observe is not None:
            self._observe(entry, call.plan.name)
        if self._budgets is not None:
            self._budgets.finished(
                call.admission,
                entry.cost,
                entry.tenant_id,
                entry.revenue,
                call.plan.credits,
                key_threshold=call.principal.key.alert_threshold,
            )

    # entries -------------------------------------------------------------------------------
    def entry(self, call: Call, target: Target, usage: Usage, status: str, http_status: int,
              upstream_ms: float, **extra: Any) -> LedgerEntry:  # fmt: skip
        return entry(call, target, usage, status, http_status, upstream_ms, self._clock(), **extra)

    async def record_bug(self, call: Call, target: Target) -> None:
        """A provider or translator raised: an unbilled ``gateway_error`` entry."""
        failed = self.entry(call, target, Usage(), "gateway_error", 502, 0.0)
        await self.settle(call, replace(failed, error_code=UpstreamTranslationFailed.code))

    async def record_failure(self, call: Call, target: Target, exc: FareboxError) -> None:
        status = getattr(exc, "upstream_status", 0) or exc.status
        failed = self.entry(call, target, Usage(), "error", status, 0.0)
        await self.settle(call, replace(failed, error_code=exc.error_code))

    # headers -------------------------------------------------------------------------------
    def base_headers(self, call: Call, target: Target) -> dict[str, str]:
        """The headers every answer carries: request id, model served, rate limit state, and
        ``x-farebox-cache`` when the plan caches."""
        headers = {"x-farebox-request-id": call.request_id, "x-farebox-model": target.model}
        if call.admission is not None and call.admission.limited:
            headers.update(limit_headers(call.admission.states, self._clock()))
        if call.cache is not None:  # the plan caches: hit-exact | hit-semantic | miss | bypass
            headers["x-farebox-cache"] = call.cache.status
        if call.guard is not None and call.guard.skipped:  # parts no guardrail could read
            headers["x-farebox-guardrails-skipped"] = call.guard.skipped
        return headers

    def headers(self, call: Call, target: Target, entry: LedgerEntry) -> dict[str, str]:
        """``base_headers`` and what the settled request cost, and the budget left after it."""
        headers = self.base_headers(call, target)
        headers["x-farebox-cost-usd"] = format_usd(entry.cost)
        admission = call.admission
        left = admission.remaining_after(entry.cost) if admission else None
        headers["x-farebox-budget-remaining-usd"] = UNLIMITED if left is None else format_usd(left)
        return headers


def _unended(call: Call) -> bool:
    """No ledger entry is on its way for ``call`` although it needs one: it holds a
    reservation, or it was sent upstream."""
    return not call.settled and (call.admission is not None or call.target is not None)


def _prompt_tokens(call: Call) -> int:
    if call.endpoint == "embeddings":
        return estimate_input(call.body.get("input"))
    return estimate_messages(call.body.get("messages"))


def _translation_failed(request_id: str, billed: bool) -> UpstreamTranslationFailed:
    outcome = (
        "The request was served and recorded in the ledger, but its answer could not be translated."
        if billed
        else "Nothing was billed."
    )
    return UpstreamTranslationFailed(
        f"The gateway failed to translate this request or its answer (a bug, logged as "
        f"{request_id}). {outcome}",
        headers={"x-should-retry": "false"},
    )

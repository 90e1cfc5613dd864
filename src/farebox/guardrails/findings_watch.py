"""What follows a request's guardrail findings, off the request path (issue 15): the signed
webhook events and the ``max_findings_per_hour`` pause. (The Prometheus counters are the
metrics observer's: ``observe.metrics``.)

- **Events.** Every ledger entry with findings sends one event to the signed alert webhook
  (``budgets.alert_webhook_url``, ``notify.channels.WebhookAlerts``): ``guardrail.blocked``
  when the request was refused, else ``guardrail.flagged`` (findings flagged or redacted),
  listing the findings (detector, category, action, score, where: never the matched text).
  The webhook's queue is shared with the budget and anomaly alerts: past ``MAX_BACKLOG``
  deliveries waiting, guardrail events are dropped (counted, logged once per burst), so a
  flood of findings never delays those alerts without bound nor grows memory.
- **Pausing.** A plan's ``guardrails.max_findings_per_hour`` counts each key's *requests
  with findings* in the store (``FindingsStore.tally``: minute cells summed over the last
  hour, one serialised transaction per call), so every worker and replica counts into the
  same sum. A request counts once, whatever number of findings it carries: the stage scans
  a conversation's whole history, so a value pasted once is found again on every later turn;
  counting findings multiplied that by the findings of each turn, counting requests bounds
  it to one per turn (a blocked request never enters the history: each one is a new
  attempt). ``observe`` only adds to an in-process cell; a background task tallies the cells
  at most once per ``flush_interval_s`` (one store write per subject with findings per
  interval, never one per request). The tally whose addition crosses the limit
  (``before <= limit < after``) is exactly one, however many processes tally at once: that
  one pauses the key through the store's conditional pause (``stores.pausing``: only if it
  is not paused, in one step, so an operator's pause is never overwritten; ``pause_reason``
  names the guardrails and the count), as the anomaly watch does, and sends
  ``guardrail.paused``.
- **JWT callers.** A JWT caller's key (``jwt:<tenant>``) is every end user of the tenant: it
  is counted per end user (``jwt:<tenant>:user:<hash of the user>``; callers without a user
  share ``jwt:<tenant>``), and crossing the limit pauses nothing (pausing the tenant would
  let one hostile end user take down every user and key of the tenant): it sends a
  ``guardrail.limit_exceeded`` event (tenant, key, user, the count, the limit) and logs a
  warning, for the operator or the SaaS to act on that user.
- **Failures.** A tally that fails keeps its subject's count for the next flush (the other
  subjects are tallied all the same); a pause or alert that fails after its tally crossed
  the limit stays pending and is retried on every flush (idempotently: an already paused key
  is left alone) until it succeeds or its hour has passed. Either wakes the background task
  again, so a retry never waits for the next finding.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from farebox.core.keys import JWT_KEY_PREFIX
from farebox.core.plans import Plan
from farebox.core.records import LedgerEntry
from farebox.notify.channels import WebhookAlerts
from farebox.stores.base import AccountStore
from farebox.stores.findings import HOUR, FindingsStore, clean
from farebox.stores.pausing import pauses_of

log = logging.getLogger("farebox.guardrails")  # the name operators filter on
MAX_BACKLOG = 1000  # alert deliveries waiting, beyond which guardrail events are dropped


def iso(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
            "+00:00", "Z")  # fmt: skip
    except (OverflowError, OSError, ValueError):
        return str(ts)


def event_of(entry: LedgerEntry) -> dict[str, Any]:
    """The webhook event of one request with findings."""
    findings = clean(entry.guardrails)
    blocked = entry.status == "blocked" or any(f["action"] == "blocked" for f in findings)
    return {
        "type": "guardrail.blocked" if blocked else "guardrail.flagged",
        "request_id": entry.request_id,
        "tenant": entry.tenant_id,
        "key": entry.key_id,
        "workspace": entry.workspace,
        "user": entry.user,
        "endpoint": entry.endpoint,
        "model": entry.model_requested,
        "status": entry.status,
        "http_status": entry.http_status,
        "at": iso(entry.started_at),
        "findings": findings,
    }


@dataclass(slots=True)
class _Cell:
    """One subject's requests with findings since the last tally."""

    tenant_id: str
    plan: str
    limit: int
    count: int
    at: float
    user: str | None = None  # a JWT caller's end user (its subject is per user)


def subject_of(entry: LedgerEntry) -> str:
    """What ``max_findings_per_hour`` counts: the key; for a JWT caller, the end user of the
    tenant's JWT key (hashed: a ``user`` is any string the caller sends, the subject is
    stored), or the key itself for callers without a user."""
    if entry.key_id.startswith(JWT_KEY_PREFIX) and entry.user:
        digest = hashlib.sha256(entry.user.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{entry.key_id}:user:{digest[:32]}"
    return entry.key_id


def pause_reason(subject: str, count: int, limit: int, plan: str) -> str:
    return (f"automatic pause by the guardrails: {count} requests with findings in the last "
            f"hour on key {subject}, above plan {plan}'s max_findings_per_hour of "
            f"{limit}")  # fmt: skip


def exceeded_reason(cell: _Cell, key_id: str, count: int) -> str:
    who = f"end user {cell.user[:64]!r}" if cell.user else "the callers without a user"
    return (f"guardrails: {count} requests with findings in the last hour from {who} of "
            f"tenant {cell.tenant_id}'s JWT callers ({key_id}), above plan {cell.plan}'s "
            f"max_findings_per_hour of {cell.limit}; nothing paused (JWT callers share "
            "their tenant's key)")  # fmt: skip


class FindingsWatch:
    def __init__(
        self,
        store: AccountStore,
        findings: FindingsStore | None,
        alerts: WebhookAlerts | None,
        *,
        clock: Callable[[], float] = time.time,
        flush_interval_s: float = 1.0,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        self._store = store
        self._findings = findings  # None: a store without the role (a test double): no pause
        self._alerts = alerts
        self._clock = clock
        self._interval = flush_interval_s
        self._max_backlog = max_backlog
        self.plans: Callable[[str], Plan] | None = None  # the gateway's plan by name, live
        self._cells: dict[str, _Cell] = {}
        # crossings whose pause or alert failed: (cell, count), retried on the next flush
        self._pending: dict[str, tuple[_Cell, int]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pruned = 0.0
        self.dropped = 0  # events dropped for a full webhook queue
        # (target, id) of the latest pauses this process made (for tests and operators)
        self.paused: deque[tuple[str, str]] = deque(maxlen=100)

    # the request path ------------------------------------------------------------------
    def observe(self, entry: LedgerEntry, plan: str = "") -> None:
        """A ledger entry: nothing to do without findings; else queue its event and count
        the request (once, whatever its findings) toward its plan's hourly limit (no I/O)."""
        if not entry.guardrails:
            return
        if self._alerts is not None:
            self._send(entry)
        limit = self._limit(plan)
        if limit is None or self._findings is None:
            return
        subject = subject_of(entry)
        cell = self._cells.get(subject)
        if cell is None:
            self._cells[subject] = _Cell(entry.tenant_id, plan, limit, 1, entry.started_at,
                                         entry.user)  # fmt: skip
        else:
            cell.count += 1
            cell.limit, cell.plan, cell.at = limit, plan, max(cell.at, entry.started_at)
        self._wake.set()

    def _limit(self, plan: str) -> int | None:
        if self.plans is None:
            return None
        return self.plans(plan).guardrails.max_findings_per_hour

    def _send(self, entry: LedgerEntry) -> None:
        assert self._alerts is not None
        if self._alerts.channel.backlog >= self._max_backlog:
            if self.dropped % 1000 == 0:
                log.warning("guardrail events dropped: the alert webhook has %d deliveries "
                            "waiting (%d dropped so far)", self._alerts.channel.backlog,
                            self.dropped + 1)  # fmt: skip
            self.dropped += 1
            return
        self._alerts.send(event_of(entry))

    # off the request path --------------------------------------------------------------
    async def flush(self) -> list[str]:
        """Tally every subject's cell in the store; act on those whose tally crossed their
        limit (pause the key; alert for a JWT caller's end user), and retry the actions that
        failed before. Returns the subjects that crossed in this call. A failure keeps what
        it could not do for the next flush, then raises (the first error)."""
        findings = self._findings
        if findings is None:
            return []
        cells, self._cells = self._cells, {}
        crossed: list[str] = []
        errors: list[Exception] = []
        for subject, cell in cells.items():
            try:
                before, after = await findings.tally(subject, cell.at, cell.count)
            except Exception as exc:
                self._keep(subject, cell)  # counted again on the next flush
                errors.append(exc)
                continue
            if before <= cell.limit < after:
                crossed.append(subject)
                self._pending[subject] = (cell, after)
        await self._act_pending(errors)
        try:
            now = self._clock()
            if now - self._pruned >= HOUR:  # forget the cells past the hour, once an hour
                self._pruned = now
                await findings.prune(now - 2 * HOUR)
        except Exception as exc:
            errors.append(exc)
        if self._cells or self._pending:
            self._wake.set()  # a retry does not wait for the next finding
        if errors:
            raise errors[0]
        return crossed

    async def _act_pending(self, errors: list[Exception]) -> None:
        """Each pending crossing is claimed by one flush; one that fails again stays
        pending, unless its hour has passed (its count is then out of the window)."""
        pending, self._pending = self._pending, {}
        for subject, (cell, count) in pending.items():
            try:
                await self._act(subject, cell, count)
            except Exception as exc:
                errors.append(exc)
                if self._clock() - cell.at < HOUR:
                    self._pending.setdefault(subject, (cell, count))
                else:
                    log.error("guardrails: gave up acting on %s after an hour of failures",
                              subject)  # fmt: skip

    def _keep(self, subject: str, cell: _Cell) -> None:
        newer = self._cells.get(subject)
        if newer is not None:
            cell.count += newer.count
            cell.limit, cell.plan, cell.at = newer.limit, newer.plan, max(cell.at, newer.at)
        self._cells[subject] = cell

    async def _act(self, subject: str, cell: _Cell, count: int) -> None:
        if subject.startswith(JWT_KEY_PREFIX):
            self._exceeded(subject, cell, count)
        else:
            await self._pause(subject, cell, count)

    def _exceeded(self, subject: str, cell: _Cell, count: int) -> None:
        """A JWT caller's end user over the limit: an alert and a log line, no pause."""
        key_id = JWT_KEY_PREFIX + cell.tenant_id
        reason = exceeded_reason(cell, key_id, count)
        log.warning("%s", reason)
        if self._alerts is not None:
            self._alerts.send({"type": "guardrail.limit_exceeded", "tenant": cell.tenant_id,
                               "key": key_id, "user": cell.user, "subject": subject,
                               "findings_last_hour": count, "max_findings_per_hour": cell.limit,
                               "plan": cell.plan, "reason": reason})  # fmt: skip

    async def _pause(self, subject: str, cell: _Cell, count: int) -> None:
        """Pause the key, unless it is gone or already paused (so a retry is harmless)."""
        reason = pause_reason(subject, count, cell.limit, cell.plan)
        if not await self._pause_key(subject, reason):
            return
        self.paused.append(("key", subject))
        log.warning("%s", reason)
        if self._alerts is not None:
            self._alerts.send({"type": "guardrail.paused", "tenant": cell.tenant_id,
                               "key": subject, "target": "key", "findings_last_hour": count,
                               "max_findings_per_hour": cell.limit, "plan": cell.plan,
                               "reason": reason})  # fmt: skip

    async def _pause_key(self, subject: str, reason: str) -> bool:
        """Pause the key unless it is gone or paused already: True if this call paused it.
        The store's conditional pause, one step (``stores.pausing.pauses_of``: a store
        without one, a test double, reads then writes)."""
        return await pauses_of(self._store).pause_unpaused("key", subject, reason)

    # the background task ---------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("guardrails: tallying findings failed; retrying next round")
            await asyncio.sleep(self._interval)  # at most one tally per key per interval

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.flush()

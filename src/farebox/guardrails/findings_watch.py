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
- **Pausing.** A plan's ``guardrails.max_findings_per_hour`` counts each key's findings in
  the store (``FindingsStore.tally``: minute cells summed over the last hour, one serialised
  transaction per call), so every worker and replica counts into the same sum. ``observe``
  only adds to an in-process cell; a background task tallies the cells at most once per
  ``flush_interval_s`` (one store write per key with findings per interval, never one per
  request). The tally whose addition crosses the limit (``before <= limit < after``) is
  exactly one, however many processes tally at once: that one pauses the key through the
  store's ``update_key`` (``paused``, ``pause_reason`` naming the guardrails and the count),
  as the anomaly watch does, and sends ``guardrail.paused``. A JWT caller's key
  (``jwt:<tenant>``) is not stored and cannot be paused: its tenant is paused instead, as the
  anomaly watch escalates ``pause_key``.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from farebox.errors import NotFound
from farebox.notify.channels import WebhookAlerts
from farebox.stores.base import AccountStore
from farebox.stores.findings import HOUR, FindingsStore, clean

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
    """One subject's findings since the last tally."""

    tenant_id: str
    plan: str
    limit: int
    count: int
    at: float


def pause_reason(subject: str, count: int, limit: int, plan: str) -> str:
    who = f"key {subject}" if not subject.startswith(JWT_KEY_PREFIX) else (
        f"the tenant's JWT callers ({subject})")  # fmt: skip
    return (f"automatic pause by the guardrails: {count} findings in the last hour on {who}, "
            f"above plan {plan}'s max_findings_per_hour of {limit}")  # fmt: skip


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
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._pruned = 0.0
        self.dropped = 0  # events dropped for a full webhook queue
        # (target, id) of the latest pauses this process made (for tests and operators)
        self.paused: deque[tuple[str, str]] = deque(maxlen=100)

    # the request path ------------------------------------------------------------------
    def observe(self, entry: LedgerEntry, plan: str = "") -> None:
        """A ledger entry: nothing to do without findings; else queue its event and count
        its findings toward its plan's hourly limit (no I/O here)."""
        if not entry.guardrails:
            return
        if self._alerts is not None:
            self._send(entry)
        limit = self._limit(plan)
        if limit is None or self._findings is None:
            return
        cell = self._cells.get(entry.key_id)
        if cell is None:
            self._cells[entry.key_id] = _Cell(entry.tenant_id, plan, limit,
                                              len(entry.guardrails), entry.started_at)  # fmt: skip
        else:
            cell.count += len(entry.guardrails)
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
        """Tally every subject's cell in the store; pause those whose tally crossed their
        limit. Returns the subjects paused by this call."""
        cells, self._cells = self._cells, {}
        findings, crossed = self._findings, []
        if findings is None:
            return []
        for subject, cell in cells.items():
            try:
                before, after = await findings.tally(subject, cell.at, cell.count)
            except Exception:
                self._keep(subject, cell)  # counted again on the next flush
                raise
            if before <= cell.limit < after:
                crossed.append(subject)
                await self._pause(subject, cell, after)
        now = self._clock()
        if now - self._pruned >= HOUR:  # forget the cells past the hour, once an hour
            self._pruned = now
            await findings.prune(now - 2 * HOUR)
        return crossed

    def _keep(self, subject: str, cell: _Cell) -> None:
        newer = self._cells.get(subject)
        if newer is not None:
            cell.count += newer.count
            cell.limit, cell.plan, cell.at = newer.limit, newer.plan, max(cell.at, newer.at)
        self._cells[subject] = cell

    async def _pause(self, subject: str, cell: _Cell, count: int) -> None:
        reason = pause_reason(subject, count, cell.limit, cell.plan)
        paused = {"paused": True, "pause_reason": reason}
        jwt = subject.startswith(JWT_KEY_PREFIX)  # not stored: its tenant is paused
        try:
            if jwt:
                tenant = await self._store.get_tenant(cell.tenant_id)
                if tenant is None or tenant.paused:
                    return
                await self._store.update_tenant(cell.tenant_id, paused)
            else:
                key = await self._store.get_key(subject)
                if key is None or key.paused:
                    return
                await self._store.update_key(subject, paused)
        except NotFound:
            log.warning("guardrails: %s is gone, nothing paused", subject)
            return
        target = "tenant" if jwt else "key"
        self.paused.append((target, cell.tenant_id if jwt else subject))
        log.warning("%s", reason)
        if self._alerts is not None:
            self._alerts.send({"type": "guardrail.paused", "tenant": cell.tenant_id,
                               "key": subject, "target": target, "findings_last_hour": count,
                               "max_findings_per_hour": cell.limit, "plan": cell.plan,
                               "reason": reason})  # fmt: skip

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

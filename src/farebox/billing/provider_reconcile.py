"""A provider's own bill against the ledger: per UTC day and model, what Farebox recorded as
cost for that provider's deployments, what the provider's cost report says it charged, and
the difference, exactly; a signed alert for each day and model whose difference passes the
configured threshold (a price change the price catalog missed shows up within a day).

The ledger side reads the hourly rollups (``ReportStore.series``, daily buckets in UTC,
grouped by model served), never the month's entries, and keeps the models the provider's
deployments serve. The rollups are not keyed by provider: a model served by deployments of
two providers counts on both sides' ledger (such models are listed in ``shared_models``).

Mapping the provider's labels (``provider_costs``) to our model names, first match wins:
1. ``reconcile.models`` in the config (an explicit label -> model);
2. the label is a model the provider's deployments serve (``gpt-4o-mini``);
3. the label is such a model with a snapshot date after it: ``gpt-4o-mini-2024-07-18``
   (OpenAI, ``-YYYY-MM-DD``) or ``claude-sonnet-4-5-20250929`` (Anthropic, ``-YYYYMMDD``).
A label that matches none (another application's model on the same account, web search,
fine-tuning...) is listed under ``unmapped`` with its amount, and never alerts.

``difference`` is provider minus ledger: positive when the provider charged more than the
catalog's prices made it. A day and model alerts when the day has ended (today is partial on
both sides: ``complete`` false, never an alert) and its difference is not zero and is at
least ``threshold_usd`` (absolute) and at least ``threshold_percent`` of the provider's
amount, each where set; the alert (``provider.cost_mismatch``) fires once per provider, day
and model, however often the report is read (a mark in the store's meta, put if absent).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, Protocol

from farebox.billing.margins import month_window, percent
from farebox.billing.provider_costs import CostRow, CostSource, utc_day
from farebox.core.money import format_usd
from farebox.core.records import SeriesQuery
from farebox.errors import InvalidRequest
from farebox.stores.base import MetaStore, ReportStore

DAY = 86_400
SNAPSHOT = re.compile(r"^(?P<model>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{8})$")
ALERT_MARK = "provider_reconcile.alert/{provider}/{day}/{model}"


class ReconcileStore(ReportStore, MetaStore, Protocol):
    """What the reconciliation reads (the rollups) and marks (alerts already sent)."""


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a day and model alerts: pico-USD and percent of the provider's amount (None:
    not applied)."""

    usd: int | None = None
    percent: str | None = None  # a decimal string ("5", "2.5")

    def passed(self, difference: int, provider: int) -> bool:
        if difference == 0:
            return False
        if self.usd is not None and abs(difference) < self.usd:
            return False
        if self.percent is not None and provider != 0:
            return Fraction(abs(difference) * 100, abs(provider)) >= Fraction(self.percent)
        return True


@dataclass(frozen=True, slots=True)
class Line:
    """One day and model: the ledger's cost and the provider's, pico-USD."""

    day: str
    model: str
    ledger: int
    provider: int

    @property
    def difference(self) -> int:
        return self.provider - self.ledger

    def complete(self, now: float) -> bool:
        """Whether the day has ended (a day still running is partial on both sides)."""
        return day_start(self.day) + DAY <= now

    def json(self, alert: bool, complete: bool = True) -> dict[str, Any]:
        return {"day": self.day, "model": self.model, "ledger_usd": format_usd(self.ledger),
                "provider_usd": format_usd(self.provider),
                "difference_usd": format_usd(self.difference),
                "difference_percent": percent(self.difference, self.provider),
                "complete": complete, "alert": alert}  # fmt: skip


def model_of(label: str, models: frozenset[str], aliases: Mapping[str, str]) -> str | None:
    """Our model name for a provider's label, or None (see the module's mapping rules)."""
    if label in aliases:
        return aliases[label]
    if label in models:
        return label
    dated = SNAPSHOT.match(label)
    if dated is not None and dated["model"] in models:
        return dated["model"]
    return None


def report_window(month: str, now: float) -> tuple[int, int]:
    """``[start, end)`` of ``month`` in UTC, ending at the end of today for this month; a
    month that has not started is refused."""
    start, end = month_window(month)
    if start > now:
        raise InvalidRequest(
            f"The month {month} has not started yet (today is {utc_day(now)} UTC); "
            "a provider's bill can only be reconciled for a month that has begun.",
            param="month",
        )
    today_end = (int(now) // DAY + 1) * DAY
    return int(start), int(min(end, today_end))


async def ledger_costs(
    store: ReportStore, start: int, end: int, models: frozenset[str]
) -> dict[tuple[str, str], int]:
    """(day, model) -> the ledger's cost of ``models`` over ``[start, end)``, from rollups."""
    query = SeriesQuery(start, end, bucket="day", tz="UTC", group_by="model")
    out: dict[tuple[str, str], int] = {}
    for point in await store.series(query):
        if point.group in models:
            key = (utc_day(point.bucket), point.group)
            out[key] = out.get(key, 0) + point.cost
    return out


def provider_costs(
    rows: Iterable[CostRow], models: frozenset[str], aliases: Mapping[str, str]
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], int]]:
    """The provider's rows summed per (day, model), and per (day, label) for labels that
    map to none of ``models``."""
    mapped: dict[tuple[str, str], int] = {}
    unmapped: dict[tuple[str, str], int] = {}
    for row in rows:
        model = model_of(row.label, models, aliases)
        into, key = (mapped, (row.day, model)) if model else (unmapped, (row.day, row.label))
        into[key] = into.get(key, 0) + row.amount
    return mapped, unmapped


def lines(ledger: Mapping[tuple[str, str], int], bill: Mapping[tuple[str, str], int]) -> list[Line]:
    """Every (day, model) either side knows, oldest day first, then by model."""
    keys = sorted(set(ledger) | set(bill))
    return [Line(day, model, ledger.get((day, model), 0), bill.get((day, model), 0))
            for day, model in keys]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """What one reading compares: the provider, its served models, the thresholds, the
    label mapping, and where alerts go."""

    provider: str
    source: CostSource
    models: frozenset[str]
    shared: frozenset[str] = frozenset()
    thresholds: Thresholds = Thresholds()
    aliases: Mapping[str, str] | None = None
    on_alert: Callable[[dict[str, Any]], None] | None = None


async def reconcile_provider(
    store: ReconcileStore, job: Reconciliation, month: str, now: float
) -> dict[str, Any]:
    """The month's report for ``job.provider``: per day and model, exact decimal strings."""
    start, end = report_window(month, now)
    ledger = await ledger_costs(store, start, end, job.models)
    fetched = await job.source.fetch(start, end)
    bill, unmapped = provider_costs(fetched, job.models, job.aliases or {})
    report = lines(ledger, bill)
    alerts = [line for line in report if line.complete(now)
              and job.thresholds.passed(line.difference, line.provider)]  # fmt: skip
    fired = [line for line in alerts if await _first_alert(store, job.provider, line)]
    if job.on_alert is not None:
        for line in fired:
            job.on_alert(_event(job, month, line))
    data = [line.json(line in alerts, line.complete(now)) for line in report]
    ledger_total, bill_total = sum(ledger.values()), sum(bill.values())
    return {
        "object": "provider_reconciliation", "provider": job.provider, "month": month,
        "from": _iso(start), "to": _iso(end), "data": data,
        "mismatches": [row for row, line in zip(data, report, strict=True) if line.difference],
        "alerts": len(alerts), "alerts_sent": len(fired),
        "unmapped": [{"day": day, "label": label, "provider_usd": format_usd(amount)}
                     for (day, label), amount in sorted(unmapped.items())],
        "shared_models": sorted(job.shared & job.models),
        "total": {"ledger_usd": format_usd(ledger_total), "provider_usd": format_usd(bill_total),
                  "difference_usd": format_usd(bill_total - ledger_total),
                  "unmapped_usd": format_usd(sum(unmapped.values()))},
    }  # fmt: skip


async def _first_alert(store: MetaStore, provider: str, line: Line) -> bool:
    """True for the one reading that marks this provider, day and model first."""
    mark = ALERT_MARK.format(provider=provider, day=line.day, model=line.model)
    mine = f"{format_usd(line.difference)} {secrets.token_hex(8)}"
    return await store.put_meta_if_absent(mark, mine) == mine


def _event(job: Reconciliation, month: str, line: Line) -> dict[str, Any]:
    limits = job.thresholds
    return {
        "type": "provider.cost_mismatch", "provider": job.provider, "month": month,
        **line.json(True), "threshold_usd": None if limits.usd is None else format_usd(limits.usd),
        "threshold_percent": limits.percent,
    }  # fmt: skip


def day_start(day: str) -> float:
    return datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")

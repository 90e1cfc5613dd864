"""Which reconciliation to run for a provider (``reconciliation``: its cost report client,
its deployments' models, the thresholds), and ``ProviderWatch``, which runs them on a
schedule (``reconcile.interval_s``) so that a price change the catalog missed alerts within a
day without anyone asking.

Each run reads, for every provider under ``reconcile.providers``, the UTC month of yesterday
and the month of today (one month but on the 1st), so that the day that just ended is always
read once complete. Alerts fire once per provider, day and model (``provider_reconcile``):
runs on several replicas, or every ``interval_s``, never repeat one. A failed read (the
provider's admin API down, a refused key) is logged and retried at the next run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from farebox.billing.provider_costs import cost_source, utc_day
from farebox.billing.provider_reconcile import (
    DAY,
    ReconcileStore,
    Reconciliation,
    Thresholds,
    reconcile_provider,
)
from farebox.config.reconcile import KINDS
from farebox.config.settings import Settings
from farebox.core.money import parse_usd
from farebox.errors import FareboxError, InvalidRequest
from farebox.http.client import HttpClient

log = logging.getLogger("farebox.billing")
Deployments = Callable[[], Sequence[dict[str, Any]]]  # rows with "provider" and "model"
Alert = Callable[[dict[str, Any]], None]


def served_models(
    deployments: Sequence[dict[str, Any]], name: str
) -> tuple[frozenset[str], frozenset[str]]:
    """The models the deployments of provider ``name`` serve, and those others' serve."""
    mine = frozenset(str(r["model"]) for r in deployments if r["provider"] == name)
    others = frozenset(str(r["model"]) for r in deployments if r["provider"] != name)
    return mine, others


def reconciliation(
    settings: Settings,
    name: str,
    deployments: Sequence[dict[str, Any]],
    http: HttpClient,
    on_alert: Alert | None,
) -> Reconciliation:
    """What to compare for provider ``name``, or a 400 that says what is missing."""
    provider = settings.file.providers.get(name)
    if provider is None:
        known = ", ".join(sorted(settings.file.providers)) or "none configured"
        raise InvalidRequest(f"Unknown provider {name!r} (providers: {known}).", param="name")
    if provider.kind not in KINDS:
        raise InvalidRequest(
            f"The provider {name!r} is of kind {provider.kind!r}, which has no cost report "
            "API to reconcile with (kinds: openai, anthropic).", param="name"
        )  # fmt: skip
    cfg = settings.file.reconcile
    admin, key = cfg.providers.get(name), settings.reconcile_keys.get(name)
    if admin is None or not key:
        raise InvalidRequest(
            f"The provider {name!r} has no admin credentials: set reconcile.providers."
            f'{name}.admin_api_key (e.g. "env:OPENAI_ADMIN_KEY") in the config.', param="name"
        )  # fmt: skip
    source = cost_source(name, provider.kind, http, key, admin.base_url, admin.timeout_s)
    served, others = served_models(deployments, name)
    limits = Thresholds(
        None if cfg.threshold_usd is None else parse_usd(cfg.threshold_usd.strip()),
        None if cfg.threshold_percent is None else cfg.threshold_percent.strip(),
    )
    return Reconciliation(name, source, served, served & others, limits, cfg.models, on_alert)


def months_to_read(now: float) -> list[str]:
    """The UTC months of yesterday and today (one month but on the 1st)."""
    months = [utc_day(now - DAY)[:7], utc_day(now)[:7]]
    return sorted(set(months))


class ProviderWatch:
    """Runs every configured provider's reconciliation every ``interval_s``."""

    def __init__(
        self,
        store: ReconcileStore,
        settings: Settings,
        deployments: Deployments,
        http: HttpClient,
        on_alert: Alert | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._settings = settings
        self._deployments = deployments
        self._http = http
        self._on_alert = on_alert
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> dict[str, list[dict[str, Any]]]:
        """One run: provider -> its reports (the months read); a failure is logged."""
        out: dict[str, list[dict[str, Any]]] = {}
        now = self._clock()
        for name in self._settings.file.reconcile.providers:
            try:
                job = reconciliation(self._settings, name, self._deployments(), self._http,
                                     self._on_alert)  # fmt: skip
                out[name] = [await reconcile_provider(self._store, job, month, now)
                             for month in months_to_read(now)]  # fmt: skip
            except FareboxError as exc:
                log.warning("reconciling with %s's bill failed: %s", name, exc.message)
        return out

    def start(self, interval_s: float) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(interval_s))

    async def _run(self, interval_s: float) -> None:
        while True:
            await self.run_once()
            await asyncio.sleep(interval_s)  # the schedule itself, not a synchronisation

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

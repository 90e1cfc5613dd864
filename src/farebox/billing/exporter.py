"""The billing exporter: the ledger is the outbox, and each sink keeps its own cursor into it.

One round for a sink: read the ledger entries after its cursor, turn them into meter events
(per request, or per tenant-hour once the hour is over), send them in the sink's batches, and
move the cursor past them only when every event is delivered (a duplicate counts as
delivered) or dead-lettered. A crash anywhere in a round resends that round's events, under
the same deterministic idempotency keys, so the billing system holds each exactly once.

The plan meters (``credits_burned``, ``per_request_charges``) are valued with the tenant's
plan terms as they are when the round runs (``plan_terms``: the tenant's plan name to its
``PlanTerms``, the live plans of the serving process); a sink that does not list them never
asks for a plan.

Retries back off exponentially (with jitter), honour the sink's ``Retry-After``, and stop the
round after ``max_attempts``: the cursor stays, and the next round tries again. A permanent
refusal goes to the dead-letter list with its reason, to be inspected and retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from farebox.config.settings import Settings, SinkConfig
from farebox.core.credits import CreditRate
from farebox.core.meters import (
    ALL_METERS,
    CREDITS,
    NO_TERMS,
    PLAN_METERS,
    PlanTerms,
    Reading,
    credits_fit,
    hour_of,
    per_hour,
    per_request,
    render,
)
from farebox.core.records import LedgerEntry, Tenant
from farebox.errors import ConfigError, FareboxError
from farebox.http.client import HttpClient
from farebox.sinks.base import Outcome, Request, Sink, chunks, screen
from farebox.sinks.events import MeterEvent, event_json, event_key
from farebox.sinks.lago import Lago
from farebox.sinks.metronome import Metronome
from farebox.sinks.openmeter import OpenMeter
from farebox.sinks.stripe import StripeV1, StripeV2Stream
from farebox.sinks.webhook import Webhook
from farebox.stores.base import AccountStore, ExportStore, UsageStore

log = logging.getLogger("farebox.export")  # the name operators filter on
BACKOFF_S = 0.2
SESSION_MARGIN_S = 60.0  # a v2 session is renewed this long before it expires


class ExporterStore(ExportStore, AccountStore, UsageStore, Protocol):
    """What the exporter uses: the outbox and cursors, the tenants' billing ids, and the
    ledger itself (a replay reads it, not the outbox)."""


class ExportError(FareboxError):
    """A round could not run (no session, say); the next round tries again."""


MAX_BACKOFF_S = 30.0
PlanLookup = Callable[[str], PlanTerms]  # a tenant's plan name -> its terms now


@dataclass
class SinkRunner:
    """A configured sink: its encoder, where it lives, and how to authenticate."""

    name: str
    sink: Sink
    config: SinkConfig
    headers: Mapping[str, str] = field(default_factory=dict)  # Authorization, never logged
    token: str | None = None  # the Stripe v2 stream's session token
    token_expires: float = 0.0
    direct: Any = None  # a sink that delivers itself (Redis streams): ``await deliver(events)``


@dataclass
class RoundResult:
    entries: int = 0
    events: int = 0
    delivered: int = 0
    dead: int = 0
    complete: bool = True  # False: the round stopped on retries; the cursor did not move


class Exporter:
    def __init__(
        self,
        store: ExporterStore,
        runners: Sequence[SinkRunner],
        http: HttpClient,
        *,
        batch: int = 500,
        hour_grace_s: float = 600.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
        on_alert: Callable[[dict[str, Any]], None] | None = None,
        plan_terms: PlanLookup | None = None,
    ) -> None:
        self._on_alert = on_alert
        self._plan_terms = plan_terms  # None: no plan is known, the plan meters send nothing
        self._store = store
        self._runners = {r.name: r for r in runners}
        self._http = http
        self._batch = batch
        self._grace = hour_grace_s
        self._clock = clock
        self._sleep = sleep
        self._tenants: dict[str, Tenant] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def sinks(self) -> list[str]:
        return sorted(self._runners)

    @property
    def runners(self) -> list[SinkRunner]:
        return [self._runners[name] for name in self.sinks]

    # one round -------------------------------------------------------------------------
    async def export_once(self, name: str) -> RoundResult:
        runner = self._runners[name]
        self._tenants.clear()  # billing ids may have changed since the last round
        cursor = await self._store.export_cursor(name)
        rows = await self._rows(runner, cursor)
        result = RoundResult(entries=len(rows))
        if not rows:
            return result
        entries = [e for _, e in rows]
        terms = await self._terms(runner, entries)
        events = await self._events(self._readings(runner, entries, terms), runner, terms)
        result.events = len(events)
        if not await self._deliver(runner, events, result):
            result.complete = False
            return result
        await self._store.set_export_cursor(name, rows[-1][0])
        return result

    async def _rows(self, runner: SinkRunner, cursor: int) -> list[tuple[int, LedgerEntry]]:
        if runner.config.granularity == "request":
            return await self._store.ledger_since(cursor, self._batch)
        # hourly: only whole hours that are over (plus the grace for late writes), read in
        # full, so an hour's aggregate is sent once, complete
        cutoff = hour_of(self._clock() - self._grace)
        out: list[tuple[int, LedgerEntry]] = []
        while True:
            page = await self._store.ledger_since(out[-1][0] if out else cursor, self._batch)
            for seq, entry in page:
                if entry.finished_at >= cutoff:
                    return out
                out.append((seq, entry))
            if len(page) < self._batch:
                return out

    def _readings(
        self, runner: SinkRunner, entries: Sequence[LedgerEntry], terms: Mapping[str, PlanTerms]
    ) -> list[Reading]:
        meters = list(runner.config.meters)
        if runner.config.granularity == "hour":
            return per_hour(entries, meters, terms)
        return per_request(entries, meters, terms)

    async def terms_for(self, tenant_id: str) -> PlanTerms:
        """The tenant's plan terms now (a tenant no longer known: the default plan's)."""
        if self._plan_terms is None:
            return NO_TERMS
        tenant = await self._tenant(tenant_id)
        return self._plan_terms(tenant.plan if tenant is not None else "")

    async def _terms(
        self, runner: SinkRunner, entries: Sequence[LedgerEntry]
    ) -> dict[str, PlanTerms]:
        """The plan terms of the entries' tenants, when the sink sends a plan meter."""
        meters = set(runner.config.meters)
        if not meters & set(PLAN_METERS):
            return {}
        out = {t: await self.terms_for(t) for t in sorted({e.tenant_id for e in entries})}
        for tenant, terms in out.items():
            if CREDITS in meters and terms.credits is not None and not credits_fit(terms.credits):
                raise ExportError(  # the cursor stays: nothing is lost once the plan is fixed
                    f"sink {runner.name}: tenant {tenant}'s credit rate makes burns longer "
                    "than 12 decimals; give its plan a whole credits.per_usd"
                )
        return out

    async def _events(
        self,
        readings: Sequence[Reading],
        runner: SinkRunner,
        terms: Mapping[str, PlanTerms] | None = None,
    ) -> list[MeterEvent]:
        out = []
        for r in readings:
            tenant = await self._tenant(r.tenant)
            props = {"model": r.model} if r.model else {}
            if r.workspace:  # a free-form property where the sink's format has them
                props["workspace"] = r.workspace
            if r.byok:  # on the tenant's own key: a sink pricing token meters can filter it
                props["byok"] = "true"
            out.append(
                MeterEvent(
                    key=event_key(r.tenant, r.unit, r.meter),
                    tenant=r.tenant,
                    customer=dict(tenant.billing) if tenant else {},
                    meter=r.meter,  # the sink maps it to its own event name
                    value=render(r.meter, r.raw, (terms or {}).get(r.tenant, NO_TERMS)),
                    timestamp=r.timestamp,
                    properties=props,
                )
            )
        return out

    async def _tenant(self, tenant_id: str) -> Tenant | None:
        found = self._tenants.get(tenant_id)
        if found is None:
            found = await self._store.get_tenant(tenant_id)
            if found is not None:
                self._tenants[tenant_id] = found
        return found

    # delivery ----------------------------------------------------------------------------
    async def _deliver(
        self, runner: SinkRunner, events: Sequence[MeterEvent], result: RoundResult
    ) -> bool:
        """Send every event until it is delivered or dead; False if retries ran out."""
        now = int(self._clock())
        pending, early = screen(runner.sink, events, now)
        await self._bury(runner, events, early)
        result.dead += len(early.dead)
        by_key = {e.key: e for e in pending}
        for part in chunks(pending, runner.sink.max_batch):
            todo = list(part)
            attempt = 0
            while todo:
                outcome = Outcome()
                if runner.direct is not None:
                    outcome = await runner.direct.deliver(todo)
                for request in (
                    [] if runner.direct is not None else await self._encode(runner, todo)
                ):
                    outcome = outcome.merged(await self._send(runner, request))
                if isinstance(runner.sink, StripeV2Stream) and runner.sink.session_expired(outcome):
                    runner.token = None  # the next attempt opens a new session
                await self._bury(runner, events, outcome)
                result.delivered += len(outcome.delivered)
                result.dead += len(outcome.dead)
                todo = [by_key[k] for k in outcome.retry if k in by_key]
                if not todo:
                    break
                attempt += 1
                if attempt >= runner.config.max_attempts:
                    log.warning("sink %s: %d events still failing; next round retries them",
                                runner.name, len(todo))  # fmt: skip
                    return False
                await self._sleep(_backoff(attempt, outcome.retry_after))
        return True

    async def _encode(self, runner: SinkRunner, events: Sequence[MeterEvent]) -> list[Request]:
        sink = runner.sink
        if not isinstance(sink, StripeV2Stream):
            return sink.encode(events)
        if runner.token is None or self._clock() >= runner.token_expires - SESSION_MARGIN_S:
            request = sink.session_request()
            url = runner.config.base_url.rstrip("/") + request.path
            response = await self._http.post_json(
                url, {**request.headers, **runner.headers}, request.body, runner.config.timeout_s
            )
            if response.status != 200:  # retried like any failed round
                raise ExportError(f"sink {runner.name}: no v2 session (HTTP {response.status})")
            runner.token, runner.token_expires = sink.parse_session(response.body)
        return sink.encode(events, token=runner.token)

    async def _send(self, runner: SinkRunner, request: Request) -> Outcome:
        base = runner.config.base_url
        if isinstance(runner.sink, StripeV2Stream):
            base = runner.config.stream_url or base
            headers = dict(request.headers)  # the session token, not the secret key
        else:
            headers = {**request.headers, **runner.headers}
        url = base.rstrip("/") + request.path
        try:
            response = await self._http.post_json(
                url, headers, request.body, runner.config.timeout_s
            )
        except Exception as exc:  # a transport error is retried, like a 5xx
            log.warning("sink %s: %s", runner.name, type(exc).__name__)
            return runner.sink.classify(0, {}, b"", request)
        return runner.sink.classify(response.status, response.headers, response.body, request)

    async def _bury(
        self, runner: SinkRunner, events: Sequence[MeterEvent], outcome: Outcome
    ) -> None:
        dead = outcome.dead
        if not dead:
            return
        by_key = {e.key: e for e in events}
        now = self._clock()
        items = [{"key": k, "event": event_json(by_key[k]), "reason": reason, "at": now}
                 for k, reason in dead.items() if k in by_key]  # fmt: skip
        log.error("sink %s: %d events refused for good (dead letters)", runner.name, len(items))
        await self._store.add_dead_letters(runner.name, items)
        if self._on_alert is not None:
            reasons = sorted(set(dead.values()))
            tenants = sorted({by_key[k].tenant for k in dead if k in by_key})
            self._on_alert({"type": "billing.dead_letters", "sink": runner.name,
                            "events": len(items), "reasons": reasons[:10],
                            "tenants": tenants[:50]})  # fmt: skip

    async def retry_dead(self, name: str, keys: Sequence[str] | None = None) -> RoundResult:
        """Send dead letters again (all of a sink's, or the given keys)."""
        runner = self._runners[name]
        letters = [d for d in await self._store.dead_letters(name)
                   if keys is None or d["key"] in keys]  # fmt: skip
        events = []
        for letter in letters:  # with the tenant's billing ids as they are now
            event = MeterEvent(**letter["event"])
            tenant = await self._store.get_tenant(event.tenant)
            if tenant is not None:
                self._tenants[event.tenant] = tenant
                event = dataclasses.replace(event, customer=dict(tenant.billing))
            events.append(event)
        await self._store.remove_dead_letters(name, [e.key for e in events])
        result = RoundResult(events=len(events))
        result.complete = await self._deliver(runner, events, result)
        return result

    async def replay(self, name: str, start: float, end: float) -> RoundResult:
        """Send again every event of the entries that finished in ``[start, end)``, under the
        same keys: the sink keeps what it has, and gets what it lacks. The cursor stays."""
        runner = self._runners[name]
        # from the ledger itself, not the outbox: a range may predate the sink's configuration
        ledger = await self._store.ledger()  # oldest first
        chosen = [e for e in ledger if start <= e.finished_at < end]
        # read in full first: an hourly aggregate must be whole to be sent under its key
        terms = await self._terms(runner, chosen)
        events = await self._events(self._readings(runner, chosen, terms), runner, terms)
        result = RoundResult(entries=len(chosen), events=len(events))
        result.complete = await self._deliver(runner, events, result)
        return result

    # background ------------------------------------------------------------------------
    async def lag(self) -> dict[str, dict[str, Any]]:
        """Per sink: ledger entries not yet exported, and the age of the oldest one."""
        out = {}
        now = self._clock()
        for name in self.sinks:
            cursor = await self._store.export_cursor(name)
            waiting = await self._store.ledger_since(cursor, 10_000)
            oldest = min((e.finished_at for _, e in waiting), default=None)
            lag = round(now - oldest, 3) if oldest is not None else 0.0
            out[name] = {"cursor": cursor, "pending_entries": len(waiting), "lag_s": lag}
        return out

    async def start(self, interval_s: float) -> bool:
        """Follow the ledger in the background, unless another process already does (with
        ``--workers N`` one worker exports: one sender per sink keeps each sink's order and
        Stripe's one call at a time per customer and meter)."""
        if not await self._store.claim_exporter():
            log.info("another process exports the ledger; this one does not")
            return False
        loop = asyncio.get_running_loop()
        for name in self.sinks:
            self._tasks.append(loop.create_task(self._follow(name, interval_s)))
        return True

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for runner in self._runners.values():
            if runner.direct is not None:
                await runner.direct.aclose()

    async def _follow(self, name: str, interval_s: float) -> None:
        while True:
            try:
                result = await self.export_once(name)
                if result.entries and result.complete:
                    continue  # more may be waiting: go on at once
            except Exception:
                log.exception("billing export to %s failed; retrying", name)
            await asyncio.sleep(interval_s)


def build_runners(settings: Settings) -> list[SinkRunner]:
    """The configured sinks, with their credentials (from the environment)."""
    out = []
    check_credit_rates(settings)
    for name, cfg in settings.file.billing.sinks.items():
        names: dict[str, str] = {m: cfg.names.get(m, f"farebox_{m}") for m in ALL_METERS}
        api_key = settings.sink_secrets.get(f"{name}.api_key")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        sink: Sink
        if cfg.kind == "stripe":
            sink = StripeV2Stream(names) if cfg.api == "v2" else StripeV1(names)
        elif cfg.kind == "lago":
            sink = Lago(codes=names)
        elif cfg.kind == "metronome":
            sink = Metronome(event_types=names)
        elif cfg.kind == "openmeter":
            sink = OpenMeter(types=names)
        elif cfg.kind == "redis_stream":
            out.append(_redis_runner(settings, name, cfg))
            continue
        else:
            secret = settings.sink_secrets.get(f"{name}.secret")
            if not secret:
                raise ConfigError(
                    f"{settings.source}: billing.sinks.{name}.secret: a webhook sink signs its "
                    'events; set secret: "env:NAME"'
                )
            sink = Webhook("", secret.encode())
        out.append(SinkRunner(name, sink, cfg, headers))
    return out


def check_credit_rates(settings: Settings) -> None:
    """A sink that sends ``credits_burned`` needs every prepaid plan's burns to fit the
    sinks' 12 decimals exactly: a start-up error naming the sink and the plan otherwise."""
    plans = settings.file.plans
    for name, cfg in settings.file.billing.sinks.items():
        if CREDITS not in cfg.meters:
            continue
        for plan_name, plan in plans.items():
            credits = plan.pricing.credits
            if credits is not None and not credits_fit(CreditRate.of(credits.per_usd)):
                raise ConfigError(
                    f"{settings.source}: billing.sinks.{name}.meters: credits_burned needs "
                    f"plans.{plan_name}.pricing.credits.per_usd to be a whole number (got "
                    f"{credits.per_usd!r}): a burn would need more than 12 decimals"
                )


def _redis_runner(settings: Settings, name: str, cfg: SinkConfig) -> SinkRunner:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        raise ConfigError(
            f"{settings.source}: billing.sinks.{name}: a redis_stream sink needs the extra: "
            "pip install 'farebox[redis]'"
        ) from None
    from farebox.billing.redis_stream import RedisStreamSink

    sink = RedisStreamSink(aioredis.Redis.from_url(cfg.base_url), cfg.stream)
    return SinkRunner(name, sink, cfg, direct=sink)  # type: ignore[arg-type]


def _backoff(attempt: int, asked: float | None) -> float:
    delay = min(BACKOFF_S * 2.0 ** (attempt - 1), MAX_BACKOFF_S) * (0.5 + random.random() / 2)
    return max(delay, asked) if asked is not None else delay

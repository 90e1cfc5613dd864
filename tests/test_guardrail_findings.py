"""Issue 15: what consumes guardrail findings. Ledger entries with findings (as the guardrail
stage will write them) are written through the store and handed to the app's observers; then:
the Prometheus counters count them (bounded labels), the signed alert webhook carries one
``guardrail.flagged`` / ``guardrail.blocked`` event per request (never the matched text), the
findings API filters them (tenant, key, detector, action, time; a tenant_admin and a tenant
key see their own tenant only), and ``max_findings_per_hour`` pauses a key exactly once, also
when two app instances share one SQLite file."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiohttp import web
from prometheus_client import generate_latest

from farebox.app import create_app
from farebox.config.settings import parse_settings
from farebox.core.records import LedgerEntry
from farebox.guardrails.findings_watch import FindingsWatch, event_of
from farebox.observe.metrics import MAX_CATEGORIES, RequestMetrics
from farebox.sinks.webhook import verify as signed
from farebox.stores.memory.store import MemoryStore
from tests.conftest import ADMIN_KEY

SECRET = "whsec_guardrail_findings_test_0123456789"
LEAK = "ana.lopez@example.com"  # what a detector matched: must never leave the gateway
NOW = 1_893_456_000.0  # 2030-01-01T00:00:00Z
CONFIG: dict[str, Any] = {
    "providers": {"sim": {"kind": "mock", "seed": 1}},
    "plans": {
        "default": {"models": ["*"], "guardrails": {"pii": {"mode": "redact", "engine": "builtin"},
                                                    "max_findings_per_hour": 5}},
        "open": {"models": ["*"]},
    },
}  # fmt: skip
_IDS = itertools.count()


def finding(detector: str = "pii", category: str = "EMAIL_ADDRESS", action: str = "redacted",
            **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {"detector": detector, "category": category, "action": action, "score": 0.93,
            "where": "user", **extra}  # fmt: skip


def entry(tenant_id: str, key_id: str, *found: dict[str, Any], **kw: Any) -> LedgerEntry:
    started = kw.pop("started_at", NOW)
    blocked = any(f["action"] == "blocked" for f in found)
    base: dict[str, Any] = {
        "request_id": f"req_{next(_IDS):06d}", "tenant_id": tenant_id, "key_id": key_id,
        "endpoint": "chat.completions", "model_requested": "gpt-4o-mini",
        "model_served": "" if blocked else "gpt-4o-mini", "provider": "" if blocked else "sim",
        "status": "blocked" if blocked else "ok", "http_status": 400 if blocked else 200,
        "started_at": started, "finished_at": started + 0.01, "guardrails": list(found),
    }  # fmt: skip
    base.update(kw)
    return LedgerEntry(**base)


class App:
    """An app instance in process, its ASGI client and its observers."""

    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app, self.client = app, client
        self.admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    @property
    def store(self) -> Any:
        return self.app.state.services.store

    @property
    def watch(self) -> FindingsWatch:
        found = self.app.state.findings
        assert isinstance(found, FindingsWatch)
        return found

    async def record(self, *entries: LedgerEntry, plan: str = "default") -> None:
        """Write entries as the request path does: the ledger, then every observer."""
        await self.store.append_ledger(list(entries))
        observe = self.app.state.services.gateway._metering._observe  # the app's fan-out
        for e in entries:
            observe(e, plan)

    async def setup(self, tenant_id: str, plan: str = "default") -> tuple[str, str]:
        r = await self.client.post("/admin/v1/tenants", json={"id": tenant_id, "plan": plan},
                                   headers=self.admin)  # fmt: skip
        assert r.status_code == 201, r.text
        r = await self.client.post(f"/admin/v1/tenants/{tenant_id}/keys", json={"name": "k"},
                                   headers=self.admin)  # fmt: skip
        assert r.status_code == 201, r.text
        return str(r.json()["id"]), str(r.json()["key"])


@contextlib.asynccontextmanager
async def running(directory: Path, **extra: Any) -> AsyncIterator[App]:
    data = {"database": f"sqlite:///{directory / 'farebox.db'}", **CONFIG, **extra}
    env = {"FAREBOX_ADMIN_KEY": ADMIN_KEY, "HOOK_SECRET": SECRET}
    settings = parse_settings(data, source="test.yaml", env=env, base_dir=directory)
    app = create_app(settings, announce=lambda _m: None, clock=lambda: NOW + 30)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield App(app, client)


# metrics --------------------------------------------------------------------------------
def scrape(metrics: RequestMetrics) -> str:
    return generate_latest(metrics.scrape_registry()).decode()


def test_metrics_count_findings_and_requests_with_bounded_labels() -> None:
    metrics = RequestMetrics()
    metrics.observe(
        entry("acme", "k1", finding(), finding(), finding("secrets", "aws_key", "flagged")),
        "default",
    )
    metrics.observe(
        entry(
            "acme", "k1", finding("injection_rules", "instruction_override", "blocked", text=LEAK)
        ),
        "default",
    )
    metrics.observe(entry("acme", "k1"), "default")  # no findings: no guardrail series move
    metrics.observe(entry("acme", "k1", finding("made_up", "x y", "nuked")), "default")
    text = scrape(metrics)
    assert ('farebox_guardrail_findings_total{action="redacted",category="EMAIL_ADDRESS",'
            'detector="pii"} 2.0') in text  # fmt: skip
    assert ('farebox_guardrail_findings_total{action="blocked",category="instruction_override",'
            'detector="injection_rules"} 1.0') in text  # fmt: skip
    assert ('farebox_guardrail_findings_total{action="other",category="other",'
            'detector="other"} 1.0') in text  # fmt: skip
    assert 'farebox_guardrail_requests_total{outcome="redacted"} 1.0' in text
    assert 'farebox_guardrail_requests_total{outcome="blocked"} 1.0' in text
    assert 'farebox_guardrail_requests_total{outcome="other"} 1.0' in text
    assert LEAK not in text and "tenant=" not in text
    for n in range(MAX_CATEGORIES + 5):  # a flood of categories: bounded per detector
        metrics.observe(entry("acme", "k1", finding("secrets", f"kind_{n}", "flagged")), "x")
    kinds = {
        line.split('category="')[1].split('"')[0]
        for line in scrape(metrics).splitlines()
        if line.startswith("farebox_guardrail_findings_total{") and "secrets" in line
    }
    assert len(kinds) == MAX_CATEGORIES + 1 and "other" in kinds  # aws_key, 63 kinds, other


def test_metrics_carry_the_tenant_only_with_tenant_labels() -> None:
    metrics = RequestMetrics(tenant_labels=True)
    metrics.observe(entry("acme", "k1", finding()), "default")
    text = scrape(metrics)
    assert ('farebox_guardrail_findings_total{action="redacted",category="EMAIL_ADDRESS",'
            'detector="pii",tenant="acme"} 1.0') in text  # fmt: skip
    assert 'farebox_guardrail_requests_total{outcome="redacted",tenant="acme"} 1.0' in text


async def test_the_metrics_endpoint_shows_what_the_app_observed(tmp_path: Path) -> None:
    async with running(tmp_path) as gw:
        key_id, _ = await gw.setup("acme")
        await gw.record(entry("acme", key_id, finding("secrets", "aws_access_key", "blocked")))
        r = await gw.client.get("/metrics")
    assert r.status_code == 200
    assert ('farebox_guardrail_findings_total{action="blocked",category="aws_access_key",'
            'detector="secrets"} 1.0') in r.text  # fmt: skip


# the signed webhook -----------------------------------------------------------------------
Deliveries = list[tuple[str, bytes]]  # (X-Farebox-Signature, body) per delivery
Receiver = tuple[Deliveries, asyncio.Event, dict[str, Any]]


@contextlib.asynccontextmanager
async def hook_receiver(
    count: int,
) -> AsyncIterator[tuple[Deliveries, asyncio.Event, dict[str, Any]]]:
    """A loopback receiver of the signed alert webhook: the deliveries it got, an event set
    once ``count`` arrived, and the config that points a gateway at it."""
    from fakes import serve

    got: Deliveries = []
    arrived = asyncio.Event()

    async def handle(request: web.Request) -> web.Response:
        got.append((request.headers["x-farebox-signature"], await request.read()))
        if len(got) >= count:
            arrived.set()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", handle)
    runner, port = await serve(receiver)
    hook = {"budgets": {"alert_webhook_url": f"http://127.0.0.1:{port}/hook",
                        "alert_webhook_secret": "env:HOOK_SECRET"}}  # fmt: skip
    try:
        yield got, arrived, hook
    finally:
        await runner.cleanup()


def signed_by_secret(header: str, body: bytes) -> bool:
    """Whether ``body`` carries a valid signature by the test's webhook ``SECRET``."""
    stamp = int(dict(p.split("=", 1) for p in header.split(","))["t"])
    return signed(SECRET.encode(), header, body, stamp)


async def test_one_signed_event_per_request_with_findings_and_never_the_text(
    tmp_path: Path,
) -> None:
    async with hook_receiver(2) as (got, two, hook), running(tmp_path, **hook) as gw:
        key_id, _ = await gw.setup("acme", plan="open")
        flagged = entry("acme", key_id, finding(text=LEAK, start=4, end=25), user="u-7",
                        workspace="default")  # fmt: skip
        blocked = entry("acme", key_id, finding("injection_rules", "system_prompt_extraction",
                                                "blocked", matched=LEAK))  # fmt: skip
        clean = entry("acme", key_id)  # no findings: no event
        await gw.record(flagged, clean, blocked, plan="open")
        await asyncio.wait_for(two.wait(), 10)
        await gw.app.state.services.on_alert.__self__.aclose(5.0)  # every delivery landed
    events = [orjson.loads(body) for _, body in got]
    assert [e["type"] for e in events] == ["guardrail.flagged", "guardrail.blocked"]
    first, second = events
    assert first["request_id"] == flagged.request_id and first["tenant"] == "acme"
    assert (first["key"], first["user"], first["status"]) == (key_id, "u-7", "ok")
    assert first["findings"] == [
        {
            "detector": "pii",
            "category": "EMAIL_ADDRESS",
            "action": "redacted",
            "score": 0.93,
            "where": "user",
        }
    ]
    assert (second["status"], second["http_status"]) == ("blocked", 400)
    assert second["findings"][0]["category"] == "system_prompt_extraction"
    for header, body in got:
        assert LEAK.encode() not in body and b"matched" not in body
        assert signed_by_secret(header, body)


def test_the_event_of_a_redaction_alone_is_flagged() -> None:
    e = event_of(entry("acme", "k1", finding(action="redacted"), finding(action="flagged")))
    assert e["type"] == "guardrail.flagged"
    assert event_of(entry("acme", "k1", finding(action="blocked")))["type"] == "guardrail.blocked"


class _Queue:
    """A stand-in for the alert webhook whose deliveries never leave."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.channel = self

    @property
    def backlog(self) -> int:
        return len(self.sent)

    def send(self, event: dict[str, Any]) -> None:
        self.sent.append(event)


def test_a_full_webhook_queue_drops_guardrail_events_and_counts_them() -> None:
    hook = _Queue()
    watch = FindingsWatch(MemoryStore(), None, hook, max_backlog=3)  # type: ignore[arg-type]
    for _ in range(5):
        watch.observe(entry("acme", "k1", finding()), "default")
    watch.observe(entry("acme", "k1"), "default")  # no findings: nothing at all
    assert len(hook.sent) == 3 and watch.dropped == 2

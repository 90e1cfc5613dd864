"""The soak's traffic: paced workers sending a weighted mix of request kinds, a key-churn
loop, and the tally of what came back."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench import soak_shapes as shapes
from bench.soak_client import Connection, Reply, Request
from bench.soak_setup import LIMITED_CONCURRENT, TRAFFIC_TENANTS
from bench.stats import summarize

KINDS = (
    "chat",
    "stream",
    "stream_abandoned",
    "embeddings",
    "messages",
    "failing",
    "malformed",
    "burst",
    "admin",
)
DEFAULT_WEIGHTS = {
    "chat": 22.0,
    "stream": 14.0,
    "stream_abandoned": 10.0,
    "embeddings": 10.0,
    "messages": 10.0,
    "failing": 8.0,
    "malformed": 20.0,
    "burst": 3.0,
    "admin": 3.0,
}
UNEXPECTED_KEPT = 40
BURST = LIMITED_CONCURRENT + 2  # more streams at once than the limited key may run


@dataclass
class Tally:
    """Outcomes per traffic kind, latencies, and the first unexpected answers in full."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    by_shape: dict[str, Counter[str]] = field(default_factory=dict)
    unexpected: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    latency_ns: dict[str, list[int]] = field(default_factory=dict)
    total: int = 0

    def record(self, shot: shapes.Shot, reply: Reply, elapsed_ns: int) -> None:
        outcome = reply.outcome
        self.total += 1
        self.counts.setdefault(shot.kind, Counter())[outcome] += 1
        self.latency_ns.setdefault(shot.kind, []).append(elapsed_ns)
        if shot.kind in ("malformed", "failing"):
            self.by_shape.setdefault(f"{shot.kind}/{shot.shape}", Counter())[outcome] += 1
        problem = _problem(shot, reply)
        if problem is not None:
            self.unexpected[f"{shot.kind}/{shot.shape}/{problem}"] += 1
            if len(self.examples) < UNEXPECTED_KEPT:
                self.examples.append(_example(shot, reply, problem))

    def unexpected_5xx(self) -> int:
        return sum(n for key, n in self.unexpected.items() if key.rsplit("/", 1)[-1][:1] == "5")

    def timeouts(self) -> int:
        return sum(c.get("timeout", 0) for c in self.counts.values())

    def to_json(self) -> dict[str, Any]:
        latency = {}
        for kind, samples in self.latency_ns.items():
            summary = summarize(samples)
            latency[kind] = {
                "p50_ms": round(summary.p50_ms, 2),
                "p99_ms": round(summary.p99_ms, 2),
                "max_ms": round(summary.max_ms, 2),
            }
        return {
            "total": self.total,
            "counts": {k: dict(sorted(c.items())) for k, c in sorted(self.counts.items())},
            "shapes": {k: dict(sorted(c.items())) for k, c in sorted(self.by_shape.items())},
            "unexpected": dict(self.unexpected.most_common()),
            "unexpected_examples": self.examples,
            "latency": latency,
        }


def _problem(shot: shapes.Shot, reply: Reply) -> str | None:
    """None when the answer is one this shot allows, else the outcome to report."""
    if reply.status == 0:
        return None if reply.error in shot.allowed_errors else reply.outcome
    if reply.status not in shot.allowed:
        return reply.outcome
    if shot.expect_stream_end and reply.status == 200 and not reply.abandoned:
        if not shapes.stream_ended(reply.body):
            return "200-unterminated"
    return None


def _example(shot: shapes.Shot, reply: Reply, problem: str) -> dict[str, Any]:
    return {
        "kind": shot.kind,
        "shape": shot.shape,
        "outcome": problem,
        "path": shot.request.path,
        "request_id": reply.headers.get("x-farebox-request-id"),
        "body": reply.body[:400].decode(errors="replace"),
    }


@dataclass(frozen=True)
class TrafficPlan:
    rate: float = 100.0  # requests per second, all kinds together
    concurrency: int = 32
    timeout_s: float = 30.0
    churn_s: float = 5.0
    max_body_bytes: int = 256 * 1024
    seed: int = 1
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))


class Pacer:
    """Hands out start times ``1/rate`` apart; a busy period is not made up for later."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = time.monotonic()

    def delay(self) -> float:
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + self._interval
        return slot - now


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds`` or until ``stop`` is set, whichever is first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(seconds, 0.0))


class Driver:
    """Runs the workers and the churn loop until ``stop`` is set."""

    def __init__(
        self,
        port: int,
        keys: dict[str, str],
        admin_key: str,
        plan: TrafficPlan,
        tally: Tally,
        stop: asyncio.Event,
    ) -> None:
        self.port = port
        self.keys = keys
        self.admin_key = admin_key
        self.plan = plan
        self.tally = tally
        self.stop = stop
        self.churned = Counter[str]()
        self._pacer = Pacer(plan.rate)
        self._rng = random.Random(plan.seed)
        self._kinds = [k for k in KINDS if plan.weights.get(k, 0) > 0]
        self._kind_weights = [plan.weights[k] for k in self._kinds]

    async def run(self) -> None:
        """Until ``stop``; then lets requests in flight finish (each is bounded in time)."""
        tasks = [asyncio.create_task(self._worker(i)) for i in range(self.plan.concurrency)]
        if self.plan.churn_s > 0:
            tasks.append(asyncio.create_task(self._churn()))
        await self.stop.wait()
        _, pending = await asyncio.wait(tasks, timeout=2 * self.plan.timeout_s + 10)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def send(self, conn: Connection, shot: shapes.Shot) -> Reply:
        started = time.perf_counter_ns()
        reply = await conn.send(shot.request, self.plan.timeout_s)
        self.tally.record(shot, reply, time.perf_counter_ns() - started)
        return reply

    async def _worker(self, index: int) -> None:
        conn = Connection("127.0.0.1", self.port)
        try:
            while not self.stop.is_set():
                await pause(self.stop, self._pacer.delay())
                if self.stop.is_set():
                    break
                kind = self._rng.choices(self._kinds, self._kind_weights)[0]
                if kind == "burst":
                    await self._burst()
                else:
                    await self.send(conn, self._shot(kind))
        finally:
            await conn.close()

    def _tenant_key(self) -> str:
        names = list(TRAFFIC_TENANTS)
        return self.keys[self._rng.choices(names, [TRAFFIC_TENANTS[n] for n in names])[0]]

    def _shot(self, kind: str) -> shapes.Shot:
        rng, key = self._rng, self._tenant_key()
        if kind == "chat":
            return shapes.chat(key, rng)
        if kind in ("stream", "stream_abandoned"):
            return shapes.stream(key, rng, abandon=kind == "stream_abandoned")
        if kind == "embeddings":
            return shapes.embeddings(key, rng)
        if kind == "messages":
            return shapes.messages(key, rng)
        if kind == "failing":
            return shapes.failing(key, rng)
        if kind == "admin":
            return shapes.admin_read(self.admin_key, rng.choice(list(TRAFFIC_TENANTS)), rng)
        return shapes.malformed(key, rng, self.plan.max_body_bytes)

    async def _burst(self) -> None:
        """More streams at once on the limited key than its ``concurrent`` limit allows."""
        key = self.keys["limited"]
        shots = [shapes.stream(key, self._rng, False, kind="burst") for _ in range(BURST)]
        conns = [Connection("127.0.0.1", self.port) for _ in shots]
        try:
            await asyncio.gather(*(self.send(c, s) for c, s in zip(conns, shots, strict=True)))
        finally:
            await asyncio.gather(*(c.close() for c in conns))

    async def _churn(self) -> None:
        conn = Connection("127.0.0.1", self.port)
        try:
            while not self.stop.is_set():
                await pause(self.stop, self.plan.churn_s)
                if not self.stop.is_set():
                    await self._churn_once(conn)
        finally:
            await conn.close()

    async def _churn_once(self, conn: Connection) -> None:
        """Create a key, use it, revoke it, and check that the revoked key is refused."""
        n = self.churned["created"] + self.churned["failed"]
        admin = (
            ("Authorization", f"Bearer {self.admin_key}"),
            ("Content-Type", "application/json"),
        )
        body = json.dumps({"name": f"churn-{n}"}).encode()
        create = Request("POST", "/admin/v1/tenants/churn/keys", body, admin)
        made = await self.send(conn, shapes.Shot("churn_admin", "create", create, frozenset({201})))
        try:
            doc = json.loads(made.body) if made.status == 201 else {}
        except ValueError:
            doc = {}
        if not isinstance(doc.get("key"), str):
            self.churned["failed"] += 1
            return
        self.churned["created"] += 1
        for _ in range(3):
            await self.send(conn, _renamed(shapes.chat(doc["key"], self._rng), "churn"))
        revoke = Request("DELETE", f"/admin/v1/keys/{doc['id']}", None, admin)
        done = await self.send(conn, shapes.Shot("churn_admin", "revoke", revoke, frozenset({200})))
        if done.status != 200:
            return
        self.churned["revoked"] += 1
        await self._use_revoked(conn, doc["key"])

    async def _use_revoked(self, conn: Connection, key: str) -> None:
        chat = _renamed(shapes.chat(key, self._rng), "revoked", frozenset({401}))
        me_request = Request("GET", "/v1/me", None, (("Authorization", f"Bearer {key}"),))
        me = shapes.Shot("revoked", "me", me_request, frozenset({401}))
        for shot in (chat, me):
            reply = await self.send(conn, shot)
            self.churned["revoked_refused" if reply.status == 401 else "revoked_served"] += 1


def _renamed(shot: shapes.Shot, kind: str, allowed: frozenset[int] | None = None) -> shapes.Shot:
    return shapes.Shot(kind, shot.shape, shot.request, allowed or shot.allowed)

"""Alert delivery, off the request path: the signed webhook, PagerDuty and Slack.

Each destination is a ``Channel``: one queue and one worker task, so its events leave in
order (a PagerDuty ``resolve`` never overtakes its ``trigger``). A delivery is retried with
exponential backoff, honouring ``Retry-After``, on 429, 5xx and network errors; any other
refusal is final and logged. Nothing here ever blocks a request.

Webhook POSTs carry ``X-Farebox-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from farebox.errors import FareboxError
from farebox.http.client import HttpClient, HttpResponse
from farebox.notify import formats
from farebox.sinks.webhook import signature  # one signing scheme for every webhook

log = logging.getLogger("farebox.alerts")  # the name operators filter on
ATTEMPTS = 5
Accept = Callable[[HttpResponse], bool]


@dataclass(frozen=True, slots=True)
class _Delivery:
    body: dict[str, Any]
    what: str  # for the log: never the URL or a key


def _retry_after(response: HttpResponse) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value else None
    except ValueError:
        return None


class Channel:
    """One destination: an ordered queue of JSON POSTs, each retried until it lands."""

    def __init__(
        self,
        name: str,
        url: str,
        http: HttpClient,
        accept: Accept,
        *,
        sign: bytes | None = None,
        attempts: int = ATTEMPTS,
        backoff_s: float = 1.0,
    ) -> None:
        self.name = name
        self._url = url
        self._http = http
        self._accept = accept
        self._sign = sign
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    @property
    def backlog(self) -> int:
        """Deliveries queued, not yet sent (a sender may shed load past a bound)."""
        return self._queue.qsize()

    def send(self, body: dict[str, Any], what: str = "alert") -> None:
        self._queue.put_nowait(_Delivery(body, what))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._queue.empty():
            item = self._queue.get_nowait()
            try:
                await self._deliver(item)
            finally:
                self._queue.task_done()

    async def _deliver(self, item: _Delivery) -> None:
        body = orjson.dumps(item.body)
        for attempt in range(self._attempts):
            headers = {"content-type": "application/json"}
            if self._sign:
                headers["x-farebox-signature"] = signature(self._sign, int(time.time()), body)
            wait: float | None = None
            try:
                response = await self._http.post_json(self._url, headers, body, 10.0)
            except FareboxError as exc:
                log.warning("%s: %s failed: %s", self.name, item.what, exc.message)
            else:
                if self._accept(response):
                    return
                log.warning("%s: %s answered HTTP %s", self.name, item.what, response.status)
                if not formats.retryable(response.status):
                    log.error("%s: %s refused for good (HTTP %s)", self.name, item.what,
                              response.status)  # fmt: skip
                    return
                wait = _retry_after(response)
            if attempt + 1 < self._attempts:
                delay = min(self._backoff_s * 2**attempt, 30.0)
                await asyncio.sleep(max(delay, wait or 0.0))
        log.error("%s: %s dropped after %d attempts", self.name, item.what, self._attempts)

    async def drain(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for queued deliveries, then give up on the rest."""
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._queue.join()), timeout_s)
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None


class WebhookAlerts:
    """The signed alert webhook (budget thresholds, dead letters, anomalies)."""

    def __init__(self, url: str, secret: bytes | None, http: HttpClient, **options: Any) -> None:
        self.channel = Channel(
            "alert webhook", url, http, lambda r: r.status < 300, sign=secret, **options
        )

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(event, str(event.get("type", "alert")))

    async def aclose(self, timeout_s: float = 0.0) -> None:
        await self.channel.drain(timeout_s)

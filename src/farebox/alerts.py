"""Signed webhook delivery of alert events (budget thresholds), off the request path.

Each POST carries ``X-Farebox-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`` under
the configured secret. Deliveries are retried with backoff and never block a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from farebox.errors import FareboxError
from farebox.providers.http import HttpClient
from farebox.sinks.webhook import signature  # one signing scheme for every webhook

log = logging.getLogger("farebox.alerts")
ATTEMPTS = 5


class WebhookAlerts:
    def __init__(self, url: str, secret: bytes | None, http: HttpClient) -> None:
        self._url = url
        self._secret = secret
        self._http = http
        self._tasks: set[asyncio.Task[None]] = set()

    def send(self, event: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self._deliver(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, event: dict[str, Any]) -> None:
        body = orjson.dumps(event)
        for attempt in range(ATTEMPTS):
            headers = {"content-type": "application/json"}
            if self._secret:
                headers["x-farebox-signature"] = signature(self._secret, int(time.time()), body)
            try:
                response = await self._http.post_json(self._url, headers, body, 10.0)
                if response.status < 300:
                    return
                log.warning("alert webhook answered HTTP %s", response.status)
            except FareboxError as exc:
                log.warning("alert webhook failed: %s", exc.message)
            await asyncio.sleep(min(2**attempt, 30))
        log.error("alert dropped after %d attempts: %s", ATTEMPTS, event.get("type"))

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

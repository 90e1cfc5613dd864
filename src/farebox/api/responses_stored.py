"""Stored responses of the Responses API: keeping an answer (unless ``store: false``), the
history a ``previous_response_id`` continues, and ``GET``/``DELETE /v1/responses/{id}`` and
``GET /v1/responses/{id}/input_items``.

A stored response belongs to the tenant that made it: for any other tenant its id is exactly
an unknown id (404 ``not_found``), and so is an expired one. Keeping an answer never fails
the request that produced it: a store that cannot keep it is logged. It is written by a
batching writer (``responses_writer``), which the reply waits for before its last bytes
(``responses.store_before_reply``:
any replica can continue it at once) or not (a faster reply; a read of the same id in this
process waits for the write, another process may not see it for a moment). The default,
``auto``, waits only where other processes share the database: a gateway that is its
database's only user (single-process SQLite, memory) replies first, since every continuation
of its answers reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs

import orjson

from farebox.api.fastpath import FastRoute, Incoming, JSONBody
from farebox.api.responses_writer import FINAL_EVENTS, ResponseWriter
from farebox.config.limits import ResponsesSettings
from farebox.core.records import StoredResponse
from farebox.errors import InvalidRequest, MethodNotAllowed, NotFound
from farebox.gateway.render import Reply, StreamReply
from farebox.providers.translate_responses_history import (
    listed_items,
    output_as_input,
    stored_object,
)
from farebox.stores.base import ResponseStore

log = logging.getLogger("farebox.responses")
JSON = dict[str, Any]
PREFIX = "/v1/responses/"
DAY_S = 86_400.0
PURGE_EVERY_S = 3_600.0
BESIDE_S = 0.01  # an answer stored beside its reply waits this long at most for others


class StoredResponses:
    """The Responses API's use of a ``ResponseStore``, for one app instance. Once started,
    it purges expired responses every ``PURGE_EVERY_S`` (reads never see them anyway)."""

    def __init__(
        self,
        store: ResponseStore,
        settings: ResponsesSettings,
        clock: Callable[[], float],
        *,
        sole_user: bool = False,
    ) -> None:
        """``sole_user``: this process is the only one using the store's database, so every
        continuation of its answers reaches it (and waits in ``find`` for a write still
        pending): ``store_before_reply: auto`` then replies first."""
        self._store = store
        self._ttl_s = settings.ttl_days * DAY_S
        before = settings.store_before_reply
        self._before_reply = (not sole_user) if before == "auto" else before
        self._clock = clock
        self._purger: asyncio.Task[None] | None = None
        # before the reply: the answers of one loop turn share a write; beside it: of BESIDE_S
        wait_s = 0.0 if self._before_reply else BESIDE_S
        self._writer = ResponseWriter(store, self._ttl_s, wait_s)

    @property
    def before_reply(self) -> bool:
        """Whether an answer is stored before its last bytes leave (``auto`` resolved)."""
        return self._before_reply

    def start(self) -> None:
        self._purger = asyncio.get_running_loop().create_task(self._purge_every())

    async def stop(self) -> None:
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
            self._purger = None
        await self._writer.stop()

    async def _purge_every(self) -> None:
        while True:
            await asyncio.sleep(PURGE_EVERY_S)
            try:
                gone = await self._store.purge(self._clock())
                if gone:
                    log.info("purged %d expired stored responses", gone)
            except Exception:
                log.exception("purging expired stored responses failed")

    async def find(self, tenant_id: str, response_id: str, param: str | None = None) -> Any:
        """The tenant's stored response, or 404 (unknown, expired or another tenant's). An
        answer of this process still being stored is waited for: read your own writes."""
        pending = self._writer.pending(response_id)
        if pending is not None:
            await asyncio.shield(pending)  # a reader that goes away does not cancel the write
        found = await self._store.get(tenant_id, response_id, self._clock())
        if found is None:
            what = "Previous response" if param else "Response"
            raise NotFound(f"{what} with id {response_id!r} not found.", param=param)
        return found

    async def history(self, tenant_id: str, response_id: str) -> list[JSON]:
        """The conversation a ``previous_response_id`` continues, as input items."""
        found = await self.find(tenant_id, response_id, "previous_response_id")
        return [*found.input, *output_as_input(found.output)]

    async def keep(
        self, reply: Reply | StreamReply, response_id: str, tenant_id: str, items: list[JSON]
    ) -> Reply | StreamReply:
        """``reply``, its answer kept (``items``: the whole input it answered) once complete:
        before the reply's last bytes leave (``store_before_reply``), or beside them."""
        if isinstance(reply, StreamReply):
            reply.chunks = self._kept_stream(reply.chunks, response_id, tenant_id, items)
        elif reply.status == 200:
            await self._put_soon(response_id, reply.body, tenant_id, items)
        return reply

    async def _kept_stream(
        self, chunks: AsyncIterator[bytes], response_id: str, tenant_id: str, items: list[JSON]
    ) -> AsyncIterator[bytes]:
        """The stream, its final response kept. Closing it closes the relay's stream at once,
        so a client that goes away is metered as it would be unwrapped."""
        try:
            async for chunk in chunks:
                if any(mark in chunk for mark in FINAL_EVENTS):
                    await self._put_soon(response_id, chunk, tenant_id, items)
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _put_soon(
        self, response_id: str, sent: bytes, tenant_id: str, items: list[JSON]
    ) -> None:
        """Store the answer in ``sent`` (a Responses object, or the stream's final events)
        through the batching writer, waited for here with ``store_before_reply``; ``find``
        waits for it, and ``stop`` lets it finish."""
        done = self._writer.submit(response_id, sent, tenant_id, items, self._clock())
        if self._before_reply:
            await asyncio.shield(done)  # a client that goes away does not cancel the write

    async def delete(self, tenant_id: str, response_id: str) -> None:
        await self.find(tenant_id, response_id)
        if not await self._store.delete(tenant_id, response_id):
            raise NotFound(f"Response with id {response_id!r} not found.")


def shown(stored: StoredResponse) -> JSON:
    return stored_object(stored.id, stored.created_at, stored.model, stored.output,
                         stored.usage, stored.details)  # fmt: skip


def item_page(stored: StoredResponse, query: dict[str, list[str]]) -> JSON:
    """A page of the input items: ``limit`` (1-100, 20), ``order`` (``desc``), ``after``."""
    items = listed_items(stored.id, stored.input)
    order = (query.get("order") or ["desc"])[0]
    if order not in ("asc", "desc"):
        raise InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
    if order == "desc":
        items.reverse()
    raw_limit = (query.get("limit") or ["20"])[0]
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise InvalidRequest("'limit' must be an integer from 1 to 100.", param="limit")
    for after in query.get("after", [])[:1]:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise InvalidRequest(f"No input item {after!r} in this response.", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[: int(raw_limit)]
    return {"object": "list", "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(items) > len(page)}  # fmt: skip


def stored_route(
    kept: StoredResponses,
    principal: Callable[[Incoming], Any],
    guard: Callable[[Callable[[Incoming, str], Any]], Any],
) -> FastRoute:
    """``/v1/responses/{id}`` (GET, DELETE) and ``/v1/responses/{id}/input_items`` (GET)."""

    async def serve(request: Incoming, request_id: str) -> JSONBody:
        who = await principal(request)
        method = request.scope["method"]
        response_id, _, rest = request.scope["path"][len(PREFIX) :].partition("/")
        if rest not in ("", "input_items") or not response_id:
            raise NotFound(f"No route for {method} {request.scope['path']}.")
        if rest and method != "GET":
            allow = {"Allow": "GET"}
            raise MethodNotAllowed(f"{method} is not allowed here; use GET.", headers=allow)
        tenant = who.tenant.id
        if method == "DELETE":
            await kept.delete(tenant, response_id)
            body: JSON = {"id": response_id, "object": "response", "deleted": True}
        elif rest:
            query = parse_qs(request.scope.get("query_string", b"").decode("latin-1"))
            body = item_page(await kept.find(tenant, response_id), query)
        else:
            body = shown(await kept.find(tenant, response_id))
        return JSONBody(orjson.dumps(body), 200, {"x-farebox-request-id": request_id})

    return FastRoute(PREFIX, guard(serve), ["GET", "DELETE"])

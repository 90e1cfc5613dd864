"""The OpenAI-compatible data plane: chat completions, embeddings, models."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from farebox.api.body import read_json, validate_chat, validate_embeddings
from farebox.api.context import Services
from farebox.api.errors import error_response
from farebox.api.fastpath import FastRoute, Incoming, JSONBody
from farebox.api.streaming import SSEResponse
from farebox.errors import FareboxError
from farebox.gateway.pipeline import Reply, StreamReply, new_request_id

log = logging.getLogger("farebox.api")
Handler = Callable[[Incoming], Awaitable[Any]]
JSON = dict[str, Any]


def guarded(
    services: Services, work: Callable[[Incoming, str], Awaitable[Any]], flavor: str = "openai"
) -> Handler:
    """Run ``work`` and turn every failure into a clean error response, never a traceback."""

    async def endpoint(request: Incoming) -> Any:
        request_id = new_request_id()
        try:
            return await work(request, request_id)
        except FareboxError as exc:
            return error_response(exc, request_id, flavor=flavor)
        except Exception:
            # The request path turns every failure after admission into a FareboxError (with
            # the ledger entry settled), so what reaches here happened before anything was
            # reserved or sent upstream.
            log.exception("unexpected error in request %s", request_id)
            failure = FareboxError(
                f"The gateway failed to handle this request (an internal error, logged as "
                f"{request_id}) before sending it upstream; nothing was billed.",
                code="internal_error",
            )
            return error_response(failure, request_id, flavor=flavor)

    return endpoint


def render(reply: Reply | StreamReply) -> Any:
    if isinstance(reply, StreamReply):
        return SSEResponse(reply.chunks, reply.headers)
    return JSONBody(reply.body, reply.status, reply.headers)


def via_chat(
    services: Services,
    path: str,
    validate: Callable[[JSON], None],
    to_chat: Callable[[JSON], JSON],
    flavor: str,
    errors: str = "openai",
) -> FastRoute:
    """``POST path`` for another API's body (legacy completions, Anthropic messages): one
    route shape, so that each such API goes through the chat request path the same way.

    The body is validated in its own API's terms, translated to chat completions by
    ``to_chat``, and the answer comes back in ``flavor``; errors are in ``errors``' format.
    """
    limit = services.settings.file.server.max_body_bytes

    async def work(request: Incoming, request_id: str) -> Any:
        who = await services.principal(request)
        body = await read_json(request, limit)
        validate(body)
        chat = to_chat(body)
        reply = await services.gateway.chat(who, chat, request_id, flavor=flavor)
        return render(reply)

    return FastRoute(path, guarded(services, work, errors), ["POST"])


def routes(services: Services) -> list[FastRoute]:
    limit = services.settings.file.server.max_body_bytes

    principal = services.principal

    async def chat(request: Incoming, request_id: str) -> Any:
        who = await principal(request)
        body = await read_json(request, limit)
        validate_chat(body)
        return render(await services.gateway.chat(who, body, request_id))

    async def embeddings(request: Incoming, request_id: str) -> Any:
        who = await principal(request)
        body = await read_json(request, limit)
        validate_embeddings(body)
        return render(await services.gateway.embed(who, body, request_id))

    async def models(request: Incoming, request_id: str) -> Any:
        who = await principal(request)
        created = int(services.started_at)
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": owner}
            for name, owner in services.gateway.models_for(who)
        ]
        body = orjson.dumps({"object": "list", "data": data})
        return JSONBody(body, headers={"x-farebox-request-id": request_id})

    return [
        FastRoute("/v1/chat/completions", guarded(services, chat), ["POST"]),
        FastRoute("/v1/embeddings", guarded(services, embeddings), ["POST"]),
        FastRoute("/v1/models", guarded(services, models), ["GET"]),
    ]

"""Token counting: ``POST /v1/messages/count_tokens`` (Anthropic format, for clients on the
``anthropic`` SDK) and ``POST /v1/responses/input_tokens`` (OpenAI format).

Authenticated, checked against the plan's model access and taking a request of its rate
limits like any request, then counted by the provider (Anthropic deployments) or by the
gateway's estimator; never billed, never held against a budget, never in the ledger
(``farebox.gateway.counting``). A ``previous_response_id`` counts the stored conversation it
continues too, read exactly as ``POST /v1/responses`` reads it (the tenant's own, else 404).
"""

from __future__ import annotations

from typing import Any

import orjson

from farebox.api.body import read_json, validate_count_tokens, validate_input_tokens
from farebox.api.context import Services
from farebox.api.fastpath import FastRoute, Incoming, JSONBody
from farebox.api.openai import guarded
from farebox.providers.translate_responses_history import with_history


def routes(services: Services) -> list[FastRoute]:
    limit = services.settings.file.server.max_body_bytes

    async def count_tokens(request: Incoming, request_id: str) -> Any:
        who = await services.principal(request)
        body = await read_json(request, limit)
        validate_count_tokens(body)
        counted = await services.gateway.count_tokens(who, body, "anthropic", request_id)
        headers = {"x-farebox-request-id": request_id, **counted.headers}
        return JSONBody(orjson.dumps({"input_tokens": counted.input_tokens}), headers=headers)

    async def input_tokens(request: Incoming, request_id: str) -> Any:
        who = await services.principal(request)
        body = await read_json(request, limit)
        validate_input_tokens(body)
        previous = body.get("previous_response_id")
        if previous is not None:
            history = await services.responses.history(who.tenant.id, previous)
            body = with_history({**body, "input": body.get("input") or []}, history)
        counted = await services.gateway.count_tokens(who, body, "openai", request_id)
        data = {"object": "response.input_tokens", "input_tokens": counted.input_tokens}
        headers = {"x-farebox-request-id": request_id, **counted.headers}
        return JSONBody(orjson.dumps(data), headers=headers)

    return [
        FastRoute(
            "/v1/messages/count_tokens", guarded(services, count_tokens, "anthropic"), ["POST"]
        ),
        FastRoute("/v1/responses/input_tokens", guarded(services, input_tokens), ["POST"]),
    ]

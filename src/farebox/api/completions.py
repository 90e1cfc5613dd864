"""``POST /v1/completions``: OpenAI's legacy text completions, streamed and not.

The request is translated to chat completions at the edge and goes through the same request
path as ``/v1/chat/completions`` (tenancy, plan policy, rate limits, budgets, routing with
failover, metering, the ledger, billing and anomaly counting); the answer comes back as
``text_completion`` objects (``farebox.gateway.render_legacy``).
"""

from __future__ import annotations

from typing import Any

from farebox.api.body import read_json, validate_completion
from farebox.api.context import Services
from farebox.api.fastpath import FastRoute, Incoming
from farebox.api.openai import guarded, render
from farebox.providers.translate_completions import completion_request_to_chat


def routes(services: Services) -> list[FastRoute]:
    limit = services.settings.file.server.max_body_bytes

    async def completions(request: Incoming, request_id: str) -> Any:
        who = await services.principal(request)
        body = await read_json(request, limit)
        validate_completion(body)
        chat = completion_request_to_chat(body)
        reply = await services.gateway.chat(who, chat, request_id, flavor="completions")
        return render(reply)

    return [FastRoute("/v1/completions", guarded(services, completions), ["POST"])]

"""``POST /v1/messages``: the Anthropic Messages API, for clients on the ``anthropic`` SDK.

It goes through the same request path as ``/v1/chat/completions``: tenancy, plan policy,
rate limits, budgets, routing (to Anthropic or OpenAI-compatible deployments alike) and
metering. Requests are translated to the OpenAI shape the path works in, and answers and
errors come back in Anthropic's format. Keys work as ``x-api-key`` or ``Authorization``.
"""

from __future__ import annotations

from typing import Any

from farebox.api.body import read_json, validate_messages
from farebox.api.context import Services
from farebox.api.fastpath import FastRoute, Incoming
from farebox.api.openai import guarded, render
from farebox.providers.translate_reverse import anthropic_request_to_openai


def routes(services: Services) -> list[FastRoute]:
    limit = services.settings.file.server.max_body_bytes

    async def messages(request: Incoming, request_id: str) -> Any:
        who = await services.principal(request)
        body = await read_json(request, limit)
        validate_messages(body)
        chat = anthropic_request_to_openai(body)
        reply = await services.gateway.chat(who, chat, request_id, flavor="anthropic")
        return render(reply)

    return [FastRoute("/v1/messages", guarded(services, messages, "anthropic"), ["POST"])]

"""``POST /v1/messages``: the Anthropic Messages API, for clients on the ``anthropic`` SDK.

It goes through the same request path as ``/v1/chat/completions``: tenancy, plan policy,
rate limits, budgets, routing (to Anthropic or OpenAI-compatible deployments alike) and
metering. Requests are translated to the OpenAI shape the path works in, and answers and
errors come back in Anthropic's format. Keys work as ``x-api-key`` or ``Authorization``.
"""

from __future__ import annotations

from farebox.api.body import validate_messages
from farebox.api.context import Services
from farebox.api.fastpath import FastRoute
from farebox.api.openai import via_chat
from farebox.providers.translate_reverse import anthropic_request_to_openai


def routes(services: Services) -> list[FastRoute]:
    return [
        via_chat(
            services,
            "/v1/messages",
            validate_messages,
            anthropic_request_to_openai,
            flavor="anthropic",
            errors="anthropic",
        )
    ]

"""``POST /v1/completions``: OpenAI's legacy text completions, streamed and not.

The request is translated to chat completions at the edge and goes through the same request
path as ``/v1/chat/completions`` (tenancy, plan policy, rate limits, budgets, routing with
failover, metering, the ledger, billing and anomaly counting); the answer comes back as
``text_completion`` objects (``farebox.gateway.render_legacy``).
"""

from __future__ import annotations

from farebox.api.body import validate_completion
from farebox.api.context import Services
from farebox.api.fastpath import FastRoute
from farebox.api.openai import via_chat
from farebox.providers.translate_completions import completion_request_to_chat


def routes(services: Services) -> list[FastRoute]:
    return [
        via_chat(
            services,
            "/v1/completions",
            validate_completion,
            completion_request_to_chat,
            flavor="completions",
        )
    ]

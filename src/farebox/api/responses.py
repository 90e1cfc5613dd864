"""``POST /v1/responses``: the OpenAI Responses API, for clients on ``client.responses``.

It goes through the same request path as ``/v1/chat/completions``: tenancy, plan policy,
rate limits, budgets, routing with failover (to any deployment: OpenAI-compatible, Anthropic,
the mock) and metering. The request is translated to the chat-completions shape the path works
in; the answer comes back as a Responses object or the Responses event stream, with the same
``x-farebox-*`` headers. An ``openai`` deployment set to ``responses: native`` is sent the
request itself instead, and its answer is passed on. Errors are in OpenAI's format.

Answers are stored unless ``store: false`` (``responses_stored``); a ``previous_response_id``
puts the stored conversation before the new input, before translation, so that input caps,
budgets and metering see the whole history.
"""

from __future__ import annotations

from typing import Any

from farebox.api.body import read_json, validate_responses
from farebox.api.context import Services
from farebox.api.fastpath import FastRoute, Incoming
from farebox.api.openai import guarded, render
from farebox.api.responses_stored import stored_route
from farebox.errors import FareboxError
from farebox.gateway.render import response_id
from farebox.providers.translate_responses import (
    echo_of,
    native_only,
    responses_request_to_chat,
)
from farebox.providers.translate_responses_history import input_items, with_history

# a refusal of the request path names chat fields: the Responses client sent these instead
CLIENT_PARAMS = {"max_completion_tokens": "max_output_tokens", "messages": "input"}


def routes(services: Services) -> list[FastRoute]:
    limit = services.settings.file.server.max_body_bytes
    kept = services.responses

    async def create(request: Incoming, request_id: str) -> Any:
        who = await services.principal(request)
        body = await read_json(request, limit)
        validate_responses(body)
        previous = body.get("previous_response_id")
        if previous is not None:
            body = with_history(body, await kept.history(who.tenant.id, previous))
        chat = responses_request_to_chat(body)
        try:
            reply = await services.gateway.chat(
                who,
                chat,
                request_id,
                flavor="responses",
                echo=echo_of(body),
                responses=body,
                native_only=native_only(body),
            )
        except FareboxError as exc:
            raise in_client_terms(exc) from None
        if body.get("store") is not False:
            rid = response_id(request_id)
            reply = await kept.keep(reply, rid, who.tenant.id, input_items(body["input"]))
        return render(reply)

    return [FastRoute("/v1/responses", guarded(services, create), ["POST"])]


def prefix_route(services: Services) -> FastRoute:
    """``/v1/responses/{id}`` and ``/v1/responses/{id}/input_items``."""
    return stored_route(
        services.responses, services.principal, lambda work: guarded(services, work)
    )


def in_client_terms(error: FareboxError) -> FareboxError:
    """``error`` naming the field the client sent (``max_output_tokens``, ``input``)."""
    name = CLIENT_PARAMS.get(error.param or "")
    if name is not None and error.param is not None:
        error.message = error.message.replace(error.param, name)
        error.param = name
    return error

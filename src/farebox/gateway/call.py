"""What one request carries through the request path (``Call``), what is sent upstream for it,
and the ledger entries made from it."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from farebox.core.money import format_usd
from farebox.core.plans import Plan
from farebox.core.pricing import cost
from farebox.core.records import LedgerEntry
from farebox.core.routing import Target
from farebox.core.tiers import with_schedule
from farebox.core.usage import Usage
from farebox.gateway.auth import Principal
from farebox.gateway.stream_meter import StreamMeter
from farebox.providers.base import Provider, ResponsesProvider, native_responses

if TYPE_CHECKING:  # admission builds on the carrier, not the other way round
    from farebox.gateway.admission import Admission
    from farebox.gateway.cache import CacheTicket
    from farebox.gateway.guardrails import GuardState
    from farebox.observe.traces_request import RequestTrace


def new_request_id() -> str:
    return f"req_{os.urandom(16).hex()}"


@dataclass(slots=True)
class Call:
    """One request on its way through the path.

    ``settled`` turns true once the end of its admission is taken care of: its ledger entry
    is being (or has been) written, or a stream relay has taken the admission over."""

    principal: Principal
    plan: Plan
    endpoint: str
    model: str
    request_id: str
    body: dict[str, Any]
    started_wall: float
    started: float = field(default_factory=time.perf_counter)
    admission: Admission | None = None
    flavor: str = "openai"  # the client's format: openai | anthropic | completions | responses
    echo: dict[str, Any] | None = None  # what a Responses object repeats of its request
    responses: dict[str, Any] | None = None  # the Responses body, for native deployments
    target: Target | None = None  # the deployment tried last
    settled: bool = False
    trace: RequestTrace | None = None  # its spans, when tracing is on
    upstream_headers: Mapping[str, str] | None = None  # the attempt's trace context, if any
    cache: CacheTicket | None = None  # its business with the response cache (None: none)
    # issue 14: the attempt's provider key from the vault (None: the provider's own), and
    # whether it is the tenant's own (bring your own key: cost 0, the plan's byok_fee)
    api_key: str | None = None
    byok: bool = False
    # issue 15: what the guardrail stage found and what rewrites the answer (None: the plan
    # has no guardrails on)
    guard: GuardState | None = None

    @property
    def reservation_id(self) -> str | None:
        return self.admission.reservation_id if self.admission else None


def upstream_body(call: Call, target: Target, stream: bool) -> dict[str, Any]:
    """The body sent to ``target``: its own model name; a stream always asks for usage."""
    upstream = dict(call.body)
    upstream["model"] = target.model
    if stream:
        options = dict(upstream.get("stream_options") or {})
        options["include_usage"] = True
        upstream["stream_options"] = options
    return upstream


def native_body(call: Call, target: Target, stream: bool) -> dict[str, Any]:
    """The Responses body sent to a native ``target``: its own model name, the output cap the
    chat body was given (plan limits, the deployment's cap), not stored upstream (Farebox
    keeps the conversation, already expanded in ``input``), and without the reasoning items
    an upstream that stores nothing cannot resolve (those without ``encrypted_content``)."""
    upstream = dict(call.responses or {})
    upstream.pop("previous_response_id", None)
    upstream.update(model=target.model, store=False, stream=stream)
    cap = call.body.get("max_completion_tokens", call.body.get("max_tokens"))
    if isinstance(cap, int):
        upstream["max_output_tokens"] = cap
    items = upstream.get("input")
    if isinstance(items, list):
        upstream["input"] = [i for i in items if not _unresolvable(i)]
    return upstream


def _unresolvable(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and item.get("type") == "reasoning"
        and not item.get("encrypted_content")
    )


def served_natively(
    call: Call, providers: Mapping[str, Provider], target: Target
) -> ResponsesProvider | None:
    """The provider of ``target`` if ``call`` (a Responses request) goes to it as it is."""
    return native_responses(providers[target.provider]) if call.responses is not None else None


def entry(
    call: Call,
    target: Target,
    usage: Usage,
    status: str,
    http_status: int,
    upstream_ms: float,
    finished_at: float,
    **extra: Any,
) -> LedgerEntry:
    """The ledger entry for ``call`` served (or not) by ``target`` with ``usage``."""
    price = 0 if call.byok else cost(usage, target.price)  # BYOK: the tenant pays upstream
    fields: dict[str, Any] = {
        "metadata": call.principal.metadata,
        "reservation_id": call.reservation_id,
        "cache": cache_status(call),
        **({"byok": True} if call.byok else {}),
        **extra,
    }
    made = call_entry(
        call,
        target.model,
        target.provider,
        status,
        http_status,
        finished_at,
        input_tokens=usage.input_tokens,
        cached_input_tokens=usage.cached_input_tokens,
        cache_write_5m_tokens=usage.cache_write_5m_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        output_tokens=usage.output_tokens,
        reasoning_tokens=usage.reasoning_tokens,
        cost=price,
        revenue=call.plan.revenue.revenue(
            usage,
            price,
            call.model,
            call.principal.feature,
            served=status == "ok",
            byok=call.byok,
        ),
        latency_ms=(time.perf_counter() - call.started) * 1000,
        upstream_ms=upstream_ms,
        **fields,
    )
    tiers = call.plan.revenue.tiered
    return made if tiers is None or call.byok else with_schedule(made, tiers)


def call_entry(
    call: Call,
    model_served: str,
    provider: str,
    status: str,
    http_status: int,
    finished_at: float,
    **fields: Any,
) -> LedgerEntry:
    """A ledger entry of ``call``: who asked what, when, and who served it (``entry``,
    ``placeholder`` and a cache hit's all start here); ``fields``: the rest of the entry."""
    who = call.principal
    if call.guard is not None and "guardrails" not in fields and call.guard.any:
        fields["guardrails"] = call.guard.json()
    return LedgerEntry(
        request_id=call.request_id,
        tenant_id=who.tenant.id,
        key_id=who.key.id,
        endpoint=call.endpoint,
        model_requested=call.model,
        model_served=model_served,
        provider=provider,
        status=status,
        http_status=http_status,
        started_at=call.started_wall,
        finished_at=finished_at,
        user=who.user or openai_user(call.body),
        feature=who.feature,
        stream=bool(call.body.get("stream")),
        workspace=who.workspace_id,
        **fields,
    )


def cache_status(call: Call) -> str | None:
    """The entry's ``cache`` field: what the response cache did with ``call`` (None: off)."""
    return call.cache.status if call.cache is not None else None


def replace(entry: LedgerEntry, **changes: Any) -> LedgerEntry:
    return dataclasses.replace(entry, **changes)


def estimated(entry: LedgerEntry, error_code: str | None = None) -> LedgerEntry:
    return replace(entry, usage_source="estimated", error_code=error_code)


def with_ttft(entry: LedgerEntry, meter: StreamMeter) -> LedgerEntry:
    if meter.first_at is None:
        return entry
    return replace(entry, ttft_ms=(meter.first_at - meter.started) * 1000)


def placeholder(call: Call, target: Target, rid: str, amount: int) -> LedgerEntry:
    """The ``unsettled`` entry a reclaimed lease leaves behind (no usage is known)."""
    return call_entry(
        call,
        target.model,
        target.provider,
        "unsettled",
        0,
        call.started_wall,
        metadata={**call.principal.metadata, "reserved_usd": format_usd(amount)},
        error_code="lease_expired",
        reservation_id=rid,
    )


def openai_user(body: Mapping[str, Any], field: str = "user") -> str | None:
    """The end user a request body names in ``field`` (``user``, or OpenAI's
    ``safety_identifier``), at most 256 characters."""
    user = body.get(field)
    return user[:256] if isinstance(user, str) and user else None

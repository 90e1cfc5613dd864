"""What each kind of deployment can honour of an OpenAI chat-completions request. No I/O.

The request path works in chat shapes; a deployment of another kind gets a translation, and a
field the translation has no faithful place for would be dropped without a word. The table
below names those fields per provider kind, with the reason. The gateway uses it when it picks
a request's deployments (:func:`honouring`): a deployment that cannot honour the request is
left out, so failover only goes where the request is served as asked, and when none is left
the client gets a 400 naming its field and the deployment kind. The Anthropic translator
checks it too (:func:`refusal`), for a deployment reached another way (a plan's downgrade).

Kinds without rules honour the whole chat surface: ``openai`` sends the body as it came (the
upstream answers for itself) and ``mock`` simulates it.

``anthropic`` (``translate``) honours by mapping: ``max_tokens``, ``temperature`` in 0..1,
``top_p``, ``stop``, ``user`` or ``safety_identifier`` (``metadata.user_id``), function
tools, ``tool_choice``, ``parallel_tool_calls``, and ``reasoning_effort: "none"`` (thinking
disabled). Accepted without effect, as they change nothing in the answer: ``prompt_cache_key``
(Anthropic caches by ``cache_control``), ``metadata`` without ``store``, ``service_tier``
``auto`` or ``default``, ``stream_options``. Refused: everything in ``ANTHROPIC``. Reasoning
effort is refused rather than mapped to extended thinking: thinking has a token budget, not an
effort level, and in a tool loop its blocks must go back upstream with their signatures, which
a chat-completions history cannot carry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from farebox.core.routing import Target
from farebox.errors import InvalidRequest

# a request field as the client wrote it, where its chat name differs (by client format)
CLIENT_NAMES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "responses": {
            "response_format": "text.format",
            "reasoning_effort": "reasoning.effort",
            "verbosity": "text.verbosity",
            "max_completion_tokens": "max_output_tokens",
        },
    }
)


@dataclass(frozen=True, slots=True)
class Rule:
    """``cannot(value)`` is true when the deployment kind cannot honour that value."""

    cannot: Callable[[Any], bool]
    why: str


def _set(value: Any) -> bool:
    return value is not None


def _nonzero(value: Any) -> bool:
    return value is not None and value != 0


def _structured(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") in ("json_object", "json_schema")


def _audio(value: Any) -> bool:
    return isinstance(value, list) and "audio" in value


def _other_tools(value: Any) -> bool:
    tools = value if isinstance(value, list) else ()
    return any(isinstance(t, dict) and t.get("type") != "function" for t in tools)


def _other_choice(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") not in (None, "function")


ANTHROPIC: Mapping[str, Rule] = MappingProxyType(
    {
        "n": Rule(lambda v: v not in (None, 1), "it returns one choice per request"),
        "response_format": Rule(
            _structured, "it has no JSON mode (json_object or json_schema structured output)"
        ),
        "reasoning_effort": Rule(
            lambda v: v not in (None, "none"),
            "its extended thinking takes a token budget, not an effort level, and its thinking "
            "blocks cannot be carried back through a chat-completions history",
        ),
        "logprobs": Rule(lambda v: v is True, "it returns no log probabilities"),
        "top_logprobs": Rule(_set, "it returns no log probabilities"),
        "seed": Rule(_set, "it has no seed for reproducible sampling"),
        "frequency_penalty": Rule(_nonzero, "it has no frequency penalty"),
        "presence_penalty": Rule(_nonzero, "it has no presence penalty"),
        "logit_bias": Rule(bool, "it has no logit bias"),
        "temperature": Rule(
            lambda v: isinstance(v, int | float) and v > 1, "its temperature range is 0 to 1"
        ),
        "verbosity": Rule(_set, "it has no verbosity setting"),
        "web_search_options": Rule(_set, "web search is an OpenAI built-in tool"),
        "modalities": Rule(_audio, "it has no audio output"),
        "audio": Rule(_set, "it has no audio output"),
        "prediction": Rule(_set, "it has no predicted outputs"),
        "functions": Rule(_set, "it takes tools, not the legacy functions"),
        "function_call": Rule(_set, "it takes tool_choice, not the legacy function_call"),
        "tools": Rule(_other_tools, "it takes function tools only"),
        "tool_choice": Rule(_other_choice, "it can force a function tool only"),
        "service_tier": Rule(
            lambda v: v not in (None, "auto", "default"), "it has no flex, scale or priority tier"
        ),
        "store": Rule(lambda v: v is True, "OpenAI's stored completions are not there"),
    }
)
RULES: Mapping[str, Mapping[str, Rule]] = MappingProxyType({"anthropic": ANTHROPIC})


def refusal(kind: str, body: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first field of the chat ``body`` a ``kind`` deployment cannot honour, and why;
    ``None`` when it honours them all."""
    rules = RULES.get(kind)
    if rules is None:
        return None
    for name, rule in rules.items():
        if name in body and rule.cannot(body[name]):
            return name, rule.why
    return None


def refuse(kind: str, body: Mapping[str, Any], flavor: str = "openai") -> None:
    """Raise the 400 for the first field of ``body`` a ``kind`` deployment cannot honour."""
    found = refusal(kind, body)
    if found is not None:
        raise _refused(*found, kind, flavor, None)


def honouring(
    targets: tuple[Target, ...],
    body: Mapping[str, Any],
    kind_of: Callable[[Target], str],
    flavor: str,
    model: str,
) -> tuple[Target, ...]:
    """The ``targets`` (in order) whose deployment kind honours every field of ``body``; a 400
    naming the client's field and the kind when none does. Free when no kind has rules."""
    kept: list[Target] = []
    first: tuple[str, str, str] | None = None
    for target in targets:
        kind = kind_of(target)
        found = refusal(kind, body) if kind in RULES else None
        if found is None:
            kept.append(target)
        elif first is None:
            first = (*found, kind)
    if first is None:
        return targets
    if not kept:
        raise _refused(*first, flavor, model)
    return tuple(kept)


def _refused(name: str, why: str, kind: str, flavor: str, model: str | None) -> InvalidRequest:
    field = CLIENT_NAMES.get(flavor, {}).get(name, name)
    of_model = f" of model {model!r}" if model else ""
    return InvalidRequest(
        f"{field} cannot be honoured by {kind} deployments{of_model}: {why}. Leave {field} "
        "out, or use a model served by a deployment that supports it.",
        param=field,
        code="unsupported_parameter",
        extra={"deployment_kind": kind},
    )

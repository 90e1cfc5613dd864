"""Sizes a client chose, checked against what the model's deployments can do, before anything
is reserved (the limits themselves are in ``farebox.core.caps``)."""

from __future__ import annotations

from typing import Any

from farebox.core.caps import embedding_dimensions, max_output_tokens
from farebox.core.routing import Target
from farebox.errors import BudgetExceeded, InvalidRequest

OUTPUT_FIELDS = ("max_completion_tokens", "max_tokens")
# what the output cap is called in the client's format, where it is not an ``OUTPUT_FIELDS``
CLIENT_FIELDS = {"anthropic": "max_tokens", "responses": "max_output_tokens"}


def one_output_field(body: dict[str, Any]) -> None:
    """Leave at most one of ``max_completion_tokens`` and ``max_tokens``, and never a null one,
    so the field the budget clamps is the field every upstream reads."""
    for name in OUTPUT_FIELDS:
        if name in body and body[name] is None:
            del body[name]
    if "max_completion_tokens" in body and "max_tokens" in body:
        body["max_completion_tokens"] = min(body["max_completion_tokens"], body.pop("max_tokens"))


def check_choices_fit(body: dict[str, Any], admitted_tokens: int | None) -> None:
    """After a budget clamp, every one of ``n`` choices must still get a token: else the
    request is refused (the caller ends its admission) rather than produce more than held."""
    choices = body.get("n") or 1
    if choices > 1 and admitted_tokens is not None and admitted_tokens < choices:
        raise BudgetExceeded(
            f"The budget left covers {admitted_tokens} output tokens, fewer than one for each "
            f"of the {choices} choices asked for; lower n.",
            param="n",
        )


def output_cap(targets: tuple[Target, ...]) -> int:
    """The most output tokens every deployment in ``targets`` can produce."""
    return max_output_tokens(t.model for t in targets)


def check_output_cap(body: dict[str, Any], cap: int, flavor: str) -> None:
    """``max_tokens`` / ``max_completion_tokens`` within ``cap`` (see :func:`output_cap`)."""
    one_output_field(body)
    for name in OUTPUT_FIELDS:
        asked = body.get(name)
        if asked is None:
            continue
        if asked > cap:
            param = CLIENT_FIELDS.get(flavor, name)
            raise InvalidRequest(
                f"{param} is too large: {asked}. This model supports at most {cap} "
                "completion tokens.",
                param=param,
                code="invalid_value",
            )


def check_dimensions(body: dict[str, Any], targets: tuple[Target, ...]) -> None:
    """Embedding ``dimensions`` within the model's own size."""
    asked = body.get("dimensions")
    if asked is None:
        return
    cap = embedding_dimensions(t.model for t in targets)
    if cap == 0:
        raise InvalidRequest(
            "This model does not support specifying dimensions.",
            param="dimensions",
            code="invalid_value",
        )
    if asked > cap:
        raise InvalidRequest(
            f"dimensions is too large: {asked}. This model supports at most {cap} dimensions.",
            param="dimensions",
            code="invalid_value",
        )


def clamp_output(body: dict[str, Any], cap: int) -> None:
    """Lower a ``max_tokens`` the plan filled in to ``cap`` (one the client sent was checked
    by ``check_output_cap``)."""
    for name in OUTPUT_FIELDS:
        value = body.get(name)
        if isinstance(value, int) and value > cap:
            body[name] = cap

"""Sizes a client chose, checked against what the model's deployments can do, before anything
is reserved (the limits themselves are in ``farebox.core.caps``)."""

from __future__ import annotations

from typing import Any

from farebox.core.caps import embedding_dimensions, max_output_tokens
from farebox.core.routing import Target
from farebox.errors import InvalidRequest


def check_output_cap(body: dict[str, Any], targets: tuple[Target, ...], flavor: str) -> None:
    """``max_tokens`` / ``max_completion_tokens`` within what every deployment can produce."""
    for name in ("max_completion_tokens", "max_tokens"):
        asked = body.get(name)
        if asked is None:
            continue
        cap = max_output_tokens(t.model for t in targets)
        if asked > cap:
            param = "max_tokens" if flavor == "anthropic" else name
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


def clamp_output(body: dict[str, Any], targets: tuple[Target, ...]) -> None:
    """Lower a ``max_tokens`` the plan filled in to what every deployment can produce (one
    the client sent was checked by ``check_output_cap``)."""
    cap = max_output_tokens(t.model for t in targets)
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and value > cap:
            body[name] = cap

"""TokenFence's abuse patterns. (stub: the interface the stage calls)"""

from __future__ import annotations

import time
from collections.abc import Callable

from farebox.core.guardrails import AbusePolicy, Hit

DETECTOR = "abuse"


def stuffing_hit(text: str, policy: AbusePolicy) -> Hit | None:
    """Prompt stuffing: repetitive padding (a compression-ratio check)."""
    return None


def context_hit(input_tokens: int, context_window: int | None, policy: AbusePolicy) -> Hit | None:
    """Context exploitation: a request that fills the model's context window."""
    return None


class BatchWatch:
    """A burst of near-identical requests from one end user (per process)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def hit(self, tenant: str, user: str, text: str, policy: AbusePolicy) -> Hit | None:
        return None

"""Layer 2 of prompt-injection screening: a local classifier (``farebox[guard-model]``),
run off the event loop with a bounded queue and a timeout. (stub: the interface the stage
calls)"""

from __future__ import annotations

from typing import Protocol

DETECTOR = "injection_classifier"


class LocalClassifier(Protocol):
    """A local model: the injection probability of each text, in [0, 1]. Blocking."""

    def scores(self, texts: list[str]) -> list[float]: ...


class ClassifierTimeout(Exception):
    """The classifier did not answer within the plan's ``timeout_ms`` (queue included)."""


class ClassifierRunner:
    """Runs a ``LocalClassifier`` in a worker thread, with a bounded queue."""

    def __init__(self, model: LocalClassifier, max_queue: int = 64) -> None:
        self.model = model
        self.max_queue = max_queue

    async def scores(self, texts: list[str], timeout_ms: int) -> list[float]:
        """The texts' scores; ``ClassifierTimeout`` past ``timeout_ms`` or with a full queue."""
        raise ClassifierTimeout("no classifier yet")

    async def close(self) -> None:
        return None


def load_classifier(model: str = "nanoguard", path: str | None = None) -> LocalClassifier:
    """The configured local model (``nanoguard``: the ``metatronnanoguard`` package's; or a
    local checkpoint at ``path``). ``GuardrailUnavailable`` names the extra when missing."""
    raise NotImplementedError

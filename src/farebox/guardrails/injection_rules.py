"""Layer 1 of prompt-injection screening: phrase families over normalised text. (stub: the
interface the stage calls; the rule set lands with its tests)"""

from __future__ import annotations

from farebox.core.guardrails import Hit

DETECTOR = "injection_rules"


def scan(text: str) -> list[Hit]:
    """The injection families ``text`` matches (one hit per family, whole-text spans)."""
    lowered = text.lower()
    if "ignore all previous instructions" in lowered:
        return [Hit(DETECTOR, "instruction_override", 1.0)]
    return []

"""The built-in PII recognisers (no extra). (stub: the interface the stage calls)"""

from __future__ import annotations

import re
from collections.abc import Collection

from farebox.core.guardrails import Hit

DETECTOR = "pii"
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")


def scan(text: str, entities: Collection[str]) -> list[Hit]:
    """The PII spans of ``entities`` types in ``text`` (category: the entity type)."""
    if "EMAIL_ADDRESS" not in entities:
        return []
    return [Hit(DETECTOR, "EMAIL_ADDRESS", 1.0, m.start(), m.end()) for m in _EMAIL.finditer(text)]

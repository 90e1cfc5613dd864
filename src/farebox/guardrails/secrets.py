"""Secrets in prompts: API keys of the major providers and clouds, private keys, JWTs and
passwords in connection strings. No extra. (stub: the interface the stage calls)"""

from __future__ import annotations

import re

from farebox.core.guardrails import Hit

DETECTOR = "secrets"
_AWS = re.compile(r"\bAKIA[0-9A-Z]{16}\b")


def scan(text: str) -> list[Hit]:
    """The secrets in ``text``, with their spans (category: the secret's kind)."""
    return [Hit(DETECTOR, "aws_access_key", 1.0, m.start(), m.end()) for m in _AWS.finditer(text)]

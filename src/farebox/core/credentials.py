"""Provider credentials as the stores keep them (``Credential``: ciphertext only, never the
secret), and a plan's bring-your-own-key fee (``ByokFee``). Standard library only."""

from __future__ import annotations

import re
from dataclasses import dataclass

PLATFORM = ""  # the owner of the platform's own credentials (a BYOK one's is its tenant id)
INTEGRATION_PREFIX = "integration:"  # a provider's ``api_key: "integration:NAME"``
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class Credential:
    """One stored provider key: sealed under the key-encryption key ``kek_version``, bound
    to its ``owner`` and ``name`` (the associated data), so a row cannot be swapped."""

    owner: str
    name: str
    provider: str
    ciphertext: bytes
    nonce: bytes
    kek_version: str
    last4: str
    created_at: float
    rotated_at: float | None = None

    def public(self) -> dict[str, object]:
        """What an API answer may show of it: never the secret, only its last 4 characters."""
        return {
            "name": self.name,
            "provider": self.provider,
            "owner": self.owner or None,
            "last4": self.last4,
            "kek_version": self.kek_version,
            "created_at": self.created_at,
            "rotated_at": self.rotated_at,
        }


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def last4(secret: str) -> str:
    """The last 4 characters shown of a secret (fewer of a very short one: at most a third)."""
    if len(secret) >= 12:
        return secret[-4:]
    shown = len(secret) // 3
    return secret[-shown:] if shown else ""


@dataclass(frozen=True, slots=True)
class ByokFee:
    """What a bring-your-own-key request earns (pico-USD): ``per_request`` for each served
    request plus ``per_token`` for each token used. Its cost to the platform is 0."""

    per_request: int = 0
    per_token: int = 0

    def revenue(self, total_tokens: int, served: bool) -> int:
        return total_tokens * self.per_token + (self.per_request if served else 0)

    def worst(self, tokens: int) -> int:
        return tokens * self.per_token + self.per_request

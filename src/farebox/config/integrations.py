"""Provider keys from the credential vault: ``api_key: "integration:NAME"`` beside the
``env:NAME`` form, and the vault's key-encryption keys from ``FAREBOX_KEK``
(``v2:BASE64,v1:BASE64``; the first is current). Read here, as every environment value is."""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from typing import Annotated

from pydantic import AfterValidator

from farebox.core.credentials import INTEGRATION_PREFIX, valid_name
from farebox.errors import ConfigError

KEK_ENV = "FAREBOX_KEK"
KEY_HEADERS = ("authorization", "x-api-key", "api-key")  # where a literal key would hide
_VERSION = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


# fields whose refused value is never echoed in a start-up error (it may be a literal secret)
SECRET_FIELDS = frozenset({"api_key", "secret", "routing_key", "webhook_url", "token",
                           "alert_webhook_secret"})  # fmt: skip


def secret_field(loc: tuple[int | str, ...]) -> bool:
    return bool(loc) and str(loc[-1]) in SECRET_FIELDS


def provider_key(value: str) -> str:
    """A provider key is named, never written: ``env:NAME`` or ``integration:NAME``."""
    if value.startswith(INTEGRATION_PREFIX):
        if not valid_name(value[len(INTEGRATION_PREFIX) :]):
            raise ValueError("integration:NAME: NAME is 1-64 letters, digits, '.', '_' or '-'")
        return value
    if not value.startswith("env:"):
        raise ValueError(
            "secrets must be given as env:NAME or integration:NAME, never as a literal"
        )
    return value


ProviderKey = Annotated[str, AfterValidator(provider_key)]


def integration_of(reference: str | None) -> str | None:
    """The credential name of ``integration:NAME`` (None for ``env:`` or no key)."""
    if reference is None or not reference.startswith(INTEGRATION_PREFIX):
        return None
    return reference[len(INTEGRATION_PREFIX) :]


def check_dual(source: str, name: str, api_key: str | None, headers: Mapping[str, str]) -> None:
    """A provider keyed from the vault may not carry a literal key in its headers as well."""
    if integration_of(api_key) is None:
        return
    for header in headers:
        if header.lower() in KEY_HEADERS:
            raise ConfigError(
                f"{source}: providers.{name}.headers.{header}: a literal secret beside "
                f"providers.{name}.api_key ({api_key}); give the key one way only"
            )


def parse_kek(source: str, value: str | None) -> tuple[tuple[str, bytes], ...]:
    """``FAREBOX_KEK``: comma-separated ``VERSION:BASE64`` of 32-byte keys, current first;
    a single bare BASE64 is version ``v1``. Empty: the vault derives its key."""
    if not value or not value.strip():
        return ()
    keks: list[tuple[str, bytes]] = []
    for part in value.split(","):
        version, _, encoded = part.strip().rpartition(":")
        version = version or "v1"
        if not _VERSION.match(version) or version == "s1":
            raise ConfigError(f"{source}: {KEK_ENV}: bad version name {version!r}")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{source}: {KEK_ENV}: version {version!r} is not base64") from None
        if len(key) != 32:
            raise ConfigError(
                f"{source}: {KEK_ENV}: version {version!r} is {len(key)} bytes, not 32"
            )
        if any(v == version for v, _ in keks):
            raise ConfigError(f"{source}: {KEK_ENV}: version {version!r} given twice")
        keks.append((version, key))
    return tuple(keks)


def secret_from_env(name: str) -> str | None:
    """``farebox integrations ... --from-env NAME``: the provider key in that variable."""
    return os.environ.get(name) or None

"""What every section of ``farebox.yaml`` is built from: the strict model base (an unknown key
fails, a loaded value is frozen), exact decimal amounts, and ``env:NAME`` references for
secrets. Secrets are resolved by ``farebox.config.settings``, which alone reads the environment.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """A section of the config file: unknown keys are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def env_reference(value: str) -> str:
    """A secret is named, never written: ``env:NAME``."""
    if not value.startswith("env:"):
        raise ValueError("secrets must be given as env:NAME, never as a literal")
    return value


def http_url(value: str) -> str:
    """An ``http://`` or ``https://`` URL with a host (and a valid port), without a trailing
    slash."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    _ = parts.port  # raises ValueError for a bad port
    return value.rstrip("/")


# A decimal amount written as a string ("0.50"): prices and dollars stay exact.
Decimal = Annotated[str, Field(pattern=r"^\s*\d+(\.\d+)?\s*$")]
# The name of an environment variable that holds a secret, as ``env:NAME``.
EnvReference = Annotated[str, AfterValidator(env_reference)]
# An upstream's root URL (``http_url``): an HTTP(S) URL with a host, its trailing slash dropped.
HttpURL = Annotated[str, AfterValidator(http_url)]

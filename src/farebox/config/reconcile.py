"""The ``reconcile:`` section: reading each provider's own cost report (its admin API) to set
it against the ledger's cost, and when a difference is worth an alert.

```yaml
reconcile:
  threshold_usd: "0.01"        # alert when a day and model differ by at least this much...
  threshold_percent: "5"       # ...and by at least this share of the provider's amount
  interval_s: 3600             # serve reads the reports hourly (unset: only when asked)
  providers:
    openai: {admin_api_key: "env:OPENAI_ADMIN_KEY"}           # base_url: the public API
    claude: {admin_api_key: "env:ANTHROPIC_ADMIN_KEY", base_url: "https://api.anthropic.com"}
  models: {"gpt-4o-mini-2024-07-18": gpt-4o-mini}           # a provider label -> our model
```

Each name under ``providers`` must be a configured provider of kind ``openai`` or
``anthropic``; the admin key is a secret (``env:NAME``, resolved by ``config.settings``); the
admin API's root URL comes from here only, never from a client: ``base_url`` for OpenAI includes
``/v1`` (as a provider's does), for Anthropic it is the host root.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from pydantic import Field

from farebox.config.base import Decimal, EnvReference, HttpURL, Strict
from farebox.core.money import MoneyFormatError, parse_usd
from farebox.errors import ConfigError

KINDS = ("openai", "anthropic")  # the kinds whose provider publishes a cost report API


class ProviderAdmin(Strict):
    """One provider's admin credentials for its cost report."""

    admin_api_key: EnvReference
    base_url: HttpURL | None = None  # None: the provider's public API
    timeout_s: float = Field(60.0, gt=0)


class ReconcileConfig(Strict):
    """When a day and model differ, and whose cost reports to read. A threshold left unset
    is not applied; with both unset every non-zero difference alerts."""

    threshold_usd: Decimal | None = "0.01"
    threshold_percent: Decimal | None = None
    # read every provider's report this often in ``farebox serve`` (None: only when asked)
    interval_s: float | None = Field(None, gt=0)
    providers: dict[str, ProviderAdmin] = Field(default_factory=dict)
    models: dict[str, str] = Field(default_factory=dict)


class HasKind(Protocol):
    @property
    def kind(self) -> str: ...


class FileSections(Protocol):
    """What the check reads of the whole file: its providers and this section."""

    @property
    def providers(self) -> Mapping[str, HasKind]: ...

    @property
    def reconcile(self) -> ReconcileConfig: ...


def admin_keys(
    file: FileSections, source: str, resolve: Callable[[str, str], str | None]
) -> Mapping[str, str]:
    """Provider name -> its admin key, each ``env:NAME`` resolved by ``resolve(reference,
    where)`` (``config.settings``, the one reader of the environment), once the section is
    checked: each name a configured provider of a kind with a cost report, the USD threshold
    exact (a start-up error naming the key otherwise)."""
    cfg = file.reconcile
    for name in cfg.providers:
        provider = file.providers.get(name)
        where = f"{source}: reconcile.providers.{name}"
        if provider is None:
            known = ", ".join(sorted(file.providers)) or "none"
            raise ConfigError(f"{where}: no provider named {name!r} (providers: {known})")
        if provider.kind not in KINDS:
            raise ConfigError(f"{where}: a provider of kind {provider.kind!r} has no cost "
                              "report API (kinds: openai, anthropic)")  # fmt: skip
    try:
        _ = None if cfg.threshold_usd is None else parse_usd(cfg.threshold_usd.strip())
    except MoneyFormatError as exc:
        raise ConfigError(f"{source}: reconcile.threshold_usd: {exc}") from None
    keys = {
        name: resolve(admin.admin_api_key, f"reconcile.providers.{name}.admin_api_key")
        for name, admin in cfg.providers.items()
    }
    return {name: key for name, key in keys.items() if key}

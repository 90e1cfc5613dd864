"""Which configuration a local CLI command uses: the one its database is served with.

Money on the CLI depends on the configuration as much as on the database: plan fees,
markups and budgets live in the plans. So ``farebox serve`` and ``farebox demo`` record in
the database (meta ``served_config``) where their configuration comes from (the config
file's absolute path, or the embedded default, with the demo's built-in sections) and a
fingerprint of the whole resolved configuration. A command on the local database (no
``--url``) then:

- without ``--config``, loads exactly that configuration (the file as it is now, which is
  what the running gateway serves: it re-reads its plans from the file);
- with ``--config`` naming the same file, or a configuration with the same fingerprint,
  uses it; with any other configuration, refuses and names the one to pass;
- when the database records nothing (not served since this was added, or not SQLite), uses
  ``--config``, and refuses without it. It never guesses.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from farebox.config.settings import Settings
from farebox.errors import ConfigError
from farebox.stores.sqlite.meta import read_meta, write_meta

SERVED_CONFIG = "served_config"
Load = Callable[[str | None, Mapping[str, Any] | None], Settings]


@dataclass(frozen=True)
class Served:
    source: str | None  # the config file's absolute path; None: the embedded default
    overrides: dict[str, Any] | None  # sections given in code (the demo's plans)
    fingerprint: str

    def describe(self) -> str:
        if self.source is not None:
            return f"the config file {self.source}"
        if self.overrides:
            return "the built-in configuration of `farebox demo`"
        return "the embedded default configuration (`farebox serve` without --config)"

    def advice(self) -> str:
        if self.source is not None:
            return f"pass --config {self.source}"
        return "leave out --config"


def fingerprint(settings: Settings) -> str:
    """A digest of the whole resolved configuration (secrets are references, not values)."""
    document = orjson.dumps(settings.file.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(document).hexdigest()


def record(settings: Settings, config: str | None, overrides: Mapping[str, Any] | None) -> None:
    """Record, in a SQLite database about to be served, what it is served with."""
    if settings.database_path is None:
        return  # PostgreSQL: the CLI always names its config there
    value = {
        "source": os.path.abspath(config) if config else None,
        "overrides": dict(overrides) if overrides else None,
        "fingerprint": fingerprint(settings),
        "recorded_at": time.time(),
    }
    write_meta(settings.database_path, SERVED_CONFIG, orjson.dumps(value).decode())


def served(path: Path) -> Served | None:
    raw = read_meta(path, SERVED_CONFIG)
    if raw is None:
        return None
    data = orjson.loads(raw)
    return Served(data.get("source"), data.get("overrides"), str(data.get("fingerprint", "")))


def local_settings(
    config: str | None, load: Load, warn: Callable[[str], None] | None = None
) -> Settings:
    """The settings of a CLI command on the local database; ``ConfigError`` when the
    configuration it is served with is unknown or differs from ``--config``."""
    given = load(config, None) if config else None
    where = given or load(None, None)  # without --config: ./farebox.db or FAREBOX_DATABASE
    path = where.database_path
    found = served(path) if path is not None else None
    if found is None:
        if given is not None:
            return given
        raise ConfigError(
            f"{path or where.database_url} does not record the configuration it is served "
            "with (`farebox serve` and `farebox demo` record it when they start): pass "
            "--config FILE, the file the gateway serves with, or --url to ask the running "
            "gateway"
        )
    if given is not None:
        assert config is not None
        if found.source == os.path.abspath(config) or fingerprint(given) == found.fingerprint:
            return given
        raise ConfigError(
            f"{path} is served with {found.describe()}, and --config {config} is a different "
            f"configuration (its plans and prices would give other numbers): "
            f"{found.advice()}, or use --url to ask the running gateway"
        )
    settings = load(found.source, found.overrides)
    if warn is not None and fingerprint(settings) != found.fingerprint:
        warn(
            f"note: {found.source} changed since the gateway on {path} started; it re-reads "
            "plans from it, other sections apply after a restart"
        )
    assert path is not None
    return settings.model_copy(update={"database_path": path, "database_url": f"sqlite:///{path}"})

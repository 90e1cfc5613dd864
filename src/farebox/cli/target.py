"""Where an admin command works: on a config's database in-process (``--config``) or on a
running gateway through its admin API (``--url``). A local database that a single-process
gateway owns is reached through that gateway's admin API (``cli/owner_api.py``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from farebox.cli.local import in_process, local_settings
from farebox.cli.output import SNIPPET, error_line, one_line
from farebox.cli.owner_api import owning_gateway
from farebox.config.settings import Settings, admin_key_from_env, load_settings
from farebox.errors import ConfigError


def settings_or_exit(config: str | None, overrides: dict[str, Any] | None = None) -> Settings:
    try:
        return load_settings(config, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


AdminCall = Callable[[str, str, Any], Any]  # (method, path, body) -> the answer's JSON


@dataclass(frozen=True, slots=True)
class Where:
    """Where an admin command works: an admin API to call (``--url``, or the single-process
    gateway that owns the local database), or else the local database with ``settings``."""

    api: AdminCall | None
    settings: Settings | None = None


def where(config: str | None, url: str | None) -> Where:
    if url:
        return Where(lambda method, path, body: remote(url, method, path, body))
    settings = local_settings(config)
    if settings.database_path is not None:
        try:
            owner = owning_gateway(settings.database_path)
        except ConfigError as exc:
            raise click.ClickException(exc.message) from None
        if owner is not None:  # it alone may open the database: ask it (cli/owner_api.py)
            found = owner
            return Where(lambda m, p, b: remote(found.url, m, p, b, key=found.token))
    return Where(None, settings)


def call_admin(
    config: str | None, url: str | None, method: str, path: str, body: Any = None
) -> Any:
    found = where(config, url)
    if found.api is not None:
        return found.api(method, path, body)
    assert found.settings is not None
    return in_process(found.settings, method, path, body)


def remote(
    url: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    key: str | None = None,
) -> Any:
    """Call the admin API at ``url`` with ``key`` (by default FAREBOX_ADMIN_KEY)."""
    key = key or admin_key_from_env()
    if not key:
        raise click.ClickException("--url needs the admin key in FAREBOX_ADMIN_KEY")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)  # noqa: S310
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            data = response.read()
    except urllib.error.HTTPError as exc:
        raise click.ClickException(error_line(exc.code, exc.read())) from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc.reason}") from None
    except TimeoutError:
        raise click.ClickException(f"{url} did not answer within 30 s") from None
    try:
        return json.loads(data or b"null")
    except ValueError:
        raise click.ClickException(
            f"{url} did not answer with JSON: {one_line(data.decode(errors='replace'))[:SNIPPET]}"
        ) from None


_OPTIONS = (
    click.option(
        "--config",
        type=click.Path(dir_okay=False),
        default=None,
        help="Work on this config's database.",
    ),
    click.option(
        "--url",
        default=None,
        help="Work on a running gateway through its admin API (key in FAREBOX_ADMIN_KEY).",
    ),
)


def target(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn

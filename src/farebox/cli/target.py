"""Where an admin command works: on a config's database in-process (``--config``) or on a
running gateway through its admin API (``--url``)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import click

from farebox.cli.local import in_process
from farebox.cli.output import SNIPPET, error_line, one_line
from farebox.config.settings import Settings, admin_key_from_env, load_settings
from farebox.errors import ConfigError


def settings_or_exit(config: str | None, overrides: dict[str, Any] | None = None) -> Settings:
    try:
        return load_settings(config, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


def call_admin(
    config: str | None, url: str | None, method: str, path: str, body: Any = None
) -> Any:
    if url:
        return remote(url, method, path, body)
    return in_process(config, method, path, body)


def remote(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    key = admin_key_from_env()
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

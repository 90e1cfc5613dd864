"""``farebox integrations``: the provider-credential vault, through the admin API
(``/admin/v1/integrations``): create, list, rotate and delete the platform's provider keys,
and ``rekey`` them under the current ``FAREBOX_KEK``. A key is read from a hidden prompt,
from standard input (``-``) or from an environment variable (``--from-env NAME``); it is
never echoed, and answers show its last 4 characters only."""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import quote

import click

from farebox.cli.output import json_option, print_listing, print_record
from farebox.cli.target import call_admin, target
from farebox.config.integrations import secret_from_env

COLUMNS = ("name", "provider", "last4", "kek_version", "created_at", "rotated_at")
PATH = "/admin/v1/integrations"


@click.group()
def integrations() -> None:
    """Provider API keys kept encrypted in the vault (never shown again)."""


def _read_secret(from_env: str | None, stdin: bool) -> str:
    if from_env is not None:
        value = secret_from_env(from_env)
        if value is None:
            raise click.UsageError(f"--from-env: environment variable {from_env} is not set")
        return value
    if stdin or not sys.stdin.isatty():
        value = sys.stdin.readline().strip()
        if not value:
            raise click.UsageError("no API key on standard input")
        return value
    return str(click.prompt("API key", hide_input=True)).strip()


def _secret_options(fn: Any) -> Any:
    fn = click.option("--stdin", "stdin", is_flag=True,
                      help="Read the key from standard input.")(fn)  # fmt: skip
    return click.option("--from-env", default=None, metavar="NAME",
                        help="Read the key from this environment variable.")(fn)  # fmt: skip


@integrations.command("create")
@click.argument("name")
@click.option("--provider", required=True, help="What the key is for (openai, anthropic, ...).")
@_secret_options
@json_option
@target
def integrations_create(name: str, provider: str, from_env: str | None, stdin: bool,
                        as_json: bool, config: str | None, url: str | None) -> None:  # fmt: skip
    """Store a provider key as NAME (a provider then says api_key: "integration:NAME")."""
    body = {"name": name, "provider": provider, "api_key": _read_secret(from_env, stdin)}
    print_record(call_admin(config, url, "POST", PATH, body), as_json)


@integrations.command("list")
@json_option
@target
def integrations_list(as_json: bool, config: str | None, url: str | None) -> None:
    """The stored provider keys (their last 4 characters only)."""
    answer = call_admin(config, url, "GET", PATH)
    print_listing(answer, COLUMNS, as_json, title="Integrations")


@integrations.command("rotate")
@click.argument("name")
@_secret_options
@json_option
@target
def integrations_rotate(name: str, from_env: str | None, stdin: bool, as_json: bool,
                        config: str | None, url: str | None) -> None:  # fmt: skip
    """Replace NAME's key: the next request in every worker uses the new one."""
    body = {"api_key": _read_secret(from_env, stdin)}
    path = f"{PATH}/{quote(name, safe='')}/rotate"
    print_record(call_admin(config, url, "POST", path, body), as_json)


@integrations.command("delete")
@click.argument("name")
@json_option
@target
def integrations_delete(name: str, as_json: bool, config: str | None, url: str | None) -> None:
    """Delete NAME's key."""
    answer = call_admin(config, url, "DELETE", f"{PATH}/{quote(name, safe='')}")
    print_record(answer, as_json)


@integrations.command("rekey")
@json_option
@target
def integrations_rekey(as_json: bool, config: str | None, url: str | None) -> None:
    """Re-encrypt every stored key under the current key-encryption key (FAREBOX_KEK's
    first version), a row at a time; the others stay readable until it is done."""
    print_record(call_admin(config, url, "POST", f"{PATH}/rekey"), as_json)

"""``farebox integrations`` on the local database: a key goes in from standard input or an
environment variable, is never printed back (its last 4 only), is rotated, re-encrypted under
a new ``FAREBOX_KEK`` (``rekey``) and deleted; and the gateway uses what the CLI stored."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from farebox.cli import main
from farebox.config.settings import load_settings
from farebox.identity.vault import Vault
from farebox.stores.sqlite.store import SQLiteStore

V1 = "v1:" + base64.b64encode(b"k" * 32).decode()
V2 = "v2:" + base64.b64encode(b"K" * 32).decode()


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FAREBOX_ADMIN_KEY", "fba_cli_test_admin_key_0123456789abcdef")
    monkeypatch.setenv("FAREBOX_KEK", V1)
    path = tmp_path / "farebox.yaml"
    path.write_text(f'database: "sqlite:///{tmp_path / "cli.db"}"\n')
    return str(path)


def run(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def stored(cfg: str, name: str) -> tuple[str, str]:
    return asyncio.run(opened(cfg, name))


async def opened(cfg: str, name: str) -> tuple[str, str]:
    """(the KEK version, the opened key) of the credential NAME in the local database."""
    settings = load_settings(cfg)
    assert settings.database_path is not None
    store = SQLiteStore(settings.database_path)
    await store.open()
    try:
        found = await store.credentials.get_credential("", name)
        assert found is not None
        return found.kek_version, Vault(settings.kek).open(found)  # the KEK alone opens it
    finally:
        await store.close()


def test_create_list_rotate_rekey_delete(cfg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = f"sk-cli-{secrets.token_hex(12)}", f"sk-cli-{secrets.token_hex(12)}"
    made = run("integrations", "create", "openai-prod", "--provider", "openai", "--stdin",
               "--json", "--config", cfg, stdin=first + "\n")  # fmt: skip
    assert made.exit_code == 0, made.output
    assert json.loads(made.output)["last4"] == first[-4:] and first not in made.output
    assert stored(cfg, "openai-prod") == ("v1", first)
    listed = run("integrations", "list", "--json", "--config", cfg)
    assert [i["name"] for i in json.loads(listed.output)["data"]] == ["openai-prod"]
    monkeypatch.setenv("NEW_OPENAI_KEY", second)
    rotated = run("integrations", "rotate", "openai-prod", "--from-env", "NEW_OPENAI_KEY",
                  "--config", cfg)  # fmt: skip
    assert rotated.exit_code == 0 and second not in rotated.output and second[-4:] in rotated.output
    monkeypatch.setenv("FAREBOX_KEK", f"{V2},{V1}")
    rekeyed = run("integrations", "rekey", "--json", "--config", cfg)
    assert json.loads(rekeyed.output) == {"kek_version": "v2", "moved": 1, "already": 0}
    monkeypatch.setenv("FAREBOX_KEK", V2)
    assert stored(cfg, "openai-prod") == ("v2", second)
    missing = run("integrations", "rotate", "openai-prod", "--from-env", "UNSET_VAR_X",
                  "--config", cfg)  # fmt: skip
    assert missing.exit_code != 0 and "UNSET_VAR_X" in missing.output
    gone = run("integrations", "delete", "openai-prod", "--config", cfg)
    assert gone.exit_code == 0
    again = run("integrations", "delete", "openai-prod", "--config", cfg)
    assert again.exit_code != 0 and "openai-prod" in again.output


def test_rows_sealed_before_a_kek_was_set_move_to_it(cfg: str, monkeypatch: Any) -> None:
    monkeypatch.delenv("FAREBOX_KEK")  # derived from the server secret (version s1)
    key = f"sk-cli-{secrets.token_hex(12)}"
    made = run("integrations", "create", "early", "--provider", "openai", "--stdin", "--json",
               "--config", cfg, stdin=key)  # fmt: skip
    assert json.loads(made.output)["kek_version"] == "s1"
    monkeypatch.setenv("FAREBOX_KEK", V1)
    rekeyed = run("integrations", "rekey", "--json", "--config", cfg)
    assert json.loads(rekeyed.output) == {"kek_version": "v1", "moved": 1, "already": 0}
    assert stored(cfg, "early") == ("v1", key)

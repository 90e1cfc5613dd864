"""Issue 14: ``farebox admin-keys create|list|revoke``, on the local database and through
``--url`` on a running ``farebox serve``; an admin key of a role then works the other
commands through the API as its role allows (an operator lists tenants, and is refused the
admin keys, in one readable line)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from farebox.cli import main
from tests.e2e import ADMIN_KEY, child_env, free_port, running, write_config


def cli(*args: str, key: str = ADMIN_KEY) -> Result:
    env = {"FAREBOX_ADMIN_KEY": key, "FAREBOX_DATABASE": None, "FAREBOX_CONFIG": None}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_admin_keys_on_the_local_database(tmp_path: Path) -> None:
    config = str(write_config(tmp_path))
    assert cli("tenants", "create", "acme", "--config", config).exit_code == 0
    made = cli("admin-keys", "create", "--name", "ops", "--role", "tenant_admin", "--tenant",
               "acme", "--config", config)  # fmt: skip
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip()
    assert secret.startswith("fba_") and "admin key id: adk_" in made.stderr
    listed = cli("admin-keys", "list", "--json", "--config", config)
    assert listed.exit_code == 0, listed.output
    (row,) = [k for k in json.loads(listed.stdout)["data"] if k["name"] == "ops"]
    assert row["role"] == "tenant_admin" and row["tenant"] == "acme" and not row["revoked"]
    assert secret not in listed.stdout
    gone = cli("admin-keys", "revoke", row["id"], "--config", config)
    assert gone.exit_code == 0 and f"revoked {row['id']}" in gone.output
    bad = cli("admin-keys", "create", "--name", "x", "--role", "tenant_admin", "--config", config)
    assert bad.exit_code != 0 and "--tenant" in bad.output
    missing = cli("admin-keys", "create", "--name", "x", "--role", "tenant_admin", "--tenant",
                  "nobody", "--config", config)  # fmt: skip
    assert missing.exit_code != 0 and "not found" in missing.output


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("served")
    config = str(write_config(directory))
    port = free_port()
    args = ["serve", "--config", config, "--host", "127.0.0.1", "--port", str(port)]
    with running(args, cwd=directory, env=child_env(), port=port) as server:
        yield server.base_url


def test_admin_keys_through_the_api_and_their_roles(served: str) -> None:
    made = cli("admin-keys", "create", "--name", "ops", "--role", "operator", "--url", served)
    assert made.exit_code == 0, made.output
    operator = made.stdout.strip()
    assert cli("tenants", "create", "acme", "--url", served, key=operator).exit_code == 0
    listed = cli("tenants", "list", "--url", served, key=operator)
    assert listed.exit_code == 0 and "acme" in listed.output
    refused = cli("admin-keys", "list", "--url", served, key=operator)
    assert refused.exit_code != 0
    assert "403" in refused.output and "owner" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    key_id = made.stderr.split("admin key id: ")[1].split()[0]
    assert cli("admin-keys", "revoke", key_id, "--url", served).exit_code == 0
    after = cli("tenants", "list", "--url", served, key=operator)
    assert after.exit_code != 0 and "401" in after.output

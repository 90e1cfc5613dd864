"""The issue 8 CLI commands through ``--url`` on a running ``farebox serve``: the same JSON as
on the local database, and the admin API's errors printed as one readable line."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner, Result

from farebox.cli import main
from tests.e2e import ADMIN_KEY, child_env, free_port, running, write_config

PLANS = {"pro": {"models": ["*"], "budgets": [{"period": "day", "limit_usd": "1"}]}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A running ``farebox serve``: (its config file, its URL)."""
    directory = tmp_path_factory.mktemp("served")
    config = str(write_config(directory, plans=PLANS))
    port = free_port()
    args = ["serve", "--config", config, "--host", "127.0.0.1", "--port", str(port)]
    with running(args, cwd=directory, env=child_env(), port=port) as server:
        yield config, server.base_url


def cli(*args: str, key: str = ADMIN_KEY) -> Result:
    env = {"FAREBOX_ADMIN_KEY": key, "FAREBOX_DATABASE": None, "FAREBOX_CONFIG": None}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def both(served: tuple[str, str], *args: str) -> tuple[str, str]:
    """The same command on the local database and through --url: their stdouts."""
    config, url = served
    local, remote = cli(*args, "--config", config), cli(*args, "--url", url)
    assert local.exit_code == 0, local.output
    assert remote.exit_code == 0, remote.output
    return local.stdout, remote.stdout


def test_new_commands_through_url_match_the_local_database(served: tuple[str, str]) -> None:
    url = served[1]
    assert cli("tenants", "create", "acme", "--plan", "pro", "--url", url).exit_code == 0
    updated = cli("tenants", "update", "acme", "--name", "Acme", "--openmeter-subject", "s-1",
                  "--url", url)  # fmt: skip
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.stdout)["billing"] == {"openmeter_subject": "s-1"}
    assert cli("keys", "create", "--tenant", "acme", "--url", url).exit_code == 0
    set_day = cli("budgets", "set", "acme", "--period", "day", "--limit", "4", "--url", url)
    assert set_day.exit_code == 0, set_day.output
    for args in (["tenants", "get", "acme"], ["keys", "list", "--tenant", "acme"],
                 ["budgets", "show", "acme"], ["tenants", "list"]):  # fmt: skip
        local, remote = both(served, *args, "--json")
        assert json.loads(local) == json.loads(remote), args
        assert both(served, *args)[0] == both(served, *args)[1], args  # the tables too
    shown = json.loads(both(served, "budgets", "show", "acme", "--json")[1])
    assert [b["limit_usd"] for b in shown["data"]] == ["4.00"]
    unset = cli("budgets", "unset", "acme", "--period", "day", "--url", url)
    assert unset.exit_code == 0, unset.output
    shown = json.loads(both(served, "budgets", "show", "acme", "--json")[1])
    assert [b["limit_usd"] for b in shown["data"]] == ["1.00"]  # the plan's again


def test_remote_errors_are_one_readable_line(served: tuple[str, str]) -> None:
    url = served[1]
    cases = {
        ("tenants", "get", "nope"): "Error: 404 tenant_not_found: Tenant 'nope' not found.",
        ("tenants", "update", "nope", "--name", "x"): "Error: 404 tenant_not_found: Tenant",
        ("keys", "revoke", "key_nope"): "Error: 404 key_not_found: Key 'key_nope' not found.",
        ("usage", "--from", "soon"): "Error: 400 invalid_request: 'from' must be unix seconds",
        ("margins", "--month", "May"): "Error: 400 invalid_request: month: ",
    }
    for args, line in cases.items():
        result = cli(*args, "--url", url)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(line), (args, result.stderr)
        assert "{" not in lines[0]
    wrong = cli("tenants", "list", "--url", url, key="fba_not_the_admin_key_0123456789abcdef")
    assert wrong.stderr.strip() == "Error: 401 invalid_api_key: This endpoint needs the admin key."


class _Html(BaseHTTPRequestHandler):
    """An answer that is not the error format: a proxy's HTML page."""

    def do_GET(self) -> None:
        body = b"<html>\n<head><title>502 Bad Gateway</title></head>\n" + b"x" * 400
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def test_a_body_in_another_format_is_quoted_on_one_line() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Html)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = cli("tenants", "list", "--url", url)
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: 502: <html> <head><title>502 Bad Gateway</title></head> xxx")
    assert len(line) == len("Error: 502: ") + 200

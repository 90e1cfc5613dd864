"""Issue 12, "Operations" (CLI): ``farebox cache stats [--tenant ID] [--since ..] [--until ..]``
and ``farebox cache purge --tenant ID [--namespace NS] [--yes]``, through the admin API: the
same numbers as ``GET /admin/v1/tenants/{id}/cache``, a confirmation before erasing, and the
API's errors as one line. ``farebox requests`` shows each row's cache value."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

import farebox.cli.cache as cache_cli
import farebox.cli.requests as requests_cli
from farebox.app import create_app
from farebox.cli import main
from farebox.config.settings import parse_settings
from farebox.core.cache import CacheUsage
from tests.test_cache_admin import FakeCache, cache_entries

ADMIN_KEY = "fba_cache_cli_admin_key_0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Served:
    """An in-memory gateway with a seeded ledger and a fake cache, called as the CLI would."""

    def __init__(self, client: TestClient, fake: FakeCache) -> None:
        self.client = client
        self.fake = fake
        self.calls: list[tuple[str, str]] = []

    def call_admin(self, config: Any, url: Any, method: str, path: str, body: Any = None) -> Any:
        self.calls.append((method, path))
        r = self.client.request(method, path, headers=ADMIN, json=body)
        if r.status_code >= 400:
            import click

            from farebox.cli.output import error_line

            raise click.ClickException(error_line(r.status_code, r.content))
        return r.json()

    def rest(self, path: str, **params: str) -> Any:
        r = self.client.get(path, params=params, headers=ADMIN)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    data = {"database": "memory", "logging": {"access_log": False}}
    env = {"FAREBOX_ADMIN_KEY": ADMIN_KEY}
    app = create_app(parse_settings(data, source="t.yaml", env=env, base_dir=tmp_path),
                     announce=lambda _m: None)  # fmt: skip
    with TestClient(app, base_url="http://gw") as client:
        for tenant in ("a", "b", "c"):
            r = client.post("/admin/v1/tenants", json={"id": tenant}, headers=ADMIN)
            assert r.status_code == 201, r.text
        store = app.state.services.store
        client.portal.call(store.append_ledger, cache_entries(time.time()))
        fake = FakeCache(held={"a": CacheUsage(5, 2048)},
                         namespaces={("a", ""): 3, ("a", "eu"): 2})  # fmt: skip
        app.state.services.cache = fake
        found = Served(client, fake)
        monkeypatch.setattr(cache_cli, "call_admin", found.call_admin)
        monkeypatch.setattr(requests_cli, "call_admin", found.call_admin)
        yield found


def cli(*args: str, stdin: str | None = None) -> Result:
    env = {"FAREBOX_ADMIN_KEY": ADMIN_KEY, "FAREBOX_DATABASE": None, "FAREBOX_CONFIG": None}
    return CliRunner().invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)


def table(text: str) -> list[dict[str, str]]:
    """The plain table (not a terminal): a header line, then one line per row."""
    lines = [line for line in text.splitlines() if line.strip()]
    head = lines[0].split()
    return [dict(zip(head, line.split(), strict=True)) for line in lines[1:]]


def test_stats_of_one_tenant_and_of_every_tenant(served: Served) -> None:
    one = cli("cache", "stats", "--tenant", "a", "--json")
    assert one.exit_code == 0, one.output
    assert json.loads(one.stdout) == served.rest("/admin/v1/tenants/a/cache")
    rows = table(cli("cache", "stats", "--tenant", "a").stdout)
    assert rows == [{"tenant": "a", "hits": "2", "misses": "3", "hit_rate": "0.4000",
                     "saved_usd": served.rest("/admin/v1/tenants/a/cache")["saved_usd"],
                     "entries": "5", "bytes": "2048"}]  # fmt: skip
    every = table(cli("cache", "stats").stdout)
    assert [r["tenant"] for r in every] == ["a", "b"]
    listed = served.rest("/admin/v1/cache")["data"]
    for row, rest in zip(every, listed, strict=True):
        assert (row["hits"], row["misses"], row["saved_usd"]) == (
            str(rest["hits"]), str(rest["misses"]), rest["saved_usd"])  # fmt: skip
    old = cli("cache", "stats", "--tenant", "a", "--since", "2020-01-01", "--until", "2020-02-01",
              "--json")  # fmt: skip
    assert json.loads(old.stdout)["hits"] == 0 and json.loads(old.stdout)["hit_rate"] is None
    assert served.calls[-1] == (
        "GET",
        "/admin/v1/tenants/a/cache?since=2020-01-01&until=2020-02-01",
    )


def test_bad_input_and_unknown_tenants_are_one_line(served: Served) -> None:
    unknown = cli("cache", "stats", "--tenant", "zz")
    assert unknown.exit_code == 1 and "404 tenant_not_found" in unknown.output
    bad = cli("cache", "stats", "--since", "tomorrow")
    assert bad.exit_code == 1 and "400" in bad.output and "since" in bad.output
    missing = cli("cache", "purge", "--yes")
    assert missing.exit_code == 2 and "--tenant" in missing.output
    assert served.fake.purged == []


def test_purge_asks_first_unless_yes(served: Served) -> None:
    declined = cli("cache", "purge", "--tenant", "a", stdin="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert served.fake.purged == []
    one = cli("cache", "purge", "--tenant", "a", "--namespace", "eu", stdin="y\n")
    assert one.exit_code == 0, one.output
    assert "Erased 2 cached answers of namespace 'eu' of tenant 'a'." in one.stdout
    rest = cli("cache", "purge", "--tenant", "a", "--yes", "--json")
    assert json.loads(rest.stdout) == {"purged": 3}
    assert served.fake.purged == [("a", "eu"), ("a", None)]
    assert served.calls[-2:] == [("DELETE", "/admin/v1/tenants/a/cache?namespace=eu"),
                                 ("DELETE", "/admin/v1/tenants/a/cache")]  # fmt: skip


def test_requests_show_the_cache_column(served: Served) -> None:
    shown = cli("requests", "--tenant", "a")
    assert shown.exit_code == 0, shown.output
    head = shown.stdout.splitlines()[0].split()
    assert "cache" in head and head.index("cache") == head.index("status") + 1
    from farebox.cli.requests import row

    assert row({"tokens": {}, "latency_ms": 1.0})["cache"] is None  # rows without the field
    assert row({"tokens": {}, "latency_ms": 1.0, "cache": "miss"})["cache"] == "miss"


def test_on_a_local_database(tmp_path: Path) -> None:
    """No gateway running: the in-process admin API on the config's database (no cache
    configured: zeros, and nothing to erase)."""
    config = tmp_path / "farebox.yaml"
    config.write_text(f"database: sqlite:///{tmp_path / 'farebox.db'}\n")
    assert cli("tenants", "create", "acme", "--config", str(config)).exit_code == 0
    stats = cli("cache", "stats", "--tenant", "acme", "--config", str(config), "--json")
    assert stats.exit_code == 0, stats.output
    got = json.loads(stats.stdout)
    assert (got["entries"], got["bytes"], got["hits"], got["hit_rate"]) == (0, 0, 0, None)
    purge = cli("cache", "purge", "--tenant", "acme", "--yes", "--config", str(config))
    assert purge.exit_code == 0 and "Erased 0 cached answers" in purge.stdout


def test_on_a_terminal_the_table_is_rich(served: Served) -> None:
    from farebox.cli.terminal import Terminal

    env = {"FAREBOX_ADMIN_KEY": ADMIN_KEY, "FAREBOX_DATABASE": None, "FAREBOX_CONFIG": None}
    forced = Terminal(force=True, width=160, color=False)
    shown = CliRunner().invoke(main, ["cache", "stats"], env=env, obj=forced,
                               catch_exceptions=False)  # fmt: skip
    assert shown.exit_code == 0, shown.output
    a = served.rest("/admin/v1/tenants/a/cache")
    assert "Response cache" in shown.stdout and f"2 tenants; {a['since']} to {a['until']}" in (
        shown.stdout)  # fmt: skip
    line = next(x for x in shown.stdout.splitlines() if " a " in x)
    assert "0.4000" in line and a["saved_usd"] in line and "2,048" in line

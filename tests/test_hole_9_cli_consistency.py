"""Issue 7, item 9: a CLI command gives the same numbers on the local database and through
``--url``. Local mode uses the configuration the database is served with (the demo's
built-in one included), or refuses and says which config to pass; it never guesses."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e import ServerProcess, admin_headers, child_env, free_port, write_config

ADMIN_LINE = r"Generated admin key.*?(fba_\S+)"
KEY_LINE = r"key: (fbx_\S+)"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}


def farebox(
    cwd: Path, *args: str, admin_key: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m farebox ARGS`` as a user runs it, in ``cwd``."""
    return subprocess.run(
        [sys.executable, "-m", "farebox", *args],
        cwd=cwd,
        env=child_env(admin_key),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    """A running ``farebox demo`` with some spend from acme (pro) and globex (free):
    (its directory, its URL, its admin key)."""
    cwd = tmp_path_factory.mktemp("demo")
    port = free_port()
    server = ServerProcess(["demo", "--port", str(port)], cwd=cwd, env=child_env(None), port=port)
    try:
        admin_key = server.wait_for_line(ADMIN_LINE).group(1)
        acme = server.wait_for_line(KEY_LINE).group(1)
        server.wait_ready()
        with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
            made = client.post("/admin/v1/tenants/globex/keys", json={"name": "t"},
                               headers=admin_headers(admin_key))  # fmt: skip
            assert made.status_code == 201, made.text
            for key in (acme, made.json()["key"]):
                for _ in range(3):
                    r = client.post("/v1/chat/completions", json=CHAT,
                                    headers={"Authorization": f"Bearer {key}"})  # fmt: skip
                    assert r.status_code == 200, r.text
        yield cwd, server.base_url, admin_key
    finally:
        server.stop()


def this_month() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m")


def both_ways(demo: tuple[Path, str, str], *args: str) -> tuple[str, str]:
    cwd, url, admin_key = demo
    local = farebox(cwd, *args)
    remote = farebox(cwd, *args, "--url", url, admin_key=admin_key)
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    return local.stdout, remote.stdout


def rows(table: str) -> dict[str, dict[str, str]]:
    """A printed table as {first column: {column: value}}."""
    head, *lines = table.strip().splitlines()
    names = head.split()
    return {line.split()[0]: dict(zip(names, line.split(), strict=False)) for line in lines}


def test_margins_locally_and_through_url_give_the_same_numbers(
    demo: tuple[Path, str, str],
) -> None:
    local, remote = both_ways(demo, "margins", "--month", this_month())
    assert local == remote
    table = rows(local)
    assert table["acme"]["plan_fee_usd"] == "49.00"  # the demo's pro plan, not 0.00
    assert table["globex"]["plan_fee_usd"] == "0.00"
    assert int(table["acme"]["requests"]) == 3 and int(table["globex"]["requests"]) == 3


def test_budgets_show_locally_and_through_url_give_the_same_budgets(
    demo: tuple[Path, str, str],
) -> None:
    local, remote = both_ways(demo, "budgets", "show", "globex")
    assert local == remote
    limits = sorted(line.split()[2] for line in local.strip().splitlines()[1:])
    assert limits == ["0.50", "15.00"], local  # the free plan's day and month budgets


def test_local_mode_refuses_a_config_other_than_the_one_served(
    demo: tuple[Path, str, str], tmp_path: Path
) -> None:
    cwd = demo[0]
    other = write_config(tmp_path)  # no plans like the demo's
    text = yaml.safe_load(other.read_text())
    text["database"] = f"sqlite:///{cwd / 'farebox.db'}"
    other.write_text(yaml.safe_dump(text))
    refused = farebox(cwd, "margins", "--month", this_month(), "--config", str(other))
    assert refused.returncode != 0
    assert "farebox demo" in refused.stderr and "leave out --config" in refused.stderr
    assert "plan_fee_usd" not in refused.stdout


def test_local_mode_without_a_known_config_refuses_and_says_what_to_pass(
    tmp_path: Path,
) -> None:
    refused = farebox(tmp_path, "margins", "--month", this_month())
    assert refused.returncode != 0
    assert "--config" in refused.stderr and "--url" in refused.stderr
    assert not (tmp_path / "farebox.db").exists()  # nothing guessed, nothing created


def test_a_served_config_file_is_used_without_config_and_accepted_with_it(
    tmp_path: Path,
) -> None:
    plans = {"gold": {"models": ["*"], "pricing": {"monthly_fee_usd": "7"}}}
    config = write_config(tmp_path, plans=plans)
    port = free_port()
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    server = ServerProcess(args, cwd=tmp_path, env=child_env(), port=port)
    try:
        server.wait_ready()
    finally:
        server.stop()
    created = farebox(tmp_path, "tenants", "create", "acme", "--plan", "gold")
    assert created.returncode == 0, created.stderr
    for extra in ([], ["--config", str(config)]):
        shown = farebox(tmp_path, "margins", "--month", this_month(), *extra)
        assert shown.returncode == 0, shown.stderr
        assert rows(shown.stdout)["acme"]["plan_fee_usd"] == "7.00"

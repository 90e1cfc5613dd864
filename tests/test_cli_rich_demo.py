"""``farebox demo`` prints the dashboard's address and one-click sign-in links: the admin
link's key is an admin credential the admin API accepts while the demo runs (never the
long-lived admin key), the tenant link's key is that tenant's; with ``--traffic`` they come
before the traffic starts, and the traffic keeps going while the server runs."""

from __future__ import annotations

import time
from pathlib import Path

import click
import httpx
import pytest

from farebox.cli.demo import print_dashboard, signin_url
from farebox.config.settings import parse_settings
from tests.e2e import (
    ADMIN_KEY,
    POLL_INTERVAL_S,
    READY_TIMEOUT_S,
    admin_headers,
    child_env,
    free_port,
    running,
)

ADMIN_LINK = r"^Sign in \(admin\): (http://127\.0\.0\.1:(\d+)/dashboard/signin#key=(fba_\S+))$"
TENANT_LINK = r"^Sign in \(tenant (\w+)\): (http://\S+/dashboard/signin#key=(fbx_\S+))$"


def test_demo_prints_the_dashboard_and_sign_in_links_that_work(tmp_path: Path) -> None:
    port = free_port()
    env = child_env(ADMIN_KEY)  # an admin key of the operator's own: never printed
    with running(["demo", "--port", str(port)], cwd=tmp_path, env=env, port=port) as demo:
        dashboard = demo.wait_for_line(r"^Dashboard: (\S+)$").group(1)
        admin = demo.wait_for_line(ADMIN_LINK)
        tenant = demo.wait_for_line(TENANT_LINK)
        assert dashboard == f"http://127.0.0.1:{port}/dashboard"
        assert int(admin.group(2)) == port and tenant.group(1) == "acme"
        assert ADMIN_KEY not in demo.output
        token = admin.group(3)
        with httpx.Client(base_url=demo.base_url, timeout=10.0) as client:
            accepted = client.get("/admin/v1/tenants", headers=admin_headers(token))
            assert accepted.status_code == 200, accepted.text
            assert "acme" in {t["id"] for t in accepted.json()["data"]}
            kept = client.get("/admin/v1/tenants", headers=admin_headers(ADMIN_KEY))
            assert kept.status_code == 200, kept.text  # the operator's key still works
            wrong = client.get("/admin/v1/tenants", headers=admin_headers(token + "x"))
            assert wrong.status_code == 401
            me = client.get("/v1/me", headers={"Authorization": f"Bearer {tenant.group(3)}"})
            assert me.status_code == 200 and me.json()["tenant"]["id"] == "acme", me.text


def test_demo_traffic_prints_the_links_first_and_keeps_sending(tmp_path: Path) -> None:
    port = free_port()
    args = ["demo", "--port", str(port), "--traffic"]
    with running(args, cwd=tmp_path, env=child_env(None), port=port) as demo:
        token = demo.wait_for_line(ADMIN_LINK).group(3)
        demo.wait_for_line(r"^Driving simulated traffic")
        lines = demo.output.splitlines()
        first = next(i for i, line in enumerate(lines) if line.startswith("Sign in (admin)"))
        driving = next(i for i, line in enumerate(lines) if line.startswith("Driving"))
        assert first < driving
        seen: list[int] = []
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=demo.base_url, timeout=10.0) as client:
            while len(set(seen)) < 3 and time.monotonic() < deadline:
                r = client.get("/admin/v1/usage", headers=admin_headers(token))
                assert r.status_code == 200, r.text
                data = r.json()["data"]
                seen.append(data[0]["requests"] if data else 0)
                time.sleep(POLL_INTERVAL_S)  # polling interval while the traffic runs
        assert len(set(seen)) >= 3 and seen == sorted(seen), seen  # it keeps growing


def test_no_links_when_the_dashboard_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    data = {"dashboard": {"enabled": False}}
    off = parse_settings(data, source="t.yaml", env={}, base_dir=Path("."))
    print_dashboard(off, "http://127.0.0.1:1", "fba_x", {"acme": "fbx_y"})
    assert capsys.readouterr().out == ""
    on = parse_settings({**data, "dashboard": {"enabled": True}}, source="t.yaml", env={},
                        base_dir=Path("."))  # fmt: skip
    print_dashboard(on, "http://127.0.0.1:1", "fba_x", {"acme": "fbx_y"})
    out = capsys.readouterr().out
    assert "Dashboard: http://127.0.0.1:1/dashboard\n" in out
    assert f"Sign in (admin): {signin_url('http://127.0.0.1:1', 'fba_x')}\n" in out
    assert "Sign in (tenant acme): http://127.0.0.1:1/dashboard/signin#key=fbx_y\n" in out
    assert click.unstyle(out) == out

"""``farebox serve --workers N``: several processes share one SQLite database; a key revoked
through one worker is refused by every worker on its very next request."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e import admin_headers, child_env, free_port, ledger_rows, running, write_config

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def test_revocation_reaches_every_worker_at_once(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    port = free_port()
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with running([*args, "--workers", "2"], cwd=tmp_path, env=child_env(), port=port) as server:
        with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
            r = client.post(
                "/admin/v1/tenants", json={"id": "t", "plan": "pro"}, headers=admin_headers()
            )
            assert r.status_code == 201
            made = client.post(
                "/admin/v1/tenants/t/keys", json={"name": "k"}, headers=admin_headers()
            )
            key, key_id = made.json()["key"], made.json()["id"]
            auth = {"Authorization": f"Bearer {key}"}
            # many requests on fresh connections, so both workers serve (and cache) the key
            ok = [httpx.post(server.base_url + "/v1/chat/completions", json=CHAT, headers=auth)
                  for _ in range(30)]  # fmt: skip
            assert {r.status_code for r in ok} == {200}
            assert (
                client.delete(f"/admin/v1/keys/{key_id}", headers=admin_headers()).status_code
                == 200
            )
            after = [httpx.post(server.base_url + "/v1/chat/completions", json=CHAT, headers=auth)
                     for _ in range(30)]  # fmt: skip
            assert {r.status_code for r in after} == {401}
    rows = ledger_rows(tmp_path / "farebox.db")
    assert len(rows) == 30 and {r["tenant_id"] for r in rows} == {"t"}

"""``farebox demo``: the README's first command works as printed, and keeps its admin key."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import httpx

from tests.e2e import ServerProcess, admin_headers, child_env, free_port, running

KEY_LINE = r"key: (fbx_\S+)"
CURL_LINE = r"^\s*(curl .*)$"
ADMIN_LINE = r"Generated admin key.*?(fba_\S+)"


def parse_curl(line: str) -> tuple[str, str, dict[str, str], str | None]:
    """(method, url, headers, body) of a printed ``curl`` command line."""
    words = shlex.split(line)
    assert words[0] == "curl", words
    url, body, method = None, None, None
    headers: dict[str, str] = {}
    i = 1
    while i < len(words):
        word = words[i]
        if word in ("-H", "--header"):
            name, _, value = words[i + 1].partition(":")
            headers[name.strip()] = value.strip()
            i += 2
        elif word in ("-d", "--data", "--data-raw", "--data-binary"):
            body = words[i + 1]
            i += 2
        elif word in ("-X", "--request"):
            method = words[i + 1]
            i += 2
        elif word.startswith("-"):
            i += 1  # flags without a value, such as -s
        else:
            url = word
            i += 1
    assert url is not None, line
    return method or ("POST" if body is not None else "GET"), url, headers, body


def start_demo(tmp_path: Path, port: int) -> ServerProcess:
    return ServerProcess(
        ["demo", "--port", str(port)], cwd=tmp_path, env=child_env(None), port=port
    )


def test_demo_prints_a_working_curl_and_generates_the_admin_key_once(tmp_path: Path) -> None:
    port = free_port()
    demo = start_demo(tmp_path, port)
    try:
        admin_key = demo.wait_for_line(ADMIN_LINE).group(1)
        key = demo.wait_for_line(KEY_LINE).group(1)
        curl = demo.wait_for_line(CURL_LINE).group(1)
        demo.wait_ready()

        method, url, headers, body = parse_curl(curl)
        assert url == f"http://127.0.0.1:{port}/v1/chat/completions"
        assert headers["Authorization"] == f"Bearer {key}"
        with httpx.Client(timeout=10.0) as client:
            r = client.request(method, url, headers=headers, content=body)
            assert r.status_code == 200, r.text
            completion = r.json()
            assert completion["object"] == "chat.completion"
            assert completion["choices"][0]["message"]["content"]
            assert completion["usage"]["total_tokens"] > 0
            assert r.headers["x-farebox-request-id"]
            assert r.headers["x-farebox-cost-usd"]

            # The printed admin key is the one the gateway accepts, and the demo tenants exist.
            tenants = client.get(
                f"{demo.base_url}/admin/v1/tenants", headers=admin_headers(admin_key)
            )
            assert tenants.status_code == 200, tenants.text
            plans = {t["id"]: t["plan"] for t in tenants.json()["data"]}
            assert plans.get("acme") == "pro"
            assert {"acme", "globex", "initech"} <= set(plans)
        assert len(re.findall(ADMIN_LINE, demo.output)) == 1
        assert (tmp_path / "farebox.db").exists()
    finally:
        demo.stop()

    port = free_port()
    with running(
        ["demo", "--port", str(port)], cwd=tmp_path, env=child_env(None), port=port
    ) as again:
        second_key = again.wait_for_line(KEY_LINE).group(1)
        again.wait_for_line(CURL_LINE)
        # The announcement would come before the key line, on the same pipe: it is not there.
        assert not re.search(r"Generated admin key", again.output), again.output
        assert admin_key not in again.output
        with httpx.Client(base_url=again.base_url, timeout=10.0) as client:
            kept = client.get("/admin/v1/tenants", headers=admin_headers(admin_key))
            assert kept.status_code == 200, kept.text  # the first admin key is kept
            r = client.post(
                "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]},
                headers={"Authorization": f"Bearer {second_key}"},
            )
            assert r.status_code == 200, r.text

"""Issue 7, item 4: header count and size are bounded (431), on every path.

In process, the app itself refuses a request whose headers pass ``server.max_header_count``
or ``server.max_header_bytes``. Under uvicorn, ``BoundedHttpToolsProtocol`` refuses them while
they are parsed, before uvicorn keeps them (httptools sets no limit of its own), including one
endless header that never finishes.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e import POLL_INTERVAL_S, READY_TIMEOUT_S, child_env, free_port, write_config

PATHS = ["/admin/v1/tenants", "/v1/models", "/v1/chat/completions", "/healthz"]


@pytest.mark.parametrize("path", PATHS)
async def test_too_many_headers_is_a_431_on_every_path(make_gateway: Any, path: str) -> None:
    async with make_gateway() as gw:
        many = {f"x-extra-{i}": "1" for i in range(150)}
        r = await gw.client.get(path, headers={**gw.admin, **many})
        assert r.status_code == 431, r.text
        error = r.json()["error"]
        assert error["code"] == "request_headers_too_large" and "100" in error["message"]
        if path.startswith("/v1/"):
            assert r.headers["x-farebox-request-id"].startswith("req_")


@pytest.mark.parametrize("path", PATHS)
async def test_too_many_header_bytes_is_a_431(make_gateway: Any, path: str) -> None:
    async with make_gateway({"server": {"max_header_bytes": 2048}}) as gw:
        r = await gw.client.get(path, headers={**gw.admin, "x-big": "a" * 3000})
        assert r.status_code == 431 and "2048" in r.json()["error"]["message"]
        r = await gw.client.get("/healthz", headers={"x-small": "a" * 1000})
        assert r.status_code == 200


async def test_messages_path_refuses_in_the_anthropic_format(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        many = {f"x-extra-{i}": "1" for i in range(150)}
        r = await gw.client.post("/v1/messages", headers=many, json={})
        assert r.status_code == 431 and r.json()["type"] == "error"


# --- under uvicorn, with the bounded protocol ----------------------------------------------


@pytest.fixture(scope="module")
def uvicorn_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``python -m uvicorn`` serving the Farebox app with the bounded protocol; its port."""
    directory = tmp_path_factory.mktemp("headers")
    config = write_config(directory, server={"max_header_count": 50, "max_header_bytes": 4096})
    port = free_port()
    args = ["-m", "uvicorn", "farebox.app:app_from_env", "--factory", "--port", str(port),
            "--host", "127.0.0.1", "--loop", "uvloop", "--log-level", "warning",
            "--http", "farebox.api.http_protocol:BoundedHttpToolsProtocol"]  # fmt: skip
    log = (directory / "uvicorn.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=directory, env=child_env(FAREBOX_CONFIG=str(config)),
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_ready(proc, port, directory / "uvicorn.log")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2.0) as client:
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(POLL_INTERVAL_S)  # readiness polling interval, as in e2e.py


def _exchange(port: int, head: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(head)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while True:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
            if b"\r\n\r\n" in data and b"}" in data.split(b"\r\n\r\n", 1)[1]:
                break
        return data


def _request(headers: list[bytes], end: bool = True) -> bytes:
    lines = [b"GET /healthz HTTP/1.1", b"Host: 127.0.0.1", *headers]
    return b"\r\n".join(lines) + (b"\r\n\r\n" if end else b"")


def test_protocol_refuses_too_many_header_fields(uvicorn_server: int) -> None:
    answer = _exchange(uvicorn_server, _request([b"X-N%d: 1" % i for i in range(60)]))
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"request_headers_too_large" in answer and b"50" in answer


def test_protocol_refuses_too_many_header_bytes(uvicorn_server: int) -> None:
    answer = _exchange(uvicorn_server, _request([b"X-Big: " + b"a" * 5000]))
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_protocol_refuses_an_endless_header_before_it_ends(uvicorn_server: int) -> None:
    head = _request([b"X-Endless: " + b"a" * 64 * 1024], end=False)  # never finished
    answer = _exchange(uvicorn_server, head)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_protocol_serves_requests_within_the_limits(uvicorn_server: int) -> None:
    answer = _exchange(uvicorn_server, _request([b"X-N%d: 1" % i for i in range(30)]))
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    # a body in the same packet as the head does not count as head
    body = b'{"a": "' + b"b" * 100_000 + b'"}'
    post = (
        b"POST /admin/v1/tenants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    answer = _exchange(uvicorn_server, post)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]

"""Issue 7, item 4: one body limit, enforced while reading, before parsing and before the key.

A real ``farebox serve`` on loopback is sent 200 MB bodies over a raw socket (chunked, so no
Content-Length warns it): it answers 401 or 413 while its resident memory grows by less than
32 MiB. In-process tests show the order of the checks: the admin key is checked before a single
byte of the body is received, and the body is counted while it arrives.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e import ADMIN_KEY, create_tenant_key, serve, write_config

MIB = 1024 * 1024
BODY_MIB = 200
RSS_BUDGET = 32 * MIB
LIMIT = 4 * MIB  # server.max_body_bytes, the default


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int) -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _chunked_post(port: int, path: str, headers: dict[str, str], mib: int) -> tuple[int, bytes]:
    """POST ``mib`` MiB of JSON-looking bytes, chunked, over a raw socket; (status, body)."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Transfer-Encoding: chunked"]
    head += ["Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]
    chunk = b"%x\r\n%s\r\n" % (MIB, b"[" * MIB)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            for _ in range(mib):
                sock.sendall(chunk)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading once it has answered
        return _read_response(sock)


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        assert part, f"connection closed before a response: {data!r}"
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")), 0,
    )  # fmt: skip
    while len(body) < length:
        part = sock.recv(65536)
        if not part:
            break
        body += part
    return status, body


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    directory = tmp_path_factory.mktemp("hole4")
    with serve(write_config(directory), cwd=directory) as running:
        yield running


def _peak_growth(pid: int, send: Any) -> tuple[Any, int]:
    before = _status_kib(pid, "VmRSS")
    _reset_peak(pid)
    result = send()
    peak = _status_kib(pid, "VmHWM")
    return result, (peak - before) * 1024


def test_unauthenticated_200mb_admin_post_is_refused_in_bounded_memory(server: Any) -> None:
    pid = server.proc.pid
    (status, body), growth = _peak_growth(
        pid, lambda: _chunked_post(server.port, "/admin/v1/tenants", {}, BODY_MIB)
    )
    assert status in (401, 413), body
    assert b"admin key" in body or b"larger than" in body
    assert growth < RSS_BUDGET, f"RSS grew by {growth / MIB:.1f} MiB"
    # the server is still healthy and created nothing
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        r = client.get("/admin/v1/tenants", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert r.status_code == 200 and r.json()["data"] == []


def test_authenticated_oversize_admin_post_is_a_413_in_bounded_memory(server: Any) -> None:
    pid = server.proc.pid
    auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
    (status, body), growth = _peak_growth(
        pid, lambda: _chunked_post(server.port, "/admin/v1/tenants", auth, BODY_MIB)
    )
    assert status == 413, body
    assert b"request_too_large" in body
    assert growth < RSS_BUDGET, f"RSS grew by {growth / MIB:.1f} MiB"


def test_declared_oversize_is_refused_before_the_body_and_the_key(server: Any) -> None:
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for headers in ({}, {"Authorization": f"Bearer {ADMIN_KEY}"}):
            r = client.post(
                "/admin/v1/tenants",
                content=b"{" + b" " * LIMIT + b"}",
                headers={**headers, "Content-Type": "application/json"},
            )
            assert r.status_code == 413, r.text
            assert r.json()["error"]["code"] == "request_too_large"


def test_data_plane_oversize_is_still_a_413(server: Any) -> None:
    key = create_tenant_key(server.base_url, "acme", "pro")
    auth = {"Authorization": f"Bearer {key}"}
    status, body = _chunked_post(server.port, "/v1/chat/completions", auth, 8)
    assert status == 413 and b"request_too_large" in body
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        big = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"x" * LIMIT
        r = client.post("/v1/chat/completions", content=big + b'"}]}', headers=auth)
        assert r.status_code == 413 and "x-farebox-request-id" in r.headers
        ok = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        assert client.post("/v1/chat/completions", json=ok, headers=auth).status_code == 200


# --- in process: the order of the checks ----------------------------------------------


async def _asgi_post(app: Any, path: str, headers: dict[str, str], chunks: list[bytes]) -> Any:
    """Drive the ASGI app directly; record how many body messages it pulled."""
    pulled: list[int] = []
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        index = len(pulled)
        pulled.append(index)
        if index < len(chunks):
            return {"type": "http.request", "body": chunks[index],
                    "more_body": index + 1 < len(chunks)}  # fmt: skip
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": raw, "client": ("127.0.0.1", 1),
             "server": ("gateway", 80), "scheme": "http", "http_version": "1.1",
             "asgi": {"version": "3.0"}, "root_path": ""}  # fmt: skip
    await app(scope, receive, send)
    return sent[0]["status"], len(pulled)


async def test_admin_key_is_checked_before_any_body_is_received(make_gateway: Any) -> None:
    async with make_gateway() as gw:
        status, pulled = await _asgi_post(gw.app, "/admin/v1/tenants", {}, [b'{"id": "x"}'])
        assert (status, pulled) == (401, 0)
        wrong = {"Authorization": "Bearer fba_wrong_key_0123456789abcdef"}
        status, pulled = await _asgi_post(gw.app, "/admin/v1/tenants", wrong, [b'{"id": "x"}'])
        assert (status, pulled) == (401, 0)
        assert (await gw.client.get("/admin/v1/tenants", headers=gw.admin)).json()["data"] == []


async def test_body_is_counted_while_read_and_reading_stops_at_the_limit(
    make_gateway: Any,
) -> None:
    async with make_gateway({"server": {"max_body_bytes": 4096}}) as gw:
        chunks = [b"[" * 1024] * 100  # 100 KiB in 1 KiB chunks, no Content-Length
        status, pulled = await _asgi_post(gw.app, "/admin/v1/tenants", gw.admin, chunks)
        assert status == 413
        assert pulled == 5  # 5 KiB read: the first chunk past 4096 bytes, and no more


async def test_admin_body_nested_deeper_than_the_limit_is_a_400(make_gateway: Any) -> None:
    async with make_gateway({"server": {"max_json_depth": 8}}) as gw:
        deep: Any = "x"
        for _ in range(10):
            deep = {"a": deep}
        r = await gw.client.post(
            "/admin/v1/tenants", json={"id": "t1", "metadata": deep}, headers=gw.admin
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "nested_too_deeply"
        shallow = {"id": "t1", "metadata": {"a": {"b": 1}}}
        r = await gw.client.post("/admin/v1/tenants", json=shallow, headers=gw.admin)
        assert r.status_code == 201, r.text

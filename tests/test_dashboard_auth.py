"""The dashboard's sign-in, sessions and CSRF, in process (the browser tests drive the pages).

Sign-in exchanges a key for an HttpOnly, SameSite=Strict cookie scoped to /dashboard (Secure
over TLS); sessions expire, are revoked by signing out, by the admin's "revoke all" and by
revoking a tenant's key; every mutation needs the session's CSRF token (403 without); no cookie
or token value, however mangled, makes a 500.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farebox.api.dashboard.csrf import CsrfGuard
from farebox.api.dashboard.sessions import (
    COOKIE,
    LIVE_CACHE_S,
    REVOKED_GENERATION,
    Session,
    SessionBook,
    SessionCodec,
)
from farebox.core.keys import hash_key
from tests.conftest import ADMIN_KEY, Gateway
from tests.drawn import draw
from tests.e2e import ADMIN_KEY as E2E_ADMIN_KEY
from tests.e2e import child_env, free_port, running, write_config

CONFIG: dict[str, Any] = {
    "providers": {"sim": {"kind": "mock", "seed": 7, "latency_ms": 0}},
    "plans": {"default": {"models": ["*"]}},
    "dashboard": {"session_ttl_s": 600},
}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SECRET = b"s" * 32
LOCAL_TOKEN = "fbx_local_token_for_this_run_0123456789"
ROTATED_KEY = "fba_the_rotated_admin_key_0123456789"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Meta:
    """An in-memory meta table (insert only, as the stores' is)."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self.reads = 0

    async def get_meta(self, name: str) -> str | None:
        self.reads += 1
        return self.rows.get(name)

    async def put_meta_if_absent(self, name: str, value: str) -> str:
        return self.rows.setdefault(name, value)


@asynccontextmanager
async def dashboard(make_gateway: Callable[..., Any], clock: Clock) -> AsyncIterator[Gateway]:
    async with make_gateway(CONFIG, clock=clock) as gw:
        gw.client.cookies.clear()
        yield gw


async def sign_in(gw: Gateway, key: str) -> httpx.Response:
    return await gw.client.post("/dashboard/signin", data={"key": key}, headers=FORM)


def session_cookie(response: httpx.Response) -> str:
    found = re.search(rf"{COOKIE}=([^;]+)", response.headers.get("set-cookie", ""))
    assert found, response.headers
    return found.group(1)


async def get(gw: Gateway, path: str, cookie: str | None) -> httpx.Response:
    gw.client.cookies.clear()
    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie is not None else None
    return await gw.client.get(path, headers=headers)


async def post(gw: Gateway, path: str, cookie: str, **form: str) -> httpx.Response:
    gw.client.cookies.clear()
    headers = {**FORM, "Cookie": f"{COOKIE}={cookie}"}
    return await gw.client.post(path, data=form, headers=headers)


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


async def test_sign_in_sets_a_strict_http_only_cookie_and_never_echoes_the_key(
    make_gateway: Callable[..., Any],
) -> None:
    async with dashboard(make_gateway, Clock()) as gw:
        r = await get(gw, "/dashboard", None)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard/signin"
        wrong = "fba_not_the_admin_key_0123456789"
        r = await sign_in(gw, wrong)
        assert r.status_code == 401 and "set-cookie" not in r.headers
        assert wrong not in r.text
        r = await sign_in(gw, ADMIN_KEY)
        assert r.status_code == 303 and r.headers["location"] == "/dashboard"
        cookie = r.headers["set-cookie"].lower()
        for part in ("httponly", "samesite=strict", "path=/dashboard", "max-age=600"):
            assert part in cookie, cookie
        assert "secure" not in cookie  # plain http: a Secure cookie would never come back
        assert ADMIN_KEY not in r.headers["set-cookie"]
        page = await get(gw, "/dashboard", session_cookie(r))
        assert page.status_code == 200 and "Overview" in page.text
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "<script>" not in page.text
        over_tls = httpx.AsyncClient(transport=httpx.ASGITransport(gw.app), base_url="https://gw")
        async with over_tls:
            r = await over_tls.post("/dashboard/signin", data={"key": ADMIN_KEY}, headers=FORM)
        assert "secure" in r.headers["set-cookie"].lower()


async def test_a_tenant_key_opens_only_its_own_tenant(make_gateway: Callable[..., Any]) -> None:
    async with dashboard(make_gateway, Clock()) as gw:
        key = await gw.tenant_key("acme")
        await gw.tenant_key("globex")
        r = await sign_in(gw, key)
        assert r.status_code == 303
        cookie = session_cookie(r)
        page = await get(gw, "/dashboard", cookie)
        assert page.status_code == 200 and "acme" in page.text and "globex" not in page.text
        assert key not in page.text  # the key list shows prefixes, never a secret
        other = await get(gw, "/dashboard/tenants/globex", cookie)
        assert other.status_code == 303 and other.headers["location"] == "/dashboard"
        series = await get(gw, "/dashboard/data/series?tenant=globex", cookie)
        assert series.status_code == 200 and set(series.json()) >= {"t", "cost", "revenue"}
        service = await gw.client.post("/admin/v1/service-keys", json={}, headers=gw.admin)
        assert (await sign_in(gw, service.json()["key"])).status_code == 401


async def test_every_mutation_needs_the_sessions_csrf_token(
    make_gateway: Callable[..., Any],
) -> None:
    async with dashboard(make_gateway, Clock()) as gw:
        await gw.tenant("acme")
        r = await gw.client.post("/admin/v1/tenants/acme/pause", json={}, headers=gw.admin)
        assert r.json()["paused"] is True
        admin = session_cookie(await sign_in(gw, ADMIN_KEY))
        other = session_cookie(await sign_in(gw, ADMIN_KEY))
        token = csrf_of(await get(gw, "/dashboard", admin))
        foreign = csrf_of(await get(gw, "/dashboard", other))
        assert token != foreign
        resume = "/dashboard/tenants/acme/resume"
        for form in ({}, {"csrf_token": ""}, {"csrf_token": foreign}, {"csrf_token": token[:-1]}):
            r = await post(gw, resume, admin, **form)
            assert r.status_code == 403, form
        gw.client.cookies.clear()
        r = await gw.client.post(
            resume, data={"csrf_token": token},
            headers={**FORM, "Cookie": f"{COOKIE}={admin}", "Origin": "https://evil.example"},
        )  # fmt: skip
        assert r.status_code == 403
        assert (await gw.client.get("/admin/v1/tenants/acme", headers=gw.admin)).json()["paused"]
        r = await post(gw, resume, admin, csrf_token=token)
        assert r.status_code == 303
        tenant = (await gw.client.get("/admin/v1/tenants/acme", headers=gw.admin)).json()
        assert tenant["paused"] is False


async def test_a_tenant_cannot_use_the_admins_mutations(make_gateway: Callable[..., Any]) -> None:
    async with dashboard(make_gateway, Clock()) as gw:
        key = await gw.tenant_key("acme")
        await gw.client.post("/admin/v1/tenants/acme/pause", json={}, headers=gw.admin)
        cookie = session_cookie(await sign_in(gw, key))
        token = csrf_of(await get(gw, "/dashboard", cookie))
        for path in ("/dashboard/tenants/acme/resume", "/dashboard/sessions/revoke-all"):
            assert (await post(gw, path, cookie, csrf_token=token)).status_code == 403
        assert (await gw.client.get("/admin/v1/tenants/acme", headers=gw.admin)).json()["paused"]


async def test_sessions_end_by_sign_out_expiry_revoke_all_and_key_revocation(
    make_gateway: Callable[..., Any],
) -> None:
    clock = Clock()
    async with dashboard(make_gateway, clock) as gw:
        key = await gw.tenant_key("acme")
        first = session_cookie(await sign_in(gw, ADMIN_KEY))
        second = session_cookie(await sign_in(gw, ADMIN_KEY))
        token = csrf_of(await get(gw, "/dashboard", first))
        assert (await post(gw, "/dashboard/signout", first, csrf_token=token)).status_code == 303
        assert (await get(gw, "/dashboard", first)).status_code == 303
        assert (await get(gw, "/dashboard", second)).status_code == 200  # only that one ended
        tenant = session_cookie(await sign_in(gw, key))
        token = csrf_of(await get(gw, "/dashboard", second))
        r = await post(gw, "/dashboard/sessions/revoke-all", second, csrf_token=token)
        assert r.status_code == 303
        for cookie in (second, tenant):
            assert (await get(gw, "/dashboard", cookie)).status_code == 303
        fresh = session_cookie(await sign_in(gw, ADMIN_KEY))  # new sessions work again
        assert (await get(gw, "/dashboard", fresh)).status_code == 200
        clock.now += 601
        assert (await get(gw, "/dashboard", fresh)).status_code == 303  # expired
        tenant = session_cookie(await sign_in(gw, key))
        assert (await get(gw, "/dashboard", tenant)).status_code == 200
        keys = await gw.client.get("/admin/v1/tenants/acme/keys", headers=gw.admin)
        await gw.client.delete(f"/admin/v1/keys/{keys.json()['data'][0]['id']}", headers=gw.admin)
        clock.now += LIVE_CACHE_S  # this worker trusted its last answer for LIVE_CACHE_S
        assert (await get(gw, "/dashboard", tenant)).status_code == 303


async def test_an_admin_session_ends_with_the_admin_credential_that_opened_it(
    make_gateway: Callable[..., Any],
) -> None:
    async with dashboard(make_gateway, Clock()) as gw:
        services = gw.app.state.services
        old = session_cookie(await sign_in(gw, ADMIN_KEY))
        assert (await get(gw, "/dashboard", old)).status_code == 200
        services.local_admin_hash = hash_key(services.secret, LOCAL_TOKEN)  # the demo's token
        local = session_cookie(await sign_in(gw, LOCAL_TOKEN))
        assert (await get(gw, "/dashboard", local)).status_code == 200
        services.admin_key_hash = hash_key(services.secret, ROTATED_KEY)  # rotated
        assert (await get(gw, "/dashboard", old)).status_code == 303
        assert (await get(gw, "/dashboard", local)).status_code == 200  # its own still good
        services.local_admin_hash = ""  # the run that printed the link is over
        assert (await get(gw, "/dashboard", local)).status_code == 303
        fresh = session_cookie(await sign_in(gw, ROTATED_KEY))
        assert (await get(gw, "/dashboard", fresh)).status_code == 200


async def test_revoke_all_works_past_any_number_of_generations() -> None:
    clock, meta = Clock(), Meta()
    for gen in range(12_345):  # past the old scan's cap of 10 000
        meta.rows[f"{REVOKED_GENERATION}{gen}"] = "1"
    book = SessionBook(SECRET, meta, 600, clock)
    meta.reads = 0
    assert await book.generation() == 12_345
    assert meta.reads <= 2 * (12_345).bit_length() + 2  # a search, not a scan
    token = await book.issue("admin", admin="fp")
    assert await book.check(token) is not None
    await book.revoke_all()
    assert await book.check(token) is None
    other = SessionBook(SECRET, meta, 600, clock)  # another worker, with no hint of its own
    assert await other.generation() == 12_346
    fresh = await other.issue("admin", admin="fp")
    assert await book.check(fresh) is not None and await book.generation() == 12_346


async def test_static_assets_ship_in_the_package_and_nothing_else_is_served(
    make_gateway: Callable[..., Any],
) -> None:
    async with dashboard(make_gateway, Clock()) as gw:
        assets = (("uplot.iife.min.js", "javascript"), ("uplot.min.css", "css"),
                  ("dashboard.js", "javascript"), ("uplot.LICENSE", "text/plain"))  # fmt: skip
        for name, kind in assets:
            r = await get(gw, f"/dashboard/static/{name}", None)
            assert r.status_code == 200 and kind in r.headers["content-type"], name
        assert "MIT" in (await get(gw, "/dashboard/static/uplot.LICENSE", None)).text
        for name in ("..%2Fpages.py", "pages.py", "..%2F..%2F__init__.py", "missing.js"):
            assert (await get(gw, f"/dashboard/static/{name}", None)).status_code == 404


COOKIES = st.one_of(
    st.text(max_size=300),
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.=", max_size=400
    ),  # fmt: skip
    st.builds(lambda a, b: f"{a}.{b}", st.text(max_size=200), st.text(max_size=60)),
)


async def test_no_cookie_or_token_value_makes_a_server_error(
    make_gateway: Callable[..., Any],
) -> None:
    values = draw(COOKIES, 120)
    async with dashboard(make_gateway, Clock()) as gw:
        await gw.tenant("acme")
        real = session_cookie(await sign_in(gw, ADMIN_KEY))
        for value in values:
            cookie = value.encode("latin-1", "replace").decode("latin-1").replace(";", "")
            cookie = "".join(c for c in cookie if 0x20 < ord(c) < 0x7F)
            r = await get(gw, "/dashboard", cookie)
            assert r.status_code == 303, (value, r.status_code)
            r = await post(gw, "/dashboard/tenants/acme/resume", real, csrf_token=value)
            assert r.status_code == 403, (value, r.status_code)
            r = await post(gw, "/dashboard/signin", real, key=value)
            assert r.status_code in (303, 401) and r.status_code < 500


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_decoding_any_text_yields_no_session_or_one_it_signed(token: str) -> None:
    codec = SessionCodec(SECRET)
    assert codec.decode(token) is None
    good = codec.encode(Session("sid", "admin", 10, 0, admin="fp"))
    assert codec.decode(good + token) in (None, codec.decode(good))
    assert CsrfGuard(SECRET).ok(Session("sid", "admin", 10, 0), token) is False


async def test_a_tampered_or_foreign_token_is_refused() -> None:
    clock, meta = Clock(), Meta()
    book = SessionBook(SECRET, meta, 600, clock)
    token = await book.issue("tenant", "acme", "key_1")
    session = await book.check(token)
    assert session is not None and session.tenant == "acme" and session.key_id == "key_1"
    payload, _, signature = token.partition(".")
    assert await SessionBook(b"t" * 32, meta, 600, clock).check(token) is None
    elevated = base64.urlsafe_b64encode(
        orjson.dumps({"sid": session.sid, "role": "admin", "exp": session.expires_at,
                      "gen": 0, "tenant": None, "key": None})
    ).rstrip(b"=").decode()  # fmt: skip
    assert await book.check(f"{elevated}.{signature}") is None
    assert await book.check(f"{payload}.{signature[::-1]}") is None
    await book.revoke(session)
    assert await book.check(token) is None


async def test_bad_input_gets_a_clear_4xx_page(make_gateway: Callable[..., Any]) -> None:
    async with dashboard(make_gateway, Clock()) as gw:
        admin = session_cookie(await sign_in(gw, ADMIN_KEY))
        for path, status in (
            ("/dashboard/tenants/nope", 404),
            ("/dashboard/requests?limit=0", 400),
            ("/dashboard/requests?tag=novalue", 400),
            ("/dashboard/requests?tenant=%2F..", 400),
            ("/dashboard/requests?cursor=garbage", 400),
        ):
            r = await get(gw, path, admin)
            assert r.status_code == status, (path, r.status_code)
            assert f"Error {status}" in r.text
        r = await get(gw, "/dashboard/requests?limit=3", admin)
        assert r.status_code == 200 and "request-log" in r.text


async def test_the_sign_in_page_asks_before_a_link_replaces_a_session(
    make_gateway: Callable[..., Any],
) -> None:
    async with dashboard(make_gateway, Clock()) as gw:
        key = await gw.tenant_key("acme")
        fresh = await get(gw, "/dashboard/signin", None)
        assert 'data-signed-in-as=""' in fresh.text  # no session: the link signs in at once
        admin = session_cookie(await sign_in(gw, ADMIN_KEY))
        page = await get(gw, "/dashboard/signin", admin)
        assert 'data-signed-in-as="the admin"' in page.text
        assert 'id="signin-switch" class="notice" hidden' in page.text
        tenant = session_cookie(await sign_in(gw, key))
        page = await get(gw, "/dashboard/signin", tenant)
        assert 'data-signed-in-as="tenant acme"' in page.text and key not in page.text
        gone = await get(gw, "/dashboard/signin", admin[:-4] + "AAAA")  # not a live session
        assert 'data-signed-in-as=""' in gone.text
        script = (await get(gw, "/dashboard/static/signin.js", None)).text
        assert 'getAttribute("data-signed-in-as")' in script


async def test_secure_cookies_believe_only_a_trusted_proxys_forwarded_proto(
    make_gateway: Callable[..., Any],
) -> None:
    https = {**FORM, "X-Forwarded-Proto": "https"}
    behind = {**CONFIG, "server": {"trusted_proxies": ["127.0.0.1"]}}  # the test client's peer
    for config, secure in ((behind, True), (CONFIG, False)):
        async with make_gateway(config, clock=Clock()) as gw:
            gw.client.cookies.clear()
            r = await gw.client.post("/dashboard/signin", data={"key": ADMIN_KEY}, headers=https)
            assert r.status_code == 303
            assert ("secure" in r.headers["set-cookie"].lower()) is secure, config
    for mode, secure in (("always", True), ("never", False)):
        config = {**CONFIG, "dashboard": {"secure_cookies": mode}}
        async with make_gateway(config, clock=Clock()) as gw:
            gw.client.cookies.clear()
            r = await sign_in(gw, ADMIN_KEY)
            assert ("secure" in r.headers["set-cookie"].lower()) is secure, mode


async def test_an_allowed_origin_may_sign_in_and_another_may_not(
    make_gateway: Callable[..., Any],
) -> None:
    config = {**CONFIG, "dashboard": {"allowed_origins": ["https://GW.example"]}}
    async with make_gateway(config, clock=Clock()) as gw:
        gw.client.cookies.clear()
        for origin, status in (("https://gw.example", 303), ("https://evil.example", 401),
                               ("http://gw.example", 401), ("http://gateway", 303)):  # fmt: skip
            headers = {**FORM, "Origin": origin}
            r = await gw.client.post("/dashboard/signin", data={"key": ADMIN_KEY}, headers=headers)
            assert r.status_code == status, origin


def test_allowed_origins_must_be_origins() -> None:
    from pydantic import ValidationError

    from farebox.config.observe import DashboardConfig

    for bad in ("gw.example", "https://gw.example/dashboard", "ftp://gw.example", "https://"):
        with pytest.raises(ValidationError):
            DashboardConfig(allowed_origins=[bad])


def test_the_one_click_link_carries_the_key_in_the_fragment_only() -> None:
    from farebox.api.dashboard import signin_link

    link = signin_link("http://127.0.0.1:8080/", "fbx_a+b/c=")
    before, _, fragment = link.partition("#")
    assert before == "http://127.0.0.1:8080/dashboard/signin" and "fbx" not in before
    assert fragment == "key=fbx_a%2Bb%2Fc%3D"


def test_a_session_works_and_ends_on_every_worker(tmp_path: Path) -> None:
    """With ``--workers 2`` a session made by one worker is honoured by both, and signing it
    out ends it on both (fresh connections, so both workers answer)."""
    # each worker would trust its last check for a few seconds: off, so the test need not wait
    config = write_config(tmp_path, dashboard={"session_check_cache_s": 0})
    port = free_port()
    args = ["serve", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    with running([*args, "--workers", "2"], cwd=tmp_path, env=child_env(), port=port) as server:
        url = server.base_url
        r = httpx.post(f"{url}/dashboard/signin", data={"key": E2E_ADMIN_KEY}, headers=FORM)
        assert r.status_code == 303, r.text
        jar = {"Cookie": f"{COOKIE}={session_cookie(r)}"}
        pages = [httpx.get(f"{url}/dashboard", headers=jar) for _ in range(20)]
        assert {p.status_code for p in pages} == {200}
        token = csrf_of(pages[0])
        r = httpx.post(f"{url}/dashboard/signout", data={"csrf_token": token},
                       headers={**FORM, **jar})  # fmt: skip
        assert r.status_code == 303
        after = [httpx.get(f"{url}/dashboard", headers=jar) for _ in range(20)]
        assert {p.status_code for p in after} == {303}

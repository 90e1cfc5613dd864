"""Issue [14] acceptance 1 and the token half of 8: tenants from JWTs.

A loopback JWKS server serves keys made in the test; the gateway runs in-process with a clock
the test moves (exp, nbf and the JWKS refetch limit all read it). Valid RS256, ES256 and EdDSA
tokens map to the tenant and user of their claims (checked in the ledger and /v1/me); every
kind of bad token is a 401 with its own code; rotation, a JWKS server that is down or answers
garbage, and tenants created on first sight are covered; the official openai SDK works with a
JWT as its api_key.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt as pyjwt
import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.app import create_app
from farebox.config.auth import JwtConfig
from farebox.config.settings import load_settings, parse_settings
from farebox.core.records import Tenant
from farebox.errors import AuthenticationError, ConfigError, Conflict
from farebox.gateway.auth import Authenticator
from farebox.http.client import HttpResponse
from farebox.identity.jwks import JwksCache, SigningKey
from farebox.identity.jwt import JwtVerifier, StaticKey
from farebox.identity.tenancy import TENANT_ID
from farebox.stores.memory.store import MemoryStore
from tests.e2e import child_env, db_path, free_port, ledger_rows, running, serve_args, write_config
from tests.jwt_keys import (
    AUDIENCE,
    ISSUER,
    Clock,
    JwksServer,
    Key,
    b64,
    claims,
    ec_key,
    ed_key,
    hmac_signed,
    mint,
    rsa_key,
    tampered,
    unsigned,
)

CHAT = "/v1/chat/completions"
BODY = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
KEYS = {"rsa": rsa_key(), "ec": ec_key(), "ed": ed_key()}


def jwt_config(url: str, **extra: Any) -> dict[str, Any]:
    section = {"jwks_url": url, "issuer": ISSUER, "audience": AUDIENCE, "user_claim": "sub",
               "workspace_claim": "ws", **extra}  # fmt: skip
    return {"auth": {"jwt": section}, "plans": {"free": {}}}


@asynccontextmanager
async def jwt_gateway(
    make_gateway: Any, keys: list[Key] | None = None, **extra: Any
) -> AsyncIterator[tuple[Any, JwksServer, Clock]]:
    """A gateway whose ``auth.jwt`` trusts a loopback JWKS serving ``keys``; tenant acme."""
    clock = Clock()
    async with JwksServer(keys if keys is not None else list(KEYS.values())) as jwks:
        async with make_gateway(jwt_config(jwks.url, **extra), clock=clock) as gw:
            await gw.tenant("acme")
            yield gw, jwks, clock


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def refused(r: httpx.Response, code: str) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == code, r.text


@pytest.mark.parametrize("kind", ["rsa", "ec", "ed"])
async def test_valid_tokens_map_to_tenant_user_and_key_jwt(make_gateway: Any, kind: str) -> None:
    async with jwt_gateway(make_gateway) as (gw, _jwks, clock):
        token = mint(KEYS[kind], clock.now, sub=f"user-{kind}")
        r = await gw.client.post(CHAT, json=BODY, headers=bearer(token))
        assert r.status_code == 200, r.text
        [entry] = await gw.ledger("acme")
        assert (entry.tenant_id, entry.user, entry.key_id) == ("acme", f"user-{kind}", "jwt:acme")
        me = (await gw.client.get("/v1/me", headers=bearer(token))).json()
        assert me["tenant"]["id"] == "acme"
        assert me["key"] == {"id": "jwt:acme", "name": "JWT", "kind": "tenant"}


async def test_each_tenants_jwt_callers_have_their_own_key_and_user_limits(
    make_gateway: Any,
) -> None:
    """Key-scope counters are named by key id: JWT callers of two tenants never share one;
    a per-user limit applies to each user claim."""
    limits = [
        {"scope": "key", "requests_per_minute": 2},
        {"scope": "user", "requests_per_minute": 1},
    ]
    clock = Clock()
    async with JwksServer([KEYS["rsa"]]) as jwks:
        config = jwt_config(jwks.url)
        config["plans"]["free"] = {"rate_limits": limits}
        async with make_gateway(config, clock=clock) as gw:
            await gw.tenant("acme", "free")
            await gw.tenant("globex", "free")
            codes = []
            for tenant, user in [("acme", "a"), ("globex", "a"), ("acme", "a"), ("acme", "b"),
                                 ("acme", "c")]:  # fmt: skip
                token = mint(KEYS["rsa"], clock.now, tenant=tenant, sub=user)
                r = await gw.client.post(CHAT, json=BODY, headers=bearer(token))
                codes.append(r.status_code)
            # globex is not held back by acme's key counter; acme's user a by its own limit,
            # acme's third user by the tenant's jwt key limit of 2
            assert codes == [200, 200, 429, 200, 429]


async def test_x_api_key_and_a_paused_tenant(make_gateway: Any) -> None:
    """The Anthropic SDK's header carries a JWT as well; a paused tenant's JWT callers are
    refused as its key holders are."""
    async with jwt_gateway(make_gateway) as (gw, _jwks, clock):
        token = mint(KEYS["ec"], clock.now)
        messages = {"model": "gpt-4o-mini", "max_tokens": 8,
                    "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
        r = await gw.client.post("/v1/messages", json=messages, headers={"x-api-key": token})
        assert r.status_code == 200, r.text
        r = await gw.client.post("/admin/v1/tenants/acme/pause", json={}, headers=gw.admin)
        assert r.status_code == 200, r.text
        r = await gw.client.post(CHAT, json=BODY, headers=bearer(token))
        assert (r.status_code, r.json()["error"]["code"]) == (403, "tenant_paused")


async def test_user_claim_wins_over_the_user_header(make_gateway: Any) -> None:
    """With ``user_claim`` configured the claim is the only user (review 14 #6): the header and
    the body's ``user`` are ignored, a token without the claim is refused; without
    ``user_claim`` the header fills in."""
    async with jwt_gateway(make_gateway) as (gw, _jwks, clock):
        headers = {**bearer(mint(KEYS["rsa"], clock.now)), "X-Farebox-User": "mallory"}
        assert (await gw.client.post(CHAT, json=BODY, headers=headers)).status_code == 200
        body = {**BODY, "user": "mallory-2"}
        r = await gw.client.post(CHAT, json=body, headers=bearer(mint(KEYS["rsa"], clock.now)))
        assert r.status_code == 200, r.text
        no_user = mint(KEYS["rsa"], clock.now, sub=None)
        headers = {**bearer(no_user), "X-Farebox-User": "bob"}
        refused(await gw.client.post(CHAT, json=BODY, headers=headers), "token_missing_claim")
        assert sorted(e.user for e in await gw.ledger("acme")) == ["alice", "alice"]


async def test_without_a_user_claim_the_header_names_the_user(make_gateway: Any) -> None:
    async with jwt_gateway(make_gateway, user_claim=None) as (gw, _jwks, clock):
        no_user = mint(KEYS["rsa"], clock.now, sub=None)
        headers = {**bearer(no_user), "X-Farebox-User": "bob"}
        assert (await gw.client.post(CHAT, json=BODY, headers=headers)).status_code == 200
        assert [e.user for e in await gw.ledger("acme")] == ["bob"]


def _bad_tokens(now: float) -> dict[str, tuple[str, str]]:
    rsa = KEYS["rsa"]
    good = mint(rsa, now)
    return {
        "expired": (mint(rsa, now, exp=int(now) - 10, iat=int(now) - 100, nbf=None),
                    "token_expired"),
        "not yet valid": (mint(rsa, now, nbf=int(now) + 600), "token_not_yet_valid"),
        "issued in the future": (mint(rsa, now, iat=int(now) + 600), "token_not_yet_valid"),
        "wrong issuer": (mint(rsa, now, iss="https://evil.example/"), "token_invalid_issuer"),
        "no issuer": (mint(rsa, now, iss=None), "token_invalid_issuer"),
        "wrong audience": (mint(rsa, now, aud="someone-else"), "token_invalid_audience"),
        "alg none": (unsigned(claims(now), kid=rsa.kid), "token_unsupported_algorithm"),
        "HS256 with the public key": (hmac_signed(claims(now), rsa.public_pem, rsa.kid),
                                      "token_unsupported_algorithm"),
        "tampered payload": (tampered(good, tenant="globex"), "token_invalid_signature"),
        "signed by another key": (mint(rsa_key(), now, kid=rsa.kid), "token_invalid_signature"),
        "alg of another key type": (mint(KEYS["ec"], now, kid=rsa.kid),
                                    "token_unsupported_algorithm"),
        "no exp": (mint(rsa, now, exp=None), "token_missing_claim"),
        "no tenant claim": (mint(rsa, now, tenant=None), "token_missing_claim"),
        "tenant not an id": (mint(rsa, now, tenant="a b/../c"), "token_malformed"),
        "exp not a number": (mint(rsa, now, exp="tomorrow"), "token_malformed"),
        "exp past any float": (mint(rsa, now, exp=10**400), "token_malformed"),
        "nbf not finite": (mint(rsa, now, nbf=float("inf")), "token_malformed"),
        "unknown tenant": (mint(rsa, now, tenant="globex"), "unknown_tenant"),
        "not base64": ("abc.def.g!h", "invalid_api_key"),
        "bad header json": ("eyJhbGciOi.eyJ0ZW5hbnQiOiJhY21lIn0.c2ln", "token_malformed"),
    }  # fmt: skip


async def test_each_bad_token_is_a_401_with_its_code(make_gateway: Any) -> None:
    async with jwt_gateway(make_gateway) as (gw, _jwks, clock):
        for name, (token, code) in _bad_tokens(clock.now).items():
            r = await gw.client.post(CHAT, json=BODY, headers=bearer(token))
            assert r.status_code == 401, (name, r.text)
            assert r.json()["error"]["code"] == code, (name, r.text)
        assert await gw.ledger() == []


async def test_leeway_forgives_a_little_clock_skew(make_gateway: Any) -> None:
    async with jwt_gateway(make_gateway, leeway_s=30) as (gw, _jwks, clock):
        rsa = KEYS["rsa"]
        late = mint(rsa, clock.now, exp=int(clock.now) - 10, iat=int(clock.now) - 100, nbf=None)
        early = mint(rsa, clock.now, nbf=int(clock.now) + 20)
        for token in (late, early):
            r = await gw.client.post(CHAT, json=BODY, headers=bearer(token))
            assert r.status_code == 200, r.text


async def test_a_verified_token_is_refused_once_it_expires(make_gateway: Any) -> None:
    """Verified tokens are remembered only until their exp."""
    async with jwt_gateway(make_gateway) as (gw, _jwks, clock):
        token = mint(KEYS["ed"], clock.now, exp=int(clock.now) + 60)
        assert (await gw.client.post(CHAT, json=BODY, headers=bearer(token))).status_code == 200
        clock.advance(61)
        refused(await gw.client.post(CHAT, json=BODY, headers=bearer(token)), "token_expired")


async def test_unknown_kid_refetches_once_per_period_then_401(make_gateway: Any) -> None:
    async with jwt_gateway(make_gateway) as (gw, jwks, clock):
        ok = mint(KEYS["rsa"], clock.now)
        assert (await gw.client.post(CHAT, json=BODY, headers=bearer(ok))).status_code == 200
        assert jwks.calls == 1
        clock.advance(31)
        stranger = mint(KEYS["rsa"], clock.now, kid="who-is-this")
        refused(
            await gw.client.post(CHAT, json=BODY, headers=bearer(stranger)), "token_unknown_kid"
        )
        assert jwks.calls == 2  # it looked again before refusing
        for n in range(5):  # a flood of made-up kids within the period: no more fetches
            other = mint(KEYS["rsa"], clock.now, kid=f"made-up-{n}")
            r = await gw.client.post(CHAT, json=BODY, headers=bearer(other))
            refused(r, "token_unknown_kid")
        assert jwks.calls == 2


async def test_key_rotation_is_picked_up_without_restart(make_gateway: Any) -> None:
    old, new = rsa_key("2026-01"), ec_key("2026-02")
    async with jwt_gateway(make_gateway, [old]) as (gw, jwks, clock):
        r = await gw.client.post(CHAT, json=BODY, headers=bearer(mint(old, clock.now)))
        assert r.status_code == 200
        jwks.publish([new])  # the identity provider rotates
        clock.advance(30)
        r = await gw.client.post(CHAT, json=BODY, headers=bearer(mint(new, clock.now, sub="b")))
        assert r.status_code == 200, r.text
        clock.advance(30)  # a new token of the retired key: its kid is gone
        retired = mint(old, clock.now, sub="c")
        refused(await gw.client.post(CHAT, json=BODY, headers=bearer(retired)), "token_unknown_kid")


@pytest.mark.parametrize("outage", ["garbage", "error", "empty", "oct", "down"])
async def test_a_broken_jwks_server_keeps_the_cached_keys(make_gateway: Any, outage: str) -> None:
    async with jwt_gateway(make_gateway) as (gw, jwks, clock):
        first = mint(KEYS["ec"], clock.now)
        assert (await gw.client.post(CHAT, json=BODY, headers=bearer(first))).status_code == 200
        if outage == "down":
            await jwks.close()
        else:
            jwks.mode = outage
        clock.advance(31)
        stranger = mint(KEYS["ec"], clock.now, kid="new")
        refused(
            await gw.client.post(CHAT, json=BODY, headers=bearer(stranger)), "token_unknown_kid"
        )
        assert outage == "down" or jwks.calls == 2  # it did ask, and got nothing usable
        clock.advance(31)
        for key in KEYS.values():  # fresh tokens of every cached key still verify
            token = mint(key, clock.now, sub=f"after-{outage}")
            r = await gw.client.post(CHAT, json=BODY, headers=bearer(token))
            assert r.status_code == 200, r.text


@pytest.mark.parametrize("outage", ["garbage", "error", "down"])
async def test_no_keys_at_all_is_a_401_not_a_5xx(make_gateway: Any, outage: str) -> None:
    async with jwt_gateway(make_gateway) as (gw, jwks, clock):
        if outage == "down":
            await jwks.close()
        else:
            jwks.mode = outage
        token = mint(KEYS["rsa"], clock.now)
        refused(await gw.client.post(CHAT, json=BODY, headers=bearer(token)), "token_unknown_kid")


async def test_oversized_token_is_a_401(make_gateway: Any) -> None:
    async with jwt_gateway(make_gateway, max_token_bytes=1024) as (gw, _jwks, clock):
        big = mint(KEYS["rsa"], clock.now, padding="x" * 2000)
        refused(await gw.client.post(CHAT, json=BODY, headers=bearer(big)), "token_malformed")
        huge = "a" * 9000 + "." + "b" * 9000 + "." + "c" * 100
        r = await gw.client.post(CHAT, json=BODY, headers=bearer(huge))
        assert r.status_code in (401, 431), r.text  # the header cap may answer first


async def test_farebox_keys_still_work_beside_jwts(make_gateway: Any) -> None:
    async with jwt_gateway(make_gateway) as (gw, _jwks, _clock):
        key = await gw.key("acme")
        assert (await gw.client.post(CHAT, json=BODY, headers=bearer(key))).status_code == 200
        r = await gw.client.post(CHAT, json=BODY, headers=bearer("fbx_not.a.key"))
        refused(r, "invalid_api_key")  # a Farebox prefix never goes down the JWT path


async def test_auto_create_tenants_creates_each_once(make_gateway: Any) -> None:
    async with jwt_gateway(make_gateway, auto_create_tenants={"plan": "free"}) as (gw, _j, clock):
        tokens = [mint(KEYS["rsa"], clock.now, tenant="newco", sub=f"u{n}") for n in range(20)]
        replies = await asyncio.gather(
            *(gw.client.post(CHAT, json=BODY, headers=bearer(t)) for t in tokens)
        )
        assert [r.status_code for r in replies] == [200] * 20
        tenant = (await gw.client.get("/admin/v1/tenants/newco", headers=gw.admin)).json()
        assert tenant["plan"] == "free"
        assert len(await gw.ledger("newco")) == 20


async def test_auto_create_with_an_unknown_plan_stops_start_up(make_gateway: Any) -> None:
    with pytest.raises(ConfigError, match="auth.jwt.auto_create_tenants.plan"):
        async with jwt_gateway(make_gateway, auto_create_tenants={"plan": "gold"}):
            pass


class RacingStore(MemoryStore):
    """Another replica creates the tenant between this one's read and its create."""

    async def create_tenant(self, tenant: Tenant) -> None:
        await super().create_tenant(tenant)
        raise Conflict(f"tenant {tenant.id!r} already exists")


async def test_auto_create_race_reads_the_winner_back() -> None:
    class Verifier:
        async def verify(self, token: str) -> Any:
            from farebox.identity.claims import Claims

            return Claims("raced", "u", "team-a", float("inf"))

    store = RacingStore()
    auth = Authenticator(store, b"s" * 32, lambda: 0.0, jwt=Verifier(), auto_create_plan="free")
    who = await auth.authenticate({"authorization": "Bearer a.b.c"})
    assert (who.tenant.id, who.tenant.plan, who.key.id) == ("raced", "free", "jwt:raced")
    assert (who.user, who.workspace) == ("u", "team-a")


async def test_openai_sdk_with_a_jwt_as_its_api_key(make_gateway: Any) -> None:
    async with jwt_gateway(make_gateway) as (gw, _jwks, clock):
        token = mint(KEYS["ed"], clock.now, sub="sdk-user")
        transport = httpx.ASGITransport(app=gw.app)
        async with httpx.AsyncClient(transport=transport) as http:
            client = openai.AsyncOpenAI(api_key=token, base_url="http://gateway/v1",
                                        http_client=http, max_retries=0)  # fmt: skip
            reply = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=8
            )
            assert reply.choices[0].message.content
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                max_tokens=8, stream=True,
            )  # fmt: skip
            assert [chunk async for chunk in stream]
            expired = mint(KEYS["ed"], clock.now, exp=int(clock.now) - 5, nbf=None, iat=None)
            bad = openai.AsyncOpenAI(api_key=expired, base_url="http://gateway/v1",
                                     http_client=http, max_retries=0)  # fmt: skip
            with pytest.raises(openai.AuthenticationError) as info:
                await bad.models.list()
            assert info.value.code == "token_expired"
        entries = await gw.ledger("acme")
        assert [(e.user, e.key_id) for e in entries] == [("sdk-user", "jwt:acme")] * 2


async def test_public_key_file_instead_of_a_jwks(make_gateway: Any, tmp_path: Any) -> None:
    key = ec_key("ignored")
    pem = tmp_path / "idp.pem"
    pem.write_bytes(key.public_pem)
    section = {"public_key_file": str(pem), "issuer": ISSUER, "audience": AUDIENCE}
    async with make_gateway({"auth": {"jwt": section}}) as gw:
        await gw.tenant("acme")
        r = await gw.client.post(CHAT, json=BODY, headers=bearer(mint(key, kid=None)))
        assert r.status_code == 200, r.text
        r = await gw.client.post(CHAT, json=BODY, headers=bearer(mint(rsa_key())))
        refused(r, "token_unsupported_algorithm")  # RS256 does not fit an EC key


# bad input, as a property: no token-shaped string is ever a 5xx -------------------------------

B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip
HEADERS = st.fixed_dictionaries(
    {"alg": st.sampled_from(["RS256", "ES256", "EdDSA", "none", "HS256", "RS512"]) | JSONISH},
    optional={"kid": st.sampled_from(["rsa-1", "ec-1", "ed-1"]) | JSONISH, "typ": JSONISH},
)
PAYLOADS = (
    st.fixed_dictionaries(
        {},
        optional={
            name: JSONISH for name in ("iss", "aud", "exp", "nbf", "iat", "tenant", "sub", "ws")
        },
    )
    | JSONISH
)


def _encoded(value: Any) -> str:
    """JSON as Python writes it: integers of any size, NaN and Infinity included."""
    return b64(json.dumps(value).encode())


TOKENS = st.one_of(
    st.tuples(*[st.text(B64URL, max_size=80)] * 3).map(".".join),
    st.builds(lambda h, p, s: f"{_encoded(h)}.{_encoded(p)}.{s}", HEADERS, PAYLOADS,
              st.text(B64URL, max_size=90)),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=200),
    st.integers(1000, 20_000).map(lambda n: "eyJ" + "A" * n + ".e30.AAAA"),
)  # fmt: skip


def test_token_shaped_garbage_is_never_a_5xx(make_gateway: Any) -> None:
    loop = asyncio.new_event_loop()
    try:
        manager = jwt_gateway(make_gateway, max_token_bytes=4096)
        gw, _jwks, _clock = loop.run_until_complete(manager.__aenter__())

        @settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
        @given(token=TOKENS)
        def check(token: str) -> None:
            sent = gw.client.post(CHAT, json=BODY, headers=bearer(token))
            r = loop.run_until_complete(sent)
            assert r.status_code in (400, 401, 431), (token[:200], r.status_code, r.text[:300])
            assert r.json()["error"]["code"], r.text

        check()
        assert loop.run_until_complete(gw.ledger()) == []
        loop.run_until_complete(manager.__aexit__(None, None, None))
    finally:
        loop.close()


# configuration: a bad auth section stops start-up, naming the key ------------------------------

JWT_OK = "  jwt:\n    jwks_url: https://idp.example.test/jwks\n    issuer: x\n    audience: y\n"
BAD_AUTH = [
    ("hs256", JWT_OK + "    algorithms: [RS256, HS256]\n",
     ["auth.jwt.algorithms", "HS256", "HMAC"]),
    ("none", JWT_OK + "    algorithms: [none]\n", ["auth.jwt.algorithms", "none"]),
    ("both sources", JWT_OK + "    public_key_file: /etc/idp.pem\n",
     ["auth.jwt", "exactly one of jwks_url or public_key_file"]),
    ("neither source", "  jwt: {issuer: x, audience: y}\n",
     ["auth.jwt", "exactly one of jwks_url or public_key_file"]),
    ("jwks not http", "  jwt: {jwks_url: 'file:///etc/jwks', issuer: x, audience: y}\n",
     ["auth.jwt.jwks_url", "http"]),
    ("unknown key", JWT_OK + "    tenant_clam: org\n", ["auth.jwt.tenant_clam", "unknown key"]),
    ("no issuer", "  jwt: {jwks_url: 'https://idp.example.test/jwks', audience: y}\n",
     ["auth.jwt.issuer"]),
    ("unknown auth key", "  saml: {}\n", ["auth.saml", "unknown key"]),
    ("no refetch throttle", JWT_OK + "    jwks_refetch_s: 0\n", ["auth.jwt.jwks_refetch_s"]),
    ("no jwks max age", JWT_OK + "    jwks_max_age_s: 0\n", ["auth.jwt.jwks_max_age_s"]),
    ("bad base domain", "  subdomain: {base_domain: 'not a domain'}\n",
     ["auth.subdomain.base_domain"]),
    ("missing pem", "  jwt: {public_key_file: /nonexistent/idp.pem, issuer: x, audience: y}\n",
     ["auth.jwt.public_key_file", "/nonexistent/idp.pem"]),
    ("forward authorization", "",
     ["providers.local.forward_tenant_header", "Authorization"]),
]  # fmt: skip


@pytest.mark.parametrize(("auth", "words"), [c[1:] for c in BAD_AUTH], ids=[c[0] for c in BAD_AUTH])
def test_a_bad_auth_section_stops_start_up_naming_the_key(
    tmp_path: Path, auth: str, words: list[str]
) -> None:
    path = tmp_path / "gw.yaml"
    body = f"database: 'sqlite:///{tmp_path / 'cfg.db'}'\n"
    body += f"auth:\n{auth}" if auth else ""
    if "forward" in words[0]:
        body += "providers:\n  local: {kind: openai, base_url: 'http://127.0.0.1:9/v1', "
        body += "forward_tenant_header: Authorization}\n"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        create_app(load_settings(path, env={}), announce=lambda _m: None)
    message = info.value.message
    assert str(path) in message, message
    for word in words:
        assert word in message, (word, message)


async def test_a_pem_that_is_not_a_public_key_stops_start_up(tmp_path: Path) -> None:
    pem = tmp_path / "private.pem"
    pem.write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    data = {"database": "memory", "auth": {"jwt": {"public_key_file": str(pem), "issuer": "x",
                                                   "audience": "y"}}}  # fmt: skip
    settings_ = parse_settings(data, source="t.yaml", env={}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="auth.jwt.public_key_file: .* not a PEM public key"):
        create_app(settings_, announce=lambda _m: None)


# the JWKS cache on its own: one fetch per period, however many ask at once ----------------------


class CountingHttp:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.calls = 0
        self.gate = asyncio.Event()

    async def get_json(self, url: str, query: Any, headers: Any, timeout_s: float) -> Any:
        self.calls += 1
        await self.gate.wait()
        return HttpResponse(200, {}, orjson.dumps(self.document))


async def test_concurrent_unknown_kids_share_one_fetch_per_period() -> None:
    clock = Clock()
    http = CountingHttp({"keys": [KEYS["rsa"].jwk]})
    cache = JwksCache("https://idp.example.test/jwks", http, clock, refetch_s=30)
    asks = [asyncio.create_task(cache.key(kid)) for kid in ["rsa-1", "x", "y", "rsa-1"]]
    await asyncio.sleep(0)
    http.gate.set()
    found = await asyncio.gather(*asks)
    assert http.calls == 1
    assert [k is not None for k in found] == [True, False, False, True]
    assert await cache.key("z") is None and http.calls == 1  # within the period
    clock.advance(29.9)
    assert await cache.key("z") is None and http.calls == 1
    clock.advance(0.2)
    http.document = {"keys": [KEYS["ec"].jwk, {"kty": "oct", "kid": "z", "k": "c2VjcmV0"}]}
    assert await cache.key("z") is None and http.calls == 2  # a symmetric key is never used
    assert await cache.key("ec-1") is not None and await cache.key("rsa-1") is None


# the real server: `farebox serve --workers 2`, the sync openai SDK, a JWKS on its own thread --


class _Jwks(BaseHTTPRequestHandler):
    document = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(self.document)))
        self.end_headers()
        self.wfile.write(self.document)

    def log_message(self, *args: Any) -> None:
        """Quiet."""


def test_the_real_server_takes_a_jwt_from_the_openai_sdk(tmp_path: Path) -> None:
    key = KEYS["rsa"]
    handler = type("Handler", (_Jwks,), {"document": orjson.dumps({"keys": [key.jwk]})})
    jwks = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=jwks.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{jwks.server_address[1]}/jwks.json"
        auth = {"jwt": {"jwks_url": url, "issuer": ISSUER, "audience": AUDIENCE,
                        "user_claim": "sub", "auto_create_tenants": {"plan": "free"}},
                "subdomain": {"base_domain": "api.example.com"}}  # fmt: skip
        config = write_config(tmp_path, auth=auth)
        port = free_port()
        args = serve_args(config, port, "--workers", "2")
        with running(args, cwd=tmp_path, env=child_env(), port=port) as server:
            token = mint(key, sub="e2e-user", tenant="initech")
            client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=token,
                                   max_retries=0, timeout=20.0)  # fmt: skip
            for _ in range(4):  # both workers, most likely: each verifies and finds the tenant
                reply = client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=8
                )
                assert reply.choices[0].message.content
            host = {"Host": "acme.api.example.com"}
            other_host = openai.OpenAI(
                base_url=f"{server.base_url}/v1", api_key=token, max_retries=0, default_headers=host
            )
            with pytest.raises(openai.PermissionDeniedError) as info:
                other_host.models.list()
            assert info.value.code == "tenant_host_mismatch"
        rows = ledger_rows(db_path(tmp_path))
        assert {(r["tenant_id"], r["user"], r["key_id"]) for r in rows} == {
            ("initech", "e2e-user", "jwt:initech")
        }
        assert len(rows) == 4
    finally:
        jwks.shutdown()
        jwks.server_close()


@settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from(["iss", "aud", "exp", "nbf", "iat", "tenant", "sub", "ws", "jti"]),
        JSONISH | st.integers(),
        max_size=5,
    )
)
def test_any_claims_under_a_good_signature_verify_or_are_a_401(changes: dict[str, Any]) -> None:
    """Past the signature, the claims are the token's author's: whatever their types and
    sizes, the answer is Claims or an AuthenticationError, never another exception."""
    key = KEYS["ec"]
    cfg = JwtConfig(jwks_url="https://idp.example.test/jwks", issuer=ISSUER, audience=AUDIENCE,
                    user_claim="sub", workspace_claim="ws")  # fmt: skip
    verifier = JwtVerifier(cfg, StaticKey(SigningKey(key.public, "EC", "P-256")), time.time)
    try:
        token = pyjwt.encode({**claims(), **changes}, key.private, algorithm="ES256")
    except (TypeError, ValueError):
        return  # PyJWT will not sign it (a non-numeric exp, say): nothing to verify
    try:
        found = asyncio.run(verifier.verify(token))
    except AuthenticationError:
        return
    assert TENANT_ID.match(found.tenant)
    assert found.user is None or len(found.user) <= 256

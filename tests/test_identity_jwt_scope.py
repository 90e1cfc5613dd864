"""Review 14 of issue [14]: what a JWT caller (an end user) may see and escape.

#1 an end user sees only its own requests on ``/v1/me/requests`` and is refused ``/v1/graphql``
(both tenant-wide views a tenant's backend key is served); #5 the ``default`` workspace's
limits hold for tokens without a workspace claim, and a claim naming no workspace is refused;
#12 a key the identity provider removes stops verifying within ``jwks_max_age_s``, even for a
token whose claims were cached.
"""

from __future__ import annotations

from typing import Any

from tests.jwt_keys import ec_key, mint, rsa_key
from tests.test_identity_jwt import BODY, CHAT, KEYS, bearer, jwt_gateway, refused

ME_REQUESTS = "/v1/me/requests"


async def test_a_jwt_user_reads_only_its_own_requests(make_gateway: Any) -> None:
    async with jwt_gateway(make_gateway) as (gw, _jwks, clock):
        alice = bearer(mint(KEYS["rsa"], clock.now, sub="alice"))
        bob = bearer(mint(KEYS["rsa"], clock.now, sub="bob"))
        key = bearer(await gw.key("acme"))
        for headers in (alice, bob, {**key, "X-Farebox-User": "carol"}):
            assert (await gw.client.post(CHAT, json=BODY, headers=headers)).status_code == 200
        for query in ("", "?user=alice", "?key=jwt:acme"):  # what it asks for changes nothing
            r = await gw.client.get(ME_REQUESTS + query, headers=bob)
            assert r.status_code == 200, r.text
            assert [row["user"] for row in r.json()["data"]] == ["bob"], (query, r.text)
        r = await gw.client.get(ME_REQUESTS, headers=key)  # the tenant's backend sees all
        assert sorted(row["user"] for row in r.json()["data"]) == ["alice", "bob", "carol"]


async def test_without_a_user_claim_the_request_log_is_refused(make_gateway: Any) -> None:
    """No user claim configured: the user is the caller's own header, so nothing to scope by."""
    async with jwt_gateway(make_gateway, user_claim=None) as (gw, _jwks, clock):
        headers = {**bearer(mint(KEYS["rsa"], clock.now)), "X-Farebox-User": "alice"}
        assert (await gw.client.post(CHAT, json=BODY, headers=headers)).status_code == 200
        r = await gw.client.get(ME_REQUESTS, headers=headers)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "jwt_scope"
        assert "alice" not in r.text


async def test_graphql_refuses_a_jwt_caller(make_gateway: Any) -> None:
    async with jwt_gateway(make_gateway) as (gw, _jwks, clock):
        query = {"query": "{ tenant { id } }"}
        r = await gw.client.post("/v1/graphql", json=query,
                                 headers=bearer(mint(KEYS["ec"], clock.now)))  # fmt: skip
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "jwt_scope"
        key = bearer(await gw.key("acme"))
        r = await gw.client.post("/v1/graphql", json=query, headers=key)
        assert r.status_code == 200 and r.json()["data"]["tenant"]["id"] == "acme", r.text


async def test_default_workspace_limits_hold_for_jwt_callers(make_gateway: Any) -> None:
    async with jwt_gateway(make_gateway) as (gw, _jwks, clock):
        limit = {"rate_limits": [{"scope": "workspace", "requests_per_minute": 1}]}
        r = await gw.client.patch("/admin/v1/tenants/acme/workspaces/default", json=limit,
                                  headers=gw.admin)  # fmt: skip
        assert r.status_code == 200, r.text
        codes = []
        for ws in (None, None, "default"):
            token = mint(KEYS["rsa"], clock.now, sub="u", ws=ws)
            codes.append((await gw.client.post(CHAT, json=BODY, headers=bearer(token))).status_code)
        assert codes == [200, 429, 429]
        assert [e.workspace for e in await gw.ledger("acme")] == ["default"]


async def test_a_workspace_claim_naming_no_workspace_is_refused(make_gateway: Any) -> None:
    async with jwt_gateway(make_gateway) as (gw, _jwks, clock):
        r = await gw.client.post("/admin/v1/tenants/acme/workspaces", json={"id": "team-a"},
                                 headers=gw.admin)  # fmt: skip
        assert r.status_code == 201, r.text
        ok = mint(KEYS["rsa"], clock.now, ws="team-a")
        assert (await gw.client.post(CHAT, json=BODY, headers=bearer(ok))).status_code == 200
        invented = mint(KEYS["rsa"], clock.now, ws="made-up")
        r = await gw.client.post(CHAT, json=BODY, headers=bearer(invented))
        refused(r, "token_unknown_workspace")
        assert [e.workspace for e in await gw.ledger("acme")] == ["team-a"]


async def test_a_removed_key_stops_verifying_within_the_max_age(make_gateway: Any) -> None:
    old, new = rsa_key("old"), ec_key("new")
    async with jwt_gateway(make_gateway, [old, new], jwks_max_age_s=300) as (gw, jwks, clock):
        token = bearer(mint(old, clock.now))  # valid for an hour
        assert (await gw.client.post(CHAT, json=BODY, headers=token)).status_code == 200
        jwks.publish([new])  # the identity provider removes the old key (a compromise)
        clock.advance(200)  # within the max age: the set held is still believed
        assert (await gw.client.post(CHAT, json=BODY, headers=token)).status_code == 200
        assert jwks.calls == 1
        clock.advance(101)
        refused(await gw.client.post(CHAT, json=BODY, headers=token), "token_unknown_kid")
        assert jwks.calls == 2  # one periodic refresh, no unknown-kid refetch on top
        fresh = bearer(mint(new, clock.now))
        assert (await gw.client.post(CHAT, json=BODY, headers=fresh)).status_code == 200
        clock.advance(301)  # an unchanged set keeps the cached claims and their keys
        assert (await gw.client.post(CHAT, json=BODY, headers=fresh)).status_code == 200
        assert jwks.calls == 3

"""Credits kept in step with the billing system (issue [13], acceptance 6, first half).

Signed fake deliveries from Stripe, Lago, Metronome and OpenMeter through the real gateway
(``POST /billing/v1/webhooks/{sink}``): valid, replayed, reordered, badly signed (400), for an
unknown customer (parked, then applied by the admin API); the grants and balance that reach
the credit service (an in-memory ``FakeGranter``) are checked exactly; and garbage bodies and
headers never give a 500.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from farebox.billing.webhooks.sync import CreditSync
from farebox.config.billing_webhooks import BillingWebhooks, hook_secrets
from farebox.core.inbound import exact_pico
from farebox.core.records import Tenant
from farebox.errors import FareboxError
from farebox.stores.memory.store import MemoryStore
from tests.conftest import Gateway
from tests.webhook_deliveries import (
    CONFIG,
    CUSTOMERS,
    ENV,
    EXPIRES,
    PICO_PER_UNIT,
    FakeGranter,
    body_of,
    delivery,
    lago_event,
    lago_sign,
    metronome_event,
    metronome_sign,
    openmeter_sign,
    stripe_event,
    stripe_sign,
)

SINKS = ("stripe", "lago", "metronome", "openmeter")
VOIDABLE = ("stripe", "metronome", "openmeter")  # Lago does not void inbound transactions
LAGO_SPEC = Path(__file__).resolve().parents[2] / "shared/reference/specs/lago-openapi.yaml"


@pytest.fixture
async def gw(make_gateway: Callable[..., Any]) -> AsyncIterator[tuple[Gateway, FakeGranter]]:
    async with make_gateway(CONFIG, env=ENV) as gateway:
        granter = FakeGranter()
        gateway.app.state.services.credit_granter = granter
        await acme(gateway)
        yield gateway, granter


async def acme(gateway: Gateway) -> None:
    """The tenant ``acme``, with its id in each billing system."""
    await gateway.tenant("acme")
    patch = {"billing": dict(CUSTOMERS.values())}
    r = await gateway.client.patch("/admin/v1/tenants/acme", json=patch, headers=gateway.admin)
    assert r.status_code == 200, r.text


async def post(gateway: Gateway, sink: str, body: bytes, headers: dict[str, str]) -> Any:
    return await gateway.client.post(f"/billing/v1/webhooks/{sink}", content=body, headers=headers)


@pytest.mark.parametrize("sink", SINKS)
async def test_a_valid_delivery_grants_exactly_once_and_a_replay_changes_nothing(
    gw: tuple[Gateway, FakeGranter], sink: str
) -> None:
    gateway, granter = gw
    body, headers = delivery(sink, "create", "ev_1", "up_1", CUSTOMERS[sink][1], 1234)
    r = await post(gateway, sink, body, headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": True, "status": "applied", "event_id": "ev_1"}
    assert granter.balance("acme") == 1234 * PICO_PER_UNIT[sink]
    (grant,) = granter.grants.values()
    assert (grant.key, grant.source, grant.expires_at) == (f"{sink}:up_1", sink, EXPIRES)
    assert grant.kind == "top_up"
    again = await post(gateway, sink, body, headers)  # the same delivery, replayed
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert granter.balance("acme") == 1234 * PICO_PER_UNIT[sink]
    assert [c[0] for c in granter.calls] == ["grant"]  # the replay reached nothing


@pytest.mark.parametrize("sink", SINKS)
async def test_an_update_before_its_create_grants_once(
    gw: tuple[Gateway, FakeGranter], sink: str
) -> None:
    gateway, granter = gw
    customer = CUSTOMERS[sink][1]
    updated = delivery(sink, "update", "ev_2", "up_7", customer, 500)
    created = delivery(sink, "create", "ev_1", "up_7", customer, 500)
    assert (await post(gateway, sink, *updated)).json()["status"] == "applied"
    assert (await post(gateway, sink, *created)).json()["status"] == "unchanged"
    assert granter.balance("acme") == 500 * PICO_PER_UNIT[sink]
    assert len(granter.grants) == 1


@pytest.mark.parametrize("sink", VOIDABLE)
async def test_a_void_before_its_grant_ends_as_in_order(
    make_gateway: Callable[..., Any], tmp_path: Path, sink: str
) -> None:
    customer = CUSTOMERS[sink][1]
    states = []
    for n, order in enumerate((("create", "void"), ("void", "create"))):
        config = {**CONFIG, "database": f"sqlite:///{tmp_path / f'order{n}.db'}"}
        async with make_gateway(config, env=ENV) as gateway:
            granter = FakeGranter()
            gateway.app.state.services.credit_granter = granter
            await acme(gateway)
            other = delivery(sink, "create", "ev_9", "up_other", customer, 300)
            assert (await post(gateway, sink, *other)).json()["status"] == "applied"
            for action in order:
                sent = delivery(sink, action, f"ev_{action}", "up_v", customer, 800)
                r = await post(gateway, sink, *sent)
                assert r.status_code == 200, r.text
            assert granter.balance("acme") == 300 * PICO_PER_UNIT[sink]  # the voided one: 0
            states.append(granter.state())
    assert states[0] == states[1]
    assert states[0][f"{sink}:up_v"][1] == 800 * PICO_PER_UNIT[sink]  # recorded, forfeited


async def test_lago_grants_when_the_purchase_settles_whichever_delivery_comes_first(
    gw: tuple[Gateway, FakeGranter],
) -> None:
    gateway, granter = gw
    pending = body_of(lago_event("tx-1", "acme-lago", "25.50", status="pending"))
    settled = body_of(lago_event("tx-1", "acme-lago", "25.50", updated=True))
    r = await post(gateway, "lago", settled, lago_sign(settled, "u-2"))
    assert r.json()["status"] == "applied"
    r = await post(gateway, "lago", pending, lago_sign(pending, "u-1"))
    assert r.json()["status"] == "ignored"
    assert granter.balance("acme") == 25_500_000_000_000  # $25.50 exactly
    promo = body_of(lago_event("tx-2", "acme-lago", "5", transaction_status="granted"))
    await post(gateway, "lago", promo, lago_sign(promo, "u-3"))
    assert granter.state()["lago:tx-2"][2] == "promo"


@pytest.mark.parametrize("sink", SINKS)
async def test_a_bad_signature_is_refused_with_400_and_changes_nothing(
    gw: tuple[Gateway, FakeGranter], sink: str
) -> None:
    gateway, granter = gw
    body, headers = delivery(sink, "create", "ev_bad", "up_bad", CUSTOMERS[sink][1], 100)
    tampered = body + b" "  # one byte more than was signed
    cases = [(tampered, headers), (body, {k: v for k, v in headers.items() if "ign" not in k})]
    for sent, sent_headers in cases:
        r = await post(gateway, sink, sent, sent_headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_signature"
    assert granter.calls == [] and granter.balance("acme") == 0


async def test_a_stale_or_foreign_signature_is_refused(gw: tuple[Gateway, FakeGranter]) -> None:
    gateway, granter = gw
    body = body_of(stripe_event("ev_old", "credgr_1", "cus_ACME", 100))
    old = await post(gateway, "stripe", body, stripe_sign(body, at=time.time() - 3_600))
    wrong = await post(gateway, "stripe", body, stripe_sign(body, secret="whsec_other"))
    mbody = body_of(metronome_event("m1", "c1", CUSTOMERS["metronome"][1], 100))
    stale = await post(gateway, "metronome", mbody, metronome_sign(mbody, at=time.time() - 900))
    jwt = {**lago_sign(b"{}", "u"), "X-Lago-Signature-Algorithm": "jwt"}
    lago_jwt = await post(gateway, "lago", b"{}", jwt)
    for r in (old, wrong, stale, lago_jwt):
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_signature"
    assert granter.calls == []


async def test_an_unknown_or_unconfigured_sink_is_404(
    make_gateway: Callable[..., Any], gw: tuple[Gateway, FakeGranter]
) -> None:
    gateway, _ = gw
    r = await post(gateway, "chargebee", b"{}", {})
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_webhook_sink"
    only_stripe = {"billing": {"webhooks": {"stripe": CONFIG["billing"]["webhooks"]["stripe"]}}}
    async with make_gateway(only_stripe, env=ENV) as other:
        body, headers = delivery("lago", "create", "u1", "tx", "acme-lago", 1)
        r = await post(other, "lago", body, headers)
        assert r.status_code == 404


async def test_without_the_credit_service_a_delivery_is_retried_later() -> None:
    hooks = BillingWebhooks.model_validate(CONFIG["billing"]["webhooks"])
    store = MemoryStore()
    billing = {"stripe_customer_id": "cus_ACME"}
    await store.create_tenant(Tenant("acme", "acme", "default", 0.0, billing=billing))
    sync = CreditSync(hooks, hook_secrets("t", hooks, ENV), store.inbox, store, None, time.time)
    body, headers = delivery("stripe", "create", "ev_1", "up_1", "cus_ACME", 100)
    with pytest.raises(FareboxError) as refused:
        await sync.receive("stripe", headers, body)
    assert refused.value.status == 503 and refused.value.error_code == "credits_unavailable"
    sync.granter = granter = FakeGranter()
    answer = await sync.receive("stripe", headers, body)  # the billing system's retry
    assert answer["status"] == "applied" and granter.balance("acme") == 100 * 10**10


async def test_the_gateways_own_credit_book_shows_the_synced_balance_exactly(
    make_gateway: Callable[..., Any],
) -> None:
    """No fake: the app's credit book (what the admin credits API reads) gets the grant."""
    plans = {"prepaid": {"models": ["*"], "pricing": {"markup": "2", "credits": {"per_usd": 1000}}}}
    config = {**CONFIG, "providers": {"sim": {"kind": "mock"}}, "plans": plans}
    async with make_gateway(config, env=ENV) as gateway:
        await gateway.tenant("acme", "prepaid")
        patch = {"billing": dict(CUSTOMERS.values())}
        await gateway.client.patch("/admin/v1/tenants/acme", json=patch, headers=gateway.admin)
        view = "/admin/v1/tenants/acme/credits"
        sent = [
            ("stripe", delivery("stripe", "create", "evt_1", "credgr_1", "cus_ACME", 1234)),
            ("lago", delivery("lago", "create", "u-1", "tx-1", "acme-lago", 7)),
            ("stripe", delivery("stripe", "create", "evt_1", "credgr_1", "cus_ACME", 1234)),
        ]
        for sink, (body, headers) in sent:
            assert (await post(gateway, sink, body, headers)).status_code == 200
        got = (await gateway.client.get(view, headers=gateway.admin)).json()
        assert got["balance"] == got["granted"] == "19340.00"  # $12.34 + $7 at 1000 per USD
        assert sorted(g["source"] for g in got["grants"]) == ["lago", "stripe"]
        body, headers = delivery("stripe", "void", "evt_2", "credgr_1", "cus_ACME", 1234)
        assert (await post(gateway, "stripe", body, headers)).json()["status"] == "voided"
        got = (await gateway.client.get(view, headers=gateway.admin)).json()
        assert got["balance"] == "7000.00" and got["expired"] == "12340.00"


@pytest.mark.parametrize("sink", SINKS)
async def test_an_unknown_customer_is_parked_then_applied_once_its_billing_id_is_set(
    gw: tuple[Gateway, FakeGranter], sink: str
) -> None:
    gateway, granter = gw
    await gateway.tenant("newco")
    body, headers = delivery(sink, "create", "ev_p", "up_p", "cust-new", 4200)
    r = await post(gateway, sink, body, headers)
    assert r.status_code == 200 and r.json()["status"] == "parked"
    parked_id = r.json()["parked_id"]
    assert (await post(gateway, sink, body, headers)).json()["status"] == "duplicate"
    listed = await gateway.client.get("/admin/v1/credits/parked", headers=gateway.admin)
    (item,) = listed.json()["data"]
    assert item["id"] == parked_id and item["status"] == "parked" and item["sink"] == sink
    assert item["customer"] == "cust-new" and item["upstream_id"] == "up_p"
    assert granter.calls == []
    apply = f"/admin/v1/credits/parked/{parked_id}/apply"
    early = await gateway.client.post(apply, headers=gateway.admin)
    assert early.status_code == 409 and early.json()["error"]["code"] == "parked_customer_unknown"
    key = CUSTOMERS[sink][0]
    patch = {"billing": {key: "cust-new"}}
    r = await gateway.client.patch("/admin/v1/tenants/newco", json=patch, headers=gateway.admin)
    assert r.status_code == 200, r.text
    done = await gateway.client.post(apply, headers=gateway.admin)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "applied" and done.json()["tenant_id"] == "newco"
    assert granter.balance("newco") == 4200 * PICO_PER_UNIT[sink]
    assert granter.balance("acme") == 0
    twice = await gateway.client.post(apply, headers=gateway.admin)
    assert twice.status_code == 409 and granter.balance("newco") == 4200 * PICO_PER_UNIT[sink]
    missing = await gateway.client.post(
        "/admin/v1/credits/parked/pk_nope/apply", headers=gateway.admin
    )
    assert missing.status_code == 404
    only = await gateway.client.get("/admin/v1/credits/parked?status=parked", headers=gateway.admin)
    assert only.json()["data"] == []


async def test_another_currency_or_an_inexact_amount_is_parked_not_granted(
    gw: tuple[Gateway, FakeGranter],
) -> None:
    gateway, granter = gw
    eur = body_of(stripe_event("ev_eur", "credgr_eur", "cus_ACME", 100, currency="eur"))
    r = await post(gateway, "stripe", eur, stripe_sign(eur))
    assert r.json()["status"] == "parked"
    tiny = body_of(lago_event("tx-tiny", "acme-lago", "0.0000000000001"))
    r = await post(gateway, "lago", tiny, lago_sign(tiny, "u-tiny"))
    assert r.json()["status"] == "parked"
    listed = await gateway.client.get("/admin/v1/credits/parked", headers=gateway.admin)
    reasons = sorted(item["reason"] for item in listed.json()["data"])
    assert "currency 'eur'" in reasons[1] and "amount" in reasons[0]
    r = await gateway.client.post(
        f"/admin/v1/credits/parked/{listed.json()['data'][0]['id']}/apply", headers=gateway.admin
    )
    assert r.status_code == 409 and granter.calls == []


async def test_an_unknown_event_type_is_acknowledged_and_ignored(
    gw: tuple[Gateway, FakeGranter],
) -> None:
    gateway, granter = gw
    event = {**stripe_event("ev_x", "credgr_x", "cus_ACME", 100), "type": "invoice.paid"}
    body = body_of(event)
    r = await post(gateway, "stripe", body, stripe_sign(body))
    assert r.status_code == 200 and r.json()["status"] == "ignored"
    body = body_of({"id": "m-seg", "type": "commit.segment.start", "customer_id": "x"})
    r = await post(gateway, "metronome", body, metronome_sign(body))
    assert r.json()["status"] == "ignored" and granter.calls == []


async def test_a_signed_body_that_is_not_the_systems_is_400_not_500(
    gw: tuple[Gateway, FakeGranter],
) -> None:
    gateway, _ = gw
    for body in (b"not json", b"[1, 2]", b'{"id": "e", "type": "billing.credit_grant.created"}',
                 body_of({"id": 5, "type": "billing.credit_grant.created"})):  # fmt: skip
        r = await post(gateway, "stripe", body, stripe_sign(body))
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_webhook_payload"
    big = b'{"pad": "' + b"x" * (4 * 1024 * 1024) + b'"}'
    r = await post(gateway, "stripe", big, stripe_sign(big))
    assert r.status_code == 413  # bounded like every body


def test_the_lago_fixture_conforms_to_the_published_webhook_schema() -> None:
    if not LAGO_SPEC.exists():
        pytest.skip("Lago OpenAPI spec not available")
    import yaml
    from jsonschema import Draft202012Validator

    spec = yaml.load(LAGO_SPEC.read_text(), Loader=yaml.CSafeLoader)
    for name in ("wallet_transaction_created", "wallet_transaction_updated"):
        pointer = f"#/webhooks/{name}/post/requestBody/content/application~1json/schema"
        schema = {"$ref": pointer, "webhooks": spec["webhooks"], "components": spec["components"]}
        payload = json.loads(body_of(lago_event("tx-1", "c", "10.0", updated="updated" in name)))
        errors = list(Draft202012Validator(schema).iter_errors(payload))
        assert errors == [], [e.message for e in errors[:3]]
        headers = {
            p["$ref"].rsplit("/", 1)[1] for p in spec["webhooks"][name]["post"]["parameters"]
        }
        assert headers == {"webhook_signature", "webhook_signature_algorithm", "webhook_unique_key"}
    params = spec["components"]["parameters"]
    assert params["webhook_signature"]["name"] == "X-Lago-Signature"
    assert "hmac" in params["webhook_signature_algorithm"]["schema"]["enum"]
    assert params["webhook_unique_key"]["name"] == "X-Lago-Unique-Key"


@given(st.decimals(min_value=0, max_value=10**9, places=6), st.sampled_from(["0.01", "1", "0.001"]))
def test_exact_pico_is_the_exact_product_or_refused(units: Any, unit_usd: str) -> None:
    pico = exact_pico(str(units), unit_usd)
    from decimal import Decimal

    product = Decimal(units) * Decimal(unit_usd) * 10**12
    if units > 0 and product == product.to_integral_value():
        assert pico == int(product)
    else:
        assert pico is None


# -- garbage never gives a 500 ----------------------------------------------------------------
def _sync(granter: FakeGranter) -> tuple[CreditSync, MemoryStore]:
    hooks = BillingWebhooks.model_validate(CONFIG["billing"]["webhooks"])
    store = MemoryStore()
    sync = CreditSync(hooks, hook_secrets("t", hooks, ENV), store.inbox, store, granter, time.time)
    return sync, store


SIGNERS = {
    "stripe": lambda body: stripe_sign(body),
    "lago": lambda body: lago_sign(body, "u-garbage"),
    "metronome": lambda body: metronome_sign(body),
    "openmeter": lambda body: openmeter_sign(body, "msg_garbage"),
}
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


async def _receive(sync: CreditSync, sink: str, headers: dict[str, str], body: bytes) -> None:
    try:
        await sync.receive(sink, headers, body)
    except FareboxError as exc:
        assert exc.status < 500 or exc.error_code == "credits_unavailable", exc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sink=st.sampled_from(SINKS),
    body=st.binary(max_size=200),
    headers=st.dictionaries(st.sampled_from(
        ["Stripe-Signature", "X-Lago-Signature", "X-Lago-Signature-Algorithm", "Date",
         "X-Lago-Unique-Key", "Metronome-Webhook-Signature", "webhook-id", "webhook-timestamp",
         "webhook-signature"]), st.text(max_size=40), max_size=5),
)  # fmt: skip
def test_garbage_bodies_and_headers_never_give_a_500(
    sink: str, body: bytes, headers: dict[str, str]
) -> None:
    sync, _ = _sync(FakeGranter())
    asyncio.run(_receive(sync, sink, headers, body))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sink=st.sampled_from(SINKS), payload=JSONISH, shape=st.integers(0, 3), data=st.data())
def test_signed_garbage_payloads_never_give_a_500(
    sink: str, payload: Any, shape: int, data: st.DataObject
) -> None:
    """Correctly signed bodies of every shape: random JSON, and real deliveries with one
    field replaced by random JSON."""
    if shape:
        body, _ = delivery(sink, ["create", "update", "void"][shape - 1], "ev", "up", "c", 10)
        real = json.loads(body)
        path = data.draw(st.sampled_from(_paths(real)))
        _put(real, path, payload)
        payload = real
    body = json.dumps(payload).encode()
    granter = FakeGranter()
    sync, store = _sync(granter)
    asyncio.run(
        store.create_tenant(Tenant("t", "t", "default", 0.0, billing={"stripe_customer_id": "c"}))
    )
    asyncio.run(_receive(sync, sink, SIGNERS[sink](body), body))
    assert all(g.amount > 0 for g in granter.grants.values())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _paths(v, (*prefix, i))
    return found


def _put(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


# -- any order, any replays: the same end state -----------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sink=st.sampled_from(SINKS),
    order=st.permutations(["create", "update", "void"]),
    replays=st.lists(st.integers(0, 2), max_size=4),
    units=st.integers(1, 10**9),
)
def test_deliveries_in_any_order_with_replays_end_in_the_same_state(
    sink: str, order: list[str], replays: list[int], units: int
) -> None:
    """A grant created, updated and (where the system voids) voided: delivered in every
    order, some deliveries repeated, the credit service ends as after the in-order run."""
    actions = [a for a in order if sink in VOIDABLE or a != "void"]
    sequence = actions + [actions[i % len(actions)] for i in replays]

    async def run(steps: list[str]) -> dict[str, tuple[int, int | None, str, str]]:
        granter = FakeGranter()
        sync, store = _sync(granter)
        billing = {CUSTOMERS[sink][0]: CUSTOMERS[sink][1]}
        await store.create_tenant(Tenant("acme", "acme", "default", 0.0, billing=billing))
        for action in steps:
            customer = CUSTOMERS[sink][1]
            body, headers = delivery(sink, action, f"ev_{action}", "up_1", customer, units)
            await sync.receive(sink, headers, body)
        expected = 0 if "void" in steps else units * PICO_PER_UNIT[sink]
        assert granter.balance("acme") == expected
        return granter.state()

    in_order = asyncio.run(run([a for a in ("create", "update", "void") if a in actions]))
    assert asyncio.run(run(sequence)) == in_order


async def test_a_grant_for_a_tenant_not_on_a_prepaid_plan_is_parked(make_gateway: Any) -> None:
    """Found by the review: the real credit book granted it, and nothing burned it."""
    async with make_gateway(CONFIG, env=ENV) as gw:
        await acme(gw)  # on the default plan: not prepaid
        body, headers = delivery("stripe", "create", "ev_1", "up_1", CUSTOMERS["stripe"][1], 1234)
        r = await gw.client.post("/billing/v1/webhooks/stripe", content=body, headers=headers)
        assert r.status_code == 200 and r.json()["status"] == "parked", r.text
        parked = await gw.client.get("/admin/v1/credits/parked", headers=gw.admin)
        [item] = parked.json()["data"]
        assert "not on a prepaid plan" in item["reason"]

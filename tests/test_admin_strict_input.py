"""Admin input is taken as written or refused, never reinterpreted: a query parameter given
twice is a 400 naming it (the framework would pick the last one without a word), and a body
value of the wrong JSON type (``true`` for a number of seconds, ``"5"`` for one) is refused
rather than coerced. Generated inputs over these shapes: ``test_schemathesis_admin``."""

from __future__ import annotations

from typing import Any

import pytest

ONE_DAY = {"default": {"models": ["*"]}}


@pytest.mark.parametrize(
    "path", ["/admin/v1/usage", "/admin/v1/unsettled", "/admin/v1/budget-alerts"]
)
async def test_a_query_parameter_given_twice_is_refused(make_gateway: Any, path: str) -> None:
    async with make_gateway({"plans": ONE_DAY}) as gw:
        await gw.tenant("acme")
        await gw.tenant("globex")
        one = await gw.client.get(f"{path}?tenant=acme", headers=gw.admin)
        assert one.status_code == 200, one.text
        twice = await gw.client.get(f"{path}?tenant=acme&tenant=globex", headers=gw.admin)
        assert twice.status_code == 400, twice.text
        error = twice.json()["error"]
        assert error["param"] == "tenant" and "more than once" in error["message"]


@pytest.mark.parametrize("expires", [True, "3600", [3600]])
async def test_a_body_value_of_the_wrong_json_type_is_refused(
    make_gateway: Any, expires: Any
) -> None:
    async with make_gateway({"plans": ONE_DAY}) as gw:
        await gw.tenant("acme")
        url = "/admin/v1/tenants/acme/keys"
        good = await gw.client.post(url, json={"expires_in_s": 3600}, headers=gw.admin)
        assert good.status_code == 201, good.text
        bad = await gw.client.post(url, json={"expires_in_s": expires}, headers=gw.admin)
        assert 400 <= bad.status_code < 500 and bad.status_code != 404, bad.text
        assert "expires_in_s" in bad.text
        keys = await gw.client.get(url, headers=gw.admin)
        assert len(keys.json()["data"]) == 1  # only the good one was issued

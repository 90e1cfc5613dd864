"""``/openapi.json`` describes ``/v1/completions``, ``/v1/messages/count_tokens`` and
``/v1/responses/input_tokens`` (request bodies from the models the edge validates with), and
the gateway's answers conform to it (schemathesis: no 5xx, no answer off its schema)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

PATHS = ("/v1/completions", "/v1/messages/count_tokens", "/v1/responses/input_tokens")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:schemathesis.*")


@pytest.fixture
def served(make_gateway: Any) -> Iterator[tuple[Any, asyncio.AbstractEventLoop, str]]:
    loop = asyncio.new_event_loop()
    manager = make_gateway({"providers": {"sim": {"kind": "mock", "seed": 9}}})
    gw = loop.run_until_complete(manager.__aenter__())
    key = loop.run_until_complete(gw.tenant_key("t"))
    yield gw, loop, key
    loop.run_until_complete(manager.__aexit__(None, None, None))
    loop.close()


def test_the_document_describes_the_new_endpoints(
    served: tuple[Any, asyncio.AbstractEventLoop, str],
) -> None:
    gw, loop, _ = served
    document = loop.run_until_complete(gw.client.get("/openapi.json", headers=gw.admin)).json()
    validate(document)
    schemas = document["components"]["schemas"]
    for path in PATHS:
        operation = document["paths"][path]["post"]
        assert {"200", "400", "401", "403", "429", "500"} <= set(operation["responses"])
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[1] in schemas
    assert schemas["openai.CompletionRequest"]["required"] == ["model", "prompt"]
    assert "max_tokens" not in schemas["anthropic.CountTokensRequest"]["required"]
    assert "/v1/chat/completions" in document["paths"]  # the rest is still there


@pytest.mark.parametrize("path", PATHS)
def test_the_gateway_answers_as_its_document_says(
    served: tuple[Any, asyncio.AbstractEventLoop, str], path: str
) -> None:
    gw, loop, key = served
    document = loop.run_until_complete(gw.client.get("/openapi.json", headers=gw.admin)).json()
    operation = schemathesis.openapi.from_dict(document)[path]["POST"]
    statuses: list[int] = []

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        sent = case.as_transport_kwargs(base_url="http://gateway")
        body = sent.get("json")
        if isinstance(body, dict):
            body["model"] = "gpt-4o-mini"
        headers = {"Authorization": f"Bearer {key}", "x-api-key": key}
        r = loop.run_until_complete(
            gw.client.request(sent["method"], sent["url"], headers=headers, json=body)
        )
        statuses.append(r.status_code)
        assert r.status_code < 500, (r.status_code, r.text[:500])
        operation.validate_response(r)

    check()
    assert 200 in statuses

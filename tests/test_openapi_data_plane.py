"""``/openapi.json`` describes the data plane (issue [7], item 7): a valid OpenAPI 3.1 document
whose request bodies are the models the edge validates with, and which the gateway's own
answers conform to (schemathesis over every data-plane operation: no 5xx, no response that
breaks its schema)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

DATA_PLANE = {
    "/v1/chat/completions": "post",
    "/v1/responses": "post",
    "/v1/messages": "post",
    "/v1/embeddings": "post",
    "/v1/models": "get",
    "/v1/me": "get",
}
MODELS = {"/v1/embeddings": "text-embedding-3-small"}


@pytest.fixture
def served(make_gateway: Any) -> Iterator[tuple[Any, asyncio.AbstractEventLoop, str]]:
    loop = asyncio.new_event_loop()
    manager = make_gateway({"providers": {"sim": {"kind": "mock", "seed": 9}}})
    gw = loop.run_until_complete(manager.__aenter__())
    key = loop.run_until_complete(gw.tenant_key("t"))
    yield gw, loop, key
    loop.run_until_complete(manager.__aexit__(None, None, None))
    loop.close()


def test_the_document_is_valid_and_describes_the_data_plane(
    served: tuple[Any, asyncio.AbstractEventLoop, str],
) -> None:
    gw, loop, _ = served
    document = loop.run_until_complete(gw.client.get("/openapi.json", headers=gw.admin)).json()
    validate(document)
    for path, method in DATA_PLANE.items():
        operation = document["paths"][path][method]
        assert {"200", "401", "500", "503"} <= set(operation["responses"]), path
        if method == "post":
            assert {"400", "413", "415", "429", "502"} <= set(operation["responses"])
            ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in document["components"]["schemas"]
    schemas = document["components"]["schemas"]
    chat = schemas["openai.ChatCompletionRequest"]
    assert chat["required"] == ["model", "messages"]
    assert chat["properties"]["n"]["anyOf"][0]["maximum"] == 128
    tool = schemas["openai.FunctionObject"]["properties"]["name"]
    assert tool["pattern"] == "^[a-zA-Z0-9_.-]{1,64}$"
    assert schemas["openai.EmbeddingRequest"]["additionalProperties"] is False
    # the admin API is still there
    assert any(p.startswith("/admin/v1/") for p in document["paths"])


@pytest.mark.parametrize("path", list(DATA_PLANE))
def test_the_gateway_answers_as_its_document_says(
    served: tuple[Any, asyncio.AbstractEventLoop, str], path: str
) -> None:
    gw, loop, key = served
    document = loop.run_until_complete(gw.client.get("/openapi.json", headers=gw.admin)).json()
    operation = schemathesis.openapi.from_dict(document)[path][DATA_PLANE[path].upper()]
    statuses: list[int] = []

    @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        sent = case.as_transport_kwargs(base_url="http://gateway")
        body = sent.get("json")
        if isinstance(body, dict):  # mostly a model that exists, to get past routing
            body["model"] = MODELS.get(path, "gpt-4o-mini")
        headers = {"Authorization": f"Bearer {key}", "x-api-key": key}
        r = loop.run_until_complete(
            gw.client.request(sent["method"], sent["url"], headers=headers, json=body)
        )
        statuses.append(r.status_code)
        assert r.status_code < 500, (r.status_code, r.text[:500])
        operation.validate_response(r)

    check()
    assert 200 in statuses

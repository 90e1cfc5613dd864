"""``/openapi.json`` describes the data plane (issue [7], item 7): a valid OpenAPI 3.1 document
whose request bodies are the models the edge validates with, and which the gateway's own
answers conform to (schemathesis over every data-plane operation: no 5xx, no response that
breaks its schema)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.openapi_served import Served, answers_as_documented, serve_on_a_loop

DATA_PLANE = {
    "/v1/chat/completions": "post",
    "/v1/responses": "post",
    "/v1/messages": "post",
    "/v1/embeddings": "post",
    "/v1/models": "get",
    "/v1/me": "get",
    "/v1/me/requests": "get",
    "/v1/me/guardrails/findings": "get",  # issue 15
}
MODELS = {"/v1/embeddings": "text-embedding-3-small"}


@pytest.fixture
def served(make_gateway: Any) -> Iterator[Served]:
    yield from serve_on_a_loop(make_gateway)


def test_the_document_is_valid_and_describes_the_data_plane(served: Served) -> None:
    document = served.document()
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
def test_the_gateway_answers_as_its_document_says(served: Served, path: str) -> None:
    # mostly a model that exists, to get past routing
    model = MODELS.get(path, "gpt-4o-mini")
    statuses = answers_as_documented(served, path, DATA_PLANE[path], model=model, max_examples=50)
    assert 200 in statuses

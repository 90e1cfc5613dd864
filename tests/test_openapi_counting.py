"""``/openapi.json`` describes ``/v1/completions``, ``/v1/messages/count_tokens`` and
``/v1/responses/input_tokens`` (request bodies from the models the edge validates with), and
the gateway's answers conform to it (schemathesis: no 5xx, no answer off its schema)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.openapi_served import Served, answers_as_documented, serve_on_a_loop

PATHS = ("/v1/completions", "/v1/messages/count_tokens", "/v1/responses/input_tokens")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:schemathesis.*")


@pytest.fixture
def served(make_gateway: Any) -> Iterator[Served]:
    yield from serve_on_a_loop(make_gateway)


def test_the_document_describes_the_new_endpoints(served: Served) -> None:
    document = served.document()
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
def test_the_gateway_answers_as_its_document_says(served: Served, path: str) -> None:
    statuses = answers_as_documented(served, path, "post", model="gpt-4o-mini", max_examples=40)
    assert 200 in statuses

"""Acceptance 2 of issue 7, data-plane half: schemathesis against the official OpenAI document.

The document (``../shared/reference/specs/openai-openapi.yaml``) is restricted to the
operations Farebox serves (``POST /chat/completions``, ``POST /embeddings``, ``GET /models``,
mounted under ``/v1``), with the document's own known faults corrected (listed, each with its
reason, in ``fakes.request_schemas.KNOWN_FAULTS``). Schemathesis draws at least 50 requests per
operation from it (schema-valid ones and its own negative ones), derandomized; each goes to the
in-process gateway with a tenant key, and each answer must pass schemathesis'
``not_a_server_error`` and ``response_schema_conformance`` checks. Answers with a status the
document does not list (every 4xx: a known fault) are held to the OpenAI error shape instead.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance

from fakes.request_schemas import KNOWN_FAULTS, SERVED, require_spec, served_document

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:schemathesis.*"),
]

POSITIVE, NEGATIVE = 100, 50  # examples per POST operation, by generation mode
GET_EXAMPLES = 50
CHECKS = [not_a_server_error, response_schema_conformance]
SERVED_MODELS = {"chat": "gpt-4o-mini", "embeddings": "text-embedding-3-small"}


def _draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    drawn: list[Any] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        drawn.append(value)

    collect()
    return drawn


def cases_for(schema: Any, path: str, method: str) -> list[Any]:
    operation = schema[path][method.upper()]
    if method == "get":
        return _draw(operation.as_strategy(generation_mode=GenerationMode.POSITIVE), GET_EXAMPLES)
    drawn = []
    for mode, count in ((GenerationMode.POSITIVE, POSITIVE), (GenerationMode.NEGATIVE, NEGATIVE)):
        drawn += _draw(operation.as_strategy(generation_mode=mode), count)
    return drawn


def _served_model(case: Any) -> None:
    """Half the bodies name a model Farebox serves, so they get past routing and are served."""
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        kind = "embeddings" if "embeddings" in case.path else "chat"
        if zlib.crc32(json.dumps(body, sort_keys=True, default=str).encode()) % 2 == 0:
            body["model"] = SERVED_MODELS[kind]


def _request(case: Any, key: str) -> dict[str, Any]:
    headers = {k: str(v) for k, v in (case.headers or {}).items()}
    headers["Authorization"] = f"Bearer {key}"
    request: dict[str, Any] = {
        "method": case.method,
        "url": "/v1" + case.formatted_path,
        "headers": headers,
        "params": case.query or None,
    }
    if case.body is not None and case.method != "GET":
        body = case.body
        raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False)
        request["content"] = raw.encode("utf-8", "replace") if isinstance(raw, str) else raw
        headers.setdefault("Content-Type", case.media_type or "application/json")
    return request


def _documented(case: Any, status: int) -> bool:
    responses = case.operation.definition.raw.get("responses", {})
    return str(status) in responses or f"{str(status)[0]}XX" in responses


def _error_shape_problem(response: httpx.Response) -> str | None:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return "not an OpenAI error body"
    fields = {"message", "type", "param", "code"}
    if not isinstance(error, dict) or not fields <= set(error):
        return f"error object lacks {sorted(fields - set(error or {}))}"
    if not isinstance(error["message"], str) or not error["message"]:
        return "error.message is not a non-empty string"
    return None


async def test_openai_document_against_farebox(make_gateway: Any) -> None:
    require_spec()
    assert all(reason.strip() for reason in KNOWN_FAULTS.values())  # each says why
    schema = schemathesis.openapi.from_dict(served_document())
    drawn = {
        f"{method.upper()} {path}": cases_for(schema, path, method)
        for path, methods in SERVED.items()
        for method in methods
    }
    config = {"providers": {"mock": {"kind": "mock", "output_tokens": {"mean": 12}}}}
    failures: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    examples: dict[str, str] = {}
    async with make_gateway(config) as gw:
        key = await gw.tenant_key("schemathesis")
        for label, cases in drawn.items():
            assert len(cases) >= 50, (label, len(cases))
            for case in cases:
                _served_model(case)
                response = await gw.client.request(**_request(case, key))
                statuses[f"{label} {response.status_code}"] += 1
                kinds = _problems(case, response)
                for kind in kinds:
                    failures[f"{label}: {kind}"] += 1
                    examples.setdefault(f"{label}: {kind}", f"{case.body!r:.300}")
    report = "\n".join(f"{n} x {kind}  e.g. {examples[kind]}" for kind, n in failures.most_common())
    summary = ", ".join(f"{k}: {n}" for k, n in sorted(statuses.items()))
    assert not failures, f"{sum(failures.values())} failures:\n{report}\nstatuses: {summary}"


def _problems(case: Any, response: httpx.Response) -> list[str]:
    kinds = []
    if 400 <= response.status_code < 500 and not _documented(case, response.status_code):
        problem = _error_shape_problem(response)  # known fault: the document lists no 4xx
        if problem:
            kinds.append(f"{response.status_code} {problem}")
        return kinds
    try:
        case.validate_response(response, checks=CHECKS)
    except (Failure, FailureGroup) as exc:
        for failure in exc.exceptions if isinstance(exc, FailureGroup) else [exc]:
            title = getattr(failure, "title", type(failure).__name__)
            kinds.append(f"{title} ({response.status_code})")
    return kinds

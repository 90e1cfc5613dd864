"""Issue 7, acceptance 2 (admin half): schemathesis against Farebox's own ``/openapi.json``.

Every admin operation of the document is driven, in process (ASGI), with the admin key: up to
``EXAMPLES`` generated requests each in positive and in negative mode (fewer only when the
operation has fewer distinct inputs), derandomized so CI sees the same ones every run. An
operation with path parameters runs again with them pointing at a real tenant, key or incident,
so that it does real work rather than answer 404. Checks: no 5xx, every response conforms to
the schema the document gives for its status, every status is one the document lists, and
negative data is refused. Known faults are listed in ``KNOWN_FAULTS`` with their reason (none
today).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.core.parameters import ParameterLocation
from schemathesis.python.asgi import get_client, shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from farebox.app import create_app
from farebox.config.settings import parse_settings

ADMIN_KEY = "fba_schemathesis_admin_key_0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
EXAMPLES = 50
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    negative_data_rejection,
]
# (method, path) -> why a failure there is the document's or the test's, not a bug to fix.
KNOWN_FAULTS: dict[tuple[str, str], str] = {}
CONFIG: dict[str, Any] = {
    "plans": {
        "default": {"models": ["*"], "budgets": [{"period": "month", "limit_usd": "50"}]},
        "pro": {"models": ["*"], "pricing": {"monthly_fee_usd": "20"}},
    },
}


class Fixture:
    """The app under test, a real tenant and key in it, and the admin operations."""

    def __init__(self, directory: Path) -> None:
        data = {"database": f"sqlite:///{directory / 'farebox.db'}", **CONFIG}
        env = {"FAREBOX_ADMIN_KEY": ADMIN_KEY}
        app = create_app(parse_settings(data, source="t.yaml", env=env, base_dir=directory),
                         announce=lambda _m: None)  # fmt: skip
        self.schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=ADMIN)
        self.schema = self.schema.include(path_regex="^/admin/")
        self.operations = {
            (op.method.upper(), op.path): op
            for op in (result.ok() for result in self.schema.get_all_operations())
        }
        self.real = self._seed()

    def _seed(self) -> dict[str, str]:
        with get_client(self.schema.app) as client:  # schemathesis' own in-process client
            r = client.post(
                "/admin/v1/tenants", json={"id": "acme", "plan": "default"}, headers=ADMIN
            )
            assert r.status_code == 201, r.text
            r = client.post("/admin/v1/tenants/acme/keys", json={"name": "k"}, headers=ADMIN)
            assert r.status_code == 201, r.text
            key = r.json()
            chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            auth = {"Authorization": f"Bearer {key['key']}"}
            r = client.post("/v1/chat/completions", json=chat, headers=auth)
            assert r.status_code == 200, r.text
            vault = {"name": "real-int", "provider": "openai", "api_key": "sk-fuzz-0123456789"}
            r = client.post("/admin/v1/integrations", json=vault, headers=ADMIN)
            assert r.status_code == 201, r.text
        return {"tenant_id": "acme", "key_id": key["id"], "incident_id": "inc_none",
                "name": "real-int", "provider": "mock"}  # fmt: skip


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    built = Fixture(tmp_path_factory.mktemp("schemathesis"))
    try:
        yield built
    finally:
        shutdown_lifespans()


def _failures(operation: Any, real: dict[str, str] | None, mode: GenerationMode) -> list[str]:
    """Run ``EXAMPLES`` cases of ``operation``; describe each failing check (first per kind)."""
    found: dict[str, str] = {}
    strings = _string_queries(operation)

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=operation.as_strategy(mode))
    def run(case: Any) -> None:
        if real is not None:
            case.path_parameters = {
                name: real.get(name, value) for name, value in (case.path_parameters or {}).items()
            }
        response = case.call(headers=ADMIN)
        try:
            case.validate_response(response, checks=CHECKS, headers=ADMIN)
        except (AssertionError, BaseExceptionGroup) as exc:  # one failure, or a FailureGroup
            failures = getattr(exc, "exceptions", (exc,))
            sent = urllib.parse.urlsplit(str(response.request.url)).query
            if all(isinstance(f, AcceptedNegativeData) for f in failures) and _valid_on_the_wire(
                case, strings, sent
            ):
                return
            found.setdefault(type(exc).__name__ + str(exc)[:80], f"{case.as_curl_command()}\n{exc}")

    run()
    return list(found.values())


def _string_queries(operation: Any) -> dict[str, list[dict[str, Any]]]:
    """The query parameters that take a string, with their string schemas (a value on the
    wire is a string, valid when one of these takes it)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for param in operation.definition.raw.get("parameters") or ():
        schema = param.get("schema") or {}
        kinds = [k for k in (schema, *schema.get("anyOf", ())) if k.get("type") == "string"]
        if param.get("in") == "query" and kinds:
            out[param["name"]] = kinds
    return out


def _valid_on_the_wire(case: Any, strings: dict[str, list[dict[str, Any]]], sent: str) -> bool:
    """A negative case whose request, as sent, is a valid one, which schemathesis cannot tell:
    only the query and headers were mutated (the Authorization header is replaced by the admin
    key here), and the query string as it was sent (``sent``) holds only the operation's string
    parameters, each once, each with a value its schema takes. A mutated value is often sent
    as a valid one: ``true`` for a boolean, a dict's keys, nothing at all for null or ``[]``."""
    meta = case._meta  # (``case.meta`` would revalidate the case)
    mutated = {loc for loc, info in meta.components.items() if info.mode.is_negative}
    if not mutated <= {ParameterLocation.QUERY, ParameterLocation.HEADER}:
        return False
    pairs = urllib.parse.parse_qsl(sent, keep_blank_values=True)
    names = [name for name, _ in pairs]
    for name, value in pairs:
        if name not in strings or names.count(name) > 1:
            return False
        if not any(Draft202012Validator(k).is_valid(value) for k in strings[name]):
            return False
    return True


def test_the_admin_document_has_the_operations_it_should(fixture: Fixture) -> None:
    assert len(fixture.operations) >= 25
    assert ("POST", "/admin/v1/tenants") in fixture.operations
    assert not any(path.startswith("/v1/") for _, path in fixture.operations)


OPERATIONS = [
    ("GET", "/admin/v1/tenants"), ("POST", "/admin/v1/tenants"),
    ("GET", "/admin/v1/tenants/{tenant_id}"), ("PATCH", "/admin/v1/tenants/{tenant_id}"),
    ("GET", "/admin/v1/tenants/{tenant_id}/limits"), ("GET", "/admin/v1/deployments"),
    ("GET", "/admin/v1/metrics"), ("GET", "/admin/v1/export"), ("GET", "/admin/v1/dead-letters"),
    ("POST", "/admin/v1/dead-letters/retry"), ("GET", "/admin/v1/margins"),
    ("GET", "/admin/v1/plan-profitability"),
    ("GET", "/admin/v1/reconciliation"), ("GET", "/admin/v1/providers/{name}/reconcile"),
    ("GET", "/admin/v1/plans"),
    ("POST", "/admin/v1/reprice"), ("GET", "/admin/v1/upsell"),
    ("POST", "/admin/v1/tenants/{tenant_id}/pause"),
    ("POST", "/admin/v1/tenants/{tenant_id}/resume"),
    ("GET", "/admin/v1/tenants/{tenant_id}/budgets"),
    ("POST", "/admin/v1/tenants/{tenant_id}/budget-increases"),
    ("PATCH", "/admin/v1/keys/{key_id}"), ("GET", "/admin/v1/budget-alerts"),
    ("GET", "/admin/v1/unsettled"), ("POST", "/admin/v1/tenants/{tenant_id}/keys"),
    ("GET", "/admin/v1/tenants/{tenant_id}/keys"), ("POST", "/admin/v1/service-keys"),
    ("DELETE", "/admin/v1/keys/{key_id}"), ("POST", "/admin/v1/keys/{key_id}/pause"),
    ("POST", "/admin/v1/keys/{key_id}/resume"), ("GET", "/admin/v1/anomalies"),
    ("POST", "/admin/v1/anomalies/{incident_id}/resolve"), ("GET", "/admin/v1/usage"),
    ("GET", "/admin/v1/series"), ("GET", "/admin/v1/top-spenders"),
    ("GET", "/admin/v1/requests"), ("GET", "/admin/v1/tenants/{tenant_id}/cache"),
    ("DELETE", "/admin/v1/tenants/{tenant_id}/cache"), ("GET", "/admin/v1/cache"),
    ("GET", "/admin/v1/tenants/{tenant_id}/invoice"),
    ("POST", "/admin/v1/tenants/{tenant_id}/credits"),
    ("GET", "/admin/v1/tenants/{tenant_id}/credits"),
    ("GET", "/admin/v1/credits/parked"),
    ("POST", "/admin/v1/credits/parked/{parked_id}/apply"),
    ("GET", "/admin/v1/audit"),
    # issue 14: the provider-credential vault
    ("POST", "/admin/v1/integrations"), ("GET", "/admin/v1/integrations"),
    ("POST", "/admin/v1/integrations/rekey"),
    ("POST", "/admin/v1/integrations/{name}/rotate"), ("DELETE", "/admin/v1/integrations/{name}"),
    ("PUT", "/admin/v1/tenants/{tenant_id}/integrations/{provider}"),
    ("GET", "/admin/v1/tenants/{tenant_id}/integrations/{provider}"),
    ("DELETE", "/admin/v1/tenants/{tenant_id}/integrations/{provider}"),
    ("POST", "/admin/v1/tenants/{tenant_id}/workspaces"),
    ("GET", "/admin/v1/tenants/{tenant_id}/workspaces"),
    ("GET", "/admin/v1/tenants/{tenant_id}/workspaces/{workspace_id}"),
    ("PATCH", "/admin/v1/tenants/{tenant_id}/workspaces/{workspace_id}"),
    ("DELETE", "/admin/v1/tenants/{tenant_id}/workspaces/{workspace_id}"),
    ("GET", "/admin/v1/keys"),
    ("POST", "/admin/v1/admin-keys"), ("GET", "/admin/v1/admin-keys"),
    ("DELETE", "/admin/v1/admin-keys/{key_id}"),
    ("GET", "/admin/v1/guardrails/findings"),  # issue 15
]  # fmt: skip


def test_every_admin_operation_is_listed_here(fixture: Fixture) -> None:
    """A new admin operation must be added to ``OPERATIONS`` so that it is fuzzed too."""
    assert set(fixture.operations) == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_admin_operation_conforms_to_the_document(fixture: Fixture, method: str, path: str) -> None:
    operation = fixture.operations[(method, path)]
    failures = []
    for mode in MODES:
        failures += _failures(operation, None, mode)
        if "{" in path:
            failures += _failures(operation, fixture.real, mode)
    if (method, path) in KNOWN_FAULTS:
        pytest.xfail(KNOWN_FAULTS[(method, path)])
    assert not failures, "\n\n".join(failures)


def test_the_server_is_healthy_after_the_fuzzing(fixture: Fixture) -> None:
    with get_client(fixture.schema.app) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/admin/v1/tenants", headers=ADMIN)
        assert r.status_code == 200 and "acme" in {t["id"] for t in r.json()["data"]}

"""Helpers for the ``/openapi.json`` tests: a gateway served on its own event loop (so that
hypothesis, which is synchronous, can drive it), its document, and a schemathesis run of one
operation against the gateway's own answers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings


@dataclass
class Served:
    gw: Any
    loop: asyncio.AbstractEventLoop
    key: str

    def document(self) -> dict[str, Any]:
        r = self.loop.run_until_complete(self.gw.client.get("/openapi.json", headers=self.gw.admin))
        return dict(r.json())


def serve_on_a_loop(make_gateway: Any) -> Iterator[Served]:
    """The body of a ``served`` fixture: a gateway on the mock provider and a tenant key."""
    loop = asyncio.new_event_loop()
    manager = make_gateway({"providers": {"sim": {"kind": "mock", "seed": 9}}})
    gw = loop.run_until_complete(manager.__aenter__())
    key = loop.run_until_complete(gw.tenant_key("t"))
    yield Served(gw, loop, key)
    loop.run_until_complete(manager.__aexit__(None, None, None))
    loop.close()


def answers_as_documented(
    served: Served, path: str, method: str, *, model: str, max_examples: int
) -> list[int]:
    """Send the cases schemathesis draws for ``method path`` (the model set to ``model``, to
    get past routing) and check each answer: no 5xx, and conforming to the document. Returns
    the statuses seen."""
    operation = schemathesis.openapi.from_dict(served.document())[path][method.upper()]
    headers = {"Authorization": f"Bearer {served.key}", "x-api-key": served.key}
    statuses: list[int] = []

    @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        sent = case.as_transport_kwargs(base_url="http://gateway")
        body = sent.get("json")
        if isinstance(body, dict):
            body["model"] = model
        r = served.loop.run_until_complete(
            served.gw.client.request(sent["method"], sent["url"], headers=headers, json=body)
        )
        statuses.append(r.status_code)
        assert r.status_code < 500, (r.status_code, r.text[:500])
        operation.validate_response(r)

    check()
    return statuses

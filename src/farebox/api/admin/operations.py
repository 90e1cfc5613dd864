"""Admin endpoints for operating the gateway: its deployments and their breakers, the plans in
force, and the Prometheus metrics."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from farebox.api.context import Services
from farebox.billing.exporter import Exporter
from farebox.gateway.routing_table import policy_json

STATE_VALUE: Mapping[str, int] = MappingProxyType({"closed": 0, "half_open": 1, "open": 2})


class OperationRoutes:
    """The handlers of ``/deployments``, ``/metrics`` and ``/plans``."""

    def __init__(self, services: Services, exporter: Exporter) -> None:
        self.services = services
        self.exporter = exporter

    async def deployments(self) -> dict[str, Any]:
        return {"object": "list", "data": self.services.gateway.deployments()}

    async def metrics(self) -> str:
        """Prometheus text format: each deployment's breaker state and upstream outcomes."""
        return prometheus(self.services.gateway.deployments(), await self.exporter.lag())

    async def plans(self) -> dict[str, Any]:
        gateway = self.services.gateway
        return {
            "object": "list",
            "data": [
                {"name": name, "policy": policy_json(plan), "rate_limits": gateway.limits(name)}
                for name, plan in gateway.plans().items()
            ],
        }


def prometheus(deployments: list[dict[str, Any]], export: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# HELP farebox_deployment_breaker_state Circuit breaker: 0 closed, 1 half-open, 2 open.",
        "# TYPE farebox_deployment_breaker_state gauge",
    ]
    for d in deployments:
        label = _label(d["deployment"])
        lines.append(f'farebox_deployment_breaker_state{{deployment="{label}"}} '
                     f'{STATE_VALUE[d["state"]]}')  # fmt: skip
    lines += [
        "# HELP farebox_deployment_calls_total Upstream calls by outcome (this process).",
        "# TYPE farebox_deployment_calls_total counter",
    ]
    for d in deployments:
        label = _label(d["deployment"])
        for outcome, key in (("ok", "successes"), ("failed", "failures")):
            lines.append(
                f'farebox_deployment_calls_total{{deployment="{label}",outcome="{outcome}"}} '
                f"{d[key]}"
            )
    lines += [
        "# HELP farebox_export_pending_entries Ledger entries not yet exported, per billing sink.",
        "# TYPE farebox_export_pending_entries gauge",
        *(f'farebox_export_pending_entries{{sink="{_label(s)}"}} {v["pending_entries"]}'
          for s, v in export.items()),
        "# HELP farebox_export_lag_seconds Age of the oldest entry not yet exported.",
        "# TYPE farebox_export_lag_seconds gauge",
        *(f'farebox_export_lag_seconds{{sink="{_label(s)}"}} {v["lag_s"]}'
          for s, v in export.items()),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

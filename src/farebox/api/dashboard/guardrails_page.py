"""The dashboard's guardrails page, ``/dashboard/guardrails`` (issue 15): findings over a
window (the last hour, day or week) counted by tenant and detector (flagged, redacted,
blocked), by detector, category and action, and the latest requests with findings.

An admin session (any role: reading needs ``read``, as ``GET /admin/v1/guardrails/findings``)
sees every tenant, or the one it filters on; a tenant's session (its key, or its
``tenant_admin``) sees its own tenant only, whatever it sends. Never the matched text: the
ledger does not keep it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from farebox.api.dashboard.pages import secure
from farebox.api.dashboard.routes import DashboardRoutes
from farebox.api.dashboard.sessions import Session
from farebox.errors import FareboxError, InvalidRequest, ServiceUnavailable
from farebox.identity.tenancy import TENANT_ID
from farebox.stores.findings import FindingCount, FindingsQuery, findings_of

WINDOWS = {"1": 3600, "24": 86_400, "168": 7 * 86_400}  # hours offered -> seconds
LATEST = 50
ACTIONS = ("flagged", "redacted", "blocked")
MAX_FILTER_CHARS = 128


def page_filters(params: Mapping[str, str], session: Session) -> dict[str, str]:
    """The filters asked (a tenant's session: its own tenant, whatever it sends)."""
    filters = {name: params.get(name, "").strip() for name in ("tenant", "detector", "hours")}
    for name, value in filters.items():
        if len(value) > MAX_FILTER_CHARS or "\x00" in value:
            raise InvalidRequest(f"The {name} filter is too long.", param=name)
    if session.role != "admin":
        filters["tenant"] = session.tenant or ""
    if filters["tenant"] and not TENANT_ID.match(filters["tenant"]):
        raise InvalidRequest("That is not a tenant id.", param="tenant")
    filters["hours"] = filters["hours"] or "24"
    if filters["hours"] not in WINDOWS:
        raise InvalidRequest("The window is 1, 24 or 168 hours.", param="hours")
    return filters


def by_tenant(counts: list[FindingCount]) -> list[dict[str, Any]]:
    """One row per (tenant, detector): findings per action and in all."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for c in counts:
        row = rows.setdefault((c.tenant_id, c.detector), {
            "tenant": c.tenant_id, "detector": c.detector, "total": 0,
            **dict.fromkeys(ACTIONS, 0)})  # fmt: skip
        row["total"] += c.findings
        if c.action in ACTIONS:
            row[c.action] += c.findings
    return sorted(rows.values(), key=lambda r: (r["tenant"], -r["total"], r["detector"]))


def by_category(counts: list[FindingCount]) -> list[dict[str, Any]]:
    """One row per (detector, category, action), every tenant of the view together."""
    rows: dict[tuple[str, str, str], int] = {}
    for c in counts:
        group = (c.detector, c.category, c.action)
        rows[group] = rows.get(group, 0) + c.findings
    out = [{"detector": d, "category": c, "action": a, "findings": n}
           for (d, c, a), n in rows.items()]  # fmt: skip
    return sorted(out, key=lambda r: (-r["findings"], r["detector"], r["category"]))


class GuardrailsPage:
    """The handler of ``/dashboard/guardrails``."""

    def __init__(self, base: DashboardRoutes) -> None:
        self.base = base

    async def show(self, request: Request) -> Response:
        session = await self.base.access.session(request)
        if session is None:
            return secure(RedirectResponse("/dashboard/signin", status_code=303))
        try:
            filters = page_filters(request.query_params, session)
            view = await self.view(filters)
        except FareboxError as exc:
            return self.base.error(request, session, exc)
        return self.base.page("guardrails.html", request, session, view=view, filters=filters,
                              windows=list(WINDOWS))  # fmt: skip

    async def view(self, filters: dict[str, str]) -> dict[str, Any]:
        role = findings_of(self.base.data.services.store)
        if role is None:
            raise ServiceUnavailable("This gateway's store keeps no guardrail findings.")
        now = self.base.data.services.clock()
        start, end = now - WINDOWS[filters["hours"]], now + 60  # a minute of clock skew
        tenant, detector = filters["tenant"] or None, filters["detector"] or None
        counts = await role.counts(tenant, start, end)
        if detector is not None:
            counts = [c for c in counts if c.detector == detector]
        latest = await role.page(FindingsQuery(tenant_id=tenant, detector=detector, start=start,
                                               end=end, limit=LATEST))  # fmt: skip
        totals = dict.fromkeys(ACTIONS, 0)
        for c in counts:
            if c.action in ACTIONS:
                totals[c.action] += c.findings
        return {
            "totals": totals,
            "findings": sum(c.findings for c in counts),
            "tenants": len({c.tenant_id for c in counts}),
            "by_tenant": by_tenant(counts),
            "by_category": by_category(counts),
            "detectors": sorted({c.detector for c in counts} | ({detector} if detector else set())),
            "latest": latest.rows,
        }

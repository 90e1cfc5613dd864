"""Issue 15's guardrail findings in GraphQL: ``guardrailFindings`` on both schemas.

The admin schema lists every tenant's (or the ``tenant`` asked); the tenant schema (a tenant key
on ``/v1/graphql``, a ``tenant_admin`` on ``/admin/graphql``) has no ``tenant`` argument: its
resolver passes the context's tenant, forced, as ``GET /v1/me/guardrails/findings`` does. The
arguments are checked by the admin API's own ``findings_query`` (the same messages, each naming
its parameter) and read by its ``list_findings``: one request per node, newest first, a page at
a time (``first``, ``after``: the REST ``limit`` and ``cursor``), each with its findings
(detector, category, action, score, where; never the matched text).
"""

from __future__ import annotations

from typing import Any

import strawberry

from farebox.api.admin.guardrails import findings_query, list_findings
from farebox.api.graphql import limits
from farebox.api.graphql.context import GraphContext
from farebox.errors import InvalidRequest


@strawberry.type(description="One guardrail finding: what matched, never the matched text.")
class GuardrailFinding:
    detector: str = strawberry.field(description="pii, secrets, injection_rules, ...")
    category: str = strawberry.field(description="What was found, e.g. EMAIL_ADDRESS.")
    action: str = strawberry.field(description="flagged, redacted or blocked.")
    score: float | None
    where: str | None = strawberry.field(description="Where it was found: user, output, ...")


@strawberry.type(description="A request with guardrail findings (as GET "
                 "/admin/v1/guardrails/findings lists it).")  # fmt: skip
class GuardrailFindingRequest:
    request_id: str
    tenant: str
    key_id: str
    workspace: str | None
    user: str | None
    model: str = strawberry.field(description="The model requested.")
    model_served: str
    endpoint: str
    status: str
    http_status: int
    time: str = strawberry.field(description="When it started, ISO 8601 in UTC.")
    started_at: float
    findings: list[GuardrailFinding]


@strawberry.type(description="A page of requests with guardrail findings, newest first.")
class GuardrailFindingPage:
    nodes: list[GuardrailFindingRequest]
    next_cursor: str | None = strawberry.field(
        description="Pass as `after` for the next (older) page; null: no more."
    )


def _finding(f: dict[str, Any]) -> GuardrailFinding:
    score = f.get("score")
    where = f.get("where")
    return GuardrailFinding(
        detector=str(f.get("detector") or ""),
        category=str(f.get("category") or ""),
        action=str(f.get("action") or ""),
        score=None if isinstance(score, bool) or not isinstance(score, int | float) else score,
        where=None if where is None else str(where),
    )


def _node(row: dict[str, Any]) -> GuardrailFindingRequest:
    """From ``admin.guardrails.row_json``."""
    return GuardrailFindingRequest(
        request_id=row["request_id"], tenant=row["tenant_id"], key_id=row["key_id"],
        workspace=row["workspace"], user=row["user"], model=row["model"],
        model_served=row["model_served"], endpoint=row["endpoint"], status=row["status"],
        http_status=row["http_status"], time=row["at"], started_at=row["started_at"],
        findings=[_finding(f) for f in row["findings"]],
    )  # fmt: skip


async def guardrail_findings(
    ctx: GraphContext,
    tenant: str | None,
    filters: dict[str, str | None],
    first: int,
    after: str | None,
) -> GuardrailFindingPage:
    """As ``GET /admin/v1/guardrails/findings``; ``tenant``: the admin's argument (None: every
    tenant), unless the context is a tenant's, which is forced."""
    if not 1 <= first <= limits.MAX_PAGE:
        raise InvalidRequest(f"'first' must be between 1 and {limits.MAX_PAGE}.", param="first")
    values: dict[str, Any] = {**filters, "tenant": tenant, "cursor": after, "limit": first}
    query = findings_query(values, ctx.tenant)
    page = await list_findings(ctx.services, query)
    return GuardrailFindingPage(
        nodes=[_node(r) for r in page["data"]], next_cursor=page["next_cursor"]
    )

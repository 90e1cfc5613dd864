"""The dashboard's mutations in the audit trail (``farebox.identity.audit``): each POST that
changes something (resume a tenant, resolve an incident, revoke every session, create or
delete a workspace, create or revoke a key) appends exactly one record, whatever its outcome,
with the session's actor, as the admin API's trail does for ``/admin/v1``: ``ok`` (< 400),
``refused`` (no session, a role without the need, a bad CSRF token or origin, and any 404 a
``tenant_admin`` gets: the form is then not kept) or ``failed``.

``DashboardRoutes._mutate`` makes one ``Note`` per request (the target, and what the action
fills in: the object before and after), and ``DashboardAudit.record`` writes it once the answer
is known. The action is ``POST /dashboard/...`` with the route's template; the form is kept
(masked, without the CSRF token) as ``request``; a key's secret never reaches a record (the
after is the key's JSON without it, and masking would hide it anyway). Sign-in and sign-out
change only the browser's own session and are not recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from farebox.api.client_ip import TrustedProxies, request_client_ip
from farebox.api.dashboard.access import session_actor
from farebox.api.dashboard.csrf import FIELD
from farebox.api.dashboard.sessions import Session
from farebox.core.audit import AuditEntry
from farebox.gateway.call import new_request_id
from farebox.identity.audit import AuditLog

log = logging.getLogger("farebox.audit")
NOTE = "audit_note"  # request.state attribute: the Note of the mutation being served


@dataclass
class Note:
    """What one dashboard mutation did: its target (``kind:id``), the object before and after
    (JSON; None when there is none), and whether it was refused."""

    target: str = ""
    before: Any = None
    after: Any = None
    refused: bool = False


def note_of(request: Request) -> Note:
    """The Note of the mutation ``request`` is serving (a fresh one when there is none)."""
    found = getattr(request.state, NOTE, None)
    if not isinstance(found, Note):
        found = Note()
        setattr(request.state, NOTE, found)
    return found


def actor_of(session: Session | None) -> tuple[str, str]:
    """The id and role a record names for a session (``anonymous`` without one)."""
    if session is None:
        return "anonymous", ""
    actor = session_actor(session)
    if actor is not None:
        return actor.key_id, actor.role
    return session.key_id or "", "tenant"


def action_of(request: Request) -> str:
    route = request.scope.get("route")
    template = getattr(route, "path", None) or request.url.path
    return f"{request.method} {str(template)[:200]}"


class DashboardAudit:
    """Writes the dashboard's records into the app's audit log."""

    def __init__(self, log: AuditLog, proxies: TrustedProxies) -> None:
        self.log = log
        self.proxies = proxies

    async def record(
        self, request: Request, session: Session | None, status: int,
        form: Mapping[str, str],
    ) -> None:  # fmt: skip
        note = note_of(request)
        actor, role = actor_of(session)
        if role == "tenant_admin" and status == 404:  # how it is refused outside its tenant
            note.refused = True
        outcome = "refused" if note.refused else ("ok" if status < 400 else "failed")
        kept = {k: v for k, v in form.items() if k != FIELD}
        change = {
            "before": note.before,
            "after": note.after,
            "request": None if note.refused else kept,
        }
        ip = str(request_client_ip(self.proxies, request.scope) or "")
        entry = AuditEntry(actor, role, action_of(request), note.target, change, ip,
                           new_request_id(), outcome, status)  # fmt: skip
        try:
            await self.log.record(entry)
        except Exception:  # the change has happened: failing the answer would lie about it
            log.exception("could not store the audit record of %s", entry.action)

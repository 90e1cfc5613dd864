"""The dashboard at ``/dashboard``: server-rendered pages for the admin and for each tenant.

``routes`` (the paths), ``access`` (sign-in, sessions, CSRF checks), ``sessions`` (signed
session cookies and their revocation), ``csrf`` (the synchronizer token), ``data`` (the numbers,
through the admin API's handlers), ``reports`` (chart series and request log), ``pages``
(Jinja2, static files, security headers), ``identity_pages`` (a tenant's workspaces and keys,
and their forms), ``audit_page`` (the owner's audit log) and ``audited`` (every mutation's one
audit record). Templates and vendored assets (uPlot, MIT) live in
``templates/`` and ``static/`` inside the package.

Sessions are HMAC-signed cookies (the app secret; any worker or replica sharing the secret and
the store reads them), expire after ``dashboard.session_ttl_s``, and are revoked through rows
in the store's meta table (sign-out, and the admin's "revoke all sessions"): see ``sessions``.
"""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter

from farebox.anomaly.watch import AnomalyWatch
from farebox.api.admin.audit_trail import streamed
from farebox.api.context import Services
from farebox.api.dashboard.access import Access
from farebox.api.dashboard.audit_page import AuditPage
from farebox.api.dashboard.audited import DashboardAudit
from farebox.api.dashboard.csrf import CsrfGuard
from farebox.api.dashboard.data import DashboardData
from farebox.api.dashboard.guardrails_page import GuardrailsPage
from farebox.api.dashboard.identity_pages import IdentityRoutes
from farebox.api.dashboard.pages import Pages
from farebox.api.dashboard.routes import DashboardRoutes, Handler
from farebox.api.dashboard.routes import router as _router
from farebox.api.dashboard.sessions import SessionBook
from farebox.billing.exporter import Exporter
from farebox.identity.audit import AuditLog
from farebox.identity.tenancy import Tenancy


def router(
    services: Services, tenancy: Tenancy, exporter: Exporter, watch: AnomalyWatch
) -> APIRouter:
    """The dashboard's routes for one app instance."""
    settings = services.settings.file.dashboard
    book = SessionBook(services.secret, services.store, settings.session_ttl_s, tenancy.now,
                       settings.session_check_cache_s)  # fmt: skip
    access = Access(
        book, CsrfGuard(services.secret), services.auth, services.store,
        lambda: services.secret, services.admin_hashes, secure_cookies=settings.secure_cookies,
        allowed_origins=settings.allowed_origins, proxies=services.proxies,
    )  # fmt: skip
    data = DashboardData(services, tenancy, exporter, watch)
    stream = services.on_alert if services.settings.file.audit.webhook else None
    log = AuditLog(services.store.audit, services.clock, stream and streamed(stream))
    routes = DashboardRoutes(access, data, Pages(), DashboardAudit(log, services.proxies))
    pages = identity_table(IdentityRoutes(routes), AuditPage(routes, log))
    return _router(routes, [*pages, ("GET", "/guardrails", GuardrailsPage(routes).show)])


def identity_table(identity: IdentityRoutes, audit: AuditPage) -> list[tuple[str, str, Handler]]:
    """Issue 14's pages: a tenant's workspaces and keys (and their forms), the audit log."""
    tenant = "/tenants/{tenant_id}"
    return [
        ("GET", f"{tenant}/workspaces", identity.page),
        ("POST", f"{tenant}/workspaces", identity.create_workspace),
        ("POST", f"{tenant}/workspaces/{{workspace_id}}/delete", identity.delete_workspace),
        ("POST", f"{tenant}/keys", identity.create_key),
        ("POST", f"{tenant}/keys/{{key_id}}/revoke", identity.revoke_key),
        ("GET", "/audit", audit.show),
    ]


def signin_link(base_url: str, key: str) -> str:
    """A one-click sign-in link: the key rides in the fragment, which the browser never sends
    (so no server or proxy logs it); the sign-in page's script posts it and clears it."""
    return f"{base_url.rstrip('/')}/dashboard/signin#key={urllib.parse.quote(key, safe='')}"

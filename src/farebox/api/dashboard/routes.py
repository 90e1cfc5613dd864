"""The dashboard's routes under ``/dashboard``: sign-in and out, the admin and tenant pages,
the request log, the chart data, the mutations (resume a tenant, resolve an incident, revoke
every session) and the static files."""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from farebox.api.dashboard.access import Access, parse_form, session_actor
from farebox.api.dashboard.audited import DashboardAudit, note_of
from farebox.api.dashboard.data import DashboardData
from farebox.api.dashboard.pages import Pages, secure
from farebox.api.dashboard.requests_page import request_filters
from farebox.api.dashboard.sessions import Session
from farebox.errors import FareboxError
from farebox.identity.roles import NEEDS, decide, scoped

Handler = Callable[..., Awaitable[Response]]


def _json(data: Any) -> Response:
    return secure(Response(orjson.dumps(data), media_type="application/json"))


def _see(path: str) -> Response:
    return secure(RedirectResponse(path, status_code=303))


def who(session: Session) -> str:
    """Who a session is, in words for the sign-in page."""
    if session.role == "admin":
        return "the admin" if session.admin_role is None else f"an admin ({session.admin_role})"
    return f"tenant {session.tenant}"


def may(session: Session, need: str, tenant_ok: bool = False, tenant: str | None = None) -> str:
    """``allow``, ``forbid`` or ``hide``: what the session's role may do with an operation
    needing ``need`` (``tenant_ok`` and ``tenant``: as the matching admin API operation
    says; a tenant_admin's must be its own); a tenant key changes nothing."""
    actor = session_actor(session)
    if actor is None:
        return "forbid"
    verdict = decide(actor, need, tenant_ok)
    if verdict == "allow" and actor.tenant_bound and not scoped(actor, tenant):
        return "hide"
    return verdict


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


class DashboardRoutes:
    def __init__(
        self, access: Access, data: DashboardData, pages: Pages,
        audit: DashboardAudit | None = None,
    ) -> None:  # fmt: skip
        self.access = access
        self.data = data
        self.pages = pages
        self.audit = audit

    def page(self, name: str, request: Request, session: Session | None, **ctx: Any) -> Response:
        csrf = self.access.csrf.token(session) if session else ""
        actor = session_actor(session) if session else None
        can = {need: actor is not None and actor.grants(need) for need in NEEDS}
        return self.pages.render(name, session=session, csrf=csrf, path=request.url.path,
                                 can=can, **ctx)  # fmt: skip

    def refused(self, request: Request, session: Session | None, verdict: str) -> Response:
        """A mutation or page the session may not reach: 403 naming what is missing, or (a
        tenant_admin outside its tenant) the 404 of a page that does not exist."""
        if verdict == "hide":
            return self.page("error.html", request, session, status=404, message="Not found.")
        return self.page(
            "error.html",
            request,
            session,
            status=403,
            message="Your role cannot do this; ask an admin of the platform.",
        )

    def error(self, request: Request, session: Session | None, exc: FareboxError) -> Response:
        return self.page("error.html", request, session, status=exc.status, message=exc.message)

    # sign-in -----------------------------------------------------------------------------
    async def signin_form(self, request: Request) -> Response:
        """The sign-in page; when a live session exists, its script asks before a one-click
        link's key replaces it (``data-signed-in-as``) instead of posting the key at once."""
        current = await self.access.session(request)
        return self.page("signin.html", request, None, failed=False,
                         signed_in_as=who(current) if current else "")  # fmt: skip

    async def signin(self, request: Request) -> Response:
        form = parse_form(await request.body())
        ok = self.access.same_origin(request)
        token = await self.access.exchange(form.get("key", "")) if ok else None
        if token is None:
            response = self.pages.render("signin.html", status=401, session=None, csrf="",
                                         path=request.url.path, failed=True)  # fmt: skip
            return response
        response = _see("/dashboard")
        self.access.set_cookie(request, response, token)
        return response

    async def signout(self, request: Request) -> Response:
        return await self._mutate(request, None, self._signout)

    async def _signout(self, request: Request, session: Session) -> Response:
        await self.access.book.revoke(session)
        response = _see("/dashboard/signin")
        self.access.clear_cookie(request, response)
        return response

    async def revoke_all(self, request: Request) -> Response:
        async def run(request: Request, session: Session) -> Response:
            await self.access.book.revoke_all()
            response = _see("/dashboard/signin")
            self.access.clear_cookie(request, response)
            return response

        return await self._mutate(request, "owner", run, target="sessions:all")

    # mutations ---------------------------------------------------------------------------
    async def _mutate(
        self, request: Request, need: str | None,
        act: Callable[[Request, Session], Awaitable[Response]], tenant_ok: bool = False,
        tenant: str | None = None, target: str = "",
    ) -> Response:  # fmt: skip
        """Signed in with a role that has ``need`` (the matching admin API operation's; on
        ``tenant``, when it names one), same origin and the session's CSRF token, or 403
        (404 for a tenant_admin outside its tenant); then ``act``. A mutation (``need`` set)
        leaves exactly one audit record, whatever its outcome (``audited``)."""
        session = await self.access.session(request)
        form = parse_form(await request.body())
        note = note_of(request)
        note.target = target
        response = await self._judged(request, session, form, need, act, tenant_ok, tenant)
        if need is not None and self.audit is not None:
            await self.audit.record(request, session, response.status_code, form)
        return response

    async def _judged(
        self, request: Request, session: Session | None, form: dict[str, str],
        need: str | None, act: Callable[[Request, Session], Awaitable[Response]],
        tenant_ok: bool, tenant: str | None,
    ) -> Response:  # fmt: skip
        note = note_of(request)
        note.refused = True
        if session is None:
            return self.page("error.html", request, session, status=403,
                             message="Sign in as the admin to do this.")  # fmt: skip
        verdict = "allow" if need is None else may(session, need, tenant_ok, tenant)
        if verdict != "allow":
            return self.refused(request, session, verdict)
        if not self.access.mutation_ok(request, session, form):
            return self.page("error.html", request, session, status=403,
                             message="This form expired or did not come from the dashboard. "
                             "Reload the page and try again.")  # fmt: skip
        note.refused = False
        try:
            return await act(request, session)
        except FareboxError as exc:
            return self.error(request, session, exc)

    async def resume_tenant(self, request: Request) -> Response:
        tenant_id = request.path_params["tenant_id"]

        async def run(request: Request, session: Session) -> Response:
            await self.data.tenants.resume_tenant(tenant_id)
            return _see("/dashboard#anomalies")

        return await self._mutate(request, "operate", run, False, tenant_id,  # as its API op
                                  target=f"tenant:{tenant_id}")  # fmt: skip

    async def resolve_incident(self, request: Request) -> Response:
        incident_id = request.path_params["incident_id"]

        async def run(request: Request, session: Session) -> Response:
            await self.data.anomaly.resolve(incident_id)
            return _see("/dashboard#anomalies")

        return await self._mutate(request, "operate", run, target=f"incident:{incident_id}")

    # pages -------------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        session = await self.access.session(request)
        if session is None:
            return _see("/dashboard/signin")
        try:
            if session.role == "admin":
                view = await self.data.overview(_int(request.query_params.get("page"), 1))
                return self.page("admin.html", request, session, view=view)
            assert session.tenant is not None
            return await self._tenant_page(request, session, session.tenant)
        except FareboxError as exc:
            return self.error(request, session, exc)

    async def _tenant_page(self, request: Request, session: Session, tenant_id: str) -> Response:
        view = await self.data.tenant_view(tenant_id)
        return self.page("tenant.html", request, session, view=view)

    async def _as_admin(
        self, request: Request, show: Callable[[Session], Awaitable[Response]]
    ) -> Response:
        """An admin page: signed in as an admin (a tenant key is sent to its own page, a
        tenant_admin answered 404), then ``show``; bad input is the error page with its
        status."""
        session = await self.access.session(request)
        if session is None:
            return _see("/dashboard/signin")
        if session.role != "admin":
            hidden = session.admin_role == "tenant_admin"
            return self.refused(request, session, "hide") if hidden else _see("/dashboard")
        try:
            return await show(session)
        except FareboxError as exc:
            return self.error(request, session, exc)

    async def tenant(self, request: Request) -> Response:
        """A tenant's page: any for an admin; a tenant_admin's own tenant (404 for another)."""
        tenant_id = request.path_params["tenant_id"]
        session = await self.access.session(request)
        if session is not None and session.admin_role == "tenant_admin":
            if tenant_id != session.tenant:
                return self.refused(request, session, "hide")
            return await self._tenant_page(request, session, tenant_id)
        return await self._as_admin(
            request, lambda session: self._tenant_page(request, session, tenant_id)
        )

    async def revenue(self, request: Request) -> Response:
        """The admin's revenue page of a UTC month (``?month=``, default this one; each panel
        reads its own parameters, such as ``?credits_page=``, ``?window_days=`` or the
        what-if's ``?plan=&markup=``). A panel's bad input is shown in the panel, as a 400."""

        async def show(session: Session) -> Response:
            view = await self.data.revenue.page(request.query_params)
            return self.page("revenue.html", request, session, view=view,
                             status=400 if view["bad"] else 200)  # fmt: skip

        return await self._as_admin(request, show)

    async def requests(self, request: Request) -> Response:
        session = await self.access.session(request)
        if session is None:
            return _see("/dashboard/signin")
        try:
            query, filters = request_filters(request.query_params, session)
            page = await self.data.reports.requests(query)
        except FareboxError as exc:
            return self.error(request, session, exc)
        older = {k: v for k, v in filters.items() if v and k != "cursor"}
        if page.next_cursor:
            older["cursor"] = page.next_cursor
        return self.page("requests.html", request, session, page=page, filters=filters,
                         next_query=urllib.parse.urlencode(older))  # fmt: skip

    async def series(self, request: Request) -> Response:
        session = await self.access.session(request)
        if session is None:
            return secure(Response(b'{"error":"sign in"}', 401, media_type="application/json"))
        tenant = session.tenant if session.role == "tenant" else request.query_params.get("tenant")
        hours = _int(request.query_params.get("hours"), 48)
        now = self.data.clock()
        return _json(await self.data.reports.hourly(now, hours, tenant or None))

    async def static(self, request: Request) -> Response:
        found = self.pages.asset(request.path_params["name"])
        return found if found is not None else secure(Response(b"not found", 404))


def router(routes: DashboardRoutes, extra: Iterable[tuple[str, str, Handler]] = ()) -> APIRouter:
    """The dashboard's routes: these, and ``extra`` (the identity pages: ``identity_pages``,
    ``audit_page``)."""
    api = APIRouter(prefix="/dashboard", include_in_schema=False)
    table: list[tuple[str, str, Handler]] = [
        ("GET", "", routes.home),
        ("GET", "/signin", routes.signin_form),
        ("POST", "/signin", routes.signin),
        ("POST", "/signout", routes.signout),
        ("POST", "/sessions/revoke-all", routes.revoke_all),
        ("GET", "/tenants/{tenant_id}", routes.tenant),
        ("POST", "/tenants/{tenant_id}/resume", routes.resume_tenant),
        ("POST", "/anomalies/{incident_id}/resolve", routes.resolve_incident),
        ("GET", "/requests", routes.requests),
        ("GET", "/revenue", routes.revenue),
        ("GET", "/data/series", routes.series),
        ("GET", "/static/{name}", routes.static),
        *extra,
    ]
    for method, path, endpoint in table:
        api.add_api_route(path, endpoint, methods=[method])
    return api

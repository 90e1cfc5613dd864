"""The admin API's audit trail: one record per mutation, and one per refused attempt.

``AuditTrail.serve`` wraps the admin gate (``api.gate.Gate``, so that its own 401s are seen
too) for every request under ``/admin/v1``. It appends exactly one record (``identity.audit``)
for each request that

* is a mutation: POST, PUT, PATCH or DELETE, unless its ``AdminRoute`` is ``read_only`` (a POST
  that changes nothing, such as ``POST /reprice``'s what-if), whatever its outcome (``ok``,
  ``refused``, ``failed``); or
* is refused, whatever its method: 401 (no or a wrong admin key), 403, or a 404 answered to a
  ``tenant_admin`` (which is how it is refused outside its tenant).

The record: the caller (``request.state.admin_actor``; the CLI's in-process calls say
``cli:<os user>``; else ``admin``/``owner``, the env admin key; ``anonymous`` when refused
without a valid key), ``METHOD /route/{template}``, the target named by the path (or, for a
create, the created id), ``{"before", "after", "request"}`` masked (``before``: the resource as
read before a PATCH, DELETE or action on it, when a reader is registered for the path's last
parameter; ``after``: the answer; ``request``: the body, not kept for a refused attempt), the
client IP, the request id (a new one, which the answer carries in ``X-Farebox-Request-ID``), and
the status. The answer's last bytes are held until the record is
stored, so whoever sees the answer can read the record.

``before`` is read only once the caller is known and allowed: the operation's access check
(``api.admin.access``) calls the reader the trail leaves in the scope (``BEFORE``), after the
role has been judged and before the handler runs; an anonymous or refused caller causes no
read. Refusals without a valid admin key are folded per client IP and operation
(``audit_refusals``: a record per window, with a ``count``). ``/admin/graphql`` has a trail
of its own (``label``: its records' action names the endpoint), which records its refusals.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from farebox.api.admin.access import BEFORE
from farebox.api.admin.audit_refusals import Refusals
from farebox.api.client_ip import TrustedProxies, request_client_ip
from farebox.api.context import Services
from farebox.api.gate import Gate
from farebox.core.audit import AuditEntry
from farebox.errors import FareboxError
from farebox.gateway.call import new_request_id
from farebox.identity.audit import AuditLog, body_json
from farebox.identity.tenancy import Tenancy, key_json, tenant_json
from farebox.identity.workspaces import Workspaces, workspace_json

log = logging.getLogger("farebox.audit")
PREFIX = "/admin/v1"
GRAPHQL = "/admin/graphql"  # api.graphql.endpoint.ADMIN_PATH: queries only
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
REFUSED = frozenset({401, 403})
BODY_LIMIT = 65_536  # bytes of a body kept (as masked JSON); a larger one is noted, not kept
CLI_ACTOR = "farebox.audit_actor"  # scope key: the CLI's in-process calls name their user
GATE_ACTOR = "farebox.admin_actor"  # scope key: the admin key's actor, as the gate found it
KINDS = {"tenants": "tenant", "keys": "key", "service-keys": "key", "credits": "credit",
         "workspaces": "workspace", "admin-keys": "admin_key", "integrations": "integration",
         "name": "provider"}  # fmt: skip
Reader = Callable[[Mapping[str, str]], Awaitable[Any]]


class Operation(Protocol):
    """What the trail needs of an ``AdminRoute``."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def options(self) -> Mapping[str, Any]: ...
    @property
    def read_only(self) -> bool: ...


@dataclass(frozen=True)
class Query:
    """An operation that changes nothing: recorded only when refused."""

    method: str
    path: str = "/"
    options: Mapping[str, Any] = field(default_factory=dict)
    read_only: bool = True


@dataclass(frozen=True)
class Matcher:
    method: str
    template: str
    pattern: re.Pattern[str]
    read_only: bool
    creates: bool
    params: tuple[str, ...]


@dataclass
class Exchange:
    """One request as the trail sees it."""

    method: str
    path: str
    op: Matcher | None
    params: dict[str, str]
    request_id: str
    state: MutableMapping[str, Any]
    before: Any = None
    status: int = 0
    hold: bool = False
    request: bytearray = field(default_factory=bytearray)
    response: bytearray = field(default_factory=bytearray)
    held: Message | None = None


def matchers(operations: Iterable[Operation]) -> list[Matcher]:
    out = []
    for op in operations:
        pattern, _, _ = compile_path(op.path)
        params = tuple(re.findall(r"{(\w+)", op.path))
        creates = op.options.get("status_code") == 201
        out.append(Matcher(op.method, op.path, pattern, op.read_only, creates, params))
    return out


def actor_of(scope: Scope, state: Mapping[str, Any], status: int) -> tuple[str, str, bool]:
    """The caller's id, its role, and whether it is bound to one tenant."""
    cli = scope.get(CLI_ACTOR)
    if cli:
        return str(cli), "owner", False
    actor = scope.get(GATE_ACTOR) or state.get("admin_actor")
    if actor is not None:
        role = str(getattr(actor, "role", ""))
        return str(getattr(actor, "key_id", "admin")), role, role == "tenant_admin"
    if status == 401:
        return "anonymous", "", False
    return "admin", "owner", False


def target_of(x: Exchange, after: Any, request: Any) -> str:
    """``kind:id`` of what the request is about: the created resource's, else the path's most
    specific parameter's; empty for an operation on no one thing."""
    if x.op is None:
        return ""
    if x.op.creates:
        made = after.get("id") if isinstance(after, dict) else None
        if made is None and isinstance(request, dict):
            made = request.get("id")
        if isinstance(made, str):
            segment = x.op.template.rstrip("/").rsplit("/", 1)[-1]
            return f"{KINDS.get(segment, segment)}:{made}"
    if not x.op.params:
        return ""
    name = x.op.params[-1]
    return f"{KINDS.get(name, name.removesuffix('_id'))}:{x.params.get(name, '')}"


class AuditTrail:
    """Records the admin API's mutations and refusals in ``audit`` (see the module doc).
    ``readers``: by a path parameter's name, how to read the resource it names (for
    ``before``)."""

    def __init__(self, audit: AuditLog, operations: Iterable[Operation],
                 readers: Mapping[str, Reader], proxies: TrustedProxies,
                 prefix: str = PREFIX, refusals: Refusals | None = None,
                 label: str | None = None) -> None:  # fmt: skip
        """``refusals``: where anonymous refusals are folded (None: each is recorded);
        ``label``: the path an action names instead of the one under ``prefix``."""
        self.prefix = prefix  # the operations' paths are under it
        self.refusals = refusals
        self.label = label
        self.audit = audit
        self.matchers = matchers(operations)
        self.readers = readers
        self.proxies = proxies

    def match(self, method: str, path: str) -> tuple[Matcher | None, dict[str, str]]:
        for m in self.matchers:
            if m.method == method:
                found = m.pattern.match(path)
                if found:
                    return m, found.groupdict()
        return None, {}

    def covers(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")

    async def serve(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """Serve the admin request ``scope`` with ``app`` (the gate), recorded as it must be."""
        x = self.exchange(scope)
        if self.mutating(x):

            async def read_before() -> None:  # called by the access check, once allowed
                x.before = await self.read_before(x)

            scope[BEFORE] = read_before

        async def receive_kept() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(x.request) <= BODY_LIMIT:
                x.request += message.get("body", b"")
            return message

        async def send_kept(message: Message) -> None:
            if message["type"] == "http.response.start":
                x.status = int(message["status"])
                x.hold = self.mutating(x) or x.status in REFUSED or x.status == 404
                headers = [
                    *message.get("headers", ()),
                    (b"x-farebox-request-id", x.request_id.encode()),
                ]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and x.hold:
                if len(x.response) <= BODY_LIMIT:
                    x.response += message.get("body", b"")
                if not message.get("more_body", False):
                    x.held = message  # sent once the record is stored
                    return
            await send(message)

        try:
            await app(scope, receive_kept, send_kept)
        finally:
            await self.finish(scope, x)
            if x.held is not None:
                await send(x.held)

    def exchange(self, scope: Scope) -> Exchange:
        method = scope["method"]
        path = scope["path"][len(self.prefix) :] or "/"
        op, params = self.match(method, path)
        request_id = new_request_id()
        state = scope.setdefault("state", {})  # request.state: where admin_actor is put
        return Exchange(method, path, op, params, request_id, state)

    def mutating(self, x: Exchange) -> bool:
        return x.method in MUTATING and not (x.op is not None and x.op.read_only)

    async def read_before(self, x: Exchange) -> Any:
        op = x.op
        if op is None or not op.params or op.creates:
            return None
        reader = self.readers.get(op.params[-1])
        if reader is None:
            return None
        try:
            return await reader(x.params)
        except FareboxError:  # not there (yet): the handler will say so
            return None

    async def finish(self, scope: Scope, x: Exchange) -> None:
        actor, role, bound = actor_of(scope, x.state, x.status or 500)
        status = x.status or 500  # no answer at all: the app failed
        refused = status in REFUSED or (status == 404 and bound)
        if not (self.mutating(x) or refused):
            return
        outcome = "refused" if refused else ("ok" if status < 400 else "failed")
        request = None if refused else body_json(bytes(x.request), BODY_LIMIT)
        after = body_json(bytes(x.response), BODY_LIMIT)
        change = {"before": None if refused else x.before, "after": after, "request": request}
        where = x.op.template if x.op else x.path[:200]
        if self.label is not None:
            where = self.label + where.rstrip("/")
        action = f"{x.method} {where}"
        ip = str(request_client_ip(self.proxies, scope) or "")
        entry = AuditEntry(actor, role, action, target_of(x, after, request), change, ip,
                           x.request_id, outcome, status)  # fmt: skip
        try:
            if refused and actor == "anonymous" and self.refusals is not None:
                pair = (ip, action if x.op or self.label else f"{x.method} *")
                await self.refusals.record(entry, pair)
            else:
                await self.audit.record(entry)
        except Exception:  # the change is made: say loudly that its record is not
            log.exception("audit record not stored: %s %s", action, x.request_id)


class AuditedGate(Gate):
    """The admin gate with audit trails around it: the first trail that covers a path
    serves it (``trail``: the admin API's, for ``/admin/v1``)."""

    def __init__(self, inner: Gate, trail: AuditTrail, *more: AuditTrail) -> None:
        super().__init__(inner.limits, inner.key_check, inner.protected)
        self.inner = inner
        self.trail = trail
        self.trails = (trail, *more)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        trail = next((t for t in self.trails if t.covers(scope["path"])), None)
        if trail is None:
            await self.inner(scope, receive, send, app)
            return

        async def gated(scope: Scope, receive: Receive, send: Send) -> None:
            await self.inner(scope, receive, send, app)

        await trail.serve(scope, receive, send, gated)

    async def flush(self) -> None:
        """Write the counts of the refusals still folded (the app stops)."""
        for refusals in {id(t.refusals): t.refusals for t in self.trails if t.refusals}.values():
            await refusals.flush()


def audited(
    gate: Gate, services: Services, tenancy: Tenancy, operations: Iterable[Operation]
) -> AuditedGate:
    """``gate`` with the audit trail of ``operations`` around it, on the store's audit log;
    ``before`` is read for tenants, keys and workspaces."""
    spaces = Workspaces(services.store, services.clock)

    async def tenant(params: Mapping[str, str]) -> Any:
        return tenant_json(await tenancy.tenant(params["tenant_id"]))

    async def key(params: Mapping[str, str]) -> Any:
        return key_json(await tenancy.key(params["key_id"]))

    async def workspace(params: Mapping[str, str]) -> Any:
        return workspace_json(await spaces.get(params["tenant_id"], params["workspace_id"]))

    stream = services.on_alert if services.settings.file.audit.webhook else None
    audit = AuditLog(services.store.audit, services.clock, stream and streamed(stream))
    readers = {"tenant_id": tenant, "key_id": key, "workspace_id": workspace}
    window = services.settings.file.audit.refusal_window_s
    refusals = Refusals(audit, services.clock, window)
    trail = AuditTrail(audit, operations, readers, services.proxies, refusals=refusals)
    # /admin/graphql serves queries only: what it records is its refusals (401s)
    queries = (Query("GET"), Query("POST"))
    graph = AuditTrail(audit, queries, {}, services.proxies, GRAPHQL, refusals, label=GRAPHQL)
    return AuditedGate(gate, trail, graph)


def streamed(send: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """Each stored record as a signed ``audit.record`` event (``send`` only queues it)."""

    def on_record(record: dict[str, Any]) -> None:
        send({"type": "audit.record", "record": record})

    return on_record

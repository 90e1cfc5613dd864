"""Credits kept in step with the billing system: a verified delivery, applied exactly once.

``CreditSync.receive`` answers ``POST /billing/v1/webhooks/{sink}``: 404 for a sink kind that
is unknown or not configured, 400 for a bad signature (``invalid_signature``) or a signed body
that is not the system's (``invalid_webhook_payload``), then the delivery is read
(``InboundGrant``) and applied:

- once per event id: an event already applied answers ``duplicate`` and changes nothing;
- once per upstream grant: the credit grant's idempotency key is ``{sink}:{upstream id}``,
  so a ``.updated`` before (or after) its ``.created`` grants once;
- a void is remembered (the ``void`` mark) before it is applied, so a grant that arrives
  after its void is granted and voided at once: the same end state as in order;
- the tenant is the one whose ``Tenant.billing[billing_key]`` is the payload's customer; with
  none (or several), or when the grant cannot be applied as it stands (another currency, an
  inexact amount, the credit service refusing it), the grant is parked for review
  (``GET /admin/v1/credits/parked``) and applied by ``apply_parked`` once it can be.

Deliveries are answered 200 whatever they do (``applied``, ``unchanged``, ``voided``,
``parked``, ``ignored``, ``duplicate``), so the billing system stops retrying; only a failure
of Farebox itself (503) asks it to retry. Secrets are never logged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any

from farebox.billing.webhooks import lago, metronome, openmeter, stripe
from farebox.billing.webhooks.base import CreditGranter
from farebox.config.billing_webhooks import BillingWebhooks, secret_key
from farebox.core.inbound import InboundGrant, ParkedGrant
from farebox.errors import Conflict, FareboxError, NotFound, ServiceUnavailable
from farebox.stores.base import AccountStore, InboxStore

log = logging.getLogger("farebox.billing.webhooks")
SINKS: Mapping[str, ModuleType] = MappingProxyType(
    {"stripe": stripe, "lago": lago, "metronome": metronome, "openmeter": openmeter}
)


@dataclass(frozen=True)
class Outcome:
    status: str  # applied | unchanged | voided | parked | ignored | duplicate
    parked: ParkedGrant | None = None


class CreditSync:
    def __init__(
        self,
        hooks: BillingWebhooks,
        secrets: Mapping[str, str],
        inbox: InboxStore,
        accounts: AccountStore,
        granter: CreditGranter | None,
        clock: Callable[[], float],
    ) -> None:
        self.hooks = hooks
        self._secrets = secrets
        self.inbox = inbox
        self.accounts = accounts
        self.granter = granter
        self.clock = clock

    async def receive(self, sink: str, headers: Mapping[str, str], body: bytes) -> dict[str, Any]:
        cfg, module = self.hooks.sink(sink), SINKS.get(sink)
        secret = self._secrets.get(secret_key(sink))
        if cfg is None or module is None or not secret:
            raise NotFound(
                f"No billing webhook {sink[:40]!r} is configured (billing.webhooks: "
                f"{', '.join(SINKS)}).",
                code="unknown_webhook_sink",
            )
        module.verify(headers, body, secret, self.clock(), cfg.tolerance_s)
        inbound: InboundGrant = module.parse(headers, body, self.hooks.unit_usd(sink), cfg.currency)
        if await self.inbox.marked(sink, "event", inbound.event_id):
            outcome = Outcome("duplicate")
        else:
            outcome = await self.apply(inbound)
            await self.inbox.mark(sink, "event", inbound.event_id, self.clock())
        log.info(
            "billing webhook %s event %s (%s): %s",
            sink, inbound.event_id, inbound.event_type, outcome.status,
        )  # fmt: skip
        answer: dict[str, Any] = {"received": True, "status": outcome.status}
        answer["event_id"] = inbound.event_id
        if outcome.parked is not None:
            answer["parked_id"] = outcome.parked.id
        return answer

    async def apply(self, g: InboundGrant, tenant: str | None = None) -> Outcome:
        """Apply one inbound grant (to ``tenant``, or to the tenant its customer maps to)."""
        if g.action == "ignore":
            return Outcome("ignored")
        granter = self._granter()
        if g.action == "void":
            await self.inbox.mark(g.sink, "void", g.upstream_id, self.clock())
        tenant = tenant or await self.tenant_of(g)
        if tenant is None:
            key = self.hooks.billing_key(g.sink)
            return await self._park(g, f"no tenant has billing.{key} = {g.customer!r}")
        if g.action == "void":
            voided = await granter.void(tenant, g.key, g.sink)
            if voided is None and g.amount is not None and g.problem is None:
                return await self._grant(granter, tenant, g, then_void=True)
            return Outcome("voided")
        if g.problem is not None:
            return await self._park(g, g.problem)
        return await self._grant(granter, tenant, g, then_void=False)

    async def _grant(
        self, granter: CreditGranter, tenant: str, g: InboundGrant, then_void: bool
    ) -> Outcome:
        assert g.amount is not None
        try:
            _, created = await granter.grant(
                tenant, g.amount, g.kind, g.key, g.expires_at, g.sink, g.note
            )
        except FareboxError as exc:  # refused (a conflicting key, a tenant without credits)
            return await self._park(g, f"the credit service refused it: {exc.message}")
        voided = await self.inbox.marked(g.sink, "void", g.upstream_id)
        if (created and voided) or then_void:
            await granter.void(tenant, g.key, g.sink)
            return Outcome("voided")
        return Outcome("applied" if created else "unchanged")

    async def _park(self, g: InboundGrant, reason: str) -> Outcome:
        digest = hashlib.sha256(f"{g.sink}\0{g.event_id}".encode()).hexdigest()[:24]
        parked = ParkedGrant(f"pk_{digest}", g, reason[:500], self.clock())
        stored = await self.inbox.park(parked)
        log.warning("billing webhook %s event %s parked: %s", g.sink, g.event_id, reason)
        return Outcome("parked", stored)

    async def tenant_of(self, g: InboundGrant) -> str | None:
        """The one tenant whose billing id in ``g``'s system is ``g.customer``."""
        key = self.hooks.billing_key(g.sink)
        found = [
            t.id for t in await self.accounts.list_tenants() if t.billing.get(key) == g.customer
        ]
        return found[0] if len(found) == 1 and g.customer else None

    async def apply_parked(self, parked_id: str) -> ParkedGrant:
        """Apply a parked grant now that it can be (its customer's tenant is known)."""
        parked = await self.inbox.get_parked(parked_id)
        if parked is None:
            raise NotFound(f"Parked grant {parked_id!r} not found.", code="parked_grant_not_found")
        if parked.status != "parked":
            raise Conflict(f"Parked grant {parked_id!r} was applied already.",
                           code="parked_grant_applied")  # fmt: skip
        tenant = await self.tenant_of(parked.grant)
        if tenant is None:
            key = self.hooks.billing_key(parked.grant.sink)
            raise Conflict(
                f"No tenant (or more than one) has billing.{key} = {parked.grant.customer!r}; "
                "set it on the tenant (PATCH /admin/v1/tenants/{id}), then apply.",
                code="parked_customer_unknown",
            )
        if parked.grant.problem is not None:
            raise Conflict(f"It cannot be applied: {parked.grant.problem}.",
                           code="parked_grant_unusable")  # fmt: skip
        outcome = await self.apply(parked.grant, tenant)
        if outcome.status == "parked" and outcome.parked is not None:
            raise Conflict(f"It cannot be applied: {outcome.parked.reason}.",
                           code="parked_grant_unusable")  # fmt: skip
        await self.inbox.settle_parked(parked_id, tenant, self.clock())
        settled = await self.inbox.get_parked(parked_id)
        assert settled is not None
        return settled

    def _granter(self) -> CreditGranter:
        if self.granter is None:
            raise ServiceUnavailable(
                "Prepaid credits are not available in this gateway; the billing system "
                "should retry the delivery.",
                code="credits_unavailable",
            )
        return self.granter

"""Admission that tells of its refusals for want of money (``budget_exceeded``,
``insufficient_credits``): the upsell hook (``farebox.billing.upsell.UpsellRecorder.refused``,
handed in by ``app.py``). The hook is told the tenant, its plan and the error, and must not
block: it runs on the request path."""

from __future__ import annotations

from collections.abc import Callable

from farebox.core.routing import Target
from farebox.errors import BudgetExceeded, FareboxError, InsufficientCredits
from farebox.gateway.admission import Admitter
from farebox.gateway.call import Call

Refused = Callable[[str, str, FareboxError], None]


class NotingAdmitter(Admitter):
    refused: Refused | None = None  # set by the gateway when the upsell hook is wired

    async def admit(
        self, call: Call, targets: tuple[Target, ...], input_tokens: int, output: bool = True
    ) -> tuple[Target, ...]:
        try:
            return await super().admit(call, targets, input_tokens, output)
        except (BudgetExceeded, InsufficientCredits) as exc:
            if self.refused is not None:
                self.refused(call.principal.tenant.id, call.plan.name, exc)
            raise

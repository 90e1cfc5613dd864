"""Prepaid credits, granted and read: ``POST /admin/v1/tenants/{id}/credits`` (a top-up, a
promotional grant with an expiry, a refund; once per idempotency key) and
``GET /admin/v1/tenants/{id}/credits`` (balance, held in flight, burned, granted and each
grant, as exact decimal strings of credits).

A grant is made in credits at the rate of the tenant's plan (``pricing.credits.per_usd``);
the balance is kept in pico-USD of revenue (``farebox.billing.credits``).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field

from farebox.api.admin.params import parse_time
from farebox.api.context import Services
from farebox.billing.credits import CreditBook
from farebox.core.credits import CreditRate
from farebox.core.money import PICO_PER_USD, MoneyFormatError
from farebox.errors import InvalidRequest
from farebox.identity.tenancy import Tenancy

MAX_UNIX = 253_402_300_799.0  # 9999-12-31T23:59:59Z


class CreditGrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: str = Field(
        max_length=64, description="Credits to grant, a positive decimal string.", examples=["1500"]
    )
    idempotency_key: str = Field(
        min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$",
        description="One grant per tenant and key: a repeat answers the first grant.",
    )  # fmt: skip
    expires_at: float | str | None = Field(
        None, description="When the grant's unused credits expire (unix seconds or ISO 8601)."
    )
    kind: Literal["top_up", "promo", "refund"] = "top_up"
    note: str | None = Field(None, max_length=1000)


class CreditGrantOut(BaseModel):
    """One credit grant, as GET /admin/v1/tenants/{id}/credits lists it."""

    id: str
    kind: str = Field(description="top_up, promo or refund (or a billing system's).")
    amount: str = Field(description="Credits granted, an exact decimal string.")
    remaining: str
    burned: str
    expired: str
    expires_at: float | None
    created_at: float
    source: str
    idempotency_key: str
    note: str | None = None


class CreditsOut(BaseModel):
    """A prepaid tenant's credits (GET /admin/v1/tenants/{id}/credits)."""

    tenant: str
    per_usd: str = Field(description="Credits per USD of revenue (the plan's rate).")
    balance: str = Field(description="Credits left now (held in flight excluded).")
    reserved: str = Field(description="Credits held by requests in flight.")
    burned: str = Field(description="Credits burned so far.")
    granted: str = Field(description="Credits ever granted.")
    expired: str = Field(description="Credits that expired unused.")
    grants: list[CreditGrantOut]


class CreditRoutes:
    """The handlers of ``/tenants/{tenant_id}/credits``."""

    def __init__(self, services: Services, tenancy: Tenancy) -> None:
        self.services = services
        self.tenancy = tenancy

    def _book(self) -> CreditBook:
        book = self.services.budgets.credits
        if book is None:  # pragma: no cover - every app makes one
            raise InvalidRequest("Credits are not available on this gateway.")
        return book

    async def _rate(self, tenant_id: str) -> CreditRate:
        tenant = await self.tenancy.tenant(tenant_id)  # 404 for an unknown tenant
        plan = self.services.gateway.plan_of(tenant)
        if plan.credits is None:
            raise InvalidRequest(
                f"Tenant {tenant_id!r} is on plan {plan.name!r}, which is not prepaid: give "
                "the plan pricing.credits (for example {per_usd: 1000}) to grant it credits.",
                param="tenant_id",
            )
        return plan.credits.rate

    async def grant(self, tenant_id: str, body: CreditGrantIn, response: Response) -> CreditsOut:
        """Grant credits (201), or answer the grant already made under the idempotency key
        (200); the same key for another amount or kind is 409."""
        rate = await self._rate(tenant_id)
        amount = _amount(rate, body.amount)
        expires = _expiry(body.expires_at, self.tenancy.now())
        _, created = await self._book().grant(
            tenant_id, amount, body.kind, body.idempotency_key, expires, "admin", body.note
        )
        response.status_code = 201 if created else 200
        return await self._view(tenant_id, rate)

    async def credits(self, tenant_id: str) -> CreditsOut:
        """The tenant's balance, held in flight, burned, granted and expired credits, and
        each grant (what it has left, burned first-to-expire first)."""
        return await self._view(tenant_id, await self._rate(tenant_id))

    async def _view(self, tenant_id: str, rate: CreditRate) -> CreditsOut:
        balance = await self._book().balance(tenant_id)
        view: dict[str, Any] = balance.view(rate)
        return CreditsOut(tenant=tenant_id, per_usd=rate.credits(PICO_PER_USD), **view)


def _amount(rate: CreditRate, text: str) -> int:
    try:
        amount = rate.to_pico(text, field="amount")
    except MoneyFormatError as exc:
        raise InvalidRequest(f"'amount': {exc}", param="amount") from None
    if amount <= 0:
        raise InvalidRequest(
            f"'amount' must be a positive number of credits (got {text!r:.40}).", param="amount"
        )
    return amount


def _expiry(value: float | str | None, now: float) -> float | None:
    if value is None:
        return None
    try:
        moment = parse_time(str(value), "expires_at")
    except (OverflowError, ValueError):
        moment = None
    if moment is None or not now < moment <= MAX_UNIX:  # also NaN
        raise InvalidRequest(
            f"'expires_at' must be a future time, unix seconds or ISO 8601 (got {value!r:.60}).",
            param="expires_at",
        )
    return moment

"""Issue [13], "Seen" on the dashboard: the admin's revenue page (plan profitability, top
spenders, credit balances of prepaid tenants) and a tenant's own credits and invoice preview.

Every number comes from the admin API's own handlers (``/plan-profitability``,
``/top-spenders``, ``/tenants/{id}/credits``, ``/tenants/{id}/invoice``), so the pages show
the API's exact decimal strings for the same data. The page is a list of panels: each is a
name in ``PANELS``, a method here returning its data, and a template
``panel_{name}.html`` rendering it; a new report's panel is those three, a few lines.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from farebox.api.admin.billing import MONTH_PATTERN, BillingRoutes
from farebox.api.admin.credits import CreditRoutes
from farebox.api.admin.invoices import InvoiceRoutes
from farebox.api.admin.reports import ReportRoutes
from farebox.api.admin.revenue import RevenueRoutes, reprice_body, upsell_window
from farebox.api.context import Services
from farebox.billing.margins import month_of, month_window, past_month
from farebox.billing.upsell import MAX_WINDOW_DAYS
from farebox.errors import InvalidRequest
from farebox.identity.tenancy import Tenancy

TOP = 10  # top spenders shown, by revenue and by cost
BALANCES_PER_PAGE = 50  # prepaid tenants whose balances a page of the credits panel reads
DAY = 86_400
# the what-if form's fields: the API's body fields; ``resale_*`` make its ``resale`` object
PRICE_FIELDS = ("markup", "per_request", "monthly_fee_usd")
RESALE_FIELDS = ("input", "output", "cached_input")


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def shift(month: str, by: int) -> str:
    """The month ``by`` months after ``month`` (``2026-01``, -1: ``2025-12``)."""
    year, mon = (int(x) for x in month.split("-"))
    index = year * 12 + mon - 1 + by
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def _kept(params: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Each panel form's own fields as asked, for the other forms to carry along (hidden), so
    asking a what-if keeps the upsell window and the other way round."""
    whatif = ("plan", *PRICE_FIELDS, *(f"resale_{n}" for n in RESALE_FIELDS))
    own = {"upsell": ("window_days",), "reprice": whatif}
    return {panel: {n: params[n] for n in names if params.get(n)} for panel, names in own.items()}


def burn(credits: dict[str, Any], invoice: dict[str, Any], now: float) -> dict[str, Any]:
    """A prepaid tenant's burn this month: the credits the month burned (the invoice's), the
    average a day so far, in the plan's exact credits, and the whole days the balance lasts
    at that rate (None when nothing burned)."""
    start, _ = month_window(invoice["month"])
    days = max(1, -(-int(now - start) // DAY))  # the days begun this month
    month_burn = invoice["credits_burned"] or "0"
    per_day = _decimal_div(month_burn, days)
    left = _units(credits["balance"])
    spent = _units(month_burn)
    runway = None if spent[0] == 0 else _ratio_days(left, spent, days)
    return {"month": month_burn, "per_day": per_day, "days": days, "runway_days": runway}


def _units(text: str) -> tuple[int, int]:
    """A non-negative decimal string as (numerator, 10**places)."""
    whole, _, frac = text.partition(".")
    scale = 10 ** len(frac)
    return int(whole) * scale + (int(frac) if frac else 0), scale


def _decimal_div(text: str, days: int) -> str:
    """``text / days`` to 2 places, floored (a display of the average, not money)."""
    value, scale = _units(text)
    hundredths = value * 100 // (scale * days)
    return f"{hundredths // 100}.{hundredths % 100:02d}"


def _ratio_days(left: tuple[int, int], spent: tuple[int, int], days: int) -> int:
    """Whole days ``left`` lasts at ``spent / days`` a day."""
    return (left[0] * spent[1] * days) // (left[1] * spent[0])


class RevenueData:
    """The revenue panels (admin) and a tenant's credits and invoice, by the API's handlers."""

    PANELS: tuple[tuple[str, str], ...] = (
        ("profitability", "Plan profitability"),
        ("top_spenders", "Top spenders"),
        ("credits", "Credit balances (prepaid tenants)"),
        ("upsell", "Upsell conversion"),
        ("reprice", "What-if repricing"),
    )

    def __init__(
        self, services: Services, tenancy: Tenancy, billing: BillingRoutes,
        clock: Callable[[], float],
    ) -> None:  # fmt: skip
        self.services = services
        self.tenancy = tenancy
        self.billing = billing
        self.clock = clock
        self.credits = CreditRoutes(services, tenancy)
        self.invoices = InvoiceRoutes(services, clock)
        self.reports = ReportRoutes(services, tenancy)
        self.revenue = RevenueRoutes(services, tenancy)

    def month(self, asked: str | None) -> str:
        """The month asked for (a 400 when malformed or in the future), or this one."""
        if not asked:
            return month_of(self.clock())
        if not re.fullmatch(MONTH_PATTERN, asked):
            raise InvalidRequest(
                f"'month' must look like 2026-11 (got {asked!r:.40}).", param="month"
            )
        past_month(asked, self.clock())
        return asked

    async def page(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The revenue page of a UTC month (``?month=``, default this one): each panel's
        data, in ``PANELS`` order; a panel may read its own parameters from ``params``."""
        month = self.month(params.get("month"))
        makers: dict[str, Callable[[str, Mapping[str, str]], Awaitable[Any]]] = {
            "profitability": self.profitability,
            "top_spenders": self.top_spenders,
            "credits": self.balances,
            "upsell": self.upsell,
            "reprice": self.what_if,
        }
        found = await asyncio.gather(*(makers[name](month, params) for name, _ in self.PANELS))
        panels = [
            {"name": name, "title": title, "data": data}
            for (name, title), data in zip(self.PANELS, found, strict=True)
        ]
        current = month_of(self.clock())
        return {"month": month, "previous": shift(month, -1),
                "next": shift(month, 1) if month < current else None, "panels": panels,
                "bad": any(p["data"].get("error") for p in panels),
                "kept": _kept(params)}  # fmt: skip

    async def profitability(self, month: str, params: Mapping[str, str]) -> dict[str, Any]:
        """As ``GET /admin/v1/plan-profitability?month=``."""
        return await self.billing.profitability(month=month)

    async def top_spenders(self, month: str, params: Mapping[str, str]) -> dict[str, Any]:
        """As ``GET /admin/v1/top-spenders`` over the month, by revenue and by cost."""
        start, end = (str(int(x)) for x in month_window(month))
        by_revenue = await self.reports.top_spenders(start, end, "revenue", TOP)
        by_cost = await self.reports.top_spenders(start, end, "cost", TOP)
        return {"revenue": by_revenue, "cost": by_cost, "plans": await self._plans()}

    async def _plans(self) -> dict[str, str]:
        tenants = await self.services.store.list_tenants()
        return {x.id: self.services.gateway.plan_name(x) for x in tenants}

    async def balances(self, month: str, params: Mapping[str, str]) -> dict[str, Any]:
        """One page (``?credits_page=``) of the prepaid tenants, by id, each with its credits
        now (as ``GET /admin/v1/tenants/{id}/credits``; the month does not apply): a page
        reads ``BALANCES_PER_PAGE`` balances, however many tenants are prepaid."""
        gateway = self.services.gateway
        tenants = await self.services.store.list_tenants()
        prepaid = sorted((x for x in tenants if gateway.plan_of(x).credits), key=lambda x: x.id)
        pages = max(1, -(-len(prepaid) // BALANCES_PER_PAGE))
        page = min(max(_int(params.get("credits_page"), 1), 1), pages)
        shown = prepaid[(page - 1) * BALANCES_PER_PAGE : page * BALANCES_PER_PAGE]
        rows = [
            {**(await self.credits.credits(x.id)).model_dump(), "plan": gateway.plan_name(x)}
            for x in shown
        ]
        return {"rows": rows, "count": len(prepaid), "page": page, "pages": pages}

    async def upsell(self, month: str, params: Mapping[str, str]) -> dict[str, Any]:
        """As ``GET /admin/v1/upsell?month=&window_days=`` (``?window_days=``, default 14);
        a bad window: the API's 400 message, shown in the panel."""
        asked = params.get("window_days") or None
        shown = {"window_days": asked or "14", "max_days": MAX_WINDOW_DAYS}
        try:
            days = upsell_window(asked)
            return {**shown, "report": await self.revenue.upsell(month, days), "error": None}
        except InvalidRequest as exc:
            return {**shown, "report": None, "error": exc.message}

    async def what_if(self, month: str, params: Mapping[str, str]) -> dict[str, Any]:
        """The what-if form, and when it names a plan (``?plan=``), ``POST /admin/v1/reprice``
        for the month with the proposed price (nothing changes, so a GET); bad input: the
        API's 400 message, shown in the panel."""
        form = {n: params.get(n, "") for n in ("plan", *PRICE_FIELDS)}
        form |= {f"resale_{n}": params.get(f"resale_{n}", "") for n in RESALE_FIELDS}
        shown = {"plans": sorted(self.services.settings.file.plans), "form": form}
        if not form["plan"]:
            return {**shown, "result": None, "error": None}
        body: dict[str, Any] = {"month": month, "plan": form["plan"]}
        body |= {n: form[n] for n in PRICE_FIELDS if form[n]}
        resale = {n: form[f"resale_{n}"] for n in RESALE_FIELDS if form[f"resale_{n}"]}
        if resale:
            body["resale"] = resale
        try:
            return {**shown, "result": await self.revenue.what_if(reprice_body(body)),
                    "error": None}  # fmt: skip
        except InvalidRequest as exc:
            return {**shown, "result": None, "error": exc.message}

    async def tenant(self, tenant_id: str) -> dict[str, Any]:
        """A tenant's own: its credits and burn (None unless its plan is prepaid) and this
        month's invoice preview."""
        month = month_of(self.clock())
        invoice = await self.invoices.tenant_invoice(tenant_id, month)
        found = await self.tenancy.tenant(tenant_id)
        if self.services.gateway.plan_of(found).credits is None:
            return {"credits": None, "burn": None, "invoice": invoice}
        credits = (await self.credits.credits(tenant_id)).model_dump()
        return {"credits": credits, "burn": burn(credits, invoice, self.clock()),
                "invoice": invoice}  # fmt: skip

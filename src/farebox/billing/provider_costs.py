"""The providers' own cost reports, read through their admin APIs, as neutral rows: one
``CostRow`` (UTC day, the provider's model label, exact pico-USD) per reported line.

OpenAI, the organization costs API (OpenAI's OpenAPI spec, ``/organization/costs``,
operation ``usage-costs``; schemas ``UsageResponse``, ``UsageTimeBucket``, ``CostsResult``)::

    GET {base_url}/organization/costs?start_time=<unix s>&end_time=<unix s, exclusive>
        &bucket_width=1d&group_by=line_item&limit=<1..180>[&page=<next_page>]
    Authorization: Bearer <admin key>
    -> {"object": "page", "data": [{"object": "bucket", "start_time", "end_time",
        "results": [{"object": "organization.costs.result",
                     "amount": {"value": 0.06, "currency": "usd"},
                     "line_item": "gpt-4o-mini-2024-07-18, input", "project_id": null, ...}]}],
        "has_more": bool, "next_page": str | null}

``amount.value`` is a JSON number in USD (some accounts see a decimal string): its text is
read exactly (``json`` with ``parse_float=Decimal``, never a float). A ``line_item`` is
``"<model>, <what>"`` (input, output, cached input...): the model is the text before the
last comma.

Anthropic, the cost report API (platform.claude.com/docs/en/api/admin/cost_report;
the SDK's ``CostReport``)::

    GET {base_url}/v1/organizations/cost_report?starting_at=<RFC 3339>&ending_at=<RFC 3339>
        &bucket_width=1d&group_by[]=description&limit=<buckets>[&page=<next_page>]
    x-api-key: <admin key>; anthropic-version: 2023-06-01
    -> {"data": [{"starting_at", "ending_at", "results": [{"amount": "123.45",
        "currency": "USD", "description", "model", "cost_type", "token_type",
        "service_tier", "context_window", "workspace_id"}]}], "has_more", "next_page"}

``amount`` is a decimal string in the currency's lowest unit, cents: ``"123.45"`` is
USD 1.2345. A result's label is its ``model`` (token costs), else its ``description`` (web
search, code execution).

Exactness: amounts become integer pico-USD by integer arithmetic on the decimal digits. A
value finer than a pico-dollar (an amount serialised from a binary float, such as
``0.30000000000000004``) is rounded half to even at the twelfth decimal, and only then.
Paging follows ``next_page`` while ``has_more`` is true, up to ``MAX_PAGES``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from typing import Any, Protocol

from farebox.errors import UpstreamError
from farebox.http.client import HttpClient, parse_error_body
from farebox.http.sanitize import scrub

OPENAI_ADMIN_URL = "https://api.openai.com/v1"
ANTHROPIC_ADMIN_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
MAX_PAGES = 200  # a month in daily buckets is a page or a few; beyond this a cursor loops
PAGE_BUCKETS = 31  # buckets asked per page: a month (both APIs allow 31 daily buckets)
UNGROUPED = "(ungrouped)"


@dataclass(frozen=True, slots=True)
class CostRow:
    """One line of a provider's cost report: ``day`` (``YYYY-MM-DD``, the UTC bucket's
    start), ``label`` (the provider's model name for it), ``amount`` in pico-USD."""

    day: str
    label: str
    amount: int


class CostSource(Protocol):
    """A provider's cost report, read for ``[start, end)`` (whole UTC days, unix seconds)."""

    provider: str

    async def fetch(self, start: int, end: int) -> list[CostRow]: ...


def decimal_pico(value: Decimal, scale: int, where: str) -> int:
    """``value`` x 10**``scale`` as an integer, exactly (half-even below one unit)."""
    if not value.is_finite():
        raise UpstreamError(f"{where}: the amount {value} is not a finite number")
    with localcontext() as ctx:
        ctx.prec = max(64, len(value.as_tuple().digits) + scale + 2)
        return int(value.scaleb(scale).to_integral_value(rounding=ROUND_HALF_EVEN))


def amount_pico(value: Any, scale: int, where: str) -> int:
    """A JSON amount (a number read as ``Decimal``, an integer, or a decimal string) as
    pico-USD: ``scale`` 12 for an amount in USD, 10 for one in cents."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise UpstreamError(f"{where}: expected a decimal amount, got {value!r}")
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise UpstreamError(f"{where}: {value!r} is not a decimal amount") from None
    return decimal_pico(number, scale, where)


def exact_json(body: bytes, where: str) -> dict[str, Any]:
    """A JSON object whose non-integer numbers are read as ``Decimal`` from their text."""
    try:
        data = json.loads(body, parse_float=Decimal)
    except ValueError:
        raise UpstreamError(f"{where}: the answer is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UpstreamError(f"{where}: the answer has no 'data' list")
    return data


def utc_day(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def rfc3339(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def line_item_model(line_item: Any) -> str:
    """OpenAI's ``"gpt-4o-mini-2024-07-18, input"`` -> ``"gpt-4o-mini-2024-07-18"``."""
    if not isinstance(line_item, str) or not line_item.strip():
        return UNGROUPED
    return line_item.rsplit(",", 1)[0].strip() if "," in line_item else line_item.strip()


class AdminReport:
    """What both clients share: the admin GET, its errors, and paging by ``next_page``."""

    provider = ""
    path = ""

    def __init__(
        self, provider: str, http: HttpClient, base_url: str, key: str, timeout_s: float = 60.0
    ) -> None:
        self.provider = provider
        self._http = http
        self._url = base_url.rstrip("/") + self.path
        self._key = key
        self._timeout_s = timeout_s

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def query(self, start: int, end: int) -> dict[str, str | int]:
        raise NotImplementedError

    def rows(self, bucket: Mapping[str, Any], where: str) -> list[CostRow]:
        raise NotImplementedError

    async def fetch(self, start: int, end: int) -> list[CostRow]:
        """Every page of the report for ``[start, end)``, as rows."""
        out: list[CostRow] = []
        page: str | None = None
        for number in range(MAX_PAGES):
            query = self.query(start, end) | ({"page": page} if page else {})
            data = await self._page(query, f"{self.provider} cost report, page {number + 1}")
            for bucket in data["data"]:
                if not isinstance(bucket, dict) or not isinstance(bucket.get("results"), list):
                    raise UpstreamError(f"{self.provider} cost report: a bucket has no results")
                out.extend(self.rows(bucket, f"{self.provider} cost report"))
            page = data.get("next_page")
            if not data.get("has_more") or not isinstance(page, str) or not page:
                return out
        raise UpstreamError(f"{self.provider} cost report: more than {MAX_PAGES} pages")

    async def _page(self, query: dict[str, str | int], where: str) -> dict[str, Any]:
        response = await self._http.get_json(self._url, query, self.headers(), self._timeout_s)
        if response.status != 200:
            error = parse_error_body(response.body)
            detail = scrub(str(error.get("message") or "no message"))
            raise UpstreamError(
                f"{where}: the admin API answered HTTP {response.status} ({detail})",
                upstream_status=response.status,
            )
        return exact_json(response.body, where)


class OpenAICosts(AdminReport):
    """OpenAI's organization costs, per day and line item (an admin key, ``sk-admin-...``)."""

    path = "/organization/costs"

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._key}", "accept": "application/json"}

    def query(self, start: int, end: int) -> dict[str, str | int]:
        return {"start_time": start, "end_time": end, "bucket_width": "1d",
                "group_by": "line_item", "limit": PAGE_BUCKETS}  # fmt: skip

    def rows(self, bucket: Mapping[str, Any], where: str) -> list[CostRow]:
        start = bucket.get("start_time")
        if isinstance(start, bool) or not isinstance(start, int):
            raise UpstreamError(f"{where}: a bucket's start_time is not unix seconds")
        day, out = utc_day(start), []
        for result in bucket["results"]:
            amount = result.get("amount") if isinstance(result, dict) else None
            if not isinstance(amount, dict):
                raise UpstreamError(f"{where}: a result on {day} has no amount")
            currency = str(amount.get("currency") or "usd").lower()
            if currency != "usd":
                raise UpstreamError(f"{where}: an amount on {day} is in {currency}, not usd")
            pico = amount_pico(amount.get("value"), 12, where)
            out.append(CostRow(day, line_item_model(result.get("line_item")), pico))
        return out


class AnthropicCosts(AdminReport):
    """Anthropic's cost report, per day and description (an admin key, ``sk-ant-admin...``)."""

    path = "/v1/organizations/cost_report"

    def headers(self) -> dict[str, str]:
        return {"x-api-key": self._key, "anthropic-version": ANTHROPIC_VERSION,
                "accept": "application/json"}  # fmt: skip

    def query(self, start: int, end: int) -> dict[str, str | int]:
        return {"starting_at": rfc3339(start), "ending_at": rfc3339(end), "bucket_width": "1d",
                "group_by[]": "description", "limit": PAGE_BUCKETS}  # fmt: skip

    def rows(self, bucket: Mapping[str, Any], where: str) -> list[CostRow]:
        try:
            moment = datetime.fromisoformat(str(bucket.get("starting_at")).replace("Z", "+00:00"))
        except ValueError:
            raise UpstreamError(f"{where}: a bucket's starting_at is not RFC 3339") from None
        day = moment.astimezone(UTC).strftime("%Y-%m-%d")
        out = []
        for result in bucket["results"]:
            if not isinstance(result, dict):
                raise UpstreamError(f"{where}: a result on {day} is not an object")
            currency = str(result.get("currency") or "USD").upper()
            if currency != "USD":
                raise UpstreamError(f"{where}: an amount on {day} is in {currency}, not USD")
            label = result.get("model") or result.get("description") or UNGROUPED
            out.append(CostRow(day, str(label), amount_pico(result.get("amount"), 10, where)))
        return out


def cost_source(
    provider: str, kind: str, http: HttpClient, key: str, base_url: str | None, timeout_s: float
) -> CostSource:
    """The client for ``provider`` of ``kind`` (``openai`` or ``anthropic``)."""
    if kind == "anthropic":
        return AnthropicCosts(provider, http, base_url or ANTHROPIC_ADMIN_URL, key, timeout_s)
    return OpenAICosts(provider, http, base_url or OPENAI_ADMIN_URL, key, timeout_s)

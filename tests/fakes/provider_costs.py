"""Loopback fakes of the providers' cost report admin APIs, in their documented shapes.

- ``OpenAICostsFake``: ``GET /v1/organization/costs`` (OpenAI's OpenAPI spec, operation
  ``usage-costs``: ``UsageResponse`` of ``UsageTimeBucket`` of ``CostsResult``), bearer admin
  key, ``start_time`` (required) / ``end_time`` unix seconds, ``bucket_width=1d``,
  ``group_by`` of ``line_item|project_id|api_key_id``, ``limit`` 1..180, ``page`` cursor.
  ``amount.value`` is written as a JSON *number* from its decimal text.
- ``AnthropicCostsFake``: ``GET /v1/organizations/cost_report`` (the Admin API's cost
  report), ``x-api-key`` admin key and ``anthropic-version``, ``starting_at`` / ``ending_at``
  RFC 3339, ``bucket_width=1d``, ``group_by[]`` of ``workspace_id|description``, ``limit``
  1..31, ``page``. ``amount`` is a decimal string in cents.

Both answer one bucket per UTC day of the range and at most ``page_size`` buckets a page,
with ``has_more`` and an opaque ``next_page``; costs are set per day with ``charge``.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, Self

import orjson
from aiohttp import web

from fakes import serve

DAY = 86_400
JSON = dict[str, Any]
NUMBER = re.compile(r'"@num:(-?\d+(?:\.\d+)?)"')
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class CostsFake:
    """The shared server: one route, the request log, the charges, day buckets, paging."""

    path = ""
    max_limit = 31

    def __init__(self, admin_key: str, *, page_size: int = 7) -> None:
        self.admin_key = admin_key
        self.page_size = page_size
        self.charges: dict[str, list[JSON]] = defaultdict(list)  # "YYYY-MM-DD" -> results
        self.requests: list[web.Request] = []
        self.queries: list[dict[str, list[str]]] = []
        self._runner: web.AppRunner | None = None
        self._served = asyncio.Condition()
        self.port = 0

    async def wait_requests(self, count: int) -> None:
        """Until ``count`` requests have come (bound it with ``asyncio.wait_for``)."""
        async with self._served:
            await self._served.wait_for(lambda: len(self.requests) >= count)

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_get(self.path, self._handle)
        self._runner, self.port = await serve(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        async with self._served:
            self._served.notify_all()
        query: dict[str, list[str]] = defaultdict(list)
        for name, value in request.query.items():
            query[name].append(value)
        self.queries.append(dict(query))
        refusal = self.refuse(request, query)
        if refusal is not None:
            return refusal
        start, end, limit = self.window(query)
        days = list(range(start - start % DAY, end, DAY))
        offset = _offset(query.get("page", [""])[0])
        page = days[offset : offset + min(limit, self.page_size)]
        more = offset + len(page) < len(days)
        body = {
            "data": [self.bucket(day, query) for day in page],
            "has_more": more,
            "next_page": _cursor(offset + len(page)) if more else None,
        }
        return _json(200, self.wrap(body))

    def refuse(self, request: web.Request, query: dict[str, list[str]]) -> web.Response | None:
        raise NotImplementedError

    def window(self, query: dict[str, list[str]]) -> tuple[int, int, int]:
        raise NotImplementedError

    def bucket(self, day: int, query: dict[str, list[str]]) -> JSON:
        raise NotImplementedError

    def wrap(self, body: JSON) -> JSON:
        return body


class OpenAICostsFake(CostsFake):
    path = "/v1/organization/costs"
    max_limit = 180

    @property
    def base_url(self) -> str:
        return self.root_url + "/v1"

    def charge(self, day: str, line_item: str, usd: str) -> None:
        """The provider bills ``usd`` (a decimal text) on ``day`` for ``line_item``."""
        result = {"object": "organization.costs.result",
                  "amount": {"value": f"@num:{usd}", "currency": "usd"},
                  "line_item": line_item, "project_id": None, "api_key_id": None,
                  "quantity": None, "quantity_unit": None}  # fmt: skip
        self.charges[day].append(result)

    def refuse(self, request: web.Request, query: dict[str, list[str]]) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.admin_key}":
            return _error(401, "Incorrect API key provided. An admin key is required.")
        problems = [
            "start_time is required (unix seconds)"
            if not query.get("start_time", [""])[0].isdigit()
            else None,
            "end_time must be unix seconds"
            if query.get("end_time") and not query["end_time"][0].isdigit()
            else None,
            "bucket_width must be 1d" if query.get("bucket_width", ["1d"]) != ["1d"] else None,
            "group_by must be project_id, line_item or api_key_id"
            if set(query.get("group_by", [])) - {"project_id", "line_item", "api_key_id"}
            else None,
            "limit must be between 1 and 180" if not _limit_ok(query, self.max_limit) else None,
        ]
        message = next((p for p in problems if p), None)
        return _error(400, message) if message else None

    def window(self, query: dict[str, list[str]]) -> tuple[int, int, int]:
        start = int(query["start_time"][0])
        end = int(query["end_time"][0]) if query.get("end_time") else start + 7 * DAY
        return start, end, int(query.get("limit", ["7"])[0])

    def bucket(self, day: int, query: dict[str, list[str]]) -> JSON:
        results = self.charges.get(_day(day), [])
        if "line_item" not in query.get("group_by", []):  # one ungrouped total
            results = [{**results[0], "line_item": None}] if results else []
        return {"object": "bucket", "start_time": day, "end_time": day + DAY, "results": results}

    def wrap(self, body: JSON) -> JSON:
        return {"object": "page", **body}


class AnthropicCostsFake(CostsFake):
    path = "/v1/organizations/cost_report"

    @property
    def base_url(self) -> str:
        return self.root_url

    def charge(self, day: str, model: str, token_type: str, cents: str) -> None:
        """The provider bills ``cents`` (a decimal string of cents) on ``day``."""
        words = token_type.replace("_", " ").replace("uncached ", "").title()
        self.charges[day].append({
            "amount": cents, "currency": "USD", "description": f"{model} Usage - {words}",
            "model": model, "cost_type": "tokens", "token_type": token_type,
            "service_tier": "standard", "context_window": "0-200k", "workspace_id": None,
            "inference_geo": None,
        })  # fmt: skip

    def refuse(self, request: web.Request, query: dict[str, list[str]]) -> web.Response | None:
        if request.headers.get("x-api-key") != self.admin_key:
            return _error(401, "invalid x-api-key", anthropic=True)
        if not request.headers.get("anthropic-version"):
            return _error(400, "anthropic-version: header is required", anthropic=True)
        problems = [
            "starting_at is required (RFC 3339)"
            if not RFC3339.match(query.get("starting_at", [""])[0])
            else None,
            "ending_at must be RFC 3339"
            if query.get("ending_at") and not RFC3339.match(query["ending_at"][0])
            else None,
            "bucket_width must be 1d" if query.get("bucket_width", ["1d"]) != ["1d"] else None,
            "group_by[] must be workspace_id or description"
            if set(query.get("group_by[]", [])) - {"workspace_id", "description"}
            else None,
            "limit must be between 1 and 31" if not _limit_ok(query, self.max_limit) else None,
        ]
        message = next((p for p in problems if p), None)
        return _error(400, message, anthropic=True) if message else None

    def window(self, query: dict[str, list[str]]) -> tuple[int, int, int]:
        start = int(_parse(query["starting_at"][0]))
        end = int(_parse(query["ending_at"][0])) if query.get("ending_at") else start + 7 * DAY
        return start, end, int(query.get("limit", ["7"])[0])

    def bucket(self, day: int, query: dict[str, list[str]]) -> JSON:
        results = self.charges.get(_day(day), [])
        return {"starting_at": _rfc(day), "ending_at": _rfc(day + DAY), "results": results}


def _limit_ok(query: dict[str, list[str]], most: int) -> bool:
    text = query.get("limit", ["7"])[0]
    return text.isdigit() and 1 <= int(text) <= most


def _offset(cursor: str) -> int:
    return int(base64.urlsafe_b64decode(cursor.encode()).decode()[5:]) if cursor else 0


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"page_{offset}".encode()).decode()


def _day(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def _rfc(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _json(status: int, body: JSON) -> web.Response:
    text = NUMBER.sub(r"\1", orjson.dumps(body).decode())  # amounts as JSON numbers, exactly
    return web.Response(status=status, text=text, content_type="application/json")


def _error(status: int, message: str, *, anthropic: bool = False) -> web.Response:
    if anthropic:
        kind = "authentication_error" if status == 401 else "invalid_request_error"
        return _json(status, {"type": "error", "error": {"type": kind, "message": message}})
    return _json(status, {"error": {"message": message, "type": "invalid_request_error",
                                    "param": None, "code": None}})  # fmt: skip

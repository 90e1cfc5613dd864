"""Rendering: the Jinja2 templates (autoescaped), the vendored static files, and the security
headers every dashboard response carries.

Everything the browser loads ships in this package (``templates/`` and ``static/``, with uPlot
and its licence); nothing comes from a CDN and nothing is built or fetched at run time. The
Content-Security-Policy allows scripts, styles and connections to this origin only, and no
inline script: data reaches the scripts as ``<script type="application/json">`` blocks or from
``/dashboard/data/...``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from types import MappingProxyType
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, Response

from farebox.core.money import format_usd

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "same-origin",  # "no-referrer" would make a form POST's Origin "null"
        "Cross-Origin-Opener-Policy": "same-origin",
    }
)
CONTENT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".svg": "image/svg+xml",
        ".LICENSE": "text/plain; charset=utf-8",
        ".txt": "text/plain; charset=utf-8",
    }
)


def _utc(ts: float | None) -> str:
    if ts is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _percent(rate: str | None) -> str:
    """A hit rate as the API gives it (``"0.4000"``) as a percentage (``"40.00%"``), exactly;
    a dash when there were no lookups."""
    if rate is None:
        return "–"
    return f"{Decimal(rate) * 100:.2f}%"


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("farebox.api.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["utc"] = _utc
    env.filters["percent"] = _percent
    env.globals["usd"] = format_usd
    env.filters["dollars"] = dollars
    return env


def secure(response: Response, *, cache: bool = False) -> Response:
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "public, max-age=3600" if cache else "no-store"
    return response


class Pages:
    """The templates and static files of the dashboard, loaded from the package."""

    def __init__(self) -> None:
        self.env = environment()
        self.static = _static_files()

    def render(self, name: str, status: int = 200, **context: Any) -> Response:
        html = self.env.get_template(name).render(status=status, **context)
        return secure(HTMLResponse(html, status_code=status))

    def asset(self, name: str) -> Response | None:
        """A static file by its exact name (only the files the package ships), or None."""
        found = self.static.get(name)
        if found is None:
            return None
        body, content_type = found
        return secure(Response(body, media_type=content_type), cache=True)


def _static_files() -> dict[str, tuple[bytes, str]]:
    folder = resources.files("farebox.api.dashboard").joinpath("static")
    out = {}
    for item in folder.iterdir():
        suffix = "." + item.name.rsplit(".", 1)[-1] if "." in item.name else ""
        content_type = CONTENT_TYPES.get(suffix)
        if item.is_file() and content_type:
            out[item.name] = (item.read_bytes(), content_type)
    return out


def dollars(amount: str) -> str:
    """An exact USD string for people: ``$0.50``, ``-$0.50`` (the sign before the dollar)."""
    return f"-${amount[1:]}" if amount.startswith("-") else f"${amount}"

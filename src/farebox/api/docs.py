"""``/docs``: Swagger UI, only when ``server.docs`` is on, and only with the admin key.

The page carries the OpenAPI document inline (the browser fetches nothing with the key but
the page itself), and loads Swagger UI's two files from ``server.docs_assets_url`` (your own
copy) or, when that is unset, from the public CDN FastAPI uses: turning docs on with no
``docs_assets_url`` is the operator's choice to load them from there.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

CDN = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Farebox API</title>
<link rel="stylesheet" href="{base}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{base}/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{spec: {spec}, dom_id: "#swagger-ui"}});</script>
</body></html>
"""


def docs_page(spec: dict[str, object], assets_url: str | None) -> str:
    """The Swagger UI page with ``spec`` inline, safe inside a ``<script>`` element."""
    inline = orjson.dumps(spec).decode().replace("</", "<\\/")
    base = (assets_url or CDN).rstrip("/")
    return PAGE.format(base=base.replace('"', "%22"), spec=inline)


def add_docs(app: FastAPI, assets_url: str | None) -> None:
    """Serve ``GET /docs`` (the gate in front of the app asks for the admin key)."""

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(docs_page(app.openapi(), assets_url))

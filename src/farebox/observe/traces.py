"""OpenTelemetry traces (the ``farebox[otel]`` extra), opened lazily.

``build_tracing`` is the only door: with ``tracing.enabled: false`` (the default) it returns
``None`` and nothing of OpenTelemetry is imported; the request path then pays one attribute
check per hook. Enabled, it imports the SDK (a clear ``ConfigError`` naming the extra when it
is missing) and returns the app's own ``Tracing`` (``traces_provider``): a ``TracerProvider`` of
this app alone (never the global one), exporting over OTLP/HTTP to ``tracing.endpoint``, or to
an exporter handed in (tests hand an in-memory one).

The spans (``traces_request``) follow the OpenTelemetry GenAI semantic conventions:
a SERVER span per data-plane request named ``{gen_ai.operation.name} {gen_ai.request.model}``,
child spans for the stages worth seeing (``authenticate``, ``route``, ``admit``, ``settle``)
and one CLIENT span per upstream attempt, whose context goes upstream as ``traceparent``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from farebox.config.observe import TracingConfig
from farebox.errors import ConfigError

if TYPE_CHECKING:
    from farebox.observe.traces_provider import Tracing

EXTRA = "pip install 'farebox[otel]'"
# the headers of the W3C trace context, as ASGI spells them (lower-case bytes)
TRACEPARENT, TRACESTATE = b"traceparent", b"tracestate"


def build_tracing(
    config: TracingConfig,
    *,
    content_plans: Iterable[str] = (),
    exporter: Any = None,
    source: str = "farebox.yaml",
) -> Tracing | None:
    """The app's tracing, or ``None`` when ``tracing.enabled`` is false and no ``exporter`` is
    handed in. ``content_plans``: the plans whose ``observe.record_content`` is true (only
    their requests' prompt and completion text is recorded)."""
    if not config.enabled and exporter is None:
        return None
    try:
        from farebox.observe.traces_provider import Tracing

        if exporter is None:  # the OTLP/HTTP exporter is needed only when none is handed in
            import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"{source}: tracing: OpenTelemetry is not installed; {EXTRA} ({exc})"
        ) from None
    return Tracing(config, exporter, frozenset(content_plans))


def trace_carrier(raw_headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str] | None:
    """``traceparent`` and ``tracestate`` of raw ASGI headers, or ``None`` if there is neither:
    a scan of byte names, nothing decoded but these two."""
    carrier: dict[str, str] | None = None
    for name, value in raw_headers:
        if name == TRACEPARENT or name == TRACESTATE:
            if carrier is None:
                carrier = {}
            carrier[name.decode("latin-1")] = value.decode("latin-1")
    return carrier

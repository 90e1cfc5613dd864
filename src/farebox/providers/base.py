"""The provider interface.

Every provider speaks OpenAI chat-completions shapes to the pipeline, whatever it speaks
upstream. Streams yield OpenAI ``chat.completion.chunk`` dicts; the provider's final,
authoritative usage arrives as a :class:`UsageReport` item in the same stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast
from urllib.parse import quote

from farebox.core.records import Tenant
from farebox.core.usage import Usage

JSON = dict[str, Any]


class Caller(Protocol):
    """Who a request is for, as a provider may tell its upstream (``ForwardHeaders``): the
    gateway's ``Principal`` is one."""

    @property
    def tenant(self) -> Tenant: ...

    @property
    def user(self) -> str | None: ...

    @property
    def workspace(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """An OpenAI-format chat request body, ``model`` already set to the upstream model.

    For streams the body always has ``stream_options.include_usage`` set to true.
    ``headers``: sent upstream besides the provider's own (the attempt's trace context).
    ``api_key``: the key to send instead of the provider's own (the vault's, or the tenant's
    own: issue 14); None: the provider's own.
    """

    body: JSON
    timeout_s: float = 600.0
    headers: Mapping[str, str] | None = None
    caller: Caller | None = None  # who it is for (``ForwardHeaders``)
    api_key: str | None = None


@dataclass(frozen=True, slots=True)
class ChatResult:
    body: JSON  # an OpenAI ``chat.completion`` object
    usage: Usage
    upstream_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    body: JSON
    timeout_s: float = 600.0
    headers: Mapping[str, str] | None = None  # as ``ChatRequest.headers``
    caller: Caller | None = None  # as ``ChatRequest.caller``
    api_key: str | None = None  # as ``ChatRequest.api_key``


@dataclass(frozen=True, slots=True)
class EmbedResult:
    body: JSON  # an OpenAI ``list`` of embeddings
    usage: Usage
    upstream_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class UsageReport:
    """The last item of a stream: the provider's usage and the OpenAI final usage chunk."""

    usage: Usage
    chunk: JSON = field(default_factory=dict)


StreamItem = JSON | UsageReport


class Provider(Protocol):
    name: str
    kind: str

    async def chat(self, request: ChatRequest) -> ChatResult:
        """A non-streamed chat completion. Raises ``UpstreamError`` subclasses."""
        ...

    def chat_stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]:
        """OpenAI chunks, then one ``UsageReport`` if upstream reported usage."""
        ...

    async def embed(self, request: EmbedRequest) -> EmbedResult: ...

    async def aclose(self) -> None: ...


class ResponsesProvider(Provider, Protocol):
    """A provider whose upstream speaks the OpenAI Responses API itself (``responses:
    native``). Its request and result bodies are Responses objects, not chat ones; its streams
    yield the upstream's Responses events, the terminal one (``response.completed`` or
    ``response.incomplete``) as the ``chunk`` of the ``UsageReport`` that ends them."""

    native_responses: bool

    async def responses(self, request: ChatRequest) -> ChatResult: ...

    def responses_stream(self, request: ChatRequest) -> AsyncIterator[StreamItem]: ...


def with_headers(own: Mapping[str, str], extra: Mapping[str, str] | None) -> Mapping[str, str]:
    """A provider's own headers and a request's ``headers`` (the provider's own win)."""
    return own if not extra else {**extra, **own}


@dataclass(frozen=True, slots=True)
class ForwardHeaders:
    """``providers.NAME.forward_{tenant,user,workspace}_header``: the header names a provider
    tells its upstream the caller's tenant id, end user and workspace in (a self-hosted model
    server behind the gateway sees who is calling). None: that one is not sent; an unknown
    user or workspace is not sent either. A value that is not printable ASCII is sent
    percent-encoded (UTF-8)."""

    tenant: str | None = None
    user: str | None = None
    workspace: str | None = None

    def any(self) -> bool:
        return bool(self.tenant or self.user or self.workspace)

    def values(self, caller: Caller | None) -> dict[str, str]:
        if caller is None:
            return {}
        found = ((self.tenant, caller.tenant.id), (self.user, caller.user),
                 (self.workspace, caller.workspace))  # fmt: skip
        return {name.lower(): _header_value(value) for name, value in found if name and value}

    def added(self, headers: Mapping[str, str], caller: Caller | None) -> Mapping[str, str]:
        """``headers`` and the caller's forwarded ones (which win over a provider's static
        ``headers`` of the same name)."""
        values = self.values(caller)
        return {**headers, **values} if values else headers


def _header_value(value: str) -> str:
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe=" !#$&'()*+,/:;=?@[]~")


def keyed(headers: Mapping[str, str], api_key: str | None, header: str) -> Mapping[str, str]:
    """``headers`` with ``api_key`` (when given) in ``header``: ``authorization`` takes it
    as a bearer token. The request's key wins over the provider's own."""
    if not api_key:
        return headers
    value = f"Bearer {api_key}" if header == "authorization" else api_key
    return {**headers, header: value}


def native_responses(provider: Provider) -> ResponsesProvider | None:
    """``provider``, if its upstream is sent Responses requests as they are."""
    return (
        cast(ResponsesProvider, provider) if getattr(provider, "native_responses", False) else None
    )

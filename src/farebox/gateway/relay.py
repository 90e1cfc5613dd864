"""The stream relay: open the upstream stream (failing over until its first item arrives), then
relay it to the client, metering what it produced. A Responses request streams from a native
deployment as it is (its events passed on) and from any other one translated.

The relay owns the request's admission from its first (empty) yield on: ``open`` primes it
before handing it out, so its ``finally`` writes the ledger entry even if the stream is closed
before the client reads a byte. The ledger entry is durable before the final bytes leave.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from farebox.core.records import LedgerEntry
from farebox.core.routing import Target
from farebox.core.usage import Usage, to_openai, usage_of
from farebox.errors import FareboxError, UpstreamError, UpstreamTranslationFailed
from farebox.gateway.cache import ResponseCache
from farebox.gateway.cache_capture import StreamCapture
from farebox.gateway.call import (
    Call,
    estimated,
    native_body,
    replace,
    served_natively,
    upstream_body,
    with_ttft,
)
from farebox.gateway.failover import Failover, timeout
from farebox.gateway.guard_output import GuardedStream
from farebox.gateway.metering import Metering
from farebox.gateway.render import (
    NativeResponsesStream,
    StreamRenderer,
    StreamReply,
    stream_renderer,
)
from farebox.gateway.stream_meter import ResponsesMeter, StreamMeter, close_quietly
from farebox.providers.base import ChatRequest, Provider, StreamItem, UsageReport

log = logging.getLogger("farebox.pipeline")  # the name operators filter on


class StreamRelay:
    """Opens and relays streamed chat requests; made once, by the ``Gateway``."""

    __slots__ = ("_cache", "_failover", "_metering", "_providers")

    def __init__(
        self,
        providers: Mapping[str, Provider],
        failover: Failover,
        metering: Metering,
        cache: ResponseCache | None = None,
    ) -> None:
        self._providers = providers
        self._failover = failover
        self._metering = metering
        self._cache = cache  # a stream that completes normally is stored, when it may be

    async def open(self, call: Call, targets: tuple[Target, ...]) -> StreamReply:
        """Open the upstream stream, failing over until the first item arrives."""

        providers = self._providers

        async def attempt(target: Target) -> tuple[StreamItem | None, AsyncIterator[StreamItem]]:
            wait, headers, who = timeout(call.plan, target), call.upstream_headers, call.principal
            if (native := served_natively(call, providers, target)) is not None:
                request = ChatRequest(
                    native_body(call, target, True), wait, headers, who, call.api_key
                )
                items = native.responses_stream(request)
            else:
                body = upstream_body(call, target, True)
                request = ChatRequest(body, wait, headers, who, call.api_key)
                items = providers[target.provider].chat_stream(request)
            try:
                return await anext(items, None), items
            except BaseException:
                await close_quietly(items)
                raise

        target, (first, items) = await self._failover.run(call, targets, attempt)
        headers = self._metering.base_headers(call, target)
        relay = self._relay(call, target, first, items)
        try:
            await anext(relay)  # runs into the relay's try: from here on it owns the admission
        except BaseException:
            await close_quietly(items)
            raise
        call.settled = True
        return StreamReply(headers, relay)

    async def _relay(
        self,
        call: Call,
        target: Target,
        first: StreamItem | None,
        items: AsyncIterator[StreamItem],
    ) -> AsyncIterator[bytes]:
        """Relay the stream; the ledger entry is durable before the final bytes leave.

        Primed by ``open`` (the empty first item) so that its ``finally`` owns the
        admission even if the stream is closed before the client reads a byte."""
        metering = self._metering
        out, meter = self._renderer(call, target)
        # the completion's text, for a trace whose plan records content (else None)
        collect = call.trace.collector() if call.trace is not None else None
        capture = self._capture(call, target)  # the answer, assembled for the cache
        settled = False  # a ledger entry was written, or its write was attempted and failed
        try:
            yield b""
            item = first
            while item is not None:
                if isinstance(item, UsageReport):
                    record = self._final_entry(call, target, meter, out, item.chunk, item.usage)
                    settled, final = True, item.chunk
                    await metering.settle(call, record)
                    if data := out.usage(item.chunk, record):
                        yield data
                else:
                    meter.see(item)
                    if collect is not None:
                        collect(item)
                    if capture is not None:
                        capture.see(item)
                    if data := out.chunk(item):
                        yield data
                item = await anext(items, None)
            if not settled:  # the upstream never reported usage: meter it ourselves
                record = estimated(self._final_entry(call, target, meter, out, None, meter.usage()))
                settled, final = True, meter.usage_chunk(record)
                await metering.settle(call, record)
                if data := out.usage(final, record):
                    yield data
            if capture is not None:  # completed normally: store it (behind the stream)
                self._keep(call, capture, final, record)
            if data := out.done():
                yield data
        except Exception as exc:  # not GeneratorExit/CancelledError: those are disconnects
            error = _stream_error(call.request_id, exc)
            if not settled:
                settled = True
                status = (
                    "upstream_interrupted" if isinstance(exc, UpstreamError) else "gateway_error"
                )
                record = self._stream_entry(call, target, meter, meter.usage(), status)
                await metering.settle_logged(call, estimated(record, error.error_code))
            yield out.error(error)
        finally:
            if not settled:  # the client went away: meter what was produced
                self._gone(call, target, meter)
            await close_quietly(items)

    def _capture(self, call: Call, target: Target) -> StreamCapture | None:
        """What assembles the answer for the response cache, when it is to be stored (not
        a native Responses stream: its answer is no ``chat.completion``)."""
        if self._cache is None or call.cache is None:
            return None
        if served_natively(call, self._providers, target) is not None:
            return None
        return self._cache.capture(call.cache)

    def _keep(
        self, call: Call, capture: StreamCapture, final: Mapping[str, Any], record: LedgerEntry
    ) -> None:
        assert self._cache is not None and call.cache is not None
        usage = final.get("usage") or to_openai(usage_of(record))
        self._cache.keep_stream(call.cache, capture, usage, record, call)

    def _renderer(self, call: Call, target: Target) -> tuple[StreamRenderer, StreamMeter]:
        """What writes the stream in the client's format, and what meters it."""
        native = served_natively(call, self._providers, target) is not None
        answer = call.guard.answer if call.guard is not None else None
        if native:
            out: StreamRenderer = NativeResponsesStream(target.model, call.request_id, call.echo)
            meter: StreamMeter = ResponsesMeter(call.body, call.started)
        else:
            out = stream_renderer(call.flavor, call.body, target.model, call.request_id, call.echo)
            meter = StreamMeter(call.body, call.started)
        if answer is not None:  # issue 15: placeholders restored, the answer's PII scanned
            out = GuardedStream(out, answer, native)
        return out, meter

    def _gone(self, call: Call, target: Target, meter: StreamMeter) -> None:
        """The client went away mid-stream: its entry is written behind it."""
        record = self._stream_entry(call, target, meter, meter.usage(), "client_disconnected")
        gone = replace(estimated(record), http_status=499)
        self._metering.submit(gone)
        self._metering.finished(record, call)
        if call.trace is not None:
            call.trace.settled(gone)

    def _final_entry(
        self,
        call: Call,
        target: Target,
        meter: StreamMeter,
        out: StreamRenderer,
        chunk: Mapping[str, Any] | None,
        usage: Usage,
    ) -> LedgerEntry:
        """The entry of a stream that ended (``chunk``: its upstream's usage chunk): what the
        answer guard still holds back is rewritten first, so that its findings are in it."""
        if isinstance(out, GuardedStream):
            out.before_entry(chunk)
        return self._stream_entry(call, target, meter, usage, "ok")

    def _stream_entry(
        self, call: Call, target: Target, meter: StreamMeter, usage: Usage, status: str
    ) -> LedgerEntry:
        record = self._metering.entry(call, target, usage, status, 200, meter.elapsed_ms())
        return with_ttft(record, meter)


def _stream_error(request_id: str, exc: Exception) -> FareboxError:
    """What a stream that failed midway tells its client."""
    if isinstance(exc, FareboxError):
        return exc
    log.exception("request %s: the stream relay failed", request_id)
    return UpstreamTranslationFailed(
        f"The gateway failed while relaying this stream (a bug, logged as {request_id}); "
        "the tokens sent before the error are billed."
    )

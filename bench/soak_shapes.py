"""What the soak sends: well-formed requests of each kind, and malformed ones, each with the
answers it may get. Anything else is counted as unexpected."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.soak_client import Request

OK_OR_REFUSED = frozenset({200, 429})  # 429: a rate limit, a concurrency limit or a budget
DELIBERATE_5XX = frozenset({502, 503, 504})  # only where every deployment is made to fail
BAD_SHAPE = frozenset({400, 422})
USERS = ("u1", "u2", "u3", "u4", "u5")
FEATURES = ("search", "chat", "summary")
WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot")


@dataclass(frozen=True)
class Shot:
    """One request to send, and what may come back."""

    kind: str
    shape: str
    request: Request
    allowed: frozenset[int]
    allowed_errors: frozenset[str] = frozenset()  # e.g. a reset for a body over the limit
    expect_stream_end: bool = False  # a 200 stream must end with [DONE] or an error event


def openai_headers(key: str | None, rng: random.Random) -> tuple[tuple[str, str], ...]:
    headers = [("Content-Type", "application/json")]
    if key:
        headers.append(("Authorization", f"Bearer {key}"))
    headers.append(("X-Farebox-User", rng.choice(USERS)))
    headers.append(("X-Farebox-Feature", rng.choice(FEATURES)))
    return tuple(headers)


def anthropic_headers(key: str, rng: random.Random) -> tuple[tuple[str, str], ...]:
    return (
        ("Content-Type", "application/json"),
        ("x-api-key", key),
        ("anthropic-version", "2023-06-01"),
        ("X-Farebox-User", rng.choice(USERS)),
    )


def _post(path: str, body: Any, headers: tuple[tuple[str, str], ...], **kw: Any) -> Request:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Request("POST", path, data, headers, **kw)


def _messages(rng: random.Random) -> list[dict[str, str]]:
    return [{"role": "user", "content": "hello " + " ".join(rng.choices(WORDS, k=3))}]


def chat(key: str, rng: random.Random) -> Shot:
    model = rng.choice(("gpt-4o-mini", "gpt-4o-mini", "smart"))
    body = {"model": model, "messages": _messages(rng), "max_tokens": 16}
    request = _post("/v1/chat/completions", body, openai_headers(key, rng))
    return Shot("chat", model, request, OK_OR_REFUSED)


def stream(key: str, rng: random.Random, abandon: bool, kind: str = "") -> Shot:
    model = rng.choice(("gpt-4o-mini", "gpt-4o-mini", "smart"))
    body = {
        "model": model,
        "messages": _messages(rng),
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    mode = "abandon" if abandon else "full"
    request = _post("/v1/chat/completions", body, openai_headers(key, rng), stream=mode)
    kind = kind or ("stream_abandoned" if abandon else "stream")
    return Shot(kind, model, request, OK_OR_REFUSED, expect_stream_end=not abandon)


def embeddings(key: str, rng: random.Random) -> Shot:
    text: Any = "hello" if rng.random() < 0.5 else rng.choices(WORDS, k=3)
    body = {"model": "text-embedding-3-small", "input": text}
    request = _post("/v1/embeddings", body, openai_headers(key, rng))
    return Shot("embeddings", "list" if isinstance(text, list) else "str", request, OK_OR_REFUSED)


def messages(key: str, rng: random.Random) -> Shot:
    streamed = rng.random() < 0.4
    body: dict[str, Any] = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": _messages(rng)}
    if streamed:
        body["stream"] = True
    mode = "full" if streamed else "none"
    request = _post("/v1/messages", body, anthropic_headers(key, rng), stream=mode)
    shape = "stream" if streamed else "plain"
    return Shot("messages", shape, request, OK_OR_REFUSED, expect_stream_end=streamed)


def failing(key: str, rng: random.Random) -> Shot:
    """An alias whose only deployment refuses connections, or fails often (mock faults)."""
    model = rng.choice(("doomed", "shaky"))
    streamed = rng.random() < 0.3
    body: dict[str, Any] = {"model": model, "messages": _messages(rng), "max_tokens": 16}
    if streamed:
        body["stream"] = True
    mode = "full" if streamed else "none"
    request = _post("/v1/chat/completions", body, openai_headers(key, rng), stream=mode)
    shape = model + ("-stream" if streamed else "")
    allowed = OK_OR_REFUSED | DELIBERATE_5XX
    return Shot("failing", shape, request, allowed, expect_stream_end=streamed)


# --- malformed ------------------------------------------------------------------------

Maker = Callable[[str, random.Random, int], Shot]


def _bad(
    shape: str, path: str, body: Any, allowed: frozenset[int], anthropic: bool = False
) -> Maker:
    def make(key: str, rng: random.Random, max_body: int) -> Shot:
        headers = anthropic_headers(key, rng) if anthropic else openai_headers(key, rng)
        return Shot("malformed", shape, _post(path, body, headers, fresh=True), allowed)

    return make


def _nested(depth: int) -> bytes:
    inner = b"[" * depth + b"]" * depth
    return b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}],"metadata":' + (
        inner + b"}"
    )


def _oversize(key: str, rng: random.Random, max_body: int) -> Shot:
    text = "x" * (max_body + 4096)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    request = _post("/v1/chat/completions", body, openai_headers(key, rng), fresh=True)
    return Shot("malformed", "oversize", request, frozenset({413}), frozenset({"reset", "closed"}))


def _no_key(key: str, rng: random.Random, max_body: int) -> Shot:
    body = {"model": "gpt-4o-mini", "messages": _messages(rng)}
    request = _post("/v1/chat/completions", body, openai_headers(None, rng), fresh=True)
    return Shot("malformed", "no-key", request, frozenset({401}))


def _bad_key(key: str, rng: random.Random, max_body: int) -> Shot:
    body = {"model": "gpt-4o-mini", "messages": _messages(rng)}
    fake = "fbx_" + "A" * 43
    request = _post("/v1/chat/completions", body, openai_headers(fake, rng), fresh=True)
    return Shot("malformed", "bad-key", request, frozenset({401}))


CHAT = "/v1/chat/completions"
MSG = {"role": "user", "content": "x"}
GPT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [MSG]}
EMBED: dict[str, Any] = {"model": "text-embedding-3-small", "input": "x"}
NULL_TOOL = [{"type": "function", "function": None}]
MALFORMED: tuple[Maker, ...] = (
    _bad("bad-json", CHAT, b'{"model": "gpt-4o-mini", "messages": [', BAD_SHAPE),
    _bad("not-an-object", CHAT, b"[1, 2, 3]", BAD_SHAPE),
    _bad("empty-body", CHAT, b"", BAD_SHAPE),
    _bad("messages-a-string", CHAT, {**GPT, "messages": "hi"}, BAD_SHAPE),
    _bad("role-object", CHAT, {**GPT, "messages": [{"role": {}, "content": "x"}]}, BAD_SHAPE),
    _bad("max-tokens-text", CHAT, {**GPT, "max_tokens": "ten"}, BAD_SHAPE),
    _bad("stream-text", CHAT, {**GPT, "stream": "yes"}, BAD_SHAPE),
    _bad("tool-function-null", CHAT, {**GPT, "tools": NULL_TOOL}, BAD_SHAPE),
    _bad("unknown-model", CHAT, {**GPT, "model": "no-such-model"}, frozenset({404})),
    _bad("deep-nesting", CHAT, _nested(5000), BAD_SHAPE | frozenset({413})),
    _bad(
        "messages-tools-strings",
        "/v1/messages",
        {**GPT, "max_tokens": 16, "tools": ["x"]},
        BAD_SHAPE,
        anthropic=True,
    ),
    _bad("messages-no-max-tokens", "/v1/messages", GPT, BAD_SHAPE, anthropic=True),
    _bad("embeddings-input-object", "/v1/embeddings", {**EMBED, "input": {}}, BAD_SHAPE),
    _bad(
        "embeddings-huge-dimensions",
        "/v1/embeddings",
        {**EMBED, "dimensions": 5_000_000},
        BAD_SHAPE,
    ),
    _bad(
        "embeddings-encoding-format",
        "/v1/embeddings",
        {**EMBED, "encoding_format": "nope"},
        BAD_SHAPE,
    ),
    _oversize,
    _no_key,
    _bad_key,
)


def malformed(key: str, rng: random.Random, max_body: int) -> Shot:
    return rng.choice(MALFORMED)(key, rng, max_body)


def admin_read(admin_key: str, tenant: str, rng: random.Random) -> Shot:
    path = rng.choice(
        (
            f"/admin/v1/usage?tenant={tenant}&group_by=model",
            f"/admin/v1/tenants/{tenant}/budgets",
            "/admin/v1/deployments",
            f"/admin/v1/tenants/{tenant}/limits",
        )
    )
    headers = (("Authorization", f"Bearer {admin_key}"),)
    shape = path.split("?")[0].rsplit("/", 1)[-1]
    return Shot("admin", shape, Request("GET", path, None, headers), frozenset({200}))


def stream_ended(body: bytes) -> bool:
    """A streamed 200 must end properly: ``[DONE]`` (OpenAI), ``message_stop`` (Anthropic),
    or a terminal error event after an upstream cut."""
    tail = body[-4096:]
    return b"[DONE]" in tail or b"message_stop" in tail or b'"error"' in tail

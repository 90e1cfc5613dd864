"""Provider-neutral token usage."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Usage:
    """Normalised usage of one request.

    ``input_tokens`` is the whole prompt. ``cached_input_tokens`` (cache reads) and the
    cache writes are subsets of it. ``reasoning_tokens`` is a subset of ``output_tokens``.
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def uncached_input_tokens(self) -> int:
        rest = (
            self.input_tokens
            - self.cached_input_tokens
            - self.cache_write_5m_tokens
            - self.cache_write_1h_tokens
        )
        return max(rest, 0)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


# The six token counts, in order: declared once, by Usage; a ledger entry carries the same
# fields, and ``usage_of`` / ``token_counts`` move them between the two.
TOKEN_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Usage))


def usage_of(record: object) -> Usage:
    """The token counts of a record that carries ``TOKEN_FIELDS`` (a ledger entry)."""
    return Usage(**{name: getattr(record, name) for name in TOKEN_FIELDS})


def token_counts(usage: Usage) -> dict[str, int]:
    """``TOKEN_FIELDS`` by name: the counts a record of this usage carries."""
    return {name: getattr(usage, name) for name in TOKEN_FIELDS}


MAX_TOKENS = 2**40  # a trillion tokens: anything larger is a broken upstream, not usage


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return min(max(value, 0), MAX_TOKENS)


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def from_openai(usage: object) -> Usage:
    """Normalise an OpenAI ``usage`` object (chat or embeddings); missing fields are 0."""
    return _usage(usage, "prompt", "completion")


def from_responses(usage: object) -> Usage:
    """Normalise an OpenAI Responses ``usage`` object; missing fields are 0."""
    return _usage(usage, "input", "output")


def _usage(usage: object, read: str, written: str) -> Usage:
    """``<read>_tokens`` and ``<written>_tokens`` with their ``..._tokens_details``: the two
    OpenAI shapes differ only in these names."""
    data = _dict(usage)
    given = _dict(data.get(f"{read}_tokens_details"))
    produced = _dict(data.get(f"{written}_tokens_details"))
    return Usage(
        input_tokens=_int(data.get(f"{read}_tokens")),
        cached_input_tokens=_int(given.get("cached_tokens")),
        cache_write_5m_tokens=_int(given.get("cache_write_tokens")),
        output_tokens=_int(data.get(f"{written}_tokens")),
        reasoning_tokens=_int(produced.get("reasoning_tokens")),
    )


def from_anthropic(usage: object) -> Usage:
    """Normalise an Anthropic ``usage`` object. Its ``input_tokens`` excludes cache tokens."""
    data = _dict(usage)
    written = _int(data.get("cache_creation_input_tokens"))
    split = _dict(data.get("cache_creation"))
    if split:
        write_1h = _int(split.get("ephemeral_1h_input_tokens"))
        write_5m = _int(split.get("ephemeral_5m_input_tokens"))
        if write_1h + write_5m != written:
            write_5m = max(written - write_1h, 0)
    else:
        write_5m, write_1h = written, 0
    read = _int(data.get("cache_read_input_tokens"))
    details = _dict(data.get("output_tokens_details"))
    return Usage(
        input_tokens=_int(data.get("input_tokens")) + write_5m + write_1h + read,
        cached_input_tokens=read,
        cache_write_5m_tokens=write_5m,
        cache_write_1h_tokens=write_1h,
        output_tokens=_int(data.get("output_tokens")),
        reasoning_tokens=_int(details.get("thinking_tokens")),
    )


def to_openai(usage: Usage) -> dict[str, object]:
    """Render as an OpenAI chat ``usage`` object."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cached_input_tokens,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }

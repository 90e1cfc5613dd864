"""Guardrails, the pure part: a plan's guardrail policy, what a detector finds in a text
(``Hit``) and what the ledger keeps of it (``Finding``: never the matched text).

Modes, per check: ``off``; ``flag`` (forward, record the finding); ``redact`` (replace the
matched spans with typed placeholders, where the check has spans); ``block`` (refuse: 400).
The detectors themselves live in ``farebox.guardrails``; the stage in ``gateway.guardrails``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["off", "flag", "redact", "block"]
Action = Literal["flagged", "redacted", "blocked"]
# the parts of a request a check may read: user messages, tool results and retrieved
# documents (the ``tool`` role, ``tool_result`` blocks), system prompts, and the answer
Where = Literal["user", "tool", "system", "assistant", "output"]
ACTIONS: dict[str, Action] = {"flag": "flagged", "redact": "redacted", "block": "blocked"}
# ``guardrails``: the stage itself (``scan_limit``: a text past ``max_scan_chars`` not read)
DETECTORS = ("injection_rules", "injection_classifier", "pii", "secrets", "abuse", "guardrails")
# the PII types the built-in recognisers (``guardrails.pii_patterns``) read, with no extra;
# presidio reads the others. The config checks plans against it, the recognisers serve it.
BUILTIN_PII = (
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "URL",
)  # fmt: skip
MAX_SCAN_CHARS = 524_288  # characters read per request by default (about 128K tokens)


@dataclass(frozen=True, slots=True)
class Hit:
    """One thing a detector found in one text: its category (an injection family, a PII
    entity type such as ``EMAIL_ADDRESS``, a secret kind such as ``aws_access_key``), the span
    it covers in that text (``start``/``end``; 0/0 when the whole text is meant) and a score
    in [0, 1]."""

    detector: str
    category: str
    score: float = 1.0
    start: int = 0
    end: int = 0


@dataclass(frozen=True, slots=True)
class Finding:
    """What the ledger, the metrics, the webhook and the findings API keep of a hit."""

    detector: str
    category: str
    action: Action
    score: float
    where: str = "user"

    def json(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "category": self.category,
            "action": self.action,
            "score": round(self.score, 4),
            "where": self.where,
        }

    @classmethod
    def of(cls, data: dict[str, Any]) -> Finding:
        return cls(
            str(data.get("detector", "")),
            str(data.get("category", "")),
            data.get("action", "flagged"),
            float(data.get("score", 0.0)),
            str(data.get("where", "")),
        )


@dataclass(frozen=True, slots=True)
class InjectionPolicy:
    mode: Mode = "off"
    scan: tuple[Where, ...] = ("user",)
    classifier: bool = False  # layer 2, ``farebox[guard-model]``
    threshold: float = 0.9  # the classifier's score from which a text is an injection (README)
    timeout_ms: int = 200  # the classifier's wait, queue included
    on_timeout: Literal["flag", "block"] = "flag"  # fail open with a flag, or closed


@dataclass(frozen=True, slots=True)
class PiiPolicy:
    mode: Mode = "off"
    restore: bool = False  # map placeholders in the answer back to the caller's values
    entities: tuple[str, ...] = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD")
    scan: tuple[Where, ...] = ("user", "tool")
    # presidio (``farebox[pii]``: names and places too) or the built-in recognisers (no extra)
    engine: Literal["presidio", "builtin"] = "presidio"
    timeout_ms: int = 5_000  # presidio's wait, queue included (then as ``on_timeout`` below)
    # restore a placeholder the answer puts inside a link too (a URL, a markdown link or
    # image target, an HTML href/src): off, it stays a placeholder, with a finding
    restore_in_links: bool = False


@dataclass(frozen=True, slots=True)
class SecretsPolicy:
    mode: Mode = "off"
    scan: tuple[Where, ...] = ("user", "tool", "system")


@dataclass(frozen=True, slots=True)
class OutputPolicy:
    pii: Mode = "off"  # off | flag | redact (an answer is never blocked half-way)
    entities: tuple[str, ...] = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD")


@dataclass(frozen=True, slots=True)
class AbusePolicy:
    """TokenFence's patterns (``farebox.guardrails.abuse``)."""

    stuffing: Mode = "off"  # repetitive padding: a compression-ratio check
    stuffing_ratio: float = 12.0  # raw bytes over zlib bytes from which a prompt is padding
    stuffing_min_chars: int = 2000  # shorter prompts are never judged
    batch: Mode = "off"  # a burst of near-identical requests from one end user
    batch_window_s: int = 60
    batch_max: int = 20  # near-identical requests allowed per end user and window
    context: Mode = "off"  # requests that fill the model's context on a cheap plan
    context_max_fraction: float = 0.9  # of the model's context window


@dataclass(frozen=True, slots=True)
class GuardrailPolicy:
    prompt_injection: InjectionPolicy = field(default_factory=InjectionPolicy)
    pii: PiiPolicy = field(default_factory=PiiPolicy)
    secrets: SecretsPolicy = field(default_factory=SecretsPolicy)
    output: OutputPolicy = field(default_factory=OutputPolicy)
    abuse: AbusePolicy = field(default_factory=AbusePolicy)
    max_findings_per_hour: int | None = None  # then the key is paused, with a reason
    # characters of a request's texts read (each text counts at least 64); a text past it is
    # not read: a check in block or redact mode then refuses the request, flag flags it
    max_scan_chars: int = MAX_SCAN_CHARS

    @property
    def enabled(self) -> bool:
        """Whether any check is on: a plan with none skips the stage (one attribute read)."""
        a = self.abuse
        return (
            self.prompt_injection.mode != "off"
            or self.pii.mode != "off"
            or self.secrets.mode != "off"
            or self.output.pii != "off"
            or a.stuffing != "off"
            or a.batch != "off"
            or a.context != "off"
        )


GUARDRAILS_OFF = GuardrailPolicy()


def findings_json(findings: tuple[Finding, ...] | list[Finding]) -> list[dict[str, Any]]:
    return [f.json() for f in findings]

"""A plan's ``guardrails:`` section (issue 15), validated here; the request path sees it as
``farebox.core.guardrails.GuardrailPolicy`` (``guardrail_policy``)::

    guardrails:
      prompt_injection: {mode: block, scan: [user, tool], classifier: off, on_timeout: flag}
      pii: {mode: redact, restore: true, entities: [EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD]}
      # restore_in_links: false (the default) keeps a placeholder the answer puts in a link
      secrets: {mode: block}
      output: {pii: redact}
      abuse: {stuffing: block, batch: flag, context: flag}
      max_findings_per_hour: 50
      max_scan_chars: 524288   # read per request; more: block/redact refuse, flag flags
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from farebox.config.base import Strict
from farebox.core.guardrails import (
    BUILTIN_PII,
    MAX_SCAN_CHARS,
    AbusePolicy,
    GuardrailPolicy,
    InjectionPolicy,
    OutputPolicy,
    PiiPolicy,
    SecretsPolicy,
)

Mode = Literal["off", "flag", "redact", "block"]
Part = Literal["user", "tool", "system", "assistant"]
# the entity types a plan may name: the built-in recognisers' and presidio's
PII_ENTITIES = frozenset({
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS",
    "PERSON", "LOCATION", "URL", "US_PASSPORT", "US_DRIVER_LICENSE", "US_BANK_NUMBER",
    "UK_NHS", "DATE_TIME", "CRYPTO", "MEDICAL_LICENSE", "NRP",
})  # fmt: skip

BUILTIN_ENTITIES = frozenset(BUILTIN_PII)  # the built-in recognisers' types (no presidio)


def _off_or_on(value: object) -> object:
    """YAML reads ``off``/``on`` as booleans under YAML 1.1 and as strings under 1.2."""
    if isinstance(value, str) and value.strip().lower() in ("off", "on", "true", "false"):
        return value.strip().lower() in ("on", "true")
    return value


class InjectionConfig(Strict):
    mode: Literal["off", "flag", "block"] = "off"
    scan: list[Part] = Field(default_factory=lambda: list[Part](["user"]), min_length=1)
    classifier: bool = False
    threshold: float = Field(0.9, gt=0, lt=1)
    timeout_ms: int = Field(200, ge=1, le=60_000)
    on_timeout: Literal["flag", "block"] = "flag"

    _classifier = field_validator("classifier", mode="before")(_off_or_on)


class PiiConfig(Strict):
    mode: Mode = "off"
    restore: bool = False
    entities: list[str] = Field(
        default_factory=lambda: ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"], min_length=1
    )
    scan: list[Part] = Field(default_factory=lambda: list[Part](["user", "tool"]), min_length=1)
    engine: Literal["presidio", "builtin"] = "presidio"  # presidio needs farebox[pii]
    # presidio's wait per request, queue included; past it block and redact refuse (400
    # guardrail_timeout), flag forwards with a ``timeout`` finding
    timeout_ms: int = Field(5_000, ge=1, le=600_000)
    # a placeholder the answer puts inside a link (a URL, a markdown link or image target, an
    # HTML href/src, a URL-encoded context) is restored only with this on: a value restored
    # into a link a chat UI renders goes to that link's host (an image needs no click)
    restore_in_links: bool = False

    _restore = field_validator("restore", "restore_in_links", mode="before")(_off_or_on)

    @model_validator(mode="after")
    def _links_need_restore(self) -> PiiConfig:
        if self.restore_in_links and not (self.restore and self.mode == "redact"):
            raise ValueError(
                "restore_in_links only applies when placeholders are restored: set "
                "mode: redact and restore: true, or drop restore_in_links"
            )
        return self

    @model_validator(mode="after")
    def _engine_knows(self) -> PiiConfig:
        """Names, places and the like need presidio: the built-in engine would miss them."""
        missing = sorted(set(self.entities) - BUILTIN_ENTITIES)
        if self.engine == "builtin" and missing:
            raise ValueError(
                f"engine builtin does not recognise {', '.join(missing)}: use engine presidio "
                f"(farebox[pii]) or list only {', '.join(sorted(BUILTIN_ENTITIES))}"
            )
        return self

    @field_validator("entities")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - PII_ENTITIES)
        if unknown:
            raise ValueError(
                f"unknown PII entity {', '.join(unknown)}; known: {', '.join(sorted(PII_ENTITIES))}"
            )
        return value


class SecretsConfig(Strict):
    mode: Mode = "off"
    scan: list[Part] = Field(
        default_factory=lambda: list[Part](["user", "tool", "system"]), min_length=1
    )


class OutputConfig(Strict):
    pii: Literal["off", "flag", "redact"] = "off"
    entities: list[str] = Field(
        default_factory=lambda: ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"], min_length=1
    )

    @field_validator("entities")
    @classmethod
    def _builtin(cls, value: list[str]) -> list[str]:
        """Answers are scanned with the built-in recognisers (streams allow no model)."""
        unknown = sorted(set(value) - BUILTIN_ENTITIES)
        if unknown:
            raise ValueError(
                f"output scanning does not recognise {', '.join(unknown)}; "
                f"known: {', '.join(sorted(BUILTIN_ENTITIES))}"
            )
        return value


class AbuseConfig(Strict):
    stuffing: Literal["off", "flag", "block"] = "off"
    stuffing_ratio: float = Field(12.0, gt=1)
    stuffing_min_chars: int = Field(2000, ge=100)
    batch: Literal["off", "flag", "block"] = "off"
    # a burst, not a daily quota: the shared count (Redis) keeps each cluster's last
    # batch_max + 1 times for batch_window_s, so both are bounded (guardrails.abuse)
    batch_window_s: int = Field(60, ge=1, le=3_600)
    batch_max: int = Field(20, ge=1, le=1_000)
    context: Literal["off", "flag", "block"] = "off"
    context_max_fraction: float = Field(0.9, gt=0, le=1)


class GuardrailsConfig(Strict):
    prompt_injection: InjectionConfig = Field(default_factory=InjectionConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    abuse: AbuseConfig = Field(default_factory=AbuseConfig)
    max_findings_per_hour: int | None = Field(None, ge=1)
    # characters of a request's texts the checks read (each text counts at least 64): a
    # request with more is refused when a check is in block or redact mode (400
    # guardrail_scan_limit), flagged (``scan_limit``) when the checks only flag
    max_scan_chars: int = Field(MAX_SCAN_CHARS, ge=4_096, le=67_108_864)


def guardrail_policy(cfg: GuardrailsConfig) -> GuardrailPolicy:
    """The request path's view of a plan's ``guardrails:``."""
    pi, pii, a = cfg.prompt_injection, cfg.pii, cfg.abuse
    return GuardrailPolicy(
        prompt_injection=InjectionPolicy(
            pi.mode, tuple(pi.scan), pi.classifier, pi.threshold, pi.timeout_ms, pi.on_timeout
        ),
        pii=PiiPolicy(
            pii.mode,
            pii.restore,
            tuple(pii.entities),
            tuple(pii.scan),
            pii.engine,
            pii.timeout_ms,
            pii.restore_in_links,
        ),  # fmt: skip
        secrets=SecretsPolicy(cfg.secrets.mode, tuple(cfg.secrets.scan)),
        output=OutputPolicy(cfg.output.pii, tuple(cfg.output.entities)),
        abuse=AbusePolicy(
            a.stuffing,
            a.stuffing_ratio,
            a.stuffing_min_chars,
            a.batch,
            a.batch_window_s,
            a.batch_max,
            a.context,
            a.context_max_fraction,
        ),  # fmt: skip
        max_findings_per_hour=cfg.max_findings_per_hour,
        max_scan_chars=cfg.max_scan_chars,
    )

"""The guardrail stage of the request path (issue 15): after authentication and the plan's
policy, before the response cache, admission (budgets, rate limits) and routing. A plan with
no check on skips it (``GuardrailPolicy.enabled``: one attribute read).

For a chat request (every format arrives in OpenAI chat shape; a Responses request's own body,
sent as it is to native deployments, is redacted the same way) it reads the texts each check
scans (``guard_texts``: user messages, tool results and tool-call arguments, system prompts and
tool descriptions, assistant turns; a message's text parts joined), each in full, within the
plan's ``max_scan_chars`` (``guard_scan``): a text past it is never forwarded unread by a check
that blocks or redacts (400 ``guardrail_scan_limit``; flagged ``scan_limit`` when the checks
only flag). It runs:

- prompt injection: layer 1 rules (``guardrails.injection_rules``) always, layer 2 the local
  classifier (``ClassifierRunner``) when the plan turns it on, off the event loop with the
  plan's timeout (``on_timeout``: flag and forward, or block);
- secrets (``guardrails.secrets``) and PII (``guardrails.pii_patterns``, or presidio in the
  stage's own bounded pool within ``pii.timeout_ms``: past it block and redact refuse, 400
  ``guardrail_timeout``): ``redact`` replaces the values with typed placeholders in the body
  sent upstream (one ``Redactor`` per request: the same value, the same placeholder; the
  client's own placeholder-shaped literals are never reused), then each value found is
  replaced wherever else it appears, in one pass per text;
- abuse (``guardrails.abuse``): prompt stuffing, a batch burst per end user (the last user
  message: the new turn), context exploitation.

An embeddings request (``screen_embed``) is read the same way, each string of its ``input`` a
text of part ``user`` (token arrays are not read: noted), by the same checks but the batch and
context ones (stuffing is judged string by string); a redaction is what the cache keys on and
the provider embeds, and is never restored. A count sent to a provider's counting endpoint
(``screen_count``, ``gateway.counting``) is checked for secrets and PII only.

Each check's hits become ``Finding``s (never the matched text) kept on the ``Call``
(``GuardState``), and so in its ledger entry. A ``block`` raises the check's 400
(``PromptInjectionDetected``, ``SecretDetected``, ``PiiDetected``, ``AbuseDetected``): the
``Gateway`` then writes the request's one ``blocked`` entry, unbilled, and nothing was
reserved, cached or sent. The answer's side (placeholders restored, the answer's own PII
flagged or redacted) is ``guard_output.AnswerGuard``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from farebox.core.guardrails import (
    ACTIONS,
    AbusePolicy,
    Finding,
    GuardrailPolicy,
    Hit,
    InjectionPolicy,
    Mode,
    PiiPolicy,
    findings_json,
)
from farebox.core.records import LedgerEntry
from farebox.core.routing import Target
from farebox.errors import (
    AbuseDetected,
    GuardrailBlocked,
    GuardrailScanLimit,
    GuardrailTimeout,
    PiiDetected,
    PromptInjectionDetected,
    SecretDetected,
)
from farebox.gateway.call import call_entry
from farebox.gateway.guard_output import AnswerGuard
from farebox.gateway.guard_scan import budgeted, chunks, replace_values, values_pattern
from farebox.gateway.guard_texts import (
    EmbedInput,
    Unit,
    chat_units,
    responses_units,
    skipped_parts,
)
from farebox.guardrails import abuse, injection_rules, pii_patterns, secrets
from farebox.guardrails.classifier import ClassifierRunner, ClassifierTimeout
from farebox.guardrails.placeholders import Redactor

log = logging.getLogger("farebox.guardrails")
CLASSIFIER = "injection_classifier"
STAGE = "guardrails"  # the stage's own findings: ``scan_limit``, a text it did not read
PII_WORKERS = 2  # presidio's threads (its own pool: never the loop's default executor)
ALL_PARTS = frozenset({"user", "tool", "system", "assistant"})
BLOCKS: dict[str, type[GuardrailBlocked]] = {
    injection_rules.DETECTOR: PromptInjectionDetected,
    CLASSIFIER: PromptInjectionDetected,
    secrets.DETECTOR: SecretDetected,
    pii_patterns.DETECTOR: PiiDetected,
    abuse.DETECTOR: AbuseDetected,
}


class PiiEngine(Protocol):
    """Presidio's recognisers (``guardrails.pii_presidio.PresidioPii``): blocking."""

    def scan(self, text: str, entities: Collection[str]) -> list[Hit]: ...


@dataclass(slots=True)
class GuardState:
    """What the stage left on a ``Call``: its findings (the answer's are added once it is
    scanned) and, when the answer needs it, what rewrites the answer."""

    findings: list[Finding] = field(default_factory=list)
    answer: AnswerGuard | None = None
    skipped: str = ""  # the content parts no check could read (``skipped_parts``): a note

    def json(self) -> list[dict[str, Any]]:
        found = self.findings + (self.answer.findings if self.answer is not None else [])
        return findings_json(found)

    @property
    def any(self) -> bool:
        return bool(self.findings) or (self.answer is not None and bool(self.answer.findings))


@dataclass(slots=True)
class _Text:
    unit: Unit
    hits: list[Hit] = field(default_factory=list)  # what redact replaces, in ``unit.text``

    @property
    def where(self) -> str:
        return self.unit.where

    @property
    def text(self) -> str:
        return self.unit.text


class _Found:
    """Findings of one request, one per (detector, category, part), the highest score."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str, str], Finding] = {}
        self.block: Finding | None = None

    def add(self, hit: Hit, mode: Mode, where: str) -> None:
        action = ACTIONS.get(mode)
        if action is None:
            return
        key = (hit.detector, hit.category, where)
        known = self.by_key.get(key)
        if known is None or known.score < hit.score:
            self.by_key[key] = Finding(hit.detector, hit.category, action, hit.score, where)
        if action == "blocked" and self.block is None:
            self.block = self.by_key[key]


class GuardrailStage:
    """Made once, by the ``Gateway``; holds the per-process state (the batch watch) and the
    engines built at start-up (presidio, the classifier's runner), when a plan needs them."""

    def __init__(
        self,
        *,
        presidio: PiiEngine | None = None,
        classifier: ClassifierRunner | None = None,
        batch: abuse.BatchWatch | None = None,
    ) -> None:
        self.presidio: PiiEngine | None = None
        self.classifier = classifier
        self._batch = batch if batch is not None else abuse.BatchWatch()
        self._pii_pool: ThreadPoolExecutor | None = None
        if presidio is not None:
            self.adopt_presidio(presidio)

    def adopt_presidio(self, engine: PiiEngine) -> None:
        """Scan with ``engine`` from now on (plans reloaded onto presidio: ``guard_engines.
        equip``); its pool is made with the first engine and kept."""
        if self._pii_pool is None:
            self._pii_pool = ThreadPoolExecutor(PII_WORKERS, thread_name_prefix="farebox-presidio")
        self.presidio = engine

    async def close(self) -> None:
        if self.classifier is not None:
            await self.classifier.close()
        if self._pii_pool is not None:
            self._pii_pool.shutdown(wait=False, cancel_futures=True)

    async def screen(self, call: Any, input_tokens: int, targets: Sequence[Target] = ()) -> None:
        """Screen ``call`` (a ``gateway.call.Call``, for ``targets``, its deployments): its
        findings go on ``call.guard``, its body (and Responses body) is redacted in place; a
        block raises its 400."""
        policy: GuardrailPolicy = call.plan.guardrails
        found = _Found()
        body, responses, parts = call.body, call.responses, _parts(policy)
        texts = _read(policy, chat_units(body, parts) if parts else [], found)
        redactions: set[int] = set()
        if found.block is None:  # a text it could not read: refused before any scan
            redactions = await self._content(policy, texts, found)
            await self._abuse(policy, call, texts, (input_tokens, targets), found)
        call.guard = state = GuardState(list(found.by_key.values()))
        state.skipped = skipped_parts(body)
        trace = getattr(call, "trace", None)
        if found.block is not None:
            if trace is not None:  # a refused prompt may hold the values: none in the trace
                trace.input_rewritten({"messages": []})
            raise _blocked(found.block, policy)
        redactor = None
        if redactions:
            sources: list[Callable[[], list[Unit]]] = [lambda: chat_units(body, ALL_PARTS)]
            if responses is not None:  # the Responses body sent to native deployments
                sources.append(lambda: responses_units(responses))
            redactor = _redact(texts, redactions, sources)
        if redactor is not None and trace is not None:
            trace.input_rewritten(body)  # the trace keeps what the provider gets
        state.answer = self._answer(policy, redactor)

    async def screen_embed(self, call: Any) -> None:
        """Screen an embeddings request (``call``): each string of its ``input`` is a text of
        part ``user``, read by the checks that read that part (injection rules and the
        classifier, secrets, PII, and prompt stuffing string by string: a batch of similar
        documents is not padding); token arrays cannot be read (the ``tokens=N`` note).
        Findings go on ``call.guard``; a redaction is written into ``call.body`` (what the
        cache keys on and the provider embeds: there is no restore, a vector cannot be
        un-redacted); a block raises its 400."""
        policy: GuardrailPolicy = call.plan.guardrails
        found = _Found()
        given = EmbedInput.of(call.body)
        units = given.units() if "user" in _parts(policy, embeddings=True) else []
        texts = _read(policy, units, found, embeddings=True)
        redactions: set[int] = set()
        if found.block is None:
            redactions = await self._content(policy, texts, found)
            _stuffing(policy, texts, found)
        call.guard = state = GuardState(list(found.by_key.values()))
        state.skipped = given.skipped
        if found.block is not None:
            raise _blocked(found.block, policy)
        if redactions:
            _redact(texts, redactions, [given.units])
            given.write()

    async def screen_count(self, policy: GuardrailPolicy, body: dict[str, Any]) -> bool:
        """Screen a chat body before it goes to a provider's counting endpoint
        (``gateway.counting``): secrets and PII only (no model reads a count, so an injection
        or padding does nothing there; a value reaching the provider is the harm). A
        ``block`` raises its 400; False when a value would be redacted, or a text was past
        ``max_scan_chars`` under block or redact (the caller then counts locally: nothing goes
        upstream); True otherwise (flag: sent as it is; a count writes no ledger entry, so
        its findings are not recorded)."""
        counted = replace(policy, prompt_injection=InjectionPolicy(), abuse=AbusePolicy())
        parts = _parts(counted)
        if not parts:
            return True
        found = _Found()
        texts = _read(counted, chat_units(body, parts), found)
        unread, found.block = found.block is not None, None
        redactions = await self._content(counted, texts, found)
        if found.block is not None:
            raise _blocked(found.block, counted)
        return not (unread or redactions)

    # checks ------------------------------------------------------------------------------
    async def _content(
        self, policy: GuardrailPolicy, texts: list[_Text], found: _Found
    ) -> set[int]:
        """Injection, secrets and PII over ``texts``: the indexes of the texts to redact."""
        await self._injection(policy, texts, found)
        redactions = self._secrets(policy, texts, found)
        return redactions | await self._pii(policy, texts, found)

    async def _injection(self, policy: GuardrailPolicy, texts: list[_Text], found: _Found) -> None:
        pi = policy.prompt_injection
        if pi.mode == "off":
            return
        mine = [t for t in texts if t.where in pi.scan]
        for t in mine:
            for piece in chunks(t.text):  # layer 1 reads a bounded window of one text
                for hit in injection_rules.scan(piece):
                    found.add(hit, pi.mode, t.where)
        if not pi.classifier or not mine or (pi.mode == "block" and found.block is not None):
            return
        try:
            if self.classifier is None:
                raise ClassifierTimeout("no classifier loaded")  # a stand-in stage's
            scores = await self.classifier.scores([t.text for t in mine], pi.timeout_ms)
        except ClassifierTimeout as exc:
            category = "timeout" if self.classifier is not None else "unavailable"
            log.warning("injection classifier: %s (%s)", category, exc)
            found.add(Hit(CLASSIFIER, category, 0.0), pi.on_timeout, "user")
            return
        best = max(range(len(scores)), key=scores.__getitem__, default=None)
        if best is not None and scores[best] >= pi.threshold:
            found.add(Hit(CLASSIFIER, "injection", scores[best]), pi.mode, mine[best].where)

    def _secrets(self, policy: GuardrailPolicy, texts: list[_Text], found: _Found) -> set[int]:
        sp = policy.secrets
        if sp.mode == "off":
            return set()
        scanned = ((i, t, secrets.scan(t.text)) for i, t in enumerate(texts) if t.where in sp.scan)
        return _record(scanned, sp.mode, found)

    async def _pii(self, policy: GuardrailPolicy, texts: list[_Text], found: _Found) -> set[int]:
        pp = policy.pii
        if pp.mode == "off":
            return set()
        parts = _pii_parts(policy)
        mine = [(i, t) for i, t in enumerate(texts) if t.where in parts]
        windows = [t.text for _, t in mine]
        # the built-in recognisers for the types they know (checksummed, and measured as
        # precise as presidio's at a fraction of the cost); presidio for names, places and
        # the rest (loaded for every plan naming it: at start-up, or by a reload's ``equip``)
        builtin = [e for e in pp.entities if e in pii_patterns.ENTITIES]
        ner = [e for e in pp.entities if e not in pii_patterns.ENTITIES]
        each = _scan_all(pii_patterns.scan, windows, builtin)
        if ner and pp.engine == "presidio" and self.presidio is not None and windows:
            more = await self._presidio(pp, windows, ner, found)
            each = [a + b for a, b in zip(each, more, strict=True)]
        scanned = ((i, t, hits) for (i, t), hits in zip(mine, each, strict=True))
        return _record(scanned, pp.mode, found)

    async def _presidio(
        self, pp: PiiPolicy, texts: list[str], entities: list[str], found: _Found
    ) -> list[list[Hit]]:
        """Presidio's hits, in its own bounded pool within ``pii.timeout_ms``; past it, block
        and redact refuse (a text it did not read may hold a value), flag flags."""
        assert self.presidio is not None and self._pii_pool is not None
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._pii_pool, _scan_all, self.presidio.scan, texts,
                                    entities)  # fmt: skip
        try:
            return await asyncio.wait_for(work, pp.timeout_ms / 1000)
        except TimeoutError:
            log.warning("presidio: no answer within %d ms", pp.timeout_ms)
            mode: Mode = "block" if pp.mode in ("block", "redact") else pp.mode
            found.add(Hit(pii_patterns.DETECTOR, "timeout", 0.0), mode, "user")
            return [[] for _ in texts]

    async def _abuse(
        self, policy: GuardrailPolicy, call: Any, texts: list[_Text],
        size: tuple[int, Sequence[Target]], found: _Found,
    ) -> None:  # fmt: skip
        ab = policy.abuse
        if ab.stuffing == "off" and ab.batch == "off" and ab.context == "off":
            return
        users = [t.text for t in texts if t.where == "user"]
        user = "\n".join(users)
        if ab.stuffing != "off" and (hit := abuse.stuffing_hit(user, ab)) is not None:
            found.add(hit, ab.stuffing, "user")
        if ab.context != "off":  # the smallest window of the deployments it may land on
            window = abuse.context_window_of([t.context_window for t in size[1]])
            if (hit := abuse.context_hit(size[0], window, ab)) is not None:
                found.add(hit, ab.context, "user")
        if ab.batch != "off":
            who = call.principal
            end_user = who.user or call.body.get("user") or f"key:{who.key.id}"
            last = users[-1] if users else ""  # the new turn, not the history it repeats
            hit = await self._batch.check(who.tenant.id, str(end_user)[:256], last, ab)
            if hit is not None:
                found.add(hit, ab.batch, "user")

    def _answer(self, policy: GuardrailPolicy, redactor: Redactor | None) -> AnswerGuard | None:
        """What rewrites the answer: restore maps back PII only (never a secret), and the
        answer's own redactions number past the request's."""
        pii = redactor.pii_only() if redactor is not None and policy.pii.restore else None
        restore = pii if pii is not None and pii.values else None
        out = policy.output
        if restore is None and out.pii == "off":
            return None
        entities = out.entities

        def scan(text: str) -> list[Hit]:
            return pii_patterns.scan(text, entities)

        return AnswerGuard(restore, scan if out.pii != "off" else None, out.pii == "redact",
                           numbering=redactor, links=policy.pii.restore_in_links)  # fmt: skip


def _parts(policy: GuardrailPolicy, embeddings: bool = False) -> frozenset[str]:
    """The parts of a request any check on reads (of an embeddings request: no batch)."""
    parts: set[str] = set()
    if policy.prompt_injection.mode != "off":
        parts.update(policy.prompt_injection.scan)
    if policy.pii.mode != "off":
        parts.update(_pii_parts(policy))
    if policy.secrets.mode != "off":
        parts.update(policy.secrets.scan)
    a = policy.abuse
    if a.stuffing != "off" or (a.batch != "off" and not embeddings):
        parts.add("user")
    return frozenset(parts)


def _pii_parts(policy: GuardrailPolicy) -> tuple[str, ...]:
    """The parts PII is looked for in: with ``restore``, the assistant's turns too, since a
    client sends restored values back in them (the provider never sees a value)."""
    pp = policy.pii
    if pp.mode == "redact" and pp.restore and "assistant" not in pp.scan:
        return (*pp.scan, "assistant")
    return pp.scan


def _record(scanned: Iterable[tuple[int, _Text, list[Hit]]], mode: Mode, found: _Found) -> set[int]:
    """Each text's hits into ``found``; under ``redact`` they are kept on the text to be
    replaced, and the indexes of the texts to rewrite are returned."""
    redacted = set()
    for i, t, hits in scanned:
        for hit in hits:
            found.add(hit, mode, t.where)
        if hits and mode == "redact":
            t.hits.extend(hits)
            redacted.add(i)
    return redacted


def _read(
    policy: GuardrailPolicy, units: list[Unit], found: _Found, embeddings: bool = False
) -> list[_Text]:
    """The texts to scan, within the plan's ``max_scan_chars``; a text past it is not read,
    and a ``scan_limit`` finding says so: blocked when a check reading its part blocks or
    redacts (nothing unread goes upstream unchecked), flagged otherwise."""
    read, unread = budgeted(units, policy.max_scan_chars)
    for unit in unread:
        mode = _strictest(policy, unit.where, embeddings)
        found.add(Hit(STAGE, "scan_limit", 1.0), mode, unit.where)
    return [_Text(unit) for unit in read]


def _stuffing(policy: GuardrailPolicy, texts: list[_Text], found: _Found) -> None:
    """Prompt stuffing in each text on its own (an embeddings request's strings)."""
    ab = policy.abuse
    if ab.stuffing == "off":
        return
    for t in texts:
        if t.where == "user" and (hit := abuse.stuffing_hit(t.text, ab)) is not None:
            found.add(hit, ab.stuffing, "user")


def _strictest(policy: GuardrailPolicy, where: str, embeddings: bool = False) -> Mode:
    """``block`` when a check reading ``where`` blocks or redacts, else ``flag``."""
    pi, pii, sp, ab = policy.prompt_injection, policy.pii, policy.secrets, policy.abuse
    modes = [pi.mode if where in pi.scan else "off", sp.mode if where in sp.scan else "off",
             pii.mode if where in _pii_parts(policy) else "off"]  # fmt: skip
    if where == "user":
        modes += [ab.stuffing] if embeddings else [ab.stuffing, ab.batch]
    return "block" if any(m in ("block", "redact") for m in modes) else "flag"


def _scan_all(
    scan: Callable[[str, Collection[str]], list[Hit]], texts: Sequence[str],
    entities: Collection[str],
) -> list[list[Hit]]:  # fmt: skip
    return [scan(text, entities) for text in texts]


def _redact(
    texts: list[_Text], which: set[int], sources: Sequence[Callable[[], list[Unit]]]
) -> Redactor:
    """Write the redactions back into the body (a value split across a message's parts:
    the placeholder in the first, the other pieces taken out); then replace the values found
    wherever else they appear in the request (``sources``: every text of the request, the
    parts no check read and the Responses body sent to native deployments included), in one
    pass per text, so a value found once goes upstream nowhere. Placeholder-shaped literals
    the client wrote are reserved first: never reused."""
    redactor = Redactor()
    redactor.reserve(*(u.text for source in sources for u in source()))
    for i in sorted(which):
        t = texts[i]
        edits, pos = [], 0
        for hit in sorted(t.hits, key=lambda h: (h.start, -h.end)):
            if hit.start < pos or hit.end <= hit.start or hit.end > len(t.text):
                continue  # overlaps: the first
            value = t.text[hit.start : hit.end]
            whole = Hit(hit.detector, hit.category, hit.score, 0, len(value))
            edits.append((hit.start, hit.end, redactor.redact(value, [whole])))
            pos = hit.end
        t.unit.edit(edits)
    if redactor.values:  # each source read afresh: the Responses body may share parts
        placeholders = {value: ph for ph, value in redactor.values.items()}
        pattern = values_pattern(placeholders)
        for source in sources:
            replace_values(source(), placeholders, pattern)
    return redactor


def _blocked(finding: Finding, policy: GuardrailPolicy | None = None) -> GuardrailBlocked:
    extra = {"detector": finding.detector, "category": finding.category}
    if finding.category == "scan_limit":
        limit = policy.max_scan_chars if policy is not None else 0
        return GuardrailScanLimit(
            f"This request was blocked by the gateway's guardrails: its texts exceed the "
            f"plan's scan limit of {limit} characters (guardrails.max_scan_chars; each text "
            f"counts at least 64), and text that is not read cannot be checked. It was not "
            f"sent upstream and not billed. Send less text, or ask the operator to raise "
            f"guardrails.max_scan_chars in the plan.",
            extra={**extra, "limit": limit},
        )
    if finding.detector == pii_patterns.DETECTOR and finding.category == "timeout":
        return GuardrailTimeout(
            "This request was blocked by the gateway's guardrails: the PII check did not "
            "finish in time (guardrails.pii.timeout_ms). It was not sent upstream and not "
            "billed; retry later, or send less text.",
            extra=extra,
        )
    error = BLOCKS.get(finding.detector, GuardrailBlocked)
    what = "the classifier did not answer in time" if finding.category in (
        "timeout", "unavailable") else f"{finding.category} detected"  # fmt: skip
    return error(
        f"This request was blocked by the gateway's guardrails: {finding.detector} "
        f"({what} in the {finding.where} input). It was not sent upstream and not billed.",
        extra=extra,
    )


def blocked_entry(call: Any, error: GuardrailBlocked, finished_at: float) -> LedgerEntry:
    """The one ledger entry of a blocked request: never sent upstream, never billed (cost and
    revenue 0, status ``blocked``, which the billing export skips), with its findings."""
    state = call.guard
    return call_entry(
        call,
        call.model,
        "",
        "blocked",
        400,
        finished_at,
        error_code=error.error_code,
        metadata=call.principal.metadata,
        latency_ms=(time.perf_counter() - call.started) * 1000,
        guardrails=state.json() if state is not None else [],
    )

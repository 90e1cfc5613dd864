"""The guardrail stage's engines, built at start-up from the plans that need them: presidio
(``pii.engine: presidio``, extra ``farebox[pii]``) and the local injection classifier
(``prompt_injection.classifier: on``, extra ``farebox[guard-model]``). A plan that needs a
missing extra stops start-up with ``GuardrailUnavailable`` naming the plan and the extra; no
plan needs one: nothing is imported.

Plans reloaded while serving (``config.reload``) get the same: ``equip`` loads what the new
plans need and the running stage lacks (presidio for entity types it was not built for, the
classifier), off the event loop, before the plans apply; a missing extra keeps the old plans,
with the same error in the log. Engines are only added: a plan that stops needing one leaves
it loaded until the next restart."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from farebox.config.guardrail_model import GuardModelSettings
from farebox.config.guardrails import GuardrailsConfig
from farebox.errors import GuardrailUnavailable
from farebox.gateway.guardrails import GuardrailStage, PiiEngine
from farebox.guardrails import pii_patterns
from farebox.guardrails.abuse import BatchWatch
from farebox.guardrails.classifier import ClassifierRunner, runner_for

PII_EXTRA = "farebox[pii]"
MODEL_EXTRA = "farebox[guard-model]"


def presidio_plans(plans: Mapping[str, GuardrailsConfig]) -> list[str]:
    """The plans that scan for PII with presidio: the entity types the built-in recognisers
    do not know (names, places ...); the others are always the built-in ones'."""
    return sorted(name for name, g in plans.items()
                  if g.pii.mode != "off" and g.pii.engine == "presidio"
                  and set(g.pii.entities) - set(pii_patterns.ENTITIES))  # fmt: skip


def classifier_plans(plans: Mapping[str, GuardrailsConfig]) -> list[str]:
    """The plans that run the local injection classifier."""
    on = {name for name, g in plans.items() if g.prompt_injection.mode != "off"}
    return sorted(name for name in on if plans[name].prompt_injection.classifier)


def _presidio_entities(plans: Mapping[str, GuardrailsConfig], named: list[str]) -> list[str]:
    """The entity types presidio must know for the plans ``named``: the built-in recognisers'
    own types are never presidio's."""
    wanted = {e for n in named for e in plans[n].pii.entities}
    return sorted(wanted - set(pii_patterns.ENTITIES))


def build_stage(
    plans: Mapping[str, GuardrailsConfig],
    source: str,
    model: GuardModelSettings | None = None,
    batch: BatchWatch | None = None,
) -> GuardrailStage:
    """The stage, with the engines the plans (``plans.NAME.guardrails``) need; ``model``: the
    classifier's (``guard_model:``, its defaults when None); ``batch``: the batch-abuse watch
    (a per-process one when None)."""
    named = presidio_plans(plans)
    presidio = _presidio(named, _presidio_entities(plans, named), source)
    runner = _classifier(classifier_plans(plans), source, model or GuardModelSettings())
    return GuardrailStage(presidio=presidio, classifier=runner, batch=batch)


def equip(
    stage: GuardrailStage,
    plans: Mapping[str, GuardrailsConfig],
    source: str,
    model: GuardModelSettings | None = None,
) -> None:
    """Give the running ``stage`` the engines reloaded ``plans`` need and it lacks (blocking:
    run it off the event loop). Presidio is rebuilt for the union of the types it had and
    the new ones; ``GuardrailUnavailable`` (a ``ConfigError``) when an extra is missing, and
    the stage is left as it was."""
    named = presidio_plans(plans)
    had = set(getattr(stage.presidio, "entities", ()) or ())
    wanted = set(_presidio_entities(plans, named))
    presidio = None
    if named and (stage.presidio is None or not wanted <= had):
        presidio = _presidio(named, sorted(wanted | had), source)
    runner = None
    if stage.classifier is None:
        runner = _classifier(classifier_plans(plans), source, model or GuardModelSettings())
    if presidio is not None:
        stage.adopt_presidio(presidio)
    if runner is not None:
        stage.classifier = runner


def _unavailable(source: str, names: list[str], what: str, extra: str, exc: BaseException) -> \
        GuardrailUnavailable:  # fmt: skip
    where = ", ".join(f"plans.{n}.guardrails.{what}" for n in names)
    return GuardrailUnavailable(
        f"{source}: {where} needs the extra {extra}, which is not installed or not usable: "
        f"pip install '{extra}' ({type(exc).__name__}: {exc})"
    )


def _presidio(names: list[str], entities: list[str], source: str) -> PiiEngine | None:
    if not names:
        return None
    try:
        module: Any = importlib.import_module("farebox.guardrails.pii_presidio")
        engine: PiiEngine = module.load_presidio(entities)
        engine.scan("warm-up: Ada Lovelace loads the model now", entities)
    except (ImportError, GuardrailUnavailable, OSError) as exc:
        raise _unavailable(source, names, "pii.engine: presidio", PII_EXTRA, exc) from None
    return engine


def _classifier(
    names: list[str], source: str, model: GuardModelSettings
) -> ClassifierRunner | None:
    if not names:
        return None
    try:
        return runner_for(model)  # loaded and warmed up: a broken checkpoint fails here
    except (ImportError, GuardrailUnavailable, OSError) as exc:
        raise _unavailable(source, names, "prompt_injection.classifier", MODEL_EXTRA, exc) \
            from None  # fmt: skip

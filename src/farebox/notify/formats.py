"""Wire formats of anomaly alerts: PagerDuty Events API v2, a Slack incoming webhook, and
the JSON of the signed webhook. Pure: building bodies, reading answers; no I/O."""

from __future__ import annotations

import time
from typing import Any

from farebox.core.anomaly import Incident
from farebox.core.money import display_usd, format_usd

MAX_SUMMARY = 1024  # PagerDuty's limit on payload.summary
MAX_DEDUP_KEY = 255


def pd_timestamp(ts: float) -> str:
    """ISO 8601 as PagerDuty shows it: ``2026-11-22T10:00:00.000+0000``."""
    whole = int(ts)
    millis = int((ts - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}+0000"


def _amount(metric: str, value: int) -> str:
    return f"{display_usd(value)}/hour" if metric == "spend" else f"{value:,} requests/hour"


def subject(incident: Incident) -> str:
    who = f"tenant {incident.tenant_id}"
    return f"key {incident.key_id} of {who}" if incident.key_id else who


def action_text(incident: Incident) -> str:
    if incident.target == "tenant":
        return f"paused tenant {incident.tenant_id}"
    if incident.target == "key":
        return f"paused key {incident.target_key} of tenant {incident.tenant_id}"
    return "paused nothing (alert only)"


def _multiplication(incident: Incident) -> str:
    """Account multiplication (issue 15): one client, many tenants."""
    d = incident.detail
    paused = d.get("paused") or []
    done = (
        f"paused {'tenants' if incident.target == 'tenant' else 'keys'} {', '.join(paused)}"
        if incident.target != "none"
        else "paused nothing (alert only)"
    )
    return (
        f"Farebox anomaly: account multiplication: client {d.get('client')} used keys of "
        f"{incident.observed} tenants on plans {', '.join(d.get('plans') or [])} within "
        f"{d.get('window_s')} s (at most {incident.threshold}); {done}"
    )


def summary(incident: Incident) -> str:
    """One line a human can act on."""
    if incident.metric == "account_multiplication":
        return _multiplication(incident)[:MAX_SUMMARY]
    above = (incident.observed - incident.baseline) * 100 // max(incident.baseline, 1)
    text = (
        f"Farebox anomaly: {subject(incident)} at {_amount(incident.metric, incident.observed)}, "
        f"{above}% above its baseline of {_amount(incident.metric, incident.baseline)}; "
        f"{action_text(incident)}"
    )
    return text[:MAX_SUMMARY]


def details(incident: Incident) -> dict[str, Any]:
    money = incident.metric == "spend"

    def show(v: int) -> str | int:
        return format_usd(v) if money else v

    return {
        "incident": incident.id,
        "tenant": incident.tenant_id,
        "key": incident.key_id or None,
        "metric": incident.metric,
        "observed_per_hour": show(incident.observed),
        "baseline_per_hour": show(incident.baseline),
        "threshold_per_hour": show(incident.threshold),
        "unit": "usd" if money else "requests",
        "action": incident.target,
        "paused_key": incident.target_key or None,
        "opened_at": incident.opened_at,
        **incident.detail,
    }


def pagerduty_trigger(
    incident: Incident,
    routing_key: str,
    *,
    source: str,
    severity: str,
    client_url: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": incident.dedup_key[:MAX_DEDUP_KEY],
        "client": "Farebox",
        "payload": {
            "summary": summary(incident),
            "source": source,
            "severity": severity,
            "timestamp": pd_timestamp(incident.opened_at),
            "component": "anomaly-detector",
            "group": incident.tenant_id,
            "class": f"traffic_anomaly.{incident.metric}",
            "custom_details": details(incident),
        },
    }
    if client_url:
        event["client_url"] = client_url
    return event


def pagerduty_resolve(incident: Incident, routing_key: str) -> dict[str, Any]:
    return {
        "routing_key": routing_key,
        "event_action": "resolve",
        "dedup_key": incident.dedup_key[:MAX_DEDUP_KEY],
    }


def slack_message(incident: Incident, resolved: bool = False) -> dict[str, Any]:
    if resolved:
        text = f"Resolved: Farebox anomaly on {subject(incident)} ({incident.id}); resumed."
    else:
        text = summary(incident)
    context = (
        f"incident `{incident.id}` · metric `{incident.metric}` · tenant `{incident.tenant_id}`"
    )
    title = "*Anomaly resolved*" if resolved else "*Anomaly detected*"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"{title} {text}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
        ],
    }


def webhook_event(incident: Incident, resolved: bool = False) -> dict[str, Any]:
    return {
        "type": "anomaly.resolved" if resolved else "anomaly.detected",
        "summary": summary(incident),
        "dedup_key": incident.dedup_key,
        "resolved_at": incident.resolved_at,
        **details(incident),
    }


def pagerduty_accepted(status: int) -> bool:
    return status == 202


def slack_accepted(status: int, body: bytes) -> bool:
    return status == 200 and body.strip() == b"ok"


def retryable(status: int) -> bool:
    """429 and 5xx are worth another try; any other refusal is final."""
    return status == 429 or status >= 500

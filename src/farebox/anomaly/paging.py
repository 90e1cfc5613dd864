"""Pages and messages about anomaly incidents: PagerDuty, Slack and the signed webhook.

Built from the ``anomaly:`` settings; every destination is an ordered, retried ``Channel``.
"""

from __future__ import annotations

from farebox.config.anomaly import AnomalySettings
from farebox.core.anomaly import Incident
from farebox.http.client import HttpClient
from farebox.notify import formats
from farebox.notify.channels import Channel, WebhookAlerts


class Pager:
    def __init__(
        self,
        cfg: AnomalySettings,
        secrets: dict[str, str],
        http: HttpClient,
        webhook: WebhookAlerts | None = None,
        backoff_s: float = 1.0,
    ) -> None:
        self._cfg = cfg
        self._routing_key = secrets.get("pagerduty")
        self._webhook = webhook if cfg.webhook else None
        self._pd: Channel | None = None
        self._slack: Channel | None = None
        if cfg.pagerduty is not None and self._routing_key:
            url = cfg.pagerduty.base_url.rstrip("/") + "/v2/enqueue"
            self._pd = Channel(
                "pagerduty", url, http, lambda r: formats.pagerduty_accepted(r.status),
                attempts=cfg.retry_attempts, backoff_s=backoff_s,
            )  # fmt: skip
        if secrets.get("slack"):
            self._slack = Channel(
                "slack", secrets["slack"], http,
                lambda r: formats.slack_accepted(r.status, r.body),
                attempts=cfg.retry_attempts, backoff_s=backoff_s,
            )  # fmt: skip

    @property
    def channels(self) -> list[str]:
        named = [("pagerduty", self._pd), ("slack", self._slack), ("webhook", self._webhook)]
        return [name for name, channel in named if channel is not None]

    def triggered(self, incident: Incident) -> None:
        pd = self._cfg.pagerduty
        if self._pd is not None and pd is not None and self._routing_key:
            body = formats.pagerduty_trigger(
                incident, self._routing_key, source=pd.source, severity=pd.severity,
                client_url=pd.client_url,
            )  # fmt: skip
            self._pd.send(body, f"trigger {incident.id}")
        if self._slack is not None:
            self._slack.send(formats.slack_message(incident), f"message {incident.id}")
        if self._webhook is not None:
            self._webhook.send(formats.webhook_event(incident))

    def resolved(self, incident: Incident) -> None:
        if self._pd is not None and self._routing_key:
            self._pd.send(
                formats.pagerduty_resolve(incident, self._routing_key), f"resolve {incident.id}"
            )
        if self._slack is not None:
            self._slack.send(formats.slack_message(incident, True), f"resolved {incident.id}")
        if self._webhook is not None:
            self._webhook.send(formats.webhook_event(incident, True))

    async def aclose(self, timeout_s: float = 0.0) -> None:
        for channel in (self._pd, self._slack):
            if channel is not None:
                await channel.drain(timeout_s)

"""The ``audit:`` section: the admin audit trail (``farebox.identity.audit``), which is always
kept; ``webhook: true`` also streams each record, signed, to ``budgets.alert_webhook_url`` as
an ``audit.record`` event (best effort, queued: never holding up the admin request)."""

from __future__ import annotations

from farebox.config.base import Strict


class AuditSettings(Strict):
    webhook: bool = False  # also send each record to the signed alert webhook

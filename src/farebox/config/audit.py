"""The ``audit:`` section: the admin audit trail (``farebox.identity.audit``), which is always
kept; ``webhook: true`` also streams each record, signed, to ``budgets.alert_webhook_url`` as
an ``audit.record`` event (best effort, queued: never holding up the admin request).

``refusal_window_s``: refused attempts without a valid admin key (401s) from one client IP on
one operation are folded into at most one record per window, each record carrying the
``count`` of attempts it stands for (``farebox.api.admin.audit_refusals``); 0 records each
attempt on its own."""

from __future__ import annotations

from pydantic import Field

from farebox.config.base import Strict


class AuditSettings(Strict):
    webhook: bool = False  # also send each record to the signed alert webhook
    refusal_window_s: float = Field(default=10.0, ge=0, le=3600)

"""Inbound billing webhooks that grant prepaid credits (``POST /billing/v1/webhooks/{sink}``).

One module per billing system (``stripe``, ``lago``, ``metronome``, ``openmeter``): each
verifies its system's own signature (``verify``) and reads its payload into the neutral
``farebox.core.inbound.InboundGrant`` (``parse``); ``sync.CreditSync`` applies it exactly once
through the credit service (``base.CreditGranter``), or parks it for review.
"""

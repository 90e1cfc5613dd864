"""Anomaly auto-pause: ``watch`` counts every ledger entry per tenant and key, compares the recent
window with each baseline, pauses as the plan says and opens incidents; ``history`` keeps the
loud tenants' hourly history; ``paging`` pages and messages about incidents (PagerDuty, Slack,
the signed webhook). A capability wing, independent of billing and identity: it may import
notify, config, providers, sinks, stores (role protocols), http, catalog, errors and core,
never gateway, api, app or cli.
"""

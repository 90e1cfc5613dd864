"""Alert channels and their wire formats: ``channels`` delivers off the request path, in order
per destination and retried with backoff (the signed webhook, PagerDuty, Slack); ``formats``
builds the PagerDuty Events API v2, Slack Block Kit and signed-webhook bodies, pure. It may
import config and what lies below it (providers, sinks, stores, http, catalog, errors, core),
never the capability wings (billing, anomaly, identity) or anything above them.
"""

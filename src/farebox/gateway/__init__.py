"""The request path, from an authenticated request to its ledger entry: ``pipeline`` holds
``Gateway`` and reads as the stages in order; beside it the per-request carrier,
authentication, plan policy, admission (budgets) and rate limits, sizes, the routing table,
circuit breakers, failover, the ledger writer, stream metering and rendering. It may import
billing, anomaly, identity, notify, config, providers, sinks, stores (role protocols), http,
catalog, errors and core, never api, app or cli.
"""

"""Usage billing: ``exporter`` (the ledger as outbox, a cursor per sink, batches, retries,
dead letters), ``redis_stream`` (the Redis stream sink), ``reconcile`` (what each sink has
against the ledger) and ``margins`` (plan fee plus usage revenue, against cost). A capability
wing, independent of anomaly and identity: it may import notify, config, providers, sinks,
stores (role protocols), http, catalog, errors and core, never gateway, api, app or cli.
"""

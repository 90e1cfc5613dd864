"""The request path, from an authenticated request to its ledger entry: ``pipeline`` holds
``Gateway`` and reads as the stages in order; beside it the per-request carrier (``call``),
authentication, plan policy, sizes, admission (``admission``: budgets and rate limits
reserved together, ``budget_scope``, ``rate_limits``), ``failover``, ``relay`` (streams),
``metering`` (the entry that ends every admission), ``render``, the routing table, circuit
breakers and the ledger writer. It may import billing, anomaly, identity, notify, config,
providers, sinks, stores (role protocols only), http, catalog, errors and core, never api,
app or cli.
"""

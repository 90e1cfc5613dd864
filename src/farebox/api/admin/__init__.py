"""The admin API under ``/admin/v1``, every operation behind the admin key. ``router`` is the
table of operations (method, path, handler) in the order the OpenAPI document lists them; the
handlers live by resource: ``tenants``, ``keys``, ``budgets``, ``billing`` (export, dead
letters, margins, reconciliation, usage, unsettled entries), ``operations`` (deployments,
metrics, plans) and ``anomaly`` (incidents), with ``params`` (shared query parameters and the
strict body base) and ``errors`` (validation failures and 405 in the one error format). Like
the rest of ``api``, it may import the layers below the API (gateway, billing, anomaly,
identity, notify, config, providers, sinks, the role protocols of stores, http, catalog,
errors, core), never ``app`` or ``cli`` and never a concrete store.
"""

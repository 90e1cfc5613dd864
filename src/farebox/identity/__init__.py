"""Who is who: ``tenancy`` administers tenants and keys (create, update, pause, revoke, usage
queries) and renders them as JSON, shared by the admin API and the CLI. JWT and subdomain
tenants, workspaces, admin roles and the audit trail belong here too. A capability wing,
independent of billing and anomaly: it may import notify, config, providers, sinks, stores
(role protocols), http, catalog, errors and core, never gateway, api, app or cli.
"""

"""The GraphQL metrics API (strawberry): ``/admin/graphql`` for the admin key, ``/v1/graphql``
for a tenant key, which sees its own tenant only.

``types`` (the shared types), ``schema`` (the admin and the tenant schema), ``resolvers`` and
``series`` (what each query reads), ``findings`` (guardrail findings: types and resolver),
``convert`` (records to types), ``timing`` (zones and moments), ``limits`` (depth, aliases,
tokens, cost, page and range caps), ``context`` (who is asking) and ``endpoint`` (HTTP and
mounting). Imports the API's admin handlers, the gateway's
services and the stores' roles.
"""

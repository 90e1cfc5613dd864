"""The HTTP edge: the data plane (``openai``: chat completions, embeddings, models;
``anthropic``: messages; ``me``: ``/v1/me`` and health) on its own fast dispatch, the admin
API (``admin/``), request-body schemas (``schemas/``), input bounds and the client IP, the
OpenAPI document and ``/docs``, and ``application``, which builds the ASGI app and its
lifespan around the services ``app`` wired. It parses requests, hands them to the gateway and
renders responses and errors in the caller's format. It may import gateway, billing, anomaly,
identity, notify, config, providers, sinks, the role protocols of stores, http, catalog,
errors and core, never ``app`` or ``cli`` and never a concrete store.
"""

"""The one upstream HTTP client that providers, billing sinks and alert channels share:
``client`` (requests, server-sent events, and upstream statuses mapped to ``UpstreamError``),
``http1`` (a lean HTTP/1.1 transport: keep-alive pools, httptools parsing) and ``sanitize``
(what of an upstream's error a tenant may see). It may import only catalog, errors and core.
"""

"""Seeing the gateway: Prometheus metrics (``metrics``), OpenTelemetry traces (``traces``, the
``farebox[otel]`` extra), JSON access logs (``access_log``) and the report services that read
the ledger's rollups (``reports``). Imports stores' roles (``stores.base``), config and core;
the gateway and the API call into it."""

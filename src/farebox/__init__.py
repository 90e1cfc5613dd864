"""Farebox: a multi-tenant AI gateway with hard budgets and exact per-request cost. The package
reads as the request path, and each layer imports only what lies below it: ``cli`` | ``demo``
| ``app`` | ``api`` | ``gateway`` | ``billing``, ``anomaly``, ``identity`` (independent of
each other) | ``notify`` | ``config`` | ``providers``, ``sinks``, ``stores`` (independent of
each other) | ``http`` | ``catalog`` | ``errors`` | ``core``. ``app.py`` wires one instance
and is the only module that picks concrete adapters; ``errors.py`` is the one
``FareboxError`` tree; ``__main__.py`` runs the CLI.
"""

__version__ = "0.1.0"

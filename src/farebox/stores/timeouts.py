"""How long the scaled-out stores wait on PostgreSQL and Redis before giving up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoreTimeouts:
    postgres_connect_s: float = 5.0  # opening a connection (TCP, TLS, authentication)
    postgres_command_s: float = 5.0  # one statement, and waiting for a pooled connection
    redis_connect_s: float = 2.0  # opening a connection
    redis_command_s: float = 2.0  # one command or script, and waiting for a pooled connection
    probe_s: float = 1.0  # the ledger database's health probe: interval while up, and timeout

"""Two small sections of farebox.yaml: ``timeouts:`` (deadlines on the shared databases) and
``responses:`` (how long stored Responses API answers live, and when they are stored)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from farebox.config.base import Strict


class TimeoutSettings(Strict):
    """Deadlines on the shared databases (PostgreSQL and Redis) and on ``/readyz``."""

    postgres_connect_s: float = Field(5.0, gt=0)  # opening a connection
    postgres_command_s: float = Field(5.0, gt=0)  # one statement; waiting for a pooled one
    redis_connect_s: float = Field(2.0, gt=0)  # opening a connection
    redis_command_s: float = Field(2.0, gt=0)  # one command or script; waiting for a pooled one
    ledger_probe_s: float = Field(1.0, gt=0)  # PostgreSQL health probe: interval and timeout
    readyz_s: float = Field(1.0, gt=0)  # /readyz answers within this, 503 if the stores do not


class ResponsesSettings(Strict):
    """The Responses API's stored responses (``previous_response_id``)."""

    ttl_days: float = Field(30, gt=0, le=3_650)  # a stored response is gone this long after
    # true: an answer is stored before its last bytes leave, so any replica can continue it at
    # once; false: stored beside the reply (faster), continued at once only by this process
    # (which waits for its own pending write); auto: false where this one process is its
    # database's only user (single-process SQLite, memory), true where others share it
    # (SQLite shared mode, --workers, PostgreSQL replicas)
    store_before_reply: bool | Literal["auto"] = "auto"

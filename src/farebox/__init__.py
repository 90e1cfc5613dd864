"""Farebox: a multi-tenant AI gateway with hard budgets and exact per-request cost."""

__version__ = "0.1.0"

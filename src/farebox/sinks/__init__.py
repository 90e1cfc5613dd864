"""Billing and alert sinks (export arrives with the billing issue)."""

"""The first hour of a new user: ``seed`` (sample plans, tenants and keys for ``farebox demo``),
``drive`` (simulated tenant traffic for ``farebox demo --traffic``), ``synthetic`` and
``simulate`` (weeks of synthetic traffic through the real anomaly detector, for ``farebox
simulate``). It may import ``app`` and everything below it, never ``cli``.
"""

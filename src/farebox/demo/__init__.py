"""The first hour of a new user: what ``farebox demo`` seeds (``seed``: sample plans, tenants,
keys and traffic history), the simulated clients of ``--traffic`` (``drive``: per-tenant
traffic in a thread that stops on request), the tables the demo prints (``report``: a key per
demo tenant and the traffic summary), and the anomaly simulator behind ``farebox simulate``
(``simulate``, ``synthetic``). It may import ``app`` and everything below it, never ``cli``.
"""

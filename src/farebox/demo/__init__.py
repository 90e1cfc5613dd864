"""The demo: what ``farebox demo`` seeds (``seed``: sample plans, tenants, keys and traffic
history), the simulated clients of ``--traffic`` (``drive``: per-tenant traffic in a thread
that stops on request), the tables the demo prints (``report``: a key per demo tenant and the
traffic summary), and the anomaly simulator behind ``farebox simulate``
(``simulate``, ``synthetic``). It may import core, errors, http, identity, anomaly, notify and
stores; never cli or api (``simulate`` alone borrows ``app.make_watch`` to build the watcher the
server would run)."""

"""Redis, the scaled-out store's shared counters: ``budgets`` keeps budget and rate-limit
counters, leased reservations and breakers, each change one Lua script (run by ``scripts``,
with less client work than redis-py's own); ``epoch`` keeps the auth epoch on each replica
(pub/sub and a poll, no Redis command per request); ``namespace`` decides which keys belong
to which deployment (one per PostgreSQL database), reading the database's identity through
``stores.postgres``. May import ``farebox.core``, ``farebox.errors``, the shared modules of
``farebox.stores`` and ``stores.postgres``; never SQLite or memory, nor anything above the
stores."""

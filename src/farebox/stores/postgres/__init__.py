"""PostgreSQL (asyncpg): ``store`` keeps tenants, keys, the ledger and its outbox, export
cursors and dead letters, budget alerts and meta; ``traffic`` the traffic counters and
incidents; ``schema`` the migrations; ``pool`` the connection pool with a deadline on every
call. It is not a whole ``Store`` alone: ``stores.scaled`` adds Redis for the counters, the
leases, the breakers and the auth epoch. May import ``farebox.core``, ``farebox.errors`` and
the shared modules of ``farebox.stores``; never another backend, nor anything above the
stores."""

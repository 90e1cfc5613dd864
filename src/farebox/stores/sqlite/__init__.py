"""The SQLite store (WAL mode) for one host: ``store`` is ``SQLiteStore``, which several
worker processes share, and ``single`` the store of a process that owns its database alone
(counters in memory, reservations journalled). Their parts: ``schema`` (migrations), ``conn``
(connections and the owner lock), ``rows`` (records as rows, ledger inserts), ``budgets``
(counters and leases in SQL), ``traffic``, ``wal`` (checkpoints that keep the log bounded),
``epoch_file`` (the auth epoch in shared memory) and ``meta`` (a value read or written
outside a running store, for the CLI). May import ``farebox.core``, ``farebox.errors``, the
shared modules of ``farebox.stores`` and ``stores.memory.budgets``; never PostgreSQL or Redis,
nor anything above the stores."""

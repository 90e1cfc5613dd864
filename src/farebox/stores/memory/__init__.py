"""The in-process store: every role kept in dictionaries, for tests, the simulator and
throwaway gateways; nothing survives a restart. ``store`` is ``MemoryStore``, ``traffic`` its
traffic counters and incidents, and ``budgets`` its counters and leased reservations, which
the single-process SQLite store reuses for its in-memory counters. May import
``farebox.core``, ``farebox.errors`` and the shared modules of ``farebox.stores`` (``health``,
``traffic_rows``); never another backend, nor anything above the stores."""

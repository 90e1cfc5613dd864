"""Where farebox keeps its state. ``base`` declares the role protocols (accounts, ledger,
usage, reservations, breakers, export, traffic, meta) and ``Store``, which composes them;
each backend is a subpackage that implements them: ``memory/`` (in process), ``sqlite/`` (one
host, any number of worker processes), and ``postgres/`` with ``redis/``, which ``scaled``
composes for many replicas. Beside them are the pieces the backends share: ``health`` (a
database's reachability and its probe), ``timeouts``, ``sql`` and ``usage_query`` (the SQL
text both SQL stores build alike) and ``traffic_rows``. Modules here may import
``farebox.core``, ``farebox.errors`` and ``farebox.stores`` itself; never providers, sinks,
the gateway, the API or the config. Only ``app.py`` picks a concrete store."""

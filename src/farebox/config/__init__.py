"""The one typed settings object. ``settings`` holds ``FileConfig`` and its sections, and
``load_settings`` / ``parse_settings``, the only reader of the environment; ``base`` the strict
model base (an unknown key fails start-up, naming the file and the key), exact decimal amounts
and ``env:NAME`` secret references; ``anomaly`` the ``anomaly:`` section and each plan's
overrides; ``reload`` the re-reading of plans while serving; ``secret_file`` the key-hashing
secret kept beside a SQLite database. It may import only what lies below it: providers, sinks,
stores, http, catalog, errors and core (today it needs catalog, errors and core).
"""

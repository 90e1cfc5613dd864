"""One contract suite per store role (``farebox.stores.base``), each run against every
backend that implements the role: ``backends`` builds them, ``conftest`` hands them to the
tests, ``builders`` makes the records the tests store."""

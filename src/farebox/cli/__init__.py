"""The ``farebox`` command (Click). ``root`` assembles the root group ``main`` (re-exported
here: the console script is ``farebox.cli:main``) from one module per command group, with
``local`` (commands on the local database, through the admin API's own code) and
``config_source`` (which configuration such a command uses). The top layer: it may import
anything in the package, and nothing imports it.
"""

from farebox.cli.root import main

__all__ = ["main"]

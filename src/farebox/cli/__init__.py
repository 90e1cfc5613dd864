"""The ``farebox`` command (Click): ``main`` and one module per command group, ``local``
(commands on the local database, through the admin API's own code) and ``config_source``
(which configuration such a command uses). The top layer: it may import anything in the
package, and nothing imports it.
"""

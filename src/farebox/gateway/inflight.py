"""The number of data-plane requests being served right now.

The HTTP layer counts them; the ledger writer reads the count to tell a request served alone
(which commits its own entry at once) from load (where entries share group commits).
"""

from __future__ import annotations


class InFlight:
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

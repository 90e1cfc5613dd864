"""What the HTTP edge is handed: the wired services of one app instance."""

from __future__ import annotations

from dataclasses import dataclass

from farebox.api.client_ip import TrustedProxies
from farebox.auth import Authenticator
from farebox.breakers import Breakers
from farebox.budgeting import Budgets
from farebox.config import Settings
from farebox.ledger import LedgerWriter
from farebox.pipeline import Gateway
from farebox.stores.base import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    auth: Authenticator
    gateway: Gateway
    ledger: LedgerWriter
    secret: bytes
    admin_key_hash: str
    started_at: float
    budgets: Budgets
    proxies: TrustedProxies
    breakers: Breakers

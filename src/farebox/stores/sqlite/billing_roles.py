"""The SQLite store's billing roles: credit grants, the billing webhooks' inbox, upsell
moments, the audit log and tenants' workspaces (issue 14; here because store.py is at its
size cap). Each in its own module; this only makes them, on the store's runners."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from farebox.stores.sqlite.audit import SQLiteAudit
from farebox.stores.sqlite.credits import SQLiteCredits
from farebox.stores.sqlite.inbox import SQLiteInbox
from farebox.stores.sqlite.multiplication import SQLiteSightings
from farebox.stores.sqlite.pausing import SQLitePauses
from farebox.stores.sqlite.upsell import SQLiteUpsell
from farebox.stores.sqlite.workspaces import SQLiteWorkspaces


class BillingRoles:
    credits: SQLiteCredits
    inbox: SQLiteInbox  # billing webhooks: seen events, parked grants
    upsell: SQLiteUpsell
    audit: SQLiteAudit  # the audit log: appends in BEGIN IMMEDIATE transactions
    workspaces: SQLiteWorkspaces  # tenants' workspaces (issue 14; not billing, but made alike)
    multiplication: SQLiteSightings  # account multiplication's sightings (issue 15)
    pauses: SQLitePauses  # conditional pauses of tenants and keys (stores.pausing)

    def _billing_roles(
        self,
        write: Any,
        read: Any,
        bump: Callable[[sqlite3.Connection], int],
        publish: Callable[[int], None],
    ) -> None:
        self.credits = SQLiteCredits(write, read, bump, publish)
        self.inbox = SQLiteInbox(write, read)
        self.upsell = SQLiteUpsell(write, read)
        self.audit = SQLiteAudit(write, read)
        self.workspaces = SQLiteWorkspaces(write, read, bump, publish)
        self.multiplication = SQLiteSightings(write, read)
        self.pauses = SQLitePauses(write, read, bump, publish)

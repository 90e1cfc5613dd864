"""Budget counters and leased reservations in SQLite. Every function runs inside a
transaction the caller opened with ``BEGIN IMMEDIATE``, so each is atomic across the
processes sharing the database."""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from farebox.core.budgets import (
    Hold,
    HoldState,
    held_rows,
    parse_held_rows,
    rollover,
    settled_amount,
)
from farebox.core.records import LedgerEntry, Reservation, ReserveOutcome, ledgered

PRUNE_AFTER_S = 7 * 86400
RATE_BUCKETS_KEPT_S = 2 * 3600  # rate-limit windows are at most an hour long
_SUM = (
    "SELECT COALESCE(SUM(used), 0), COALESCE(SUM(reserved), 0), "
    "MIN(CASE WHEN used > 0 OR reserved > 0 THEN bucket END) FROM budget_counters "
    "WHERE key = ? AND bucket >= ? AND bucket <= ?"
)


def _upto(hold: Hold) -> float:
    """The last bucket a hold counts (``Hold.counts``): its own for a one-bucket window,
    every later one for a rolling window."""
    return hold.bucket if hold.buckets_from == hold.bucket else math.inf


def states(db: sqlite3.Connection, holds: Sequence[Hold]) -> list[HoldState]:
    """Every hold's counters, read with one statement."""
    sql = " UNION ALL ".join([_SUM] * len(holds))
    params = [v for h in holds for v in (h.key, h.buckets_from, _upto(h))]
    rows = db.execute(sql, params).fetchall()
    pairs = zip(holds, rows, strict=True)
    return [
        _state(db, h, int(used), int(reserved), oldest) for h, (used, reserved, oldest) in pairs
    ]


def _state(
    db: sqlite3.Connection, hold: Hold, used: int, reserved: int, oldest: float | None
) -> HoldState:
    limit = hold.limit
    if hold.rollover_bucket is not None:
        row = db.execute(
            "SELECT used FROM budget_counters WHERE key = ? AND bucket = ?",
            (hold.key, hold.rollover_bucket),
        ).fetchone()
        limit += rollover(hold, row[0] if row else 0)
    return HoldState(hold, used, reserved, limit, oldest)


def reserve(db: sqlite3.Connection, reservation: Reservation) -> ReserveOutcome:
    found = states(db, reservation.holds)
    held = [reservation.held(h) for h in reservation.holds]
    for current, amount in zip(found, held, strict=True):
        if current.used + current.reserved + amount > current.limit:
            return ReserveOutcome(False, found, current)
    db.executemany(
        "INSERT INTO budget_counters(key, bucket, used, reserved) VALUES (?, ?, 0, ?) "
        "ON CONFLICT(key, bucket) DO UPDATE SET reserved = reserved + excluded.reserved",
        [(h.key, h.bucket, amount) for h, amount in zip(reservation.holds, held, strict=True)],
    )
    db.execute(
        "INSERT INTO reservations(id, amount, holds, expires_at, unsettled) VALUES (?, ?, ?, ?, ?)",
        (
            reservation.id,
            reservation.amount,
            orjson.dumps(held_rows(reservation)).decode(),
            reservation.expires_at,
            orjson.dumps(reservation.unsettled).decode(),
        ),
    )
    after = [
        HoldState(s.hold, s.used, s.reserved + amount, s.limit, s.oldest)
        for s, amount in zip(found, held, strict=True)
    ]
    return ReserveOutcome(True, after)


def settle(db: sqlite3.Connection, entries: Sequence[LedgerEntry]) -> None:
    """Turn each entry's reservation into spend of exactly its cost."""
    for entry in entries:
        if entry.reservation_id is None:
            continue
        # the usual case in one statement: a held reservation is deleted as it settles
        row = db.execute(
            "DELETE FROM reservations WHERE id = ? AND state = 'held' "
            "RETURNING amount, holds, state",
            (entry.reservation_id,),
        ).fetchone()
        if row is None:
            row = db.execute(
                "SELECT amount, holds, state FROM reservations WHERE id = ?",
                (entry.reservation_id,),
            ).fetchone()
        if row is None or row[2] == "settled_late":
            continue
        amount, holds, status = row
        live = status == "held"  # a reclaimed hold was already released
        db.executemany(
            "UPDATE budget_counters SET reserved = reserved - ?, used = used + ? "
            "WHERE key = ? AND bucket = ?",
            [
                (
                    held if live else 0,
                    settled_amount(unit, entry.cost, entry.tokens, entry.revenue),
                    key,
                    bucket,
                )
                for key, bucket, held, unit in parse_held_rows(orjson.loads(holds), amount)
            ],
        )
        if status != "held":  # settled after its lease expired: replace the placeholder
            db.execute(
                "UPDATE reservations SET state = 'settled_late' WHERE id = ?",
                (entry.reservation_id,),
            )
            db.execute(
                "DELETE FROM ledger WHERE request_id = ? AND status = 'unsettled'",
                (entry.request_id,),
            )


def cancel(db: sqlite3.Connection, rid: str) -> None:
    """Undo a held reservation that no request will use (its caller went away before it
    learned of it): its holds released and its record gone, nothing in the ledger."""
    row = db.execute(
        "DELETE FROM reservations WHERE id = ? AND state = 'held' RETURNING amount, holds", (rid,)
    ).fetchone()
    if row is None:
        return
    amount, holds = row
    db.executemany(
        "UPDATE budget_counters SET reserved = reserved - ? WHERE key = ? AND bucket = ?",
        [
            (held, key, bucket)
            for key, bucket, held, _ in parse_held_rows(orjson.loads(holds), amount)
        ],
    )


def extend(db: sqlite3.Connection, ids: Sequence[str], expires_at: float) -> None:
    db.executemany(
        "UPDATE reservations SET expires_at = ? WHERE id = ? AND state = 'held'",
        [(expires_at, rid) for rid in ids],
    )


def expired(db: sqlite3.Connection, now: float, limit: int = 500) -> list[LedgerEntry]:
    """Release holds whose lease ran out; return their ``unsettled`` ledger entries (but a
    ledger-free reservation's, which never reaches the ledger).
    Reclaimed reservations are kept a week for late settlement, then pruned."""
    db.execute(
        "DELETE FROM reservations WHERE state != 'held' AND expires_at < ?", (now - PRUNE_AFTER_S,)
    )
    # rate-limit buckets that left every window (the longest is an hour) and hold nothing
    db.execute(
        "DELETE FROM budget_counters WHERE key >= 'rl:' AND key < 'rl;' AND bucket < ? "
        "AND reserved = 0",
        (now - RATE_BUCKETS_KEPT_S,),
    )
    rows = db.execute(
        "SELECT id, amount, holds, unsettled FROM reservations "
        "WHERE state = 'held' AND expires_at < ? LIMIT ?",
        (now, limit),
    ).fetchall()
    entries = []
    for rid, amount, holds, unsettled in rows:
        db.executemany(
            "UPDATE budget_counters SET reserved = reserved - ? WHERE key = ? AND bucket = ?",
            [
                (held, key, bucket)
                for key, bucket, held, _unit in parse_held_rows(orjson.loads(holds), amount)
            ],
        )
        db.execute("UPDATE reservations SET state = 'reclaimed' WHERE id = ?", (rid,))
        data: dict[str, Any] = orjson.loads(unsettled)
        entries.append(dataclasses.replace(LedgerEntry(**data), finished_at=now))
    return ledgered(entries)


def record_alert(
    db: sqlite3.Connection, hold: Hold, threshold: int, tenant: str | None, now: float, detail: str
) -> bool:
    cur = db.execute(
        "INSERT OR IGNORE INTO budget_alerts(key, bucket, threshold, tenant_id, fired_at, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (hold.key, hold.bucket, threshold, tenant, now, detail),
    )
    return cur.rowcount == 1


def alerts(db: sqlite3.Connection, tenant: str | None) -> list[dict[str, Any]]:
    where, params = ("WHERE tenant_id = ?", (tenant,)) if tenant is not None else ("", ())
    rows = db.execute(
        f"SELECT key, bucket, threshold, tenant_id, fired_at, detail FROM budget_alerts {where} "
        "ORDER BY fired_at",
        params,
    ).fetchall()
    return [
        {"budget": r[0], "window_start": r[1], "threshold_percent": r[2], "tenant": r[3],
         "fired_at": r[4], **orjson.loads(r[5])}
        for r in rows
    ]  # fmt: skip

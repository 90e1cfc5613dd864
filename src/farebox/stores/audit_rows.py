"""The audit log as rows: the SQL the SQLite and PostgreSQL stores share (``?`` placeholders;
PostgreSQL's are numbered by ``numbered``). ``change`` is kept as JSON text exactly as
encoded (sorted keys), never as a JSON column that would re-encode it: the hash covers it."""

from __future__ import annotations

import re
from typing import Any

import orjson

from farebox.core.audit import AuditQuery, AuditRecord

COLS = ("seq", "at", "actor", "role", "action", "target", "change", "ip", "request_id",
        "outcome", "status", "prev_hash", "hash")  # fmt: skip
SELECT = f"SELECT {','.join(COLS)} FROM audit_log"
INSERT = f"INSERT INTO audit_log({','.join(COLS)}) VALUES ({','.join('?' * len(COLS))})"
LAST = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
SCAN = f"{SELECT} WHERE seq > ? ORDER BY seq LIMIT ?"
MAX_LIMIT = 10_000


def values(record: AuditRecord) -> tuple[Any, ...]:
    change = orjson.dumps(dict(record.change), option=orjson.OPT_SORT_KEYS).decode()
    return (record.seq, record.at, record.actor, record.role, record.action, record.target,
            change, record.ip, record.request_id, record.outcome, record.status,
            record.prev_hash, record.hash)  # fmt: skip


def record_of(row: Any) -> AuditRecord:
    (seq, at, actor, role, action, target, change, ip, request_id, outcome, status,
     prev_hash, digest) = row  # fmt: skip
    return AuditRecord(int(seq), float(at), actor, role, action, target, orjson.loads(change),
                       ip, request_id, outcome, int(status), prev_hash, digest)  # fmt: skip


def query_sql(query: AuditQuery) -> tuple[str, list[Any]]:
    """The SELECT of one page of ``query``, and its arguments."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("actor", query.actor), ("action", query.action),
                          ("target", query.target)):  # fmt: skip
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if query.start is not None:
        where.append("at >= ?")
        args.append(float(query.start))
    if query.end is not None:
        where.append("at < ?")
        args.append(float(query.end))
    if query.cursor is not None:
        where.append("seq < ?" if query.descending else "seq > ?")
        args.append(int(query.cursor))
    sql = SELECT + (" WHERE " + " AND ".join(where) if where else "")
    sql += f" ORDER BY seq {'DESC' if query.descending else 'ASC'} LIMIT ?"
    args.append(max(0, min(query.limit, MAX_LIMIT)))
    return sql, args


def numbered(sql: str, schema: str) -> str:
    """``sql`` for PostgreSQL: ``$n`` placeholders, the table in ``schema``."""
    count = iter(range(1, 1000))
    sql = re.sub(r"\?", lambda _: f"${next(count)}", sql)
    return re.sub(r"\baudit_log\b", schema + ".audit_log", sql)

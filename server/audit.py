"""The append-only, hash-chained audit log.

Every state change appends one record in the same transaction as the change
itself, so the log and the state never disagree. A record's hash covers its
sequence, time, actor, role, action, canonical JSON payload and the previous
record's hash: editing, inserting or deleting any record breaks every hash
after it. Triggers refuse UPDATE and DELETE on the table; :func:`verify`
catches changes made behind SQLite's back (another tool, a raw file edit).

Payloads hold the full inputs of each change (feeder tables, bids, awards,
forecasts), so that :mod:`server.replay` can rebuild every clearing from the
log alone.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass

GENESIS = "0" * 64


def canonical(payload: dict) -> str:
    """Canonical JSON text of a payload: sorted keys, no spaces, no NaN."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def record_hash(seq: int, recorded_us: int, actor: str, role: str, action: str, payload: str,
                prev_hash: str) -> str:
    """Hex SHA-256 of one record (a JSON array, so no field can bleed into the next)."""
    text = json.dumps([seq, recorded_us, actor, role, action, prev_hash, payload], separators=(",", ":"),
                      ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def append(conn: sqlite3.Connection, actor: str, role: str, action: str, payload: dict,
           recorded_us: int) -> int:
    """Append one record inside the caller's transaction; returns its sequence."""
    last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    text = canonical(payload)
    conn.execute("INSERT INTO audit (seq, recorded_us, actor, role, action, payload, prev_hash, hash) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (seq, recorded_us, actor, role, action, text, prev,
                  record_hash(seq, recorded_us, actor, role, action, text, prev)))
    return seq


@dataclass(frozen=True)
class ChainReport:
    """Outcome of :func:`verify`: ``first_bad`` is 0 when ``ok``."""

    ok: bool
    records: int
    first_bad: int = 0
    reason: str = ""


def verify(conn: sqlite3.Connection) -> ChainReport:
    """Recompute every hash and link, in sequence order; stop at the first break."""
    prev, expected, count = GENESIS, 1, 0
    rows = conn.execute("SELECT seq, recorded_us, actor, role, action, payload, prev_hash, hash "
                        "FROM audit ORDER BY seq")
    for seq, recorded_us, actor, role, action, payload, prev_hash, digest in rows:
        if seq != expected:
            return ChainReport(False, count, expected, f"record {expected} is missing (next is {seq})")
        if prev_hash != prev:
            return ChainReport(False, count, seq, "prev_hash does not match the previous record's hash")
        if record_hash(seq, recorded_us, actor, role, action, payload, prev_hash) != digest:
            return ChainReport(False, count, seq, "hash does not match the record's contents")
        prev, expected, count = digest, expected + 1, count + 1
    return ChainReport(True, count)


def records(conn: sqlite3.Connection, action_prefix: str = "", after: int = 0, limit: int = -1) -> list:
    """Records with ``seq > after`` whose action starts with ``action_prefix``, in order."""
    sql = ("SELECT seq, recorded_us, actor, role, action, payload, prev_hash, hash FROM audit "
           "WHERE seq > ? AND substr(action, 1, ?) = ? ORDER BY seq")
    params: tuple = (after, len(action_prefix), action_prefix)
    if limit >= 0:  # no LIMIT clause for "all": the two databases spell "no limit" differently
        sql, params = sql + " LIMIT ?", params + (limit,)
    return conn.execute(sql, params).fetchall()


def clearing_digests(conn: sqlite3.Connection) -> dict[str, str]:
    """Each market's recorded clearing digest (its last ``market.clear`` record's): what two servers that cleared
    the same inputs must agree on, byte for byte."""
    return {p["market_id"]: p["digest"] for r in records(conn, "market.clear") for p in [json.loads(r["payload"])]}

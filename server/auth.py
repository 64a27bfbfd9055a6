"""Participants, tokens and role checks.

A token is 32 random bytes (URL-safe base64 after a ``dsm_`` prefix), shown
once when created. Only its SHA-256 is stored: tokens carry 256 bits of
entropy, so a slow password hash would add nothing but latency to every call.
A participant has one name and one role; an aggregator's name is its
``aggregator_id``.

:func:`revoke_tokens` revokes every active token of a participant (the row
keeps its hash and gains ``revoked_us``; the participant stays, so its data and
audit trail keep their owner). A running server holds the active tokens in
memory (:class:`server.tokenbook.TokenBook`) and re-reads them often enough that a
revoked token stops working, for new calls and open streams, within
``token_recheck_seconds`` (:data:`TOKEN_RECHECK_SECONDS` by default).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from dsomarket.server import audit, db
from dsomarket.server.convert import check_id
from dsomarket.server.db import now_us
from dsomarket.server.errors import InvalidArgument, PermissionDenied, Unauthenticated

ROLES = ("operator", "aggregator", "iso", "auditor")
TOKEN_PREFIX = "dsm_"
_MAX_TOKEN_LEN = 200
TOKEN_RECHECK_SECONDS = 2.0
"""How long a running server trusts a cached token before checking the database again: the longest a
revoked token keeps working after ``dsomarket token revoke``."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: participant name and role, and the digest of the token the call carried (empty
    for offline tools), so that open streams can tell when that token is revoked."""

    name: str
    role: str
    token_digest: str = field(default="", compare=False, repr=False)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(conn: sqlite3.Connection, name: str, role: str) -> str:
    """Register the participant if new, store a new token's hash, audit it; returns the token.

    Runs inside the caller's transaction. A name keeps the role it was first
    given: asking for another role is an error rather than a silent change of
    what an existing token may do.
    """
    check_id(name, "name")
    if role not in ROLES:
        raise InvalidArgument("role", f"must be one of {', '.join(ROLES)} (got {role!r})")
    now = now_us()
    row = conn.execute("SELECT role FROM participants WHERE name = ?", (name,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO participants (name, role, created_us) VALUES (?, ?, ?)", (name, role, now))
    elif row[0] != role:
        raise InvalidArgument("role", f"participant {name!r} already has the role {row[0]}")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn.execute("INSERT INTO tokens (token_hash, name, created_us) VALUES (?, ?, ?)",
                 (token_hash(token), name, now))
    audit.append(conn, "", "server", "token.create", {"name": name, "role": role}, now)
    return token


def revoke_tokens(conn: sqlite3.Connection, name: str) -> int:
    """Revoke every active token of participant ``name`` and audit it; returns how many were revoked.

    Runs inside the caller's transaction. An unknown name is an InvalidArgument
    on ``name``; a participant with no active token revokes nothing (and writes
    no audit record).
    """
    check_id(name, "name")
    if conn.execute("SELECT 1 FROM participants WHERE name = ?", (name,)).fetchone() is None:
        raise InvalidArgument("name", f"no participant named {name!r}")
    now = now_us()
    count = conn.execute("UPDATE tokens SET revoked_us = ? WHERE name = ? AND revoked_us IS NULL",
                         (now, name)).rowcount
    if count:
        audit.append(conn, "", "server", "token.revoke", {"name": name, "tokens": count}, now)
    return count


def list_tokens(conn: sqlite3.Connection) -> list[tuple[str, str, int, int | None]]:
    """``(name, role, created_us, revoked_us)`` of every token, oldest first; never the hash."""
    return [tuple(r) for r in conn.execute(
        "SELECT t.name, p.role, t.created_us, t.revoked_us FROM tokens t JOIN participants p ON p.name = t.name "
        "ORDER BY t.created_us, t.name")]


def is_active(conn: sqlite3.Connection, digest: str) -> bool:
    """Whether the token of ``digest`` is active in the caller's read snapshot."""
    return conn.execute("SELECT 1 FROM tokens WHERE token_hash = ? AND revoked_us IS NULL",
                        (digest,)).fetchone() is not None


def bearer_token(metadata) -> str:
    """The token of ``authorization: Bearer <token>`` metadata; Unauthenticated when absent or malformed."""
    values = [v for k, v in (metadata or ()) if k == "authorization"]
    if not values:
        raise Unauthenticated("missing authorization metadata (expected 'Bearer <token>')")
    scheme, _, token = str(values[0]).partition(" ")
    token = token.strip()
    if not hmac.compare_digest(scheme.lower(), "bearer") or not token or len(token) > _MAX_TOKEN_LEN:
        raise Unauthenticated("malformed authorization metadata (expected 'Bearer <token>')")
    return token


def require_role(principal: Principal, roles: tuple[str, ...], method: str) -> None:
    if principal.role not in roles:
        raise PermissionDenied(f"{method} is not open to the {principal.role} role")


def scope(principal: Principal, aggregator_id: str) -> str | None:
    """Whose data a read may see: the aggregator itself, or (operator, auditor) the one named or all (None).

    An aggregator naming another aggregator is refused without saying whether
    that aggregator exists.
    """
    if principal.role == "aggregator":
        if aggregator_id and aggregator_id != principal.name:
            raise PermissionDenied("aggregator_id: an aggregator may read only its own data")
        return principal.name
    return aggregator_id or None


def create_tokens(db_path: str | Path, participants: dict[str, str]) -> dict[str, str]:
    """A token per ``name -> role``, created in the database (which is initialised if new)."""
    db.initialise(db_path)
    conn = db.connect(db_path)
    try:
        return {name: db.transaction(conn, create_token, name, role)
                for name, role in participants.items()}
    finally:
        conn.close()

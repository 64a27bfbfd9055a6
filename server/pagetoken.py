"""Opaque, signed page tokens.

A page token carries the last key of the page it follows (a list of ints and
strings) and is bound to the call and filter it came from (the *scope*). It is
``base64url(json(key)) . base64url(HMAC-SHA256(server key, scope . payload)[:16])``:
the server checks the signature before reading a byte of the payload, so a
hand-made, altered or foreign token is refused outright and the payload can
be trusted as the server wrote it.

The 32-byte server key is made once and kept in the database's ``meta`` table
(the database file is private to the server's user, mode 0600); a restarted
server therefore still accepts the tokens it handed out.

The key in use is per server (tests run several in one process), set for each
call by :mod:`server.interceptors` through :func:`use`.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import hmac
import json
import secrets
import sqlite3

from dsomarket.server.errors import InvalidArgument

MAX_TOKEN_CHARS = 1_000
_MAC_BYTES = 16
_META_KEY = "page_token_key"
_FIELD = "pagination.page_token"


class Signer:
    """Issues and opens page tokens with one server key."""

    def __init__(self, key: bytes):
        self._key = key

    def _mac(self, scope: str, payload: bytes) -> bytes:
        return hmac.new(self._key, scope.encode() + b"." + payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def issue(self, scope: str, key: list) -> str:
        payload = json.dumps(key, separators=(",", ":")).encode()
        return f"{_b64(payload)}.{_b64(self._mac(scope, payload))}"

    def open(self, token: str, scope: str) -> list:
        """The key of a token this server issued for ``scope``; InvalidArgument on anything else."""
        if len(token) > MAX_TOKEN_CHARS:
            raise InvalidArgument(_FIELD, f"is longer than any token this server issues ({MAX_TOKEN_CHARS})")
        head, dot, tail = token.partition(".")
        try:
            payload, mac = _unb64(head), _unb64(tail)
        except ValueError:
            payload = mac = b""
        if not dot or not hmac.compare_digest(mac, self._mac(scope, payload)):
            raise InvalidArgument(_FIELD, "is not a token this server issued for this call and filter "
                                          "(pass the next_page_token of the previous page unchanged)")
        return json.loads(payload)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def server_key(conn: sqlite3.Connection) -> bytes:
    """The database's page-token key, made on first use (inside the caller's write transaction)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (_META_KEY,)).fetchone()
    if row is not None:
        return bytes.fromhex(row[0])
    key = secrets.token_bytes(32)
    conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (_META_KEY, key.hex()))
    return key


_CURRENT: contextvars.ContextVar[Signer] = contextvars.ContextVar("dsomarket_page_signer")


def use(signer: Signer) -> contextvars.Token:
    """Make ``signer`` the one :func:`current` returns in this call's context."""
    return _CURRENT.set(signer)


def current() -> Signer:
    """The signer of the server handling the current call."""
    return _CURRENT.get()

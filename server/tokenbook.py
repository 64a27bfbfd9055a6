"""The server's in-memory book of active tokens: authentication without a database read per call.

Every active token's SHA-256 and its participant are read in one query and
kept in a dict; a call's token is looked up there. The book is read again

- in the background every ``recheck / 4`` seconds (:meth:`TokenBook.run`), so a
  token revoked with ``dsomarket token revoke`` (another process writing the
  database) leaves the book within ``recheck`` seconds, and open streams, which
  poll :meth:`TokenBook.active`, end within that time too;
- on a miss, so that a token created a moment ago works at once. Misses share
  one re-read, and re-reads are at least :data:`MISS_REREAD_SECONDS` apart: a
  flood of made-up tokens costs a hash and a dict look-up each, plus a few
  small queries a second, and never one query per call. At most
  :data:`MAX_WAITING_MISSES` misses wait at once; the rest are refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time

from dsomarket.server import auth
from dsomarket.server.auth import Principal
from dsomarket.server.errors import Unauthenticated

MISS_REREAD_SECONDS = 0.05
"""Shortest time between two re-reads caused by unknown tokens."""
MAX_WAITING_MISSES = 1_000
"""Unknown tokens waiting for a re-read at once; past this a miss is refused at once, so a flood holds at
most this many calls open."""

log = logging.getLogger("dsomarket.server")


def _active_tokens(conn: sqlite3.Connection) -> dict[str, Principal]:
    rows = conn.execute("SELECT t.token_hash, p.name, p.role FROM tokens t JOIN participants p ON p.name = t.name "
                        "WHERE t.revoked_us IS NULL")
    return {digest: Principal(name, role, digest) for digest, name, role in rows}


class TokenBook:
    """Active tokens by SHA-256 digest, re-read from the database through ``reader``.

    Parameters
    ----------
    reader
        A :class:`server.db.Reader` (``await reader.call(fn)`` runs ``fn(conn)`` on a read snapshot).
    recheck
        Seconds: the longest a revoked token keeps working, for calls and open streams alike.
    """

    def __init__(self, reader, recheck: float):
        self._reader = reader
        self.recheck = recheck
        self._tokens: dict[str, Principal] = {}
        self._read_at = -float("inf")  # monotonic time the current book's read started
        self._lock = asyncio.Lock()
        self._waiting = 0  # misses waiting for a re-read

    async def _reread(self, started_after: float) -> None:
        """Make sure the book was read after ``started_after``, sharing a re-read with concurrent callers."""
        async with self._lock:
            if self._read_at >= started_after:
                return
            wait = self._read_at + MISS_REREAD_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            started = time.monotonic()
            self._tokens = await self._reader.call(_active_tokens)
            self._read_at = started

    async def principal(self, metadata) -> Principal:
        """Who holds the bearer token of ``metadata``; Unauthenticated when it is missing, malformed,
        unknown or revoked (the last two read the same)."""
        digest = auth.token_hash(auth.bearer_token(metadata))
        now = time.monotonic()
        if now - self._read_at > self.recheck:  # the background re-read is late (or not running)
            await self._reread(now - self.recheck / 2)
        who = self._tokens.get(digest)
        if who is None and self._waiting < MAX_WAITING_MISSES:
            self._waiting += 1
            try:
                await self._reread(now)
            finally:
                self._waiting -= 1
            who = self._tokens.get(digest)
        if who is None:
            raise Unauthenticated("unknown token")
        return who

    def active(self, who: Principal) -> bool:
        """Whether ``who``'s token was still active at the last read (at most ``recheck / 4`` s ago)."""
        return who.token_digest in self._tokens

    async def run(self) -> None:
        """Re-read every ``recheck / 4`` seconds until cancelled."""
        while True:
            try:
                await self._reread(time.monotonic())
            except (sqlite3.Error, RuntimeError) as exc:  # keep serving on the last good book
                log.warning("re-reading tokens failed: %s", exc)
            await asyncio.sleep(self.recheck / 4)

    @contextlib.asynccontextmanager
    async def running(self):
        """Keep the book fresh in the background for the duration of the block."""
        task = asyncio.create_task(self.run(), name="dsomarket-tokenbook")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

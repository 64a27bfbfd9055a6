"""Storage: schema, the single writer thread and the reader pool, on SQLite or PostgreSQL.

One interface, two implementations. A database *target* is a SQLite file path
(the embedded default) or a ``postgresql://`` URL (:mod:`server.pg`, psycopg 3);
:func:`connect`, :func:`initialise`, :class:`Writer` and :class:`Reader` take
either, and the store's SQL is written once in the dialect both accept.

Durability rule: a request is acknowledged only after the transaction holding
it has committed: on SQLite with ``synchronous=FULL`` in WAL mode (its WAL
frames are fsynced), on PostgreSQL with ``synchronous_commit = on`` (its WAL
record is flushed). One thread owns the process's only writing connection.
Requests queue up; the thread takes whatever is queued, runs each in its own
SAVEPOINT (a failing request rolls back alone, so a batch is all or nothing)
and commits them together: one flush acknowledges many concurrent requests
(group commit). Several server processes may share one PostgreSQL database:
their write transactions take one advisory lock first, so writes are
serialised across processes as SQLite serialises them (see :mod:`server.pg`).
Readers use their own connections and see committed snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from dsomarket.server import pg

SCHEMA_VERSION = "1"
"""Bumped only by a change an older database cannot take by running :data:`SCHEMA` again. Additive
changes (new tables, such as the ``flex_*`` tables of the flexibility auction) keep the version: every
statement is ``IF NOT EXISTS``, so :func:`initialise` adds them to a database made before them; new columns
go in :data:`ADDED_COLUMNS`, which :func:`initialise` adds to older tables that lack them."""
MAX_GROUP = 64  # requests per commit; bounds how long one fsync holds back the first of them

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS participants (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, created_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, name TEXT NOT NULL REFERENCES participants(name),
    created_us INTEGER NOT NULL, revoked_us INTEGER);
CREATE TABLE IF NOT EXISTS feeders (
    feeder_id TEXT PRIMARY KEY, name TEXT NOT NULL, root_bus TEXT NOT NULL, base_kv REAL NOT NULL,
    bus_count INTEGER NOT NULL, line_count INTEGER NOT NULL, tables TEXT NOT NULL,
    created_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS feeder_buses (
    feeder_id TEXT NOT NULL, bus TEXT NOT NULL, PRIMARY KEY (feeder_id, bus)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS markets (
    market_id TEXT PRIMARY KEY, feeder_id TEXT NOT NULL REFERENCES feeders(feeder_id),
    kind TEXT NOT NULL, state TEXT NOT NULL, delivery_start_us INTEGER NOT NULL,
    interval_count INTEGER NOT NULL, interval_minutes INTEGER NOT NULL,
    gate_closure_us INTEGER, gate_lead_us INTEGER,
    price_floor TEXT NOT NULL, price_cap TEXT NOT NULL, currency TEXT NOT NULL,
    value_of_lost_load TEXT, day_ahead_market_id TEXT,
    clearing_status TEXT NOT NULL DEFAULT '', diagnosis TEXT NOT NULL DEFAULT '[]',
    created_us INTEGER NOT NULL, updated_us INTEGER NOT NULL,
    formulation TEXT NOT NULL DEFAULT 'lossless');
CREATE TABLE IF NOT EXISTS resources (
    aggregator_id TEXT NOT NULL, resource_id TEXT NOT NULL, feeder_id TEXT NOT NULL, bus TEXT NOT NULL,
    kind TEXT NOT NULL, capacity_kw REAL NOT NULL, energy_kwh REAL, charge_kw REAL, discharge_kw REAL,
    eta_charge REAL, eta_discharge REAL, soc_init_kwh REAL, soc_end_kwh REAL, soc_min_kwh REAL,
    ramp_kw REAL, departure_us INTEGER, created_us INTEGER NOT NULL,
    PRIMARY KEY (aggregator_id, resource_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bids (
    market_id TEXT NOT NULL, aggregator_id TEXT NOT NULL, bid_id TEXT NOT NULL,
    resource_id TEXT NOT NULL, bus TEXT NOT NULL, side TEXT NOT NULL, quantity_kw REAL NOT NULL,
    price TEXT NOT NULL, interval_idx INTEGER NOT NULL, tan_phi REAL NOT NULL, status TEXT NOT NULL,
    updated_us INTEGER NOT NULL,
    PRIMARY KEY (market_id, aggregator_id, bid_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS clearings (
    market_id TEXT NOT NULL, stage TEXT NOT NULL, status TEXT NOT NULL, summary TEXT NOT NULL,
    digest TEXT NOT NULL, created_us INTEGER NOT NULL, PRIMARY KEY (market_id, stage));
CREATE TABLE IF NOT EXISTS prices (
    market_id TEXT NOT NULL, stage TEXT NOT NULL, bus TEXT NOT NULL, interval_idx INTEGER NOT NULL,
    dlmp TEXT NOT NULL, energy TEXT NOT NULL, congestion TEXT NOT NULL, voltage TEXT NOT NULL,
    loss TEXT NOT NULL, revision INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (market_id, stage, interval_idx, bus)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS superseded_prices (
    market_id TEXT NOT NULL, stage TEXT NOT NULL, bus TEXT NOT NULL, interval_idx INTEGER NOT NULL,
    revision INTEGER NOT NULL, dlmp TEXT NOT NULL, energy TEXT NOT NULL, congestion TEXT NOT NULL,
    voltage TEXT NOT NULL, loss TEXT NOT NULL, superseded_us INTEGER NOT NULL,
    PRIMARY KEY (market_id, stage, interval_idx, bus, revision)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS curves (
    market_id TEXT NOT NULL, interval_idx INTEGER NOT NULL, fixed_kw REAL NOT NULL,
    conditional INTEGER NOT NULL, segments TEXT NOT NULL, bands TEXT NOT NULL, area TEXT NOT NULL,
    seq INTEGER UNIQUE, published_us INTEGER, revision INTEGER NOT NULL DEFAULT 0,
    network_version INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (market_id, interval_idx));
CREATE TABLE IF NOT EXISTS interval_steps (
    market_id TEXT NOT NULL, interval_idx INTEGER NOT NULL, step TEXT NOT NULL, status TEXT NOT NULL,
    detail TEXT NOT NULL, created_us INTEGER NOT NULL,
    PRIMARY KEY (market_id, interval_idx, step)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS iso_awards (
    market_id TEXT NOT NULL, interval_idx INTEGER NOT NULL, import_kw REAL NOT NULL, price TEXT NOT NULL,
    network_version INTEGER, PRIMARY KEY (market_id, interval_idx));
CREATE TABLE IF NOT EXISTS dispatch (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, market_id TEXT NOT NULL,
    aggregator_id TEXT NOT NULL, bid_id TEXT NOT NULL, resource_id TEXT NOT NULL,
    interval_idx INTEGER NOT NULL, side TEXT NOT NULL, kw REAL NOT NULL, price TEXT NOT NULL,
    source TEXT NOT NULL, reason TEXT NOT NULL, issued_us INTEGER NOT NULL, fixed INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS dispatch_by_aggregator ON dispatch (aggregator_id, seq);
CREATE TABLE IF NOT EXISTS statements (
    market_id TEXT NOT NULL, aggregator_id TEXT NOT NULL, bid_id TEXT NOT NULL, resource_id TEXT NOT NULL,
    interval_idx INTEGER NOT NULL, settlement TEXT NOT NULL, kw REAL NOT NULL, kvar REAL NOT NULL,
    price TEXT NOT NULL, price_q TEXT NOT NULL, amount TEXT NOT NULL, kind TEXT NOT NULL,
    PRIMARY KEY (aggregator_id, market_id, bid_id, resource_id, interval_idx, settlement, kind));
CREATE TABLE IF NOT EXISTS settlements (
    market_id TEXT PRIMARY KEY, totals TEXT NOT NULL, created_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS flex_needs (
    market_id TEXT NOT NULL, need_id TEXT NOT NULL, kind TEXT NOT NULL, element TEXT NOT NULL,
    direction TEXT NOT NULL, interval_idx INTEGER NOT NULL, required_kw REAL, required_pu REAL,
    max_price TEXT NOT NULL, partial_ok INTEGER NOT NULL, posted_us INTEGER NOT NULL,
    PRIMARY KEY (market_id, need_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flex_offers (
    market_id TEXT NOT NULL, aggregator_id TEXT NOT NULL, offer_id TEXT NOT NULL,
    resource_id TEXT NOT NULL, bus TEXT NOT NULL, interval_idx INTEGER NOT NULL, direction TEXT NOT NULL,
    quantity_kw REAL NOT NULL, price TEXT NOT NULL, availability_price TEXT NOT NULL,
    divisible INTEGER NOT NULL, min_kw REAL NOT NULL, tan_phi REAL NOT NULL, status TEXT NOT NULL,
    updated_us INTEGER NOT NULL,
    PRIMARY KEY (market_id, aggregator_id, offer_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flex_clearings (
    market_id TEXT PRIMARY KEY, status TEXT NOT NULL, pricing TEXT NOT NULL, summary TEXT NOT NULL,
    digest TEXT NOT NULL, created_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS flex_awards (
    market_id TEXT NOT NULL, aggregator_id TEXT NOT NULL, offer_id TEXT NOT NULL,
    resource_id TEXT NOT NULL, bus TEXT NOT NULL, interval_idx INTEGER NOT NULL, direction TEXT NOT NULL,
    quantity_kw REAL NOT NULL, accepted_kw REAL NOT NULL, price TEXT NOT NULL, payment TEXT NOT NULL,
    reason TEXT NOT NULL, conflict INTEGER NOT NULL, need_ids TEXT NOT NULL,
    PRIMARY KEY (market_id, aggregator_id, offer_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flex_need_results (
    market_id TEXT NOT NULL, need_id TEXT NOT NULL, kind TEXT NOT NULL, element TEXT NOT NULL,
    interval_idx INTEGER NOT NULL, met INTEGER NOT NULL, shortfall REAL NOT NULL,
    shortfall_kw REAL NOT NULL, cost TEXT NOT NULL, marginal_price TEXT NOT NULL,
    PRIMARY KEY (market_id, need_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS network_changes (
    feeder_id TEXT NOT NULL, change_id TEXT NOT NULL, version INTEGER NOT NULL, position INTEGER NOT NULL,
    kind TEXT NOT NULL, element TEXT NOT NULL, start_us INTEGER NOT NULL, end_us INTEGER,
    s_max_kva REAL, vmin_pu REAL, vmax_pu REAL, import_max_kw REAL, export_max_kw REAL,
    shed INTEGER NOT NULL, reason TEXT NOT NULL, submitted_by TEXT NOT NULL, submitted_us INTEGER NOT NULL,
    PRIMARY KEY (feeder_id, change_id));
CREATE INDEX IF NOT EXISTS network_changes_by_version ON network_changes (feeder_id, version, position);
CREATE TABLE IF NOT EXISTS interface_schedules (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, market_id TEXT NOT NULL, interval_idx INTEGER NOT NULL,
    import_kw REAL NOT NULL, awarded_import_kw REAL NOT NULL, source TEXT NOT NULL, mode TEXT NOT NULL,
    reason TEXT NOT NULL, issued_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meter_readings (
    market_id TEXT NOT NULL, aggregator_id TEXT NOT NULL, resource_id TEXT NOT NULL, interval_idx INTEGER NOT NULL,
    kw REAL NOT NULL, submitted_by TEXT NOT NULL, submitted_us INTEGER NOT NULL,
    PRIMARY KEY (market_id, aggregator_id, resource_id, interval_idx));
CREATE TABLE IF NOT EXISTS imbalance_settlements (
    market_id TEXT PRIMARY KEY, totals TEXT NOT NULL, interface TEXT NOT NULL, created_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS forecasts (
    market_id TEXT NOT NULL, bus TEXT NOT NULL, interval_idx INTEGER NOT NULL, p_kw REAL NOT NULL,
    q_kvar REAL NOT NULL, PRIMARY KEY (market_id, interval_idx, bus));
CREATE TABLE IF NOT EXISTS resource_history (
    aggregator_id TEXT NOT NULL, resource_id TEXT NOT NULL, interval_us INTEGER NOT NULL, kw REAL NOT NULL,
    submitted_by TEXT NOT NULL, submitted_us INTEGER NOT NULL,
    PRIMARY KEY (aggregator_id, resource_id, interval_us)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS load_history (
    feeder_id TEXT NOT NULL, bus TEXT NOT NULL, interval_us INTEGER NOT NULL, p_kw REAL NOT NULL,
    q_kvar REAL NOT NULL, PRIMARY KEY (feeder_id, interval_us, bus));
CREATE TABLE IF NOT EXISTS ders (
    der_id TEXT PRIMARY KEY, aggregator_id TEXT NOT NULL, feeder_id TEXT NOT NULL, record TEXT NOT NULL,
    status TEXT NOT NULL, export_limit_kw REAL NOT NULL, import_limit_kw REAL NOT NULL, reason TEXT NOT NULL,
    seq INTEGER NOT NULL, updated_us INTEGER NOT NULL, approved_services TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS ders_by_feeder ON ders (feeder_id, seq);
CREATE TABLE IF NOT EXISTS direct_schedules (
    feeder_id TEXT NOT NULL, participant_id TEXT NOT NULL, bus TEXT NOT NULL, interval_us INTEGER NOT NULL,
    p_kw REAL NOT NULL, submitted_by TEXT NOT NULL, submitted_us INTEGER NOT NULL,
    minutes INTEGER NOT NULL DEFAULT 60, PRIMARY KEY (feeder_id, interval_us, participant_id, bus)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS direct_bids (
    feeder_id TEXT NOT NULL, participant_id TEXT NOT NULL, bus TEXT NOT NULL, interval_us INTEGER NOT NULL,
    segment INTEGER NOT NULL, side TEXT NOT NULL, quantity_kw REAL NOT NULL, price TEXT NOT NULL,
    submitted_by TEXT NOT NULL, submitted_us INTEGER NOT NULL,
    PRIMARY KEY (feeder_id, interval_us, participant_id, bus, segment)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conflict_alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, feeder_id TEXT NOT NULL, resource_id TEXT NOT NULL,
    aggregator_id TEXT NOT NULL, kind TEXT NOT NULL, interval_us INTEGER, services TEXT NOT NULL,
    committed REAL NOT NULL, limit_value REAL NOT NULL, excess REAL NOT NULL, refused TEXT NOT NULL,
    market_id TEXT NOT NULL, raised_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS territories (
    territory_id TEXT PRIMARY KEY, created_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS territory_interfaces (
    territory_id TEXT NOT NULL REFERENCES territories(territory_id), interface_id TEXT NOT NULL,
    feeder_ids TEXT NOT NULL, import_max_kw REAL, export_max_kw REAL,
    PRIMARY KEY (territory_id, interface_id));
CREATE TABLE IF NOT EXISTS territory_sessions (
    session_id TEXT PRIMARY KEY, territory_id TEXT NOT NULL REFERENCES territories(territory_id),
    created_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS session_markets (
    session_id TEXT NOT NULL REFERENCES territory_sessions(session_id), interface_id TEXT NOT NULL,
    market_id TEXT NOT NULL UNIQUE REFERENCES markets(market_id), PRIMARY KEY (session_id, interface_id));
CREATE TABLE IF NOT EXISTS requests (
    name TEXT NOT NULL, request_id TEXT NOT NULL, digest TEXT NOT NULL, result TEXT NOT NULL,
    PRIMARY KEY (name, request_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, recorded_us INTEGER NOT NULL, actor TEXT NOT NULL, role TEXT NOT NULL,
    action TEXT NOT NULL, payload TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

ADDED_COLUMNS = (("tokens", "revoked_us", "INTEGER"),
                 ("curves", "revision", "INTEGER NOT NULL DEFAULT 0"),
                 ("curves", "network_version", "INTEGER NOT NULL DEFAULT 0"),
                 ("ders", "approved_services", "TEXT NOT NULL DEFAULT ''"),
                 ("direct_schedules", "minutes", "INTEGER NOT NULL DEFAULT 60"),
                 ("markets", "formulation", "TEXT NOT NULL DEFAULT 'lossless'"),
                 ("dispatch", "fixed", "INTEGER NOT NULL DEFAULT 0"),
                 ("prices", "revision", "INTEGER NOT NULL DEFAULT 0"),
                 ("iso_awards", "network_version", "INTEGER"))
"""``(table, column, type)`` added after a table was first released: :func:`initialise` runs
``ALTER TABLE ... ADD COLUMN`` where the column is missing (the ``CREATE TABLE`` above already has it).
A market's ``formulation`` defaults to ``lossless`` because every market created before the setting existed
was cleared on the lossless LP (new markets always store theirs, ``lossaware`` unless the operator chose).
A dispatch row's ``fixed`` is 1 for the instruction an operator's override imposed (a later re-dispatch of its
interval keeps it). A price row's ``revision`` counts the times a network change replaced its interval's prices
(a re-clearing, or a re-dispatch of an awarded interval); the rows it replaced move to ``superseded_prices``.
An interval award's ``network_version`` is the network its dispatch in force was made on (the award's, then each
network re-dispatch's that did not fail), on which a rolled market settles it; NULL for older rows and awards of a
whole market."""


def now_us() -> int:
    """Wall-clock time, integer microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


IntegrityError = (sqlite3.IntegrityError, pg.IntegrityError)
"""A uniqueness or foreign-key violation, on either database."""


def is_postgres(target: str | Path) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL, False for a SQLite file path."""
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def connect(target: str | Path, read_only: bool = False):
    """A connection in autocommit mode (transactions are explicit).

    SQLite: WAL, ``synchronous=FULL``, foreign keys on, ``sqlite3.Row`` rows.
    PostgreSQL: a :class:`server.pg.Connection` with the same surface.
    ``read_only`` connections refuse writes and read in snapshot transactions.
    """
    if is_postgres(target):
        return pg.connect(str(target), read_only)
    conn = sqlite3.connect(str(target), isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    if read_only:
        conn.execute("PRAGMA query_only=ON")
    conn.row_factory = sqlite3.Row
    return conn


def schema_statements(target: str | Path, schema: str = SCHEMA) -> list[str]:
    """The statements of a schema written for SQLite, for the target's database."""
    return pg.schema(schema) if is_postgres(target) else [stmt for stmt in schema.split(";\n") if stmt.strip()]


def columns(conn, table: str) -> set[str]:
    """Column names of a table (portable: both drivers describe the columns of an empty result)."""
    return {d[0] for d in conn.execute(f"SELECT * FROM {table} LIMIT 0").description}


def initialise(target: str | Path) -> None:
    """Create the schema if missing; refuse a database of another schema version.

    A new SQLite database file is created readable and writable by its owner only (mode 0600): it holds
    token hashes, every participant's bids and the page-token key. SQLite gives its -wal and -shm files
    the same mode. (A PostgreSQL database's access is the server's roles and ``pg_hba.conf``.)
    """
    if not is_postgres(target):
        with contextlib.suppress(FileExistsError):
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    conn = connect(target)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for stmt in schema_statements(target):
            conn.execute(stmt)
        for table, column, kind in ADDED_COLUMNS:
            if column not in columns(conn, table):
                kind = pg.column_type(kind) if is_postgres(target) else kind
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        if "kind" not in columns(conn, "statements"):
            _rekey_statements(conn, target)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,))
        elif row["value"] != SCHEMA_VERSION:
            raise RuntimeError(f"{target}: schema version {row['value']}, this server needs {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    finally:
        conn.close()


def _rekey_statements(conn, target: str | Path) -> None:
    """Give the statements of a database made before statement kinds their ``kind`` (in the key, so that an
    energy line and its loss component share a bid): the lines that were told apart by ``bid_id``
    (``override``, ``curtailment``, ``imbalance``) get that kind and an empty bid_id, every other line is
    ``energy``."""
    (create,) = [stmt for stmt in schema_statements(target) if "TABLE IF NOT EXISTS statements " in stmt]
    conn.execute("ALTER TABLE statements RENAME TO statements_before_kinds")
    conn.execute(create)
    marked = "bid_id IN ('override', 'curtailment', 'imbalance')"
    conn.execute("INSERT INTO statements (market_id, aggregator_id, bid_id, resource_id, interval_idx, settlement, "
                 "kw, kvar, price, price_q, amount, kind) SELECT market_id, aggregator_id, "
                 f"CASE WHEN {marked} THEN '' ELSE bid_id END, resource_id, interval_idx, settlement, kw, kvar, "
                 f"price, price_q, amount, CASE WHEN {marked} THEN bid_id ELSE 'energy' END "
                 "FROM statements_before_kinds")
    conn.execute("DROP TABLE statements_before_kinds")


def transaction(conn: sqlite3.Connection, fn: Callable, *args) -> Any:
    """Run ``fn(conn, *args)`` in one immediate transaction (for offline commands and tools)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = fn(conn, *args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return out


class Writer:
    """The one thread that writes; :meth:`call` returns after the request's commit."""

    def __init__(self, path: str | Path):
        self._conn = connect(path)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="dsomarket-writer", daemon=True)
        self._thread.start()

    async def call(self, fn: Callable, *args) -> Any:
        """Run ``fn(conn, *args)`` in its own savepoint; return its result once committed.

        ``fn`` must only touch the database: it runs on the writer thread and
        holds up every other write while it runs.
        """
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._queue.put((fn, args, loop, fut))
        return await fut

    def close(self) -> None:
        """Finish queued requests, then stop the thread and close the connection."""
        self._queue.put(None)
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                break
            group = [item]
            while len(group) < MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                group.append(nxt)
            for (_, _, loop, fut), outcome in zip(group, self._commit(group), strict=True):
                loop.call_soon_threadsafe(_settle, fut, outcome)

    def _commit(self, group: list) -> list[tuple[bool, Any]]:
        conn = self._conn
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, args, _, _ in group:
                conn.execute("SAVEPOINT request")
                try:
                    outcomes.append((True, fn(conn, *args)))
                    conn.execute("RELEASE request")
                except Exception as exc:  # the request fails alone; the others still commit
                    conn.execute("ROLLBACK TO request")
                    conn.execute("RELEASE request")
                    outcomes.append((False, exc))
            conn.execute("COMMIT")
        except Exception as exc:  # commit or BEGIN failed (disk full, I/O error): nothing is acknowledged
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return [(False, exc)] * len(group)
        return outcomes


def _settle(fut: asyncio.Future, outcome: tuple[bool, Any]) -> None:
    if fut.cancelled():
        return
    ok, value = outcome
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


class Reader:
    """A small pool of threads with their own read connections; each call sees one snapshot."""

    def __init__(self, path: str | Path, workers: int = 2):
        self._path = str(path)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dsomarket-reader")

    async def call(self, fn: Callable, *args) -> Any:
        """Run ``fn(conn, *args)`` in a read transaction on a reader thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._run, fn, args)

    def _run(self, fn: Callable, args: tuple) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self._path, read_only=True)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        conn.execute("BEGIN")
        try:
            return fn(conn, *args)
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()

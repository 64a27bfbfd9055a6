"""In-process servers with a token per participant, for tests, benchmarks and embedding.

``async with running(tmp_path) as env`` starts a server on ``127.0.0.1:0``
over a fresh database (:func:`database`: a SQLite file, or a PostgreSQL database
when the test runs on that backend), with tokens for :data:`PARTICIPANTS`, and gives a
:class:`clients.api.Client` per participant. :class:`ThreadedServer` runs the
same in a background thread, for callers that own no event loop (the command
line in tests). :func:`small_market` sets up a four-hour day-ahead market on
the 33-bus feeder that clears in well under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from dsomarket.clients.api import BidSegment, Client, IntervalAward, Market, Resource
from dsomarket.clients.demo import delivery_day
from dsomarket.server import db
from dsomarket.server.auth import create_tokens
from dsomarket.server.app import Server, TlsFiles, create_server

POSTGRES_URL = os.environ.get("DSOMARKET_TEST_POSTGRES", "")
"""A PostgreSQL server the tests may create databases on (``.ci/run`` starts one); empty = none."""
SCHEMA_PREFIX = "dsomarket_test_"
"""Schemas the tests create (and drop at the end of the session) on that server: point the tests at a
throwaway PostgreSQL, never at one holding data."""
_CREATED: set[str] = set()
"""The schemas this process created: under pytest-xdist each worker drops its own, not another's still in use."""
BACKEND = "sqlite"
"""The backend of the running test: ``sqlite`` or ``postgresql`` (set by the ``db_backend`` fixture)."""

PARTICIPANTS = {"dso": "operator", "agg-a": "aggregator", "agg-b": "aggregator", "iso": "iso",
                "auditor": "auditor"}


def database(workdir: str | Path, name: str = "market.sqlite") -> Path | str:
    """The database target of ``workdir / name`` on the test's backend.

    SQLite: that path. PostgreSQL: a schema named after the path on the
    :data:`POSTGRES_URL` server (created if missing, and first on the URL's
    ``search_path``), so that a test that opens the same path twice (a restart)
    finds its data again. Schemas, unlike databases, cost nothing to create and drop.
    """
    path = Path(workdir) / name
    if BACKEND == "sqlite":
        return path
    import psycopg

    schema = SCHEMA_PREFIX + hashlib.sha256(str(path).encode()).hexdigest()[:24]
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    _CREATED.add(schema)
    return f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"


def drop_test_databases() -> None:
    """Drop every schema :func:`database` created in this process on the PostgreSQL server."""
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        for name in sorted(_CREATED):
            admin.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
    _CREATED.clear()


def old_database(workdir: str | Path, name: str, schema: str) -> Path | str:
    """A database made by an older release: ``schema`` (SQLite text, translated for PostgreSQL) and the meta row."""
    target = database(workdir, name)
    conn = db.connect(target)
    try:
        for stmt in db.schema_statements(target, schema):
            conn.execute(stmt)
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (db.SCHEMA_VERSION,))
    finally:
        conn.close()
    return target


@dataclass
class Env:
    server: Server
    port: int
    db_path: Path | str
    tokens: dict[str, str]
    clients: dict[str, Client]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, token: str, **kw) -> Client:
        """A client with any token (an unknown one, say)."""
        return Client(self.target, token, **kw)


@contextlib.asynccontextmanager
async def running(workdir: Path, participants: dict[str, str] = PARTICIPANTS, db_name: str = "market.sqlite",
                  tls: TlsFiles | None = None, client_timeout: float = 60.0, **server_options):
    """A started server over ``database(workdir, db_name)`` and a client per participant (each call's deadline
    ``client_timeout`` seconds); stopped on exit."""
    path = database(workdir, db_name)
    tokens = create_tokens(path, participants)
    server, port = await create_server("127.0.0.1:0", path, tls=tls, **server_options)
    await server.start()
    clients = {name: Client(f"127.0.0.1:{port}", token, timeout=client_timeout) for name, token in tokens.items()}
    try:
        yield Env(server, port, path, tokens, clients)
    finally:
        for c in clients.values():
            await c.close()
        await server.stop(0.5)


class ThreadedServer:
    """A server on its own event loop in a daemon thread; :meth:`stop` shuts it down."""

    def __init__(self, db_path: str | Path):
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(str(db_path),), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the server did not start")

    def _run(self, db_path: str) -> None:
        asyncio.set_event_loop(self._loop)

        async def start():
            self.server, self.port = await create_server("127.0.0.1:0", db_path)
            await self.server.start()
            self._ready.set()

        self._loop.run_until_complete(start())
        self._loop.run_forever()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0.5), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)


async def small_market(env: Env, market_id: str = "da-test", intervals: int = 4, **market_options) -> Market:
    """Feeder ``ieee33`` (created once), an open day-ahead market, and resources of agg-a and agg-b:
    ``pv`` (bus 18, 300 kW) and ``load`` (flexible load, bus 25, 200 kW) for each."""
    op = env.clients["dso"]
    if not any(f.feeder_id == "ieee33" for f in await op.list_feeders()):
        await op.create_feeder("ieee33", builtin="ieee33")
        fleet = [Resource("pv", "ieee33", "18", "pv", 300.0),
                 Resource("load", "ieee33", "25", "flexible_load", 200.0)]
        for name in ("agg-a", "agg-b"):
            await env.clients[name].register_resources(fleet)
    return await op.create_market(market_id, feeder_id="ieee33", kind="day_ahead",
                                  delivery_start=delivery_day(), interval_count=intervals, **market_options)


def simple_bids(market: Market, prefix: str = "b", pv_price: str = "10",
                load_price: str = "80") -> list[BidSegment]:
    """A PV offer and a load bid per interval."""
    out = []
    for k, iv in enumerate(market.intervals):
        out.append(BidSegment(f"{prefix}-pv-{k}", "pv", "sell", 150.0, Decimal(pv_price), iv))
        out.append(BidSegment(f"{prefix}-load-{k}", "load", "buy", 120.0, Decimal(load_price), iv))
    return out


async def publish_and_award(env: Env, market_id: str, price: str = "50") -> list[IntervalAward]:
    """Clear a CLOSED market at a forecast of ``price``, publish it, and award every interval whole at its
    curve's import at ``price``; returns the awards."""
    op, iso = env.clients["dso"], env.clients["iso"]
    assert (await op.clear_market(market_id, iso_price_forecast=[price])).status == "optimal"
    await op.publish_market(market_id)
    curves = await iso.list_curves(market_id=market_id)
    awards = [IntervalAward(c.interval_start, next(b.import_kw for b in c.bands if b.price_high >= float(price)),
                            price) for c in curves]
    assert (await iso.submit_award(market_id, awards)).status == "optimal"
    return awards


def replay_checks(path: Path | str, market_id: str | None = None) -> list:
    """``audit replay`` of a stopped server's database (one market's, or all)."""
    from dsomarket.server.replay import replay

    conn = db.connect(path)
    try:
        return replay(conn, market_id)
    finally:
        conn.close()

"""State changes and reads of territories and their market sessions.

A territory is a set of T-D interfaces, each a stored feeder (one feeder as loaded, or feeders behind one
substation transformer merged into a feeder stored under the interface id). A session is one ordinary
market per interface, named ``<session_id>:<interface_id>``; a session's step (gate closure, clearing,
publication, settlement) applies the markets' own store functions (:mod:`server.store`) to every market
of the session in one transaction, so the per-market rows, audit records and replay are those of single
markets, and the step commits whole or not at all. Markets that are not in the state a step needs are
left as they are and reported (one infeasible interface does not hold the others back).

Writers run on the writer thread as :mod:`server.store`'s do; several server processes on one PostgreSQL
database are serialised by its advisory lock, and each market's state is re-read inside the transaction.
"""

from __future__ import annotations

import json

from dsomarket.server import store
from dsomarket.server.auth import Principal
from dsomarket.server.db import now_us
from dsomarket.server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound

MAX_ID = 64
"""Longest market id (:data:`server.convert.ID_PATTERN`)."""
SEPARATOR = ":"
"""Between the session id and the interface id in a session market's id."""


def market_id(session_id: str, interface_id: str) -> str:
    """The id of an interface's market in a session."""
    return f"{session_id}{SEPARATOR}{interface_id}"


def _audit(conn, who: Principal, action: str, payload: dict, now: int) -> None:
    store._audit(conn, who, action, payload, now)


def create_territory(conn, who: Principal, territory_id: str, interfaces: list[dict]) -> dict:
    """Store a territory. ``interfaces``: ``interface_id``, ``feeder_ids``, ``import_max_kw`` and
    ``export_max_kw`` (None = unlimited), and ``feeder`` (``(tables, summary)`` of the merged feeder to store
    under the interface id, or None when the interface is its one feeder as loaded)."""
    if conn.execute("SELECT 1 FROM territories WHERE territory_id = ?", (territory_id,)).fetchone():
        raise AlreadyExists(f"territory_id: territory {territory_id!r} already exists")
    now = now_us()
    for k, i in enumerate(interfaces):
        for j, feeder_id in enumerate(i["feeder_ids"]):
            if not conn.execute("SELECT 1 FROM feeders WHERE feeder_id = ?", (feeder_id,)).fetchone():
                raise NotFound(f"interfaces[{k}].feeder_ids[{j}]: no feeder {feeder_id!r}")
        if i["feeder"] is not None:
            tables, summary = i["feeder"]
            if conn.execute("SELECT 1 FROM feeders WHERE feeder_id = ?", (i["interface_id"],)).fetchone():
                raise AlreadyExists(f"interfaces[{k}].interface_id: a feeder {i['interface_id']!r} already exists "
                                    "(a merged interface is stored as a feeder of that id)")
            store.create_feeder(conn, who, i["interface_id"], tables, summary)
    conn.execute("INSERT INTO territories (territory_id, created_us) VALUES (?, ?)", (territory_id, now))
    conn.executemany("INSERT INTO territory_interfaces (territory_id, interface_id, feeder_ids, import_max_kw, "
                     "export_max_kw) VALUES (?, ?, ?, ?, ?)",
                     [(territory_id, i["interface_id"], json.dumps(i["feeder_ids"]), i["import_max_kw"],
                       i["export_max_kw"]) for i in interfaces])
    _audit(conn, who, "territory.create", {"territory_id": territory_id, "interfaces": [
        {c: i[c] for c in ("interface_id", "feeder_ids", "import_max_kw", "export_max_kw")} for i in interfaces]},
        now)
    return get_territory(conn, territory_id)


def get_territory(conn, territory_id: str) -> dict:
    """A territory: ``territory_id``, ``created_us`` and ``interfaces`` (dicts, in interface id order)."""
    row = conn.execute("SELECT * FROM territories WHERE territory_id = ?", (territory_id,)).fetchone()
    if row is None:
        raise NotFound(f"territory_id: no territory {territory_id!r}")
    rows = conn.execute("SELECT interface_id, feeder_ids, import_max_kw, export_max_kw FROM territory_interfaces "
                        "WHERE territory_id = ? ORDER BY interface_id", (territory_id,)).fetchall()
    return {"territory_id": territory_id, "created_us": row["created_us"],
            "interfaces": [{"interface_id": r["interface_id"], "feeder_ids": json.loads(r["feeder_ids"]),
                            "import_max_kw": r["import_max_kw"], "export_max_kw": r["export_max_kw"]}
                           for r in rows]}


def open_session(conn, who: Principal, session_id: str, territory_id: str, spec: dict) -> dict:
    """A market on every interface of a territory (``spec`` as :func:`server.convert.market_spec` gives it,
    its ``day_ahead_market_id`` naming a day-ahead *session* or None)."""
    if conn.execute("SELECT 1 FROM territory_sessions WHERE session_id = ?", (session_id,)).fetchone():
        raise AlreadyExists(f"session_id: session {session_id!r} already exists")
    territory = get_territory(conn, territory_id)
    day_ahead = None
    if spec["day_ahead_market_id"]:
        day_ahead = get_session(conn, spec["day_ahead_market_id"], "market.day_ahead_market_id")
        if day_ahead["territory_id"] != territory_id:
            raise InvalidArgument("market.day_ahead_market_id", f"session {day_ahead['session_id']!r} is not of "
                                                                f"territory {territory_id!r}")
    now = now_us()
    conn.execute("INSERT INTO territory_sessions (session_id, territory_id, created_us) VALUES (?, ?, ?)",
                 (session_id, territory_id, now))
    for i in territory["interfaces"]:
        iid = i["interface_id"]
        mid = market_id(session_id, iid)
        if len(mid) > MAX_ID:
            raise InvalidArgument("session_id", f"the market id {mid!r} of interface {iid!r} would be longer than "
                                                f"{MAX_ID} characters: choose a shorter session id")
        da = None if day_ahead is None else dict(day_ahead["interfaces"])[iid]["market_id"]
        store.create_market(conn, who, {**spec, "market_id": mid, "feeder_id": iid, "day_ahead_market_id": da})
        conn.execute("INSERT INTO session_markets (session_id, interface_id, market_id) VALUES (?, ?, ?)",
                     (session_id, iid, mid))
    _audit(conn, who, "territory.open", {"session_id": session_id, "territory_id": territory_id}, now)
    return get_session(conn, session_id)


def get_session(conn, session_id: str, field: str = "session_id") -> dict:
    """A session: ``session_id``, ``territory_id``, ``created_us`` and ``interfaces``, a list of
    ``(interface_id, market row)`` in interface id order."""
    row = conn.execute("SELECT * FROM territory_sessions WHERE session_id = ?", (session_id,)).fetchone()
    if row is None:
        raise NotFound(f"{field}: no territory session {session_id!r}")
    rows = conn.execute("SELECT s.interface_id, m.* FROM session_markets s JOIN markets m ON m.market_id = "
                        "s.market_id WHERE s.session_id = ? ORDER BY s.interface_id", (session_id,)).fetchall()
    return {"session_id": session_id, "territory_id": row["territory_id"], "created_us": row["created_us"],
            "interfaces": [(r["interface_id"], {k: r[k] for k in r.keys() if k != "interface_id"})
                           for r in rows]}


def _step(conn, who: Principal, session_id: str, state: str, action: str, apply,
          only: dict | None = None) -> tuple[dict, list[str]]:
    """``apply(market_id)`` on every market of the session in ``state`` (and in ``only``, when given); the
    session after and those markets."""
    session = get_session(conn, session_id)
    done = [m["market_id"] for _, m in session["interfaces"]
            if m["state"] == state and (only is None or m["market_id"] in only)]
    for mid in done:
        apply(mid)
    _audit(conn, who, action, {"session_id": session_id, "markets": done}, now_us())
    return get_session(conn, session_id), done


def close_gate(conn, who: Principal, session_id: str) -> tuple[dict, list[str]]:
    """OPEN -> CLOSED for every open market of the session: one gate closure."""
    return _step(conn, who, session_id, "open", "territory.close", lambda mid: store.close_gate(conn, who, mid))


def publish(conn, who: Principal, session_id: str) -> tuple[dict, list[str]]:
    """CLEARED -> PUBLISHED for every cleared market of the session: their curves go out in one publication."""
    return _step(conn, who, session_id, "cleared", "territory.publish", lambda mid: store.publish(conn, who, mid))


def record_clearings(conn, who: Principal, session_id: str, cleared: list[tuple]) -> tuple[dict, list[str]]:
    """Store the clearings of a session's markets, ``(market_id, forecast, outcome, activations)`` each
    (:func:`server.store.record_clearing`); a market no longer CLOSED (cleared meanwhile by a single
    ClearMarket, say) is skipped. Returns the session and the markets recorded."""
    outcomes = {c[0]: c for c in cleared}
    return _step(conn, who, session_id, "closed", "territory.clear",
                 lambda mid: store.record_clearing(conn, who, *outcomes[mid]), outcomes)


def record_settlements(conn, who: Principal, session_id: str, settled: dict) -> tuple[dict, list[str]]:
    """Store the settlements of a session's awarded markets (``market_id -> SettleOutcome``)."""
    return _step(conn, who, session_id, "awarded", "territory.settle",
                 lambda mid: store.record_settlement(conn, who, mid, settled[mid]), settled)


def require_markets(session: dict, state: str, action: str) -> list[tuple[str, dict]]:
    """The session's ``(interface_id, market)`` in ``state``; FAILED_PRECONDITION when there is none."""
    out = [(iid, m) for iid, m in session["interfaces"] if m["state"] == state]
    if not out:
        states = sorted({m["state"] for _, m in session["interfaces"]})
        raise FailedPrecondition(f"session {session['session_id']!r} has no {state} market to {action} "
                                 f"(its markets are {', '.join(states)})")
    return out

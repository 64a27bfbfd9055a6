"""State changes and reads of the market store.

Writers (``create_*``, ``submit_*``, ``record_*``, ...) run on the writer
thread inside a savepoint (see :mod:`server.db`): they check the stored state,
write, and append the audit record in the same transaction, so a request is
applied whole or not at all. They raise :mod:`server.errors` exceptions that
name the request field at fault. Readers run on a read snapshot.

Requests with a ``request_id`` are idempotent: the first result is stored and
returned again for a repeat with the same content.
"""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal

import polars as pl

from dsomarket.server import audit, registry_store, timeline
from dsomarket.server.auth import Principal
from dsomarket.server.convert import BidBatch, FlexOfferBatch
from dsomarket.server.db import IntegrityError, now_us
from dsomarket.server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

MAX_BIDS_PER_AGGREGATOR = 1_000_000
"""Most bid segments (active or withdrawn) one aggregator may hold in one market."""
MAX_RESOURCES_PER_AGGREGATOR = 100_000
MAX_FLEX_NEEDS_PER_MARKET = 10_000
MAX_FLEX_OFFERS_PER_AGGREGATOR = 100_000
"""Most flexibility offers (active or withdrawn) one aggregator may hold in one market."""
_CHUNK = 500  # ids per IN (...) query, well under SQLite's bound-parameter limit

BID_COLUMNS = ("aggregator_id", "bid_id", "resource_id", "bus", "side", "quantity_kw", "price",
               "interval_idx", "tan_phi")
BID_SCHEMA = {"aggregator_id": pl.Utf8, "bid_id": pl.Utf8, "resource_id": pl.Utf8, "bus": pl.Utf8,
              "side": pl.Utf8, "quantity_kw": pl.Float64, "price": pl.Utf8, "interval_idx": pl.Int64,
              "tan_phi": pl.Float64}
RESOURCE_COLUMNS = ("aggregator_id", "resource_id", "feeder_id", "bus", "kind", "capacity_kw", "energy_kwh",
                    "charge_kw", "discharge_kw", "eta_charge", "eta_discharge", "soc_init_kwh", "soc_end_kwh",
                    "soc_min_kwh", "ramp_kw", "departure_us")
RESOURCE_SCHEMA = {c: pl.Float64 for c in RESOURCE_COLUMNS} | {
    "aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "feeder_id": pl.Utf8, "bus": pl.Utf8, "kind": pl.Utf8,
    "departure_us": pl.Int64}
FLEX_NEED_COLUMNS = ("need_id", "kind", "element", "direction", "interval_idx", "required_kw", "required_pu",
                     "max_price", "partial_ok")
FLEX_NEED_SCHEMA = {"need_id": pl.Utf8, "kind": pl.Utf8, "element": pl.Utf8, "direction": pl.Utf8,
                    "interval_idx": pl.Int64, "required_kw": pl.Float64, "required_pu": pl.Float64,
                    "max_price": pl.Utf8, "partial_ok": pl.Boolean}
FLEX_OFFER_COLUMNS = ("aggregator_id", "offer_id", "resource_id", "bus", "interval_idx", "direction", "quantity_kw",
                      "price", "availability_price", "divisible", "min_kw", "tan_phi")
FLEX_OFFER_SCHEMA = {"aggregator_id": pl.Utf8, "offer_id": pl.Utf8, "resource_id": pl.Utf8, "bus": pl.Utf8,
                     "interval_idx": pl.Int64, "direction": pl.Utf8, "quantity_kw": pl.Float64, "price": pl.Utf8,
                     "availability_price": pl.Utf8, "divisible": pl.Boolean, "min_kw": pl.Float64,
                     "tan_phi": pl.Float64, "capacity_kw": pl.Float64}
"""Active offers as the auction reads them: the offer columns plus the resource's ``capacity_kw``."""
ACTIVATION_SCHEMA = {"bus": pl.Utf8, "interval_idx": pl.Int64, "direction": pl.Utf8, "accepted_kw": pl.Float64,
                     "tan_phi": pl.Float64, "aggregator_id": pl.Utf8, "resource_id": pl.Utf8}
"""Accepted flexibility activations as the energy market folds them in (``markets_engine.market_inputs``),
with the resource that sold each (its energy bids may not sell that kW again)."""
COMMITMENT_SCHEMA = {"aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "interval_idx": pl.Int64, "kw": pl.Float64}
"""Each resource's energy award per interval (net injection kW), as the flexibility auction counts it."""
STATEMENT_KEY = ("aggregator_id", "market_id", "bid_id", "resource_id", "interval_idx", "settlement", "kind")
_BID_INSERT = ("INSERT INTO bids (market_id, aggregator_id, bid_id, resource_id, bus, side, quantity_kw, "
               "price, interval_idx, tan_phi, status, updated_us) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_PRICE_INSERT = ("INSERT INTO prices (market_id, stage, bus, interval_idx, dlmp, energy, congestion, "
                 "voltage, loss, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_DISPATCH_INSERT = ("INSERT INTO dispatch (kind, market_id, aggregator_id, bid_id, resource_id, "
                    "interval_idx, side, kw, price, source, reason, issued_us) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


# -- helpers ------------------------------------------------------------------------------

def _marks(n: int) -> str:
    return ", ".join("?" * n)


def _chunks(values: list):
    for k in range(0, len(values), _CHUNK):
        yield values[k:k + _CHUNK]


def _insert_all(conn, sql: str, rows: list) -> bool:
    """Insert every row, or none when one hits a uniqueness constraint (then False).

    The inner savepoint undoes the rows inserted before the conflict, so the
    caller can look up which id was taken without seeing its own half-insert.
    """
    conn.execute("SAVEPOINT insert_all")
    try:
        conn.executemany(sql, rows)
    except IntegrityError:
        conn.execute("ROLLBACK TO insert_all")
        conn.execute("RELEASE insert_all")
        return False
    conn.execute("RELEASE insert_all")
    return True


def get_market(conn: sqlite3.Connection, market_id: str, field: str = "market_id") -> dict:
    row = conn.execute("SELECT * FROM markets WHERE market_id = ?", (market_id,)).fetchone()
    if row is None:
        raise NotFound(f"{field}: no market {market_id!r}")
    return dict(row)


def require_state(market: dict, states: tuple, action: str) -> None:
    if market["state"] not in states:
        raise FailedPrecondition(f"market {market['market_id']!r} is {market['state']}: {action} needs it "
                                 f"{' or '.join(states)}")


def _set_state(conn, market: dict, state: str, now: int, status: str | None = None, diagnosis=()) -> dict:
    assert timeline.at_least(state, market["state"]), "market states only move forward"
    conn.execute("UPDATE markets SET state = ?, updated_us = ?, "
                 "clearing_status = COALESCE(?, clearing_status), diagnosis = ? WHERE market_id = ?",
                 (state, now, status, json.dumps(list(diagnosis)), market["market_id"]))
    return get_market(conn, market["market_id"])


def _audit(conn, who: Principal, action: str, payload: dict, now: int) -> None:
    audit.append(conn, who.name, who.role, action, payload, now)


def _idempotent(conn, who: Principal, request_id: str, digest: str, run) -> dict:
    if not request_id:
        return run()
    stored = stored_result(conn, who, request_id, digest)
    if stored is not None:
        return stored
    out = run()
    conn.execute("INSERT INTO requests (name, request_id, digest, result) VALUES (?, ?, ?, ?)",
                 (who.name, request_id, digest, json.dumps(out)))
    return out


def stored_result(conn, who: Principal, request_id: str, digest: str) -> dict | None:
    """The result of an earlier request with this id, or None; ALREADY_EXISTS if its content differed."""
    if not request_id:
        return None
    row = conn.execute("SELECT digest, result FROM requests WHERE name = ? AND request_id = ?",
                       (who.name, request_id)).fetchone()
    if row is None:
        return None
    if row["digest"] != digest:
        raise AlreadyExists(f"request_id: {request_id!r} was already used for a different request")
    return json.loads(row["result"])


def interval_indices(market: dict, starts: list[int], field: str) -> list[int]:
    """Interval index of each start; InvalidArgument naming the first start that is not one."""
    out = []
    for j, start in enumerate(starts):
        k = timeline.interval_index(market, start)
        if k is None:
            raise InvalidArgument(f"{field}[{j}]", f"{timeline.iso(start)} is not an interval start of "
                                                   f"market {market['market_id']!r}")
        out.append(k)
    return out


def rolled_intervals(conn, market_id: str) -> set[int]:
    """Intervals of a rolling market whose own gate the scheduler has closed (``server.scheduler``)."""
    return {k for (k,) in conn.execute("SELECT interval_idx FROM interval_steps WHERE market_id = ? AND step = "
                                       "'close'", (market_id,))}


def _check_gates(conn, market: dict, indices, field, now: int) -> None:
    """FAILED_PRECONDITION for the first interval whose gate has closed: by the clock, or by the scheduler's
    rolling gate (whose clock may run ahead of the wall clock)."""
    rolled = rolled_intervals(conn, market["market_id"])
    for j, k in indices:
        gate = timeline.gate_closure(market, k)
        if now >= gate or k in rolled:
            raise FailedPrecondition(f"{field(j)}: the gate of the interval starting "
                                     f"{timeline.iso(timeline.interval_start(market, k))} closed"
                                     + ("" if k in rolled and now < gate else f" at {timeline.iso(gate)}"))


# -- feeders and markets ------------------------------------------------------------------

def create_feeder(conn, who: Principal, feeder_id: str, tables: dict, summary: dict) -> dict:
    """Store a validated feeder (``tables`` as :mod:`server.markets_engine` stores them)."""
    if conn.execute("SELECT 1 FROM feeders WHERE feeder_id = ?", (feeder_id,)).fetchone():
        raise AlreadyExists(f"feeder_id: feeder {feeder_id!r} already exists")
    now = now_us()
    row = {"feeder_id": feeder_id, **summary, "created_us": now}
    conn.execute("INSERT INTO feeders (feeder_id, name, root_bus, base_kv, bus_count, line_count, tables, "
                 "created_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 (feeder_id, summary["name"], summary["root_bus"], summary["base_kv"], summary["bus_count"],
                  summary["line_count"], json.dumps(tables), now))
    conn.executemany("INSERT INTO feeder_buses (feeder_id, bus) VALUES (?, ?)",
                     [(feeder_id, str(b)) for b in tables["buses"]["bus"]])
    _audit(conn, who, "feeder.create", {"feeder_id": feeder_id, "tables": tables}, now)
    return row


def create_market(conn, who: Principal, spec: dict) -> dict:
    if conn.execute("SELECT 1 FROM markets WHERE market_id = ?", (spec["market_id"],)).fetchone():
        raise AlreadyExists(f"market_id: market {spec['market_id']!r} already exists")
    if not conn.execute("SELECT 1 FROM feeders WHERE feeder_id = ?", (spec["feeder_id"],)).fetchone():
        raise NotFound(f"feeder_id: no feeder {spec['feeder_id']!r}")
    if spec["day_ahead_market_id"]:
        da = get_market(conn, spec["day_ahead_market_id"], "day_ahead_market_id")
        if da["kind"] != "day_ahead" or da["feeder_id"] != spec["feeder_id"]:
            raise InvalidArgument("day_ahead_market_id", f"{da['market_id']!r} is not a day-ahead market of "
                                                         f"feeder {spec['feeder_id']!r}")
    now = now_us()
    row = {**spec, "state": "open", "clearing_status": "", "diagnosis": "[]", "created_us": now,
           "updated_us": now}
    conn.execute(f"INSERT INTO markets ({', '.join(row)}) VALUES ({_marks(len(row))})", tuple(row.values()))
    _audit(conn, who, "market.create", spec, now)
    return row


def close_gate(conn, who: Principal, market_id: str) -> dict:
    market = get_market(conn, market_id)
    require_state(market, ("open",), "closing the gate")
    if rolled_intervals(conn, market_id):
        raise FailedPrecondition(f"market {market_id!r} clears interval by interval: each interval's gate closes "
                                 "on its own schedule (server.scheduler), so the market has no single gate now")
    now = now_us()
    out = _set_state(conn, market, "closed", now)
    _audit(conn, who, "market.close", {"market_id": market_id}, now)
    return out


def reopen(conn, who: Principal, market_id: str, reason: str) -> dict:
    """CLOSED -> OPEN for a market whose clearing failed (or that was never cleared): the way out of a
    clearing that cannot succeed on the stored bids. The failed clearing's status and diagnosis stay in
    the audit log; the market row starts afresh."""
    market = get_market(conn, market_id)
    require_state(market, ("closed",), "reopening")
    now = now_us()
    conn.execute("UPDATE markets SET state = 'open', updated_us = ?, clearing_status = '', diagnosis = '[]' "
                 "WHERE market_id = ?", (now, market_id))
    _audit(conn, who, "market.reopen", {"market_id": market_id, "reason": reason,
                                        "clearing_status": market["clearing_status"],
                                        "diagnosis": json.loads(market["diagnosis"])}, now)
    return get_market(conn, market_id)


# -- resources ------------------------------------------------------------------------------

def _check_buses(conn, rows: list[dict]) -> None:
    for feeder_id in sorted({r["feeder_id"] for r in rows}):
        if not conn.execute("SELECT 1 FROM feeders WHERE feeder_id = ?", (feeder_id,)).fetchone():
            k = next(k for k, r in enumerate(rows) if r["feeder_id"] == feeder_id)
            raise NotFound(f"resources[{k}].feeder_id: no feeder {feeder_id!r}")
        known = set()
        wanted = sorted({r["bus"] for r in rows if r["feeder_id"] == feeder_id})
        for part in _chunks(wanted):
            known.update(b for (b,) in conn.execute(
                f"SELECT bus FROM feeder_buses WHERE feeder_id = ? AND bus IN ({_marks(len(part))})",
                (feeder_id, *part)))
        for k, r in enumerate(rows):
            if r["feeder_id"] == feeder_id and r["bus"] not in known:
                raise InvalidArgument(f"resources[{k}].bus", f"feeder {feeder_id!r} has no bus {r['bus']!r}")


def register_resources(conn, who: Principal, rows: list[dict], request_id: str, digest: str) -> dict:
    def run():
        _check_buses(conn, rows)
        registry_store.check_resources(conn, who.name, rows)
        (held,) = conn.execute("SELECT COUNT(*) FROM resources WHERE aggregator_id = ?",
                               (who.name,)).fetchone()
        if held + len(rows) > MAX_RESOURCES_PER_AGGREGATOR:
            raise ResourceExhausted(f"resources: an aggregator may register at most "
                                    f"{MAX_RESOURCES_PER_AGGREGATOR} ({held} registered, {len(rows)} more)")
        now = now_us()
        values = [(who.name, *(r[c] for c in RESOURCE_COLUMNS[1:]), now) for r in rows]
        sql = (f"INSERT INTO resources ({', '.join(RESOURCE_COLUMNS)}, created_us) "
               f"VALUES ({_marks(len(RESOURCE_COLUMNS) + 1)})")
        if not _insert_all(conn, sql, values):
            for k, r in enumerate(rows):
                if conn.execute("SELECT 1 FROM resources WHERE aggregator_id = ? AND resource_id = ?",
                                (who.name, r["resource_id"])).fetchone():
                    raise AlreadyExists(f"resources[{k}].resource_id: {r['resource_id']!r} is already "
                                        "registered")
        _audit(conn, who, "resources.register", {"aggregator_id": who.name, "resources": rows}, now)
        return {"registered": len(rows)}

    return _idempotent(conn, who, request_id, digest, run)


def _own_resources(conn, aggregator: str, resource_ids: list[str]) -> dict:
    out = {}
    for part in _chunks(sorted(set(resource_ids))):
        for row in conn.execute(f"SELECT * FROM resources WHERE aggregator_id = ? AND resource_id IN "
                                f"({_marks(len(part))})", (aggregator, *part)):
            out[row["resource_id"]] = row
    return out


# -- bids -----------------------------------------------------------------------------------

def _bid_rows(conn, market: dict, who: Principal, batch: BidBatch, now: int) -> list[tuple]:
    """Checks of a batch against the market and the caller's resources; the rows to store."""
    indices = interval_indices(market, batch.interval_starts, "bids.interval_starts")
    _check_gates(conn, market, enumerate(indices), lambda j: f"bids.interval_starts[{j}]", now)
    resources = _own_resources(conn, who.name, batch.resource_id)
    registry_store.check_use(conn, who.name, batch.resource_id, "dso_energy", "bids", batch.quantity_kw,
                             ["export" if side == "sell" else "import" for side in batch.side])
    floor, cap = Decimal(market["price_floor"]), Decimal(market["price_cap"])
    rolling = market["kind"] in timeline.ROLLING and bool(rolled_intervals(conn, market["market_id"]))
    rows = []
    for k in range(len(batch)):
        rid = batch.resource_id[k]
        res = resources.get(rid)
        if res is None:
            raise NotFound(f"bids.resource_id[{k}]: you have no resource {rid!r}")
        if rolling and links_intervals(res):
            raise FailedPrecondition(f"bids.resource_id[{k}]: market {market['market_id']!r} clears interval by "
                                     f"interval (its rolling gates have begun), and {rid!r} is a {res['kind']} "
                                     "whose intervals are linked: bid it in a market cleared whole")
        if res["feeder_id"] != market["feeder_id"]:
            raise InvalidArgument(f"bids.resource_id[{k}]", f"{rid!r} is on feeder {res['feeder_id']!r}; the "
                                                            f"market clears feeder {market['feeder_id']!r}")
        side = batch.side[k]
        if (res["kind"] == "pv" and side != "sell") or (res["kind"] == "ev" and side != "buy"):
            raise InvalidArgument(f"bids.side[{k}]", f"a {res['kind']} resource can only "
                                                     f"{'sell' if res['kind'] == 'pv' else 'buy'}")
        if batch.quantity_kw[k] > res["capacity_kw"]:
            raise InvalidArgument(f"bids.quantity_kw[{k}]", f"{batch.quantity_kw[k]} kW exceeds resource "
                                                            f"{rid!r}'s capacity of {res['capacity_kw']} kW")
        if not floor <= Decimal(batch.price[k]) <= cap:
            raise InvalidArgument(f"bids.price[{k}]",
                                  f"{batch.price[k]} is outside the market's floor {market['price_floor']} "
                                  f"and cap {market['price_cap']}")
        t = indices[batch.interval_index[k]]
        if res["kind"] == "ev" and timeline.interval_start(market, t) >= res["departure_us"]:
            raise InvalidArgument(f"bids.interval_index[{k}]", f"EV {rid!r} departs at "
                                                               f"{timeline.iso(res['departure_us'])}, before "
                                                               "this interval starts")
        rows.append((market["market_id"], who.name, batch.bid_id[k], rid, res["bus"], side,
                     batch.quantity_kw[k], batch.price[k], t, batch.tan_phi[k], "active", now))
    return rows


def links_intervals(resource) -> bool:
    """True for a resource whose bids link intervals (storage, EV energy, ramp limits): the store's reading
    of the resources ``server.markets_engine`` hands the engine as interval-coupling."""
    return resource["kind"] in ("battery", "ev") or (resource["kind"] == "flexible_load"
                                                      and (resource["ramp_kw"] or 0) > 0)


def _existing_bids(conn, market_id: str, aggregator: str, bid_ids: list[str]) -> dict:
    out = {}
    for part in _chunks(bid_ids):
        for row in conn.execute(f"SELECT * FROM bids WHERE market_id = ? AND aggregator_id = ? AND bid_id IN "
                                f"({_marks(len(part))})", (market_id, aggregator, *part)):
            out[row["bid_id"]] = row
    return out


def _bid_payload(market_id: str, who: Principal, rows: list[tuple]) -> dict:
    cols = list(zip(*rows, strict=True))
    names = ("bid_id", "resource_id", "bus", "side", "quantity_kw", "price", "interval_idx", "tan_phi")
    return {"market_id": market_id, "aggregator_id": who.name,
            "bids": {name: list(cols[k + 2]) for k, name in enumerate(names)}}


def _insert_batch(conn, table: str, insert_sql: str, rows: list, market_id: str, who: Principal, quota: int,
                  noun: str, id_field: str, ids: list[str], existing) -> None:
    """Insert a whole batch of an aggregator's rows, or raise: over its quota, or an id already used.

    ``existing(conn, market_id, aggregator, ids)`` names the ids already taken, so the
    error can point at the first one (``id_field[k]``).
    """
    (held,) = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE market_id = ? AND aggregator_id = ?",
                           (market_id, who.name)).fetchone()
    if held + len(rows) > quota:
        raise ResourceExhausted(f"{id_field.split('.')[0]}: an aggregator may hold at most {quota} "
                                f"{noun} in a market ({held} held, {len(rows)} submitted)")
    if not _insert_all(conn, insert_sql, rows):
        taken = existing(conn, market_id, who.name, ids)
        k = next(k for k, i in enumerate(ids) if i in taken)
        raise AlreadyExists(f"{id_field}[{k}]: {ids[k]!r} already exists in market {market_id!r}")


def submit_bids(conn, who: Principal, market_id: str, batch: BidBatch, request_id: str, digest: str) -> dict:
    def run():
        market = get_market(conn, market_id)
        require_state(market, ("open",), "submitting bids")
        now = now_us()
        rows = _bid_rows(conn, market, who, batch, now)
        _insert_batch(conn, "bids", _BID_INSERT, rows, market_id, who, MAX_BIDS_PER_AGGREGATOR,
                      "segments", "bids.bid_id", batch.bid_id, _existing_bids)
        _audit(conn, who, "bids.submit", _bid_payload(market_id, who, rows), now)
        return {"count": len(rows), "acknowledged_us": now}

    return _idempotent(conn, who, request_id, digest, run)


def _active(conn, market: dict, who: Principal, bid_ids: list[str], field: str, now: int) -> dict:
    existing = _existing_bids(conn, market["market_id"], who.name, bid_ids)
    for k, b in enumerate(bid_ids):
        row = existing.get(b)
        if row is None or row["status"] != "active":
            raise NotFound(f"{field}[{k}]: you have no active bid {b!r} in market {market['market_id']!r}")
    pos = {b: k for k, b in enumerate(bid_ids)}
    _check_gates(conn, market, ((pos[b], r["interval_idx"]) for b, r in existing.items()),
                 lambda k: f"{field}[{k}]", now)
    return existing


def replace_bids(conn, who: Principal, market_id: str, batch: BidBatch, request_id: str, digest: str) -> dict:
    def run():
        market = get_market(conn, market_id)
        require_state(market, ("open",), "replacing bids")
        now = now_us()
        _active(conn, market, who, batch.bid_id, "bids.bid_id", now)
        rows = _bid_rows(conn, market, who, batch, now)
        conn.executemany("UPDATE bids SET resource_id = ?, bus = ?, side = ?, quantity_kw = ?, price = ?, "
                         "interval_idx = ?, tan_phi = ?, updated_us = ? "
                         "WHERE market_id = ? AND aggregator_id = ? AND bid_id = ?",
                         [(*r[3:10], now, r[0], r[1], r[2]) for r in rows])
        _audit(conn, who, "bids.replace", _bid_payload(market_id, who, rows), now)
        return {"count": len(rows), "acknowledged_us": now}

    return _idempotent(conn, who, request_id, digest, run)


def withdraw_bids(conn, who: Principal, market_id: str, bid_ids: list[str], request_id: str,
                  digest: str) -> dict:
    def run():
        market = get_market(conn, market_id)
        require_state(market, ("open",), "withdrawing bids")
        now = now_us()
        _active(conn, market, who, bid_ids, "bid_ids", now)
        conn.executemany("UPDATE bids SET status = 'withdrawn', updated_us = ? "
                         "WHERE market_id = ? AND aggregator_id = ? AND bid_id = ?",
                         [(now, market_id, who.name, b) for b in bid_ids])
        _audit(conn, who, "bids.withdraw",
               {"market_id": market_id, "aggregator_id": who.name, "bid_ids": bid_ids}, now)
        return {"count": len(bid_ids), "acknowledged_us": now}

    return _idempotent(conn, who, request_id, digest, run)


# -- clearing, publication, award, settlement, overrides -------------------------------------------

def _record_outcome(conn, market_id: str, stage: str, status: str, summary: dict, digest: str,
                    now: int) -> None:
    conn.execute("INSERT INTO clearings (market_id, stage, status, summary, digest, created_us) "
                 "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (market_id, stage) DO UPDATE SET status = excluded.status, "
                 "summary = excluded.summary, digest = excluded.digest, created_us = excluded.created_us",
                 (market_id, stage, status, json.dumps(summary), digest, now))


def require_first_clearing(market: dict) -> None:
    """FAILED_PRECONDITION when the market was cleared before (a failed clearing is left to the operator)."""
    if market["clearing_status"]:
        raise FailedPrecondition(f"market {market['market_id']!r} was cleared before "
                                 f"({market['clearing_status']}): only the operator clears it again")


def record_clearing(conn, who: Principal, market_id: str, forecast: list[str], outcome,
                    activations: pl.DataFrame | None = None, first: bool = False) -> dict:
    """Store a clearing (a :class:`server.markets_engine.ClearOutcome`): CLOSED -> CLEARED when optimal.

    ``activations`` are the accepted flexibility activations the clearing was built on
    (:func:`energy_activations`), or None when the market's flexibility auction had no optimal
    clearing. The summary then says ``flex_activations_kw`` (their total) and ``flex_digest``, and the
    audit record carries them, so that the award, settlement and a replay build on the same net load.
    ``first``: refuse a market cleared before (:func:`require_first_clearing`).
    """
    market = get_market(conn, market_id)
    require_state(market, ("closed",), "clearing")
    if first:
        require_first_clearing(market)
    now = now_us()
    summary = {"welfare": outcome.welfare, "seconds": outcome.seconds, "forecast": forecast,
               "network_version": outcome.network_version}
    payload = {"market_id": market_id, "forecast": forecast, "status": outcome.status,
               "diagnosis": list(outcome.diagnosis), "digest": outcome.digest,
               "network_version": outcome.network_version}
    if activations is not None:
        (flex_digest,) = conn.execute("SELECT digest FROM flex_clearings WHERE market_id = ? AND status = "
                                      "'optimal'", (market_id,)).fetchone()
        summary |= {"flex_activations_kw": float(activations["accepted_kw"].sum()), "flex_digest": flex_digest}
        payload["flex"] = {"digest": flex_digest, "activations": activations.to_dict(as_series=False)}
    _record_outcome(conn, market_id, "clear", outcome.status, summary, outcome.digest, now)
    if outcome.status == "optimal":
        store_clearing_tables(conn, market_id, outcome)
        out = _set_state(conn, market, "cleared", now, "optimal")
    else:
        out = _set_state(conn, market, "closed", now, outcome.status, outcome.diagnosis)
    _audit(conn, who, "market.clear", payload, now)
    return out


def store_clearing_tables(conn, market_id: str, outcome, revision: int = 0, standing: set[int] = frozenset()) -> None:
    """The prices and interface curves of an optimal clearing (unpublished: no stream sequence yet); no curve of
    the ``standing`` intervals (awarded before a re-clearing: the curve the ISO awarded stays theirs)."""
    conn.executemany(_PRICE_INSERT, [(market_id, "clear", *r, revision) for r in outcome.prices.iter_rows()])
    conn.executemany("INSERT INTO curves (market_id, interval_idx, fixed_kw, conditional, segments, "
                     "bands, area, revision, network_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [(market_id, c["interval_idx"], c["fixed_kw"], int(c["conditional"]),
                       json.dumps(c["segments"]), json.dumps(c["bands"]), outcome.area, revision,
                       outcome.network_version) for c in outcome.curves if c["interval_idx"] not in standing])


def publish(conn, who: Principal, market_id: str) -> dict:
    """CLEARED -> PUBLISHED; the curves get their stream sequence now, in publication order."""
    market = get_market(conn, market_id)
    require_state(market, ("cleared",), "publishing")
    now = now_us()
    (base,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM curves").fetchone()
    conn.execute("UPDATE curves SET seq = ? + interval_idx + 1, published_us = ? WHERE market_id = ?",
                 (base, now, market_id))
    out = _set_state(conn, market, "published", now)
    _audit(conn, who, "market.publish", {"market_id": market_id}, now)
    return out


def record_award(conn, who: Principal, market_id: str, awards: list, outcome, request_id: str,
                 digest: str) -> dict:
    """Store an award's disaggregation (:class:`server.markets_engine.AwardOutcome`): PUBLISHED -> AWARDED.

    ``awards`` are the ISO's ``(interval_idx, import_kw, price)`` as submitted.
    """
    def run():
        market = get_market(conn, market_id)
        require_state(market, ("published",), "an award")
        now = now_us()
        optimal = outcome.status == "optimal"
        if optimal:
            store_award_tables(conn, market_id, awards, outcome, now)
            _set_state(conn, market, "awarded", now, "optimal")
        else:
            _set_state(conn, market, "published", now, outcome.status, outcome.diagnosis)
        _record_outcome(conn, market_id, "award", outcome.status, {}, outcome.digest, now)
        _audit(conn, who, "award.submit", {"market_id": market_id, "awards": [list(a) for a in awards],
                                           "status": outcome.status, "diagnosis": list(outcome.diagnosis),
                                           "digest": outcome.digest}, now)
        aggregators = sorted(set(outcome.awards["aggregator_id"].to_list())) if optimal else []
        return {"status": outcome.status, "diagnosis": list(outcome.diagnosis), "aggregators": aggregators}

    return _idempotent(conn, who, request_id, digest, run)


_PRICE_PARTS = "dlmp, energy, congestion, voltage, loss"


def supersede_prices(conn, market_id: str, stage: str, indices: list[int] | None, now: int) -> dict[int, int]:
    """Move the ``stage`` prices (``clear`` or ``award``) of intervals ``indices`` (None: every interval) to
    ``superseded_prices``, stamped ``now``: a network change replaces them (a re-clearing, a re-dispatch), and
    the audit trail keeps what was published. Returns ``interval_idx -> the revision of the prices replacing
    them`` (one more than the replaced one's)."""
    where, params = "market_id = ? AND stage = ?", [market_id, stage]
    if indices is not None:
        where += f" AND interval_idx IN ({_marks(len(indices))})"
        params += list(indices)
    nxt = {k: r + 1 for k, r in conn.execute(f"SELECT interval_idx, MAX(revision) FROM prices WHERE {where} "
                                             "GROUP BY interval_idx", params)}
    conn.execute(f"INSERT INTO superseded_prices (market_id, stage, bus, interval_idx, revision, {_PRICE_PARTS}, "
                 f"superseded_us) SELECT market_id, stage, bus, interval_idx, revision, {_PRICE_PARTS}, ? "
                 f"FROM prices WHERE {where}", [now, *params])
    conn.execute(f"DELETE FROM prices WHERE {where}", params)
    return nxt


def replace_award_prices(conn, market_id: str, prices: pl.DataFrame, now: int) -> None:
    """The prices of a re-dispatch of awarded intervals (``bus, interval_idx, dlmp, energy, congestion, voltage,
    loss`` as :class:`server.markets_engine.AwardOutcome` has them) in place of their award's, which are kept
    as superseded (:func:`supersede_prices`)."""
    indices = sorted(set(prices["interval_idx"].to_list()))
    if not indices:
        return
    revision = supersede_prices(conn, market_id, "award", indices, now)
    conn.executemany(_PRICE_INSERT, [(market_id, "award", *r, revision.get(r[1], 1)) for r in prices.iter_rows()])


def store_award_tables(conn, market_id: str, awards: list, outcome, now: int) -> None:
    """The ISO's award rows, the DLMPs at the award, and the award and instruction dispatch rows; refused
    whole when an instruction sells a registered DER twice (:func:`server.registry_store.guard`)."""
    market = get_market(conn, market_id)
    minutes = market["interval_minutes"]
    registry_store.guard(conn, market["feeder_id"], [
        (agg, res, "dso_energy", timeline.interval_start(market, t), kw, minutes)
        for agg, res, t, kw in outcome.instructions.iter_rows()], "award", market_id)
    conn.executemany("INSERT INTO iso_awards (market_id, interval_idx, import_kw, price) "
                     "VALUES (?, ?, ?, ?)", [(market_id, *a) for a in awards])
    conn.executemany(_PRICE_INSERT, [(market_id, "award", *r, 0) for r in outcome.prices.iter_rows()])
    conn.executemany(_DISPATCH_INSERT,
                     [("award", market_id, agg, bid, res, t, side, kw, price, "award", "", now)
                      for agg, bid, res, t, side, kw, price in outcome.awards.iter_rows()])
    conn.executemany(_DISPATCH_INSERT,
                     [("instruction", market_id, agg, "", res, t, "", kw, "", "award", "", now)
                      for agg, res, t, kw in outcome.instructions.iter_rows()])


def insert_statements(conn, market: dict, statements: pl.DataFrame) -> None:
    """Store a settlement's statement lines (:class:`server.markets_engine.SettleOutcome` ``statements``)."""
    conn.executemany("INSERT INTO statements (market_id, aggregator_id, bid_id, resource_id, interval_idx, "
                     "settlement, kw, kvar, price, price_q, amount, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [(market["market_id"], a, b, r, t, market["kind"], kw, kvar, p, pq, amt, kind)
                      for a, b, r, t, kw, kvar, p, pq, amt, kind in statements.iter_rows()])


def record_settlement(conn, who: Principal, market_id: str, outcome) -> dict:
    """Store statements (:class:`server.markets_engine.SettleOutcome`): AWARDED -> SETTLED."""
    market = get_market(conn, market_id)
    require_state(market, ("awarded",), "settling")
    now = now_us()
    insert_statements(conn, market, outcome.statements)
    conn.execute("INSERT INTO settlements (market_id, totals, created_us) VALUES (?, ?, ?)",
                 (market_id, json.dumps(outcome.totals), now))
    out = _set_state(conn, market, "settled", now)
    _audit(conn, who, "market.settle",
           {"market_id": market_id, "totals": outcome.totals, "digest": outcome.digest}, now)
    return out


def override(conn, who: Principal, market_id: str, aggregator_id: str, resource_id: str, start_us: int,
             kw: float, reason: str) -> dict:
    market = get_market(conn, market_id)
    require_state(market, ("awarded",), "an override")
    (k,) = interval_indices(market, [start_us], "interval_start")
    if not conn.execute("SELECT 1 FROM resources WHERE aggregator_id = ? AND resource_id = ?",
                        (aggregator_id, resource_id)).fetchone():
        raise NotFound(f"resource_id: aggregator {aggregator_id!r} has no resource {resource_id!r}")
    now = now_us()
    (seq,) = conn.execute(_DISPATCH_INSERT + " RETURNING seq",
                          ("instruction", market_id, aggregator_id, "", resource_id, k, "", kw, "", "override",
                           reason, now)).fetchone()
    _audit(conn, who, "dispatch.override", {"market_id": market_id, "aggregator_id": aggregator_id,
                                            "resource_id": resource_id, "interval_idx": k, "kw": kw,
                                            "reason": reason}, now)
    return dict(conn.execute("SELECT * FROM dispatch WHERE seq = ?", (seq,)).fetchone())


# -- flexibility auction ----------------------------------------------------------------------

def flex_status(conn, market_id: str) -> str | None:
    """Status of the market's last flexibility clearing, or None when it was never cleared."""
    row = conn.execute("SELECT status FROM flex_clearings WHERE market_id = ?", (market_id,)).fetchone()
    return row[0] if row else None


def require_flex_open(market: dict, status: str | None, action: str) -> None:
    """FAILED_PRECONDITION once the market's flexibility auction has an optimal clearing."""
    if status == "optimal":
        raise FailedPrecondition(f"the flexibility auction of market {market['market_id']!r} is cleared: "
                                 f"{action} is no longer possible")


def require_flex_clearable(market: dict, status: str | None, need_count: int) -> None:
    """A flexibility auction clears once, after the market's gate closed, and only with needs.

    It clears either before the energy market (CLOSED: the activations then shape the energy clearing,
    the interface curves and the award's disaggregation) or after the ISO's award (AWARDED, SETTLED: the
    awarded kW then use up the resources' capability), never in between: the curves the ISO holds
    would not show the activations, and the energy positions are not final yet.
    """
    if market["state"] == "open":
        raise FailedPrecondition(f"market {market['market_id']!r} is open: clearing its flexibility auction "
                                 "needs the gate closed (CloseGate), so that the offers are final")
    if market["state"] in ("cleared", "published"):
        raise FailedPrecondition(f"market {market['market_id']!r} is {market['state']}: its flexibility auction "
                                 "clears before ClearMarket (the activations then shape the interface curves) "
                                 "or after the ISO's award (the awarded kW are then committed), not in between")
    require_flex_open(market, status, "clearing it again")
    if need_count == 0:
        raise FailedPrecondition(f"market {market['market_id']!r} has no flexibility needs to clear")


def _need_index(market: dict, start_us: int, field: str) -> int:
    k = timeline.interval_index(market, start_us)
    if k is None:
        raise InvalidArgument(field, f"{timeline.iso(start_us)} is not an interval start of market "
                                     f"{market['market_id']!r}")
    return k


def post_needs(conn, who: Principal, market_id: str, needs: list[dict], request_id: str, digest: str) -> dict:
    """Store validated needs (:func:`server.convert.flex_needs`, elements checked against the feeder)."""
    def run():
        market = get_market(conn, market_id)
        require_flex_open(market, flex_status(conn, market_id), "posting needs")
        rows = [{"need_id": r["need_id"], "kind": r["kind"], "element": r["element"],
                 "direction": r["direction"],
                 "interval_idx": _need_index(market, r["start_us"], f"needs[{k}].interval_start"),
                 "required_kw": r["required_kw"], "required_pu": r["required_pu"], "max_price": r["max_price"],
                 "partial_ok": r["partial_ok"]} for k, r in enumerate(needs)]
        (held,) = conn.execute("SELECT COUNT(*) FROM flex_needs WHERE market_id = ?", (market_id,)).fetchone()
        if held + len(rows) > MAX_FLEX_NEEDS_PER_MARKET:
            raise ResourceExhausted(f"needs: a market may hold at most {MAX_FLEX_NEEDS_PER_MARKET} needs "
                                    f"({held} posted, {len(rows)} more)")
        now = now_us()
        values = [(market_id, *(r[c] for c in FLEX_NEED_COLUMNS[:-1]), int(r["partial_ok"]), now) for r in rows]
        sql = (f"INSERT INTO flex_needs (market_id, {', '.join(FLEX_NEED_COLUMNS)}, posted_us) "
               f"VALUES ({_marks(len(FLEX_NEED_COLUMNS) + 2)})")
        if not _insert_all(conn, sql, values):
            for k, r in enumerate(rows):
                if conn.execute("SELECT 1 FROM flex_needs WHERE market_id = ? AND need_id = ?",
                                (market_id, r["need_id"])).fetchone():
                    raise AlreadyExists(f"needs[{k}].need_id: {r['need_id']!r} already exists in market "
                                        f"{market_id!r}")
        _audit(conn, who, "flex.needs.post", {"market_id": market_id, "needs": rows}, now)
        return {"count": len(rows), "acknowledged_us": now}

    return _idempotent(conn, who, request_id, digest, run)


def _flex_offer_rows(conn, market: dict, who: Principal, batch: FlexOfferBatch, now: int) -> list[tuple]:
    """Checks of an offer batch against the market and the caller's resources; the rows to store."""
    indices = interval_indices(market, batch.interval_starts, "offers.interval_starts")
    _check_gates(conn, market, enumerate(indices), lambda j: f"offers.interval_starts[{j}]", now)
    resources = _own_resources(conn, who.name, batch.resource_id)
    registry_store.check_use(conn, who.name, batch.resource_id, "dso_flexibility", "offers", batch.quantity_kw,
                             ["span"] * len(batch))
    cap = Decimal(market["price_cap"])
    rows = []
    for k in range(len(batch)):
        rid = batch.resource_id[k]
        res = resources.get(rid)
        if res is None:
            raise NotFound(f"offers.resource_id[{k}]: you have no resource {rid!r}")
        if res["feeder_id"] != market["feeder_id"]:
            raise InvalidArgument(f"offers.resource_id[{k}]", f"{rid!r} is on feeder {res['feeder_id']!r}; the "
                                                              f"market clears feeder {market['feeder_id']!r}")
        if batch.quantity_kw[k] > res["capacity_kw"]:
            raise InvalidArgument(f"offers.quantity_kw[{k}]", f"{batch.quantity_kw[k]} kW exceeds resource "
                                                              f"{rid!r}'s capacity of {res['capacity_kw']} kW")
        for name in ("price", "availability_price"):
            value = getattr(batch, name)[k]
            if Decimal(value) > cap:
                raise InvalidArgument(f"offers.{name}[{k}]", f"{value} is above the market's price cap "
                                                             f"{market['price_cap']}")
        t = indices[batch.interval_index[k]]
        if res["kind"] == "ev" and timeline.interval_start(market, t) >= res["departure_us"]:
            raise InvalidArgument(f"offers.interval_index[{k}]", f"EV {rid!r} departs at "
                                                                 f"{timeline.iso(res['departure_us'])}, before "
                                                                 "this interval starts")
        rows.append((market["market_id"], who.name, batch.offer_id[k], rid, res["bus"], t, batch.direction[k],
                     batch.quantity_kw[k], batch.price[k], batch.availability_price[k], int(batch.divisible[k]),
                     batch.min_kw[k], batch.tan_phi[k], "active", now))
    return rows


_FLEX_OFFER_INSERT = ("INSERT INTO flex_offers (market_id, aggregator_id, offer_id, resource_id, bus, interval_idx, "
                      "direction, quantity_kw, price, availability_price, divisible, min_kw, tan_phi, status, "
                      "updated_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def _existing_offers(conn, market_id: str, aggregator: str, offer_ids: list[str]) -> dict:
    out = {}
    for part in _chunks(offer_ids):
        for row in conn.execute(f"SELECT * FROM flex_offers WHERE market_id = ? AND aggregator_id = ? AND "
                                f"offer_id IN ({_marks(len(part))})", (market_id, aggregator, *part)):
            out[row["offer_id"]] = row
    return out


def submit_flex_offers(conn, who: Principal, market_id: str, batch: FlexOfferBatch, request_id: str,
                       digest: str) -> dict:
    def run():
        market = get_market(conn, market_id)
        require_state(market, ("open",), "submitting flexibility offers")
        require_flex_open(market, flex_status(conn, market_id), "submitting offers")
        now = now_us()
        rows = _flex_offer_rows(conn, market, who, batch, now)
        _insert_batch(conn, "flex_offers", _FLEX_OFFER_INSERT, rows, market_id, who,
                      MAX_FLEX_OFFERS_PER_AGGREGATOR, "offers", "offers.offer_id", batch.offer_id, _existing_offers)
        cols = list(zip(*rows, strict=True))
        payload = {"market_id": market_id, "aggregator_id": who.name,
                   "offers": {name: list(cols[k + 2]) for k, name in enumerate(FLEX_OFFER_COLUMNS[1:])}}
        _audit(conn, who, "flex.offers.submit", payload, now)
        return {"count": len(rows), "acknowledged_us": now}

    return _idempotent(conn, who, request_id, digest, run)


def withdraw_flex_offers(conn, who: Principal, market_id: str, offer_ids: list[str], request_id: str,
                         digest: str) -> dict:
    def run():
        market = get_market(conn, market_id)
        require_state(market, ("open",), "withdrawing flexibility offers")
        require_flex_open(market, flex_status(conn, market_id), "withdrawing offers")
        now = now_us()
        existing = _existing_offers(conn, market_id, who.name, offer_ids)
        for k, o in enumerate(offer_ids):
            row = existing.get(o)
            if row is None or row["status"] != "active":
                raise NotFound(f"offer_ids[{k}]: you have no active offer {o!r} in market {market_id!r}")
        _check_gates(conn, market, ((k, existing[o]["interval_idx"]) for k, o in enumerate(offer_ids)),
                     lambda k: f"offer_ids[{k}]", now)
        conn.executemany("UPDATE flex_offers SET status = 'withdrawn', updated_us = ? "
                         "WHERE market_id = ? AND aggregator_id = ? AND offer_id = ?",
                         [(now, market_id, who.name, o) for o in offer_ids])
        _audit(conn, who, "flex.offers.withdraw",
               {"market_id": market_id, "aggregator_id": who.name, "offer_ids": offer_ids}, now)
        return {"count": len(offer_ids), "acknowledged_us": now}

    return _idempotent(conn, who, request_id, digest, run)


def flex_rows(conn, market_id: str) -> tuple[dict, dict, pl.DataFrame, pl.DataFrame, str | None,
                                             pl.DataFrame | None]:
    """What a flexibility clearing reads: the market, its feeder tables, its needs, the active offers with
    their resource's capacity, the status of the last clearing and the energy award's commitments
    (:func:`energy_commitments`)."""
    market = get_market(conn, market_id)
    tables = feeder_tables(conn, market["feeder_id"])
    needs = conn.execute(f"SELECT {', '.join(FLEX_NEED_COLUMNS)} FROM flex_needs WHERE market_id = ?",
                         (market_id,)).fetchall()
    offers = conn.execute(
        f"SELECT {', '.join('o.' + c for c in FLEX_OFFER_COLUMNS)}, r.capacity_kw FROM flex_offers o "
        "JOIN resources r ON r.aggregator_id = o.aggregator_id AND r.resource_id = o.resource_id "
        "WHERE o.market_id = ? AND o.status = 'active'", (market_id,)).fetchall()
    return (market, tables, pl.DataFrame(needs, schema=FLEX_NEED_SCHEMA, orient="row"),
            pl.DataFrame(offers, schema=FLEX_OFFER_SCHEMA, orient="row"), flex_status(conn, market_id),
            energy_commitments(conn, market))


def energy_commitments(conn, market: dict) -> pl.DataFrame | None:
    """Each resource's awarded net injection per interval (kW, positive = up) once the market is awarded.

    These are the award's dispatch instructions (source ``award``; a later override is the DSO's own
    reliability action, not a sale). None before the award: the flexibility auction then clears before
    the energy market, which builds on its activations instead (:func:`energy_activations`).
    """
    if not timeline.at_least(market["state"], "awarded"):
        return None
    rows = conn.execute("SELECT aggregator_id, resource_id, interval_idx, kw FROM dispatch WHERE market_id = ? "
                        "AND kind = 'instruction' AND source = 'award' ORDER BY aggregator_id, resource_id, "
                        "interval_idx", (market["market_id"],)).fetchall()
    return pl.DataFrame(rows, schema=COMMITMENT_SCHEMA, orient="row")


def energy_activations(conn, market: dict) -> pl.DataFrame | None:
    """The accepted flexibility activations the market's energy clearing is (or is to be) built on, or None.

    An optimal flexibility clearing that came before the energy clearing counts; one after it leaves the
    energy market as it was. Until the energy market is cleared that is the auction's optimal clearing,
    if any; from CLEARED on, the stored clearing summary says whether it took them (``flex_digest``), so
    the award, a recomputed disaggregation and settlement build on what the curves were built on.
    """
    market_id = market["market_id"]
    if timeline.at_least(market["state"], "cleared"):
        row = conn.execute("SELECT summary FROM clearings WHERE market_id = ? AND stage = 'clear'",
                           (market_id,)).fetchone()
        if row is None or "flex_digest" not in json.loads(row[0]):
            return None
    elif flex_status(conn, market_id) != "optimal":
        return None
    rows = conn.execute("SELECT a.bus, a.interval_idx, a.direction, a.accepted_kw, o.tan_phi, a.aggregator_id, "
                        "a.resource_id FROM flex_awards a "
                        "JOIN flex_offers o ON o.market_id = a.market_id AND o.aggregator_id = a.aggregator_id "
                        "AND o.offer_id = a.offer_id WHERE a.market_id = ? AND a.accepted_kw > 0 "
                        "ORDER BY a.aggregator_id, a.offer_id", (market_id,)).fetchall()
    return pl.DataFrame(rows, schema=ACTIVATION_SCHEMA, orient="row")


def record_flex_clearing(conn, who: Principal, market_id: str, pricing: str, outcome) -> dict:
    """Store a flexibility clearing (:class:`server.markets_engine.FlexOutcome`); only an optimal one is final.

    A clearing after the energy award counted the award (:func:`energy_commitments`): the summary then
    gives ``committed_kw`` and the audit record the positions that used up capability.
    """
    market = get_market(conn, market_id)
    (count,) = conn.execute("SELECT COUNT(*) FROM flex_needs WHERE market_id = ?", (market_id,)).fetchone()
    require_flex_clearable(market, flex_status(conn, market_id), count)
    now = now_us()
    summary = {"total_cost": outcome.total_cost, "shortfall_cost": outcome.shortfall_cost,
               "seconds": outcome.seconds}
    payload = {"market_id": market_id, "pricing": pricing, "status": outcome.status,
               "total_cost": outcome.total_cost, "shortfall_cost": outcome.shortfall_cost, "digest": outcome.digest}
    if timeline.at_least(market["state"], "awarded"):
        # Cleared after the energy award: what the award used up is part of the clearing's inputs.
        summary["committed_kw"] = float(outcome.committed["kw"].abs().sum())
        payload["committed"] = outcome.committed.to_dict(as_series=False)
    if outcome.status == "optimal":
        summary["conflicts"] = int(outcome.awards["conflict"].sum())
        registry_store.guard(conn, market["feeder_id"], [
            (agg, res, "dso_flexibility", timeline.interval_start(market, t), kw if direction == "up" else -kw,
             market["interval_minutes"])
            for agg, res, t, direction, kw in outcome.awards.select(
                "aggregator_id", "resource_id", "interval_idx", "direction", "accepted_kw").iter_rows() if kw > 0],
            "flexibility", market_id)
    conn.execute("INSERT INTO flex_clearings (market_id, status, pricing, summary, digest, created_us) "
                 "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (market_id) DO UPDATE SET status = excluded.status, "
                 "pricing = excluded.pricing, summary = excluded.summary, digest = excluded.digest, "
                 "created_us = excluded.created_us",
                 (market_id, outcome.status, pricing, json.dumps(summary), outcome.digest, now))
    if outcome.status == "optimal":
        conn.executemany("INSERT INTO flex_awards (market_id, aggregator_id, offer_id, resource_id, bus, "
                         "interval_idx, direction, quantity_kw, accepted_kw, price, payment, reason, conflict, "
                         "need_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [(market_id, *r[:11], int(r[11]), r[12]) for r in outcome.awards.iter_rows()])
        conn.executemany("INSERT INTO flex_need_results (market_id, need_id, kind, element, interval_idx, met, "
                         "shortfall, shortfall_kw, cost, marginal_price) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [(market_id, *r[:4], int(r[4]), *r[5:]) for r in outcome.needs.iter_rows()])
    _audit(conn, who, "flex.clear", payload, now)
    return summary


# -- reads -----------------------------------------------------------------------------------

def _keyset(conn, table: str, filters: list[tuple[str, tuple]], key: tuple[str, ...], after: list | None,
            limit: int) -> list:
    """Rows after a key in key order, ``limit + 1`` of them so the caller knows whether more follow."""
    return _keyset_from(conn, table, (), filters, key, after, limit)


def _keyset_from(conn, source: str, source_params: tuple, filters: list[tuple[str, tuple]], key: tuple[str, ...],
                 after: list | None, limit: int) -> list:
    """:func:`_keyset` of a table or an aliased subquery ``source`` with its own parameters."""
    where = [sql for sql, _ in filters]
    params = [*source_params] + [p for _, ps in filters for p in ps]
    if after is not None:
        if len(after) != len(key):
            raise InvalidArgument("pagination.page_token", "is malformed")
        where.append(f"({', '.join(key)}) > ({_marks(len(key))})")
        params += after
    sql = f"SELECT * FROM {source}" + (f" WHERE {' AND '.join(where)}" if where else "")
    return conn.execute(f"{sql} ORDER BY {', '.join(key)} LIMIT ?", (*params, limit + 1)).fetchall()


def _eq(column: str, value) -> list[tuple[str, tuple]]:
    return [] if value is None or value == "" else [(f"{column} = ?", (value,))]


def markets_by_id(conn, market_ids) -> dict:
    out = {}
    for part in _chunks(sorted(set(market_ids))):
        for row in conn.execute(f"SELECT * FROM markets WHERE market_id IN ({_marks(len(part))})", part):
            out[row["market_id"]] = dict(row)
    return out


def list_markets(conn, feeder_id: str, states: list[str], kind: str | None, after, limit: int) -> list:
    filters = _eq("feeder_id", feeder_id) + _eq("kind", kind)
    if states:
        filters.append((f"state IN ({_marks(len(states))})", tuple(states)))
    return _keyset(conn, "markets", filters, ("market_id",), after, limit)


def list_feeders(conn, after, limit: int) -> list:
    return _keyset(conn, "feeders", [], ("feeder_id",), after, limit)


def feeder_tables(conn, feeder_id: str) -> dict:
    row = conn.execute("SELECT tables FROM feeders WHERE feeder_id = ?", (feeder_id,)).fetchone()
    if row is None:
        raise NotFound(f"feeder_id: no feeder {feeder_id!r}")
    return json.loads(row[0])


def list_resources(conn, aggregator: str | None, feeder_id: str, after, limit: int) -> list:
    return _keyset(conn, "resources", _eq("aggregator_id", aggregator) + _eq("feeder_id", feeder_id),
                   ("aggregator_id", "resource_id"), after, limit)


def list_bids(conn, market_id: str, aggregator: str | None, include_withdrawn: bool, after,
              limit: int) -> list:
    filters = _eq("market_id", market_id) + _eq("aggregator_id", aggregator)
    if not include_withdrawn:
        filters.append(("status = 'active'", ()))
    return _keyset(conn, "bids", filters, ("market_id", "aggregator_id", "bid_id"), after, limit)


def list_dispatch(conn, kind: str | None, market_id: str, aggregator: str | None, after_seq: int,
                  limit: int) -> list:
    filters = _eq("kind", kind) + _eq("market_id", market_id) + _eq("aggregator_id", aggregator)
    return _keyset(conn, "dispatch", filters, ("seq",), [after_seq], limit)


def list_statements(conn, market_id: str, aggregator: str | None, after, limit: int) -> list:
    return _keyset(conn, "statements", _eq("market_id", market_id) + _eq("aggregator_id", aggregator),
                   STATEMENT_KEY, after, limit)


def list_prices(conn, market_id: str, bus: str, after, limit: int, published_only: bool = False,
                history: bool = False) -> list:
    """DLMPs of each interval in force: of the award's dispatch once awarded (its re-dispatch after a network
    change, if any), else of the clearing at the forecast price (an open rolling market has both: its intervals
    are awarded one by one). ``published_only``: only the intervals published so far (an open rolling market's;
    another market's are published together). ``history``: also every price of those intervals that is not in
    force (``superseded`` 1): the clearing's of an awarded interval, and what a network change replaced.
    Rows carry ``stage`` (clear, award), ``revision`` and ``superseded``, in key order (interval_idx, bus, stage,
    revision)."""
    in_force = ("(stage = 'award' OR (stage = 'clear' AND interval_idx NOT IN (SELECT a.interval_idx FROM "
                "iso_awards a WHERE a.market_id = ?)))")
    cols = f"market_id, stage, bus, interval_idx, revision, {_PRICE_PARTS}"
    table = (f"(SELECT {cols}, CASE WHEN {in_force} THEN 0 ELSE 1 END AS superseded FROM prices WHERE market_id = ? "
             f"UNION ALL SELECT {cols}, 1 AS superseded FROM superseded_prices WHERE market_id = ?) p")
    filters = _eq("bus", bus) + ([] if history else [("superseded = 0", ())])
    if published_only:
        filters.append(("interval_idx IN (SELECT s.interval_idx FROM interval_steps s WHERE s.market_id = ? AND "
                        "s.step = 'publish')", (market_id,)))
    return _keyset_from(conn, table, (market_id, market_id, market_id), filters, ("interval_idx", "bus", "stage",
                                                                                 "revision"), after, limit)


def list_curves(conn, market_id: str, feeder_id: str, after_seq: int, limit: int) -> list:
    filters = [("seq IS NOT NULL", ())] + _eq("market_id", market_id)
    if feeder_id:
        filters.append(("market_id IN (SELECT market_id FROM markets WHERE feeder_id = ?)", (feeder_id,)))
    return _keyset(conn, "curves", filters, ("seq",), [after_seq], limit)


def market_rows(conn, market_id: str) -> tuple[dict, dict, pl.DataFrame, pl.DataFrame, pl.DataFrame | None,
                                              tuple[int, list], list]:
    """What a clearing of the market reads: its row, feeder tables, active bids, their resources, the
    flexibility activations its energy market is built on (:func:`energy_activations`), its network
    (:func:`market_network`) and the operator's load forecast (:func:`market_forecast`)."""
    market = get_market(conn, market_id)
    tables = feeder_tables(conn, market["feeder_id"])
    bids = conn.execute(f"SELECT {', '.join(BID_COLUMNS)} FROM bids "
                        "WHERE market_id = ? AND status = 'active'", (market_id,)).fetchall()
    # Driven by the market's bids (a primary-key look-up per resource they name): testing every registered
    # resource for a bid in the market cost a second a market at 1,000 bids among 6,000 resources.
    resources = conn.execute(
        f"SELECT {', '.join('r.' + c for c in RESOURCE_COLUMNS)} FROM (SELECT DISTINCT aggregator_id, resource_id "
        "FROM bids WHERE market_id = ? AND status = 'active') b JOIN resources r ON r.aggregator_id = "
        "b.aggregator_id AND r.resource_id = b.resource_id ORDER BY r.aggregator_id, r.resource_id",
        (market_id,)).fetchall()
    return (market, tables, pl.DataFrame(bids, schema=BID_SCHEMA, orient="row"),
            pl.DataFrame(resources, schema=RESOURCE_SCHEMA, orient="row"), energy_activations(conn, market),
            market_network(conn, market), market_forecast(conn, market_id))




def market_forecast(conn, market_id: str) -> dict:
    """The load forecast inputs of a market: ``operator`` rows ``(bus, interval_idx, p_kw, q_kvar)`` and the
    feeder's metered ``history`` rows ``(bus, interval_us, p_kw, q_kvar)`` of the ``HISTORY_DAYS`` days before
    the market's first interval, both in key order."""
    market = get_market(conn, market_id)
    first = int(market["delivery_start_us"])
    operator = [tuple(r) for r in conn.execute("SELECT bus, interval_idx, p_kw, q_kvar FROM forecasts WHERE "
                                               "market_id = ? ORDER BY interval_idx, bus", (market_id,))]
    history = [tuple(r) for r in conn.execute(
        "SELECT bus, interval_us, p_kw, q_kvar FROM load_history WHERE feeder_id = ? AND interval_us >= ? AND "
        "interval_us < ? ORDER BY interval_us, bus",
        (market["feeder_id"], first - timeline.HISTORY_DAYS * 86_400_000_000, first))]
    return {"operator": operator, "history": history}


CHANGE_COLUMNS = ("change_id", "kind", "element", "start_us", "end_us", "s_max_kva", "vmin_pu", "vmax_pu",
                  "import_max_kw", "export_max_kw", "shed", "reason", "submitted_by")
"""Columns of a stored network change as :func:`server.markets_engine.change_table` reads them."""


def network_version(conn, feeder_id: str) -> int:
    """The feeder's latest network version (0: no change yet)."""
    (v,) = conn.execute("SELECT COALESCE(MAX(version), 0) FROM network_changes WHERE feeder_id = ?",
                        (feeder_id,)).fetchone()
    return int(v)


def network_changes(conn, feeder_id: str, version: int) -> list[dict]:
    """The feeder's change rows up to ``version``, in version order."""
    rows = conn.execute(f"SELECT {', '.join(CHANGE_COLUMNS)} FROM network_changes WHERE feeder_id = ? AND "
                        "version <= ? ORDER BY version, position", (feeder_id, version)).fetchall()
    return [dict(r) for r in rows]


def market_network(conn, market: dict) -> tuple[int, list]:
    """``(version, change rows)`` a market is cleared on: once cleared, the version its clearing recorded
    (so the award and settlement use the network its curves were traced on); before, the latest."""
    version = None
    if timeline.at_least(market["state"], "cleared"):
        row = conn.execute("SELECT summary FROM clearings WHERE market_id = ? AND stage = 'clear'",
                           (market["market_id"],)).fetchone()
        version = json.loads(row[0]).get("network_version", 0) if row is not None else 0
    if version is None:
        version = network_version(conn, market["feeder_id"])
    return version, network_changes(conn, market["feeder_id"], version) if version else []


def iso_award_rows(conn, market_id: str) -> list[tuple[int, float, str]]:
    """The ISO's award as submitted (price '' where it gave none), so a recomputation repeats the original."""
    rows = conn.execute("SELECT interval_idx, import_kw, price FROM iso_awards WHERE market_id = ? "
                        "ORDER BY interval_idx", (market_id,))
    return [tuple(r) for r in rows]


def list_flex_needs(conn, market_id: str, after, limit: int) -> list:
    return _keyset(conn, "flex_needs", _eq("market_id", market_id), ("market_id", "need_id"), after, limit)


def list_flex_offers(conn, market_id: str, aggregator: str | None, include_withdrawn: bool, after,
                     limit: int) -> list:
    filters = _eq("market_id", market_id) + _eq("aggregator_id", aggregator)
    if not include_withdrawn:
        filters.append(("status = 'active'", ()))
    return _keyset(conn, "flex_offers", filters, ("market_id", "aggregator_id", "offer_id"), after, limit)


def list_flex_awards(conn, market_id: str, aggregator: str | None, after, limit: int) -> list:
    return _keyset(conn, "flex_awards", _eq("market_id", market_id) + _eq("aggregator_id", aggregator),
                   ("market_id", "aggregator_id", "offer_id"), after, limit)


def list_flex_need_results(conn, market_id: str, after, limit: int) -> list:
    return _keyset(conn, "flex_need_results", _eq("market_id", market_id), ("market_id", "need_id"), after, limit)

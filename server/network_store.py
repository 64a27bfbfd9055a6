"""Network changes in the store: versions, listing, and the re-clearing of markets they touch.

Writers run on the writer thread (see :mod:`server.db`) and append their
audit record in the same transaction. A submission of changes makes the
feeder's next network version; every change row carries who submitted it,
why, and when it is in effect, and the audit record holds the rows, so a
replay rebuilds the network of any version.
"""

from __future__ import annotations

import json

from dsomarket.server import realtime_store, store, timeline
from dsomarket.server.auth import Principal
from dsomarket.server.db import now_us
from dsomarket.server.errors import AlreadyExists, FailedPrecondition, NotFound

REVISABLE = ("cleared", "published")
"""Market states in which a network change re-clears the market (an awarded market keeps its award)."""


def submit_changes(conn, who: Principal, feeder_id: str, rows: list[dict], checked_version: int,
                   request_id: str, digest: str) -> dict:
    """Store ``rows`` (``store.CHANGE_COLUMNS`` less ``submitted_by``) as the feeder's next version.

    ``checked_version`` is the version the rows were checked against (radial, no islanded load); if
    another submission landed since, FAILED_PRECONDITION asks the caller to check again. Returns the new version
    and the ids of the markets to re-clear.
    """
    def run():
        if not conn.execute("SELECT 1 FROM feeders WHERE feeder_id = ?", (feeder_id,)).fetchone():
            raise NotFound(f"feeder_id: no feeder {feeder_id!r}")
        current = store.network_version(conn, feeder_id)
        if current != checked_version:
            raise FailedPrecondition(f"feeder_id: feeder {feeder_id!r} moved to network version {current} while the changes "
                          "were checked; submit again")
        for k, r in enumerate(rows):
            if conn.execute("SELECT 1 FROM network_changes WHERE feeder_id = ? AND change_id = ?",
                            (feeder_id, r["change_id"])).fetchone():
                raise AlreadyExists(f"changes[{k}].change_id: {r['change_id']!r} is already a change of feeder "
                                    f"{feeder_id!r}")
        version = current + 1
        now = now_us()
        stored = [{**r, "submitted_by": who.name} for r in rows]
        conn.executemany(
            f"INSERT INTO network_changes (feeder_id, version, position, {', '.join(store.CHANGE_COLUMNS)}, "
            f"submitted_us) VALUES ({', '.join('?' * (len(store.CHANGE_COLUMNS) + 4))})",
            [(feeder_id, version, k, *(r[c] for c in store.CHANGE_COLUMNS), now) for k, r in enumerate(stored)])
        store._audit(conn, who, "network.changes", {"feeder_id": feeder_id, "version": version, "changes": stored},
                     now)
        return {"version": version, "markets": revisable_markets(conn, feeder_id, rows),
                "rolling": rolling_markets(conn, feeder_id, rows),
                "dispatched": dispatched_intervals(conn, feeder_id, rows)}

    return store._idempotent(conn, who, request_id, digest, run)


_ROLLING = ("(m.state = 'open' AND m.kind IN ({kinds})) OR (m.state = 'published' AND EXISTS (SELECT 1 FROM "
            "interval_steps s WHERE s.market_id = m.market_id AND s.step = 'publish'))")
"""A market whose intervals a change revises one by one: OPEN and rolling through its gates, or PUBLISHED by them
(every interval published on its own, some perhaps awarded already)."""


def _rolling_where() -> tuple[str, tuple]:
    return _ROLLING.format(kinds=", ".join("?" * len(timeline.ROLLING))), tuple(timeline.ROLLING)


def revisable_markets(conn, feeder_id: str, rows: list[dict]) -> list[str]:
    """Markets of the feeder in a revisable state with an interval that one of ``rows`` is in effect in, cleared
    again whole; those published interval by interval are :func:`rolling_markets`."""
    rolling, params = _rolling_where()
    return [m["market_id"] for m in conn.execute(
        f"SELECT * FROM markets m WHERE m.feeder_id = ? AND m.state IN ({', '.join('?' * len(REVISABLE))}) "
        f"AND NOT ({rolling}) ORDER BY m.market_id", (feeder_id, *REVISABLE, *params)) if _touched(dict(m), rows)]


def rolling_markets(conn, feeder_id: str, rows: list[dict]) -> list[tuple[str, list[int]]]:
    """``(market_id, interval indices)``: the feeder's OPEN real-time and hour-ahead markets (rolling gates), and
    those PUBLISHED by their gates, with the intervals that one of ``rows`` is in effect in; those already
    cleared and not yet awarded are cleared again (:func:`record_interval_revision`), the others clear at their
    gates on the latest network anyway (an awarded one is re-dispatched: :func:`dispatched_intervals`). A
    published market's awarded intervals keep their curves: the ISO is sent only the revisions it can award."""
    out = []
    rolling, params = _rolling_where()
    for m in conn.execute(f"SELECT * FROM markets m WHERE m.feeder_id = ? AND ({rolling}) ORDER BY m.market_id",
                          (feeder_id, *params)):
        hit = sorted(_touched(dict(m), rows))
        if hit:
            out.append((m["market_id"], hit))
    return out


def stale_intervals(conn, market_id: str, touched: list[int], version: int) -> dict[int, list[str]]:
    """``interval_idx -> its forecast prices`` of the ``touched`` intervals of a rolling market (``_ROLLING``) that were
    cleared (optimal) on a network version before ``version`` and are not awarded: published or about to be,
    their curves no longer hold. The forecast is the interval's own clearing's (empty: the default price)."""
    if not _revised_by_interval(conn, market_id):
        return {}
    awarded = {k for (k,) in conn.execute("SELECT interval_idx FROM iso_awards WHERE market_id = ?", (market_id,))}
    cleared = {k for k, v in conn.execute("SELECT interval_idx, network_version FROM curves WHERE market_id = ?",
                                          (market_id,)) if v < version}
    out = {}
    for k, detail in conn.execute("SELECT interval_idx, detail FROM interval_steps WHERE market_id = ? AND step = "
                                  "'clear' AND status = 'optimal' ORDER BY interval_idx", (market_id,)):
        if k in cleared and k in touched and k not in awarded:
            detail = json.loads(detail)
            out[k] = detail.get("forecast", []) if isinstance(detail, dict) else []  # older rows: the default
    return out


def record_interval_revision(conn, who: Principal, market_id: str, indices: list[int], forecast: list[str],
                             outcome) -> dict:
    """Store the clearing of intervals ``indices`` of a rolling market (``_ROLLING``) again on a new network version
    (:func:`server.markets_engine.clear_intervals`), audited as ``interval.reclear``.

    Optimal: their prices and curves are replaced with the curves' next revision (the prices replaced are kept as
    superseded: :func:`server.store.supersede_prices`); a published interval's curve
    gets a new stream sequence, so the ISO's stream sends it again flagged as a revision (an unpublished one is
    published at its step as usual). Otherwise the previous clearing stands and only the attempt is audited.
    Intervals awarded meanwhile, or a market no longer revised by interval, are left alone (``revised`` false).
    """
    awarded = {k for (k,) in conn.execute("SELECT interval_idx FROM iso_awards WHERE market_id = ?", (market_id,))}
    if not _revised_by_interval(conn, market_id) or awarded & set(indices):
        return {"revised": False, "revision": 0, "republished": False}
    (revision,) = conn.execute("SELECT COALESCE(MAX(revision), 0) + 1 FROM curves WHERE market_id = ?",
                               (market_id,)).fetchone()
    now = now_us()
    optimal = outcome.status == "optimal"
    published = []
    if optimal:
        marks = ", ".join("?" * len(indices))
        published = [k for (k,) in conn.execute(f"SELECT interval_idx FROM curves WHERE market_id = ? AND seq IS NOT "
                                                f"NULL AND interval_idx IN ({marks}) ORDER BY interval_idx",
                                                (market_id, *indices))]
        (base,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM curves").fetchone()
        store.supersede_prices(conn, market_id, "clear", indices, now)
        conn.execute(f"DELETE FROM curves WHERE market_id = ? AND interval_idx IN ({marks})", (market_id, *indices))
        store.store_clearing_tables(conn, market_id, outcome, revision)
        # Sequences only grow: a revised curve comes after every curve sent before it.
        conn.executemany("UPDATE curves SET seq = ?, published_us = ? WHERE market_id = ? AND interval_idx = ?",
                         [(base + j + 1, now, market_id, k) for j, k in enumerate(published)])
        row = conn.execute("SELECT summary FROM clearings WHERE market_id = ? AND stage = 'clear'",
                           (market_id,)).fetchone()
        summary = json.loads(row[0]) | {"network_version": outcome.network_version}
        conn.execute("UPDATE clearings SET summary = ? WHERE market_id = ? AND stage = 'clear'",
                     (json.dumps(summary), market_id))
    store._audit(conn, who, "interval.reclear", {
        "market_id": market_id, "interval_indices": list(indices), "forecast": forecast, "status": outcome.status,
        "diagnosis": list(outcome.diagnosis), "digest": outcome.digest, "network_version": outcome.network_version,
        "revision": revision if optimal else 0, "republished": published}, now)
    return {"revised": optimal, "revision": revision if optimal else 0, "republished": bool(published)}


def _revised_by_interval(conn, market_id: str) -> bool:
    """True while a change revises the market interval by interval (``_ROLLING``)."""
    rolling, params = _rolling_where()
    return conn.execute(f"SELECT 1 FROM markets m WHERE m.market_id = ? AND ({rolling})",
                        (market_id, *params)).fetchone() is not None


def _touched(m: dict, rows: list[dict]) -> set[int]:
    """Intervals of market ``m`` that one of the change ``rows`` is in effect in (from the first interval starting
    at or after its start, up to its end)."""
    first, step, count = timeline.interval_start(m, 0), timeline.interval_us(m), int(m["interval_count"])
    out: set[int] = set()
    for r in rows:
        k = max(0, -(-(r["start_us"] - first) // step))
        while k < count and (r["end_us"] is None or timeline.interval_start(m, k) < r["end_us"]):
            out.add(k)
            k += 1
    return out


def dispatched_intervals(conn, feeder_id: str, rows: list[dict]) -> list[tuple[str, list[int]]]:
    """``(market_id, interval indices)``: the awarded intervals of the feeder's OPEN or PUBLISHED (awarded interval
    by interval) and AWARDED markets that one of ``rows`` is in effect in; their dispatch is re-dispatched. An
    interval a rolled market has settled is left as settled (its statements are final: a change submitted after
    its meter window is history, not a dispatch)."""
    out = []
    for m in conn.execute("SELECT * FROM markets WHERE feeder_id = ? AND state IN ('open', 'published', 'awarded') "
                          "ORDER BY market_id", (feeder_id,)):
        awarded = {k for (k,) in conn.execute(
            "SELECT interval_idx FROM iso_awards WHERE market_id = ? AND interval_idx NOT IN (SELECT s.interval_idx "
            "FROM interval_steps s WHERE s.market_id = ? AND s.step = 'settle')", (m["market_id"], m["market_id"]))}
        hit = sorted(_touched(dict(m), rows) & awarded)
        if hit:
            out.append((m["market_id"], hit))
    return out


def list_changes(conn, feeder_id: str, after, limit: int) -> list:
    if not conn.execute("SELECT 1 FROM feeders WHERE feeder_id = ?", (feeder_id,)).fetchone():
        raise NotFound(f"feeder_id: no feeder {feeder_id!r}")
    return store._keyset(conn, "network_changes", [("feeder_id = ?", (feeder_id,))], ("version", "position"),
                         after, limit)


def clear_forecast(conn, market_id: str) -> list[str]:
    """The ISO price forecast the market's clearing used (decimal strings per MWh)."""
    row = conn.execute("SELECT summary FROM clearings WHERE market_id = ? AND stage = 'clear'",
                       (market_id,)).fetchone()
    return json.loads(row[0]).get("forecast", []) if row is not None else []


def record_revision(conn, who: Principal, market_id: str, outcome) -> dict:
    """Store a re-clearing on a new network version (a :class:`server.markets_engine.ClearOutcome`).

    Optimal: the prices and curves are replaced (the prices replaced kept as superseded), the curves' revision
    goes up by one, and a published market's curves get new stream sequences, so the ISO's stream sends them
    again, flagged as a revision; the curves of intervals already awarded (a market awarded interval by
    interval) stay as they were and are not sent again. Otherwise the previous clearing stands and only the attempt is audited. A market that
    moved past ``REVISABLE`` meanwhile is left alone (``revised`` false).
    """
    market = store.get_market(conn, market_id)
    if market["state"] not in REVISABLE:
        return {"revised": False, "revision": 0, "republished": False}
    (revision,) = conn.execute("SELECT COALESCE(MAX(revision), 0) + 1 FROM curves WHERE market_id = ?",
                               (market_id,)).fetchone()
    now = now_us()
    payload = {"market_id": market_id, "forecast": clear_forecast(conn, market_id), "status": outcome.status,
               "diagnosis": list(outcome.diagnosis), "digest": outcome.digest,
               "network_version": outcome.network_version, "revision": revision}
    republished = False
    if outcome.status == "optimal":
        # Sequences only grow: a revised curve comes after every curve sent before it, its own included.
        (base,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM curves").fetchone()
        store.supersede_prices(conn, market_id, "clear", None, now)
        # A market awarded interval by interval keeps the curves of its awarded intervals: they are history,
        # and their dispatch is revised by the re-dispatch of its award, not sent to the ISO again.
        awarded = realtime_store.awarded_intervals(conn, market_id)
        conn.execute("DELETE FROM curves WHERE market_id = ? AND interval_idx NOT IN (SELECT interval_idx FROM "
                     "iso_awards WHERE market_id = ?)", (market_id, market_id))
        store.store_clearing_tables(conn, market_id, outcome, revision, awarded)
        if market["state"] == "published":
            conn.execute("UPDATE curves SET seq = ? + interval_idx + 1, published_us = ? WHERE market_id = ? AND "
                         "seq IS NULL", (base, now, market_id))
            republished = True
        row = conn.execute("SELECT summary FROM clearings WHERE market_id = ? AND stage = 'clear'",
                           (market_id,)).fetchone()
        summary = json.loads(row[0]) | {"welfare": outcome.welfare, "seconds": outcome.seconds,
                                        "network_version": outcome.network_version, "revision": revision}
        conn.execute("UPDATE clearings SET summary = ?, digest = ?, created_us = ? WHERE market_id = ? AND "
                     "stage = 'clear'", (json.dumps(summary), outcome.digest, now, market_id))
    store._audit(conn, who, "market.reclear", payload, now)
    return {"revised": outcome.status == "optimal", "revision": revision if outcome.status == "optimal" else 0,
            "republished": republished}

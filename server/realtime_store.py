"""Store side of the rolling real-time loop: the ISO's award interval by interval.

Writers run on the writer thread inside a savepoint and append their audit
record in the same transaction (see :mod:`server.store`).
"""

from __future__ import annotations

import json

from dsomarket.server import markets_engine, store, timeline
from dsomarket.server.auth import Principal
from dsomarket.server.db import now_us
from dsomarket.server.errors import AlreadyExists, FailedPrecondition, NotFound


def awarded_intervals(conn, market_id: str) -> set[int]:
    return {k for (k,) in conn.execute("SELECT interval_idx FROM iso_awards WHERE market_id = ?", (market_id,))}


def award_context(conn, market_id: str) -> tuple[list[tuple[int, float, str]], list[str], bool]:
    """``(awards so far, the clearing's forecast prices, awarded interval by interval)`` of a market: what
    :func:`server.markets_engine.interval_award` and :func:`~server.markets_engine.whole_award` need."""
    clear = conn.execute("SELECT summary FROM clearings WHERE market_id = ? AND stage = 'clear'",
                         (market_id,)).fetchone()
    award = conn.execute("SELECT summary FROM clearings WHERE market_id = ? AND stage = 'award'",
                         (market_id,)).fetchone()
    forecast = json.loads(clear[0]).get("forecast") or [] if clear is not None else []
    by_interval = award is not None and bool(json.loads(award[0]).get("by_interval"))
    return store.iso_award_rows(conn, market_id), forecast, by_interval


def published_intervals(conn, market_id: str) -> set[int]:
    """Intervals of a rolling market published one by one (``publish_interval``)."""
    return {k for (k,) in conn.execute("SELECT interval_idx FROM interval_steps WHERE market_id = ? AND step = "
                                       "'publish'", (market_id,))}


def check_interval_award(market: dict, awarded: set[int], indices: list[int], published: set[int]) -> None:
    """FAILED_PRECONDITION unless the market takes these intervals' awards now: a PUBLISHED market, or an OPEN
    one whose rolling gates have published these intervals (``published``)."""
    rolling = market["state"] == "open" and published
    if not rolling:
        store.require_state(market, ("published",), "an interval award")
    if market["kind"] not in timeline.ROLLING:
        raise FailedPrecondition(f"market {market['market_id']!r} is {market['kind']}: only real-time and "
                                 "hour-ahead markets are awarded interval by interval")
    for j, k in enumerate(indices):
        when = timeline.iso(timeline.interval_start(market, k))
        if k in awarded:
            raise FailedPrecondition(f"awards[{j}].interval_start: the interval starting {when} is already awarded")
        if rolling and k not in published:
            raise FailedPrecondition(f"awards[{j}].interval_start: the interval starting {when} is not published "
                                     "yet (its gate closes on its own schedule)")


def record_interval_award(conn, who: Principal, market_id: str, awards: list, outcome, request_id: str,
                          digest: str, network_version: int = 0) -> dict:
    """Store the award of some intervals (:class:`server.markets_engine.AwardOutcome` of
    :func:`server.markets_engine.disaggregate_intervals` on ``network_version``, which the audit record names: an
    open rolling market's award is dispatched on the latest network); the last one makes the market AWARDED."""
    def run():
        market = store.get_market(conn, market_id)
        done = awarded_intervals(conn, market_id)
        check_interval_award(market, done, [k for k, _, _ in awards], published_intervals(conn, market_id))
        now = now_us()
        optimal = outcome.status == "optimal"
        remaining = int(market["interval_count"]) - len(done)
        if optimal:
            store.store_award_tables(conn, market_id, awards, outcome, now)
            conn.executemany("UPDATE iso_awards SET network_version = ? WHERE market_id = ? AND interval_idx = ?",
                             [(network_version, market_id, k) for k, _, _ in awards])
            remaining -= len(awards)
            if remaining == 0:
                store._set_state(conn, market, "awarded", now, "optimal")
                store._record_outcome(conn, market_id, "award", "optimal", {"by_interval": True}, outcome.digest,
                                      now)
        store._audit(conn, who, "award.interval", {"market_id": market_id, "awards": [list(a) for a in awards],
                                                    "status": outcome.status, "diagnosis": list(outcome.diagnosis),
                                                    "digest": outcome.digest, "network_version": network_version},
                     now)
        aggregators = sorted(set(outcome.awards["aggregator_id"].to_list())) if optimal else []
        return {"status": outcome.status, "diagnosis": list(outcome.diagnosis), "aggregators": aggregators,
                "remaining": remaining}

    return store._idempotent(conn, who, request_id, digest, run)


def current_instructions(conn, market_id: str, k: int, fixed: bool = False) -> list[dict]:
    """Every resource's latest instruction in interval ``k``: aggregator_id, resource_id, bus, kw. ``fixed``: only
    the operator's overrides standing in it (the latest per resource), which a re-dispatch of the interval after
    a network change keeps."""
    rows = conn.execute(
        "SELECT d.aggregator_id, d.resource_id, r.bus, d.kw FROM dispatch d JOIN resources r "
        "ON r.aggregator_id = d.aggregator_id AND r.resource_id = d.resource_id WHERE d.seq IN ("
        "SELECT MAX(seq) FROM dispatch WHERE market_id = ? AND kind = 'instruction' AND interval_idx = ? "
        f"{'AND fixed = 1 ' if fixed else ''}GROUP BY aggregator_id, resource_id) "
        "ORDER BY d.aggregator_id, d.resource_id", (market_id, k))
    return [dict(r) for r in rows]


def scheduled_import(conn, market_id: str, k: int) -> tuple[float, float, str]:
    """``(awarded import kW, current schedule kW, the award's price text)`` of interval ``k``."""
    row = conn.execute("SELECT import_kw, price FROM iso_awards WHERE market_id = ? AND interval_idx = ?",
                       (market_id, k)).fetchone()
    if row is None:
        raise FailedPrecondition(f"interval_start: market {market_id!r} has no award for that interval")
    last = conn.execute("SELECT import_kw FROM interface_schedules WHERE market_id = ? AND interval_idx = ? "
                        "ORDER BY seq DESC LIMIT 1", (market_id, k)).fetchone()
    return float(row[0]), float(last[0]) if last else float(row[0]), row[1]


def record_redispatch(conn, who: Principal, market_id: str, k: int, changed: list[tuple[str, str, float]],
                      schedule: dict, action: str, detail: dict, fixed: tuple[tuple[str, str], ...] = ()) -> dict:
    """Store changed instructions of interval ``k`` (source ``override``) and the revised interface schedule.

    ``changed``: ``(aggregator_id, resource_id, kw)``; ``schedule``: import_kw, awarded_import_kw, source
    (override or emergency), mode, reason; ``fixed``: ``(aggregator_id, resource_id)`` whose instruction the
    operator imposed (marked ``fixed``: :func:`current_instructions`). Returns ``{"instructions": rows,
    "schedule": row}``.
    """
    market = store.get_market(conn, market_id)
    store.require_state(market, ("awarded",), "an override")
    now = now_us()
    seqs = []
    for agg, res, kw in changed:
        (seq,) = conn.execute(store._DISPATCH_INSERT + " RETURNING seq",
                              ("instruction", market_id, agg, "", res, k, "", kw, "", "override",
                               schedule["reason"], now)).fetchone()
        if (agg, res) in fixed:
            conn.execute("UPDATE dispatch SET fixed = 1 WHERE seq = ?", (seq,))
        seqs.append(seq)
    (schedule_seq,) = conn.execute(
        "INSERT INTO interface_schedules (market_id, interval_idx, import_kw, awarded_import_kw, source, mode, "
        "reason, issued_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
        (market_id, k, schedule["import_kw"], schedule["awarded_import_kw"], schedule["source"], schedule["mode"],
         schedule["reason"], now)).fetchone()
    store._audit(conn, who, action, {"market_id": market_id, "interval_idx": k, **detail, **schedule,
                                     "changed": [list(c) for c in changed]}, now)
    rows = [dict(conn.execute("SELECT * FROM dispatch WHERE seq = ?", (s,)).fetchone()) for s in seqs]
    sched = dict(conn.execute("SELECT * FROM interface_schedules WHERE seq = ?", (schedule_seq,)).fetchone())
    return {"instructions": rows, "schedule": sched}


def record_network_redispatch(conn, who: Principal, market_id: str, version: int, intervals: list[dict],
                              inputs: dict, outcome=None) -> dict:
    """Store the re-dispatch of a market's awarded intervals on network ``version`` (source ``network``).

    ``intervals``: per re-dispatched interval ``interval_idx``, ``mode`` (redispatched, partial,
    failed), ``import_kw`` (the revised schedule), ``awarded_import_kw``, ``reason`` and ``changed``
    instructions ``(aggregator_id, resource_id, kw)``. Each gets a revised interface schedule (a
    failed one too: it tells the ISO the award cannot be delivered); one ``dispatch.network`` audit
    record holds them all, with the re-dispatch's ``inputs`` and digest that its replay reads. A market that left OPEN (rolling gates)/PUBLISHED/AWARDED meanwhile is left alone.

    ``outcome``: the :class:`server.markets_engine.NetworkRedispatch`, whose DLMPs (``prices``) replace the award's
    prices of their intervals (kept as superseded) in a rolled market, which settles each interval on the network
    in effect (:func:`settle_networks`): ListMarketPrices shows the prices its statements are at; the audit record
    then holds their ``prices_digest`` for the replay. A market awarded whole settles at its award's prices with
    the moved instructions as deviations, so those stay in force.
    """
    market = store.get_market(conn, market_id)
    if market["state"] not in ("open", "published", "awarded"):
        return {"intervals": [], "aggregators": []}
    now = now_us()
    out, aggregators = [], set()
    for iv in intervals:
        k = iv["interval_idx"]
        for agg, res, kw in iv["changed"]:
            conn.execute(store._DISPATCH_INSERT, ("instruction", market_id, agg, "", res, k, "", kw, "", "network",
                                                  iv["reason"], now))
            aggregators.add(agg)
        (seq,) = conn.execute(
            "INSERT INTO interface_schedules (market_id, interval_idx, import_kw, awarded_import_kw, source, mode, "
            "reason, issued_us) VALUES (?, ?, ?, ?, 'network', ?, ?, ?) RETURNING seq",
            (market_id, k, iv["import_kw"], iv["awarded_import_kw"], iv["mode"], iv["reason"], now)).fetchone()
        out.append({**iv, "schedule_seq": seq})
        if iv["mode"] != "failed":  # the interval's dispatch in force is on this version now (failed: it stands)
            conn.execute("UPDATE iso_awards SET network_version = ? WHERE market_id = ? AND interval_idx = ?",
                         (version, market_id, k))
    repriced = outcome is not None and outcome.prices.height > 0 and rolled(conn, market_id)
    if repriced:
        store.replace_award_prices(conn, market_id, outcome.prices, now)
    if repriced:
        inputs = inputs | {"prices_digest": outcome.prices_digest}
    store._audit(conn, who, "dispatch.network", {"market_id": market_id, "network_version": version, **inputs,
                                                 "intervals": [{**iv, "changed": [list(c) for c in iv["changed"]]}
                                                               for iv in intervals]}, now)
    return {"intervals": out, "aggregators": sorted(aggregators)}


def list_schedules(conn, market_id: str, after_seq: int, limit: int) -> list:
    return store._keyset(conn, "interface_schedules", store._eq("market_id", market_id), ("seq",), [after_seq], limit)


def moved_instructions(conn, market_id: str) -> list[tuple]:
    """The final instruction of every resource and interval an override or a network re-dispatch moved:
    ``(aggregator_id, resource_id, interval_idx, kw)``."""
    return [tuple(r) for r in conn.execute(
        "SELECT aggregator_id, resource_id, interval_idx, kw FROM dispatch WHERE seq IN ("
        "SELECT MAX(seq) FROM dispatch WHERE market_id = ? AND kind = 'instruction' GROUP BY aggregator_id, "
        "resource_id, interval_idx HAVING SUM(CASE WHEN source IN ('override', 'network') THEN 1 ELSE 0 END) > 0) "
        "ORDER BY aggregator_id, resource_id, "
        "interval_idx", (market_id,))]


def store_meter_readings(conn, who: Principal, market_id: str, rows: list[tuple[str, str, int, float]],
                         request_id: str, digest: str) -> dict:
    """Store readings ``(aggregator_id, resource_id, interval_idx, kw)``; resource_id '' is the interface meter."""
    def run():
        market = store.get_market(conn, market_id)
        store.require_state(market, ("awarded", "settled"), "meter readings")
        for k, (agg, res, _, _) in enumerate(rows):
            if res and not conn.execute("SELECT 1 FROM resources WHERE aggregator_id = ? AND resource_id = ?",
                                        (agg, res)).fetchone():
                raise NotFound(f"readings[{k}].resource_id: aggregator {agg!r} has no resource {res!r}")
        now = now_us()
        for k, (agg, res, t, kw) in enumerate(rows):
            if conn.execute("SELECT 1 FROM meter_readings WHERE market_id = ? AND aggregator_id = ? AND "
                            "resource_id = ? AND interval_idx = ?", (market_id, agg, res, t)).fetchone():
                raise AlreadyExists(f"readings[{k}]: a reading of {res or 'the interface'!r} in that interval is "
                                    "already stored")
        conn.executemany("INSERT INTO meter_readings (market_id, aggregator_id, resource_id, interval_idx, kw, "
                         "submitted_by, submitted_us) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [(market_id, *r, who.name, now) for r in rows])
        store._audit(conn, who, "meters.submit", {"market_id": market_id, "readings": [list(r) for r in rows]}, now)
        return {"count": len(rows)}

    return store._idempotent(conn, who, request_id, digest, run)


def resource_kinds(conn, keys: set[tuple[str, str]]) -> dict:
    """``(aggregator_id, resource_id) -> kind`` of the given resources."""
    out = {}
    for agg, res in sorted(keys):
        row = conn.execute("SELECT kind FROM resources WHERE aggregator_id = ? AND resource_id = ?",
                           (agg, res)).fetchone()
        if row is not None:
            out[(agg, res)] = row[0]
    return out


def imbalance_inputs(conn, market_id: str) -> dict:
    """What metered settlement reads: final instructions, readings, DLMPs at the resources' buses (award
    stage), the interface schedule and the award's prices, and the resources' kinds."""
    market = store.get_market(conn, market_id)
    instructed = [tuple(r) for r in conn.execute(
        "SELECT aggregator_id, resource_id, interval_idx, kw FROM dispatch WHERE seq IN (SELECT MAX(seq) FROM "
        "dispatch WHERE market_id = ? AND kind = 'instruction' GROUP BY aggregator_id, resource_id, interval_idx) "
        "ORDER BY aggregator_id, resource_id, interval_idx", (market_id,))]
    readings = [tuple(r) for r in conn.execute(
        "SELECT aggregator_id, resource_id, interval_idx, kw FROM meter_readings WHERE market_id = ? "
        "ORDER BY aggregator_id, resource_id, interval_idx", (market_id,))]
    keys = {(a, r) for a, r, _, _ in instructed + readings if r}
    dlmp = [tuple(r) for r in conn.execute(
        "SELECT s.aggregator_id, s.resource_id, p.interval_idx, p.dlmp FROM resources s JOIN prices p ON p.bus = s.bus "
        "AND p.market_id = ? AND p.stage = 'award' ORDER BY s.aggregator_id, s.resource_id, p.interval_idx",
        (market_id,)) if (r[0], r[1]) in keys]
    awards = {k: (q, p) for k, q, p in conn.execute(
        "SELECT interval_idx, import_kw, price FROM iso_awards WHERE market_id = ?", (market_id,))}
    latest = {k: q for k, q in conn.execute(
        "SELECT interval_idx, import_kw FROM interface_schedules WHERE seq IN (SELECT MAX(seq) FROM "
        "interface_schedules WHERE market_id = ? GROUP BY interval_idx)", (market_id,))}
    scheduled = [(k, latest.get(k, q), p) for k, (q, p) in sorted(awards.items())]
    kinds = resource_kinds(conn, keys)
    return {"market": market, "instructed": instructed, "readings": readings, "dlmp": dlmp, "scheduled": scheduled,
            "kinds": kinds, "baselines": baseline_inputs(conn, market_id, [k for k, kind in kinds.items()
                                                                           if kind == "flexible_load"])}


def baseline_inputs(conn, market_id: str, keys: list[tuple[str, str]]) -> dict:
    """``(aggregator_id, resource_id) -> {"history": [(interval_us, kw)], "events": [interval_us]}`` of the
    flexible loads among ``keys`` that have metered history (``resource_history``): the history, and the interval
    starts at which other markets instructed them (their event days are left out of the baseline)."""
    out = {}
    for agg, res in keys:
        history = [tuple(r) for r in conn.execute(
            "SELECT interval_us, kw FROM resource_history WHERE aggregator_id = ? AND resource_id = ? "
            "ORDER BY interval_us", (agg, res))]
        if not history:
            continue
        events = [us for (us,) in conn.execute(
            "SELECT DISTINCT m.delivery_start_us + d.interval_idx * m.interval_minutes * 60000000 FROM dispatch d "
            "JOIN markets m ON m.market_id = d.market_id WHERE d.aggregator_id = ? AND d.resource_id = ? AND "
            "d.kind = 'instruction' AND d.market_id <> ?", (agg, res, market_id))]
        out[(agg, res)] = {"history": history, "events": events}
    return out


def store_resource_history(conn, who: Principal, rows: list[tuple[str, str, int, float]], request_id: str,
                           digest: str) -> dict:
    """Store metered history ``(aggregator_id, resource_id, interval_us, kw)`` of flexible loads (a row replaces
    the earlier reading of its resource and interval)."""
    def run():
        kinds = resource_kinds(conn, {(a, r) for a, r, _, _ in rows})
        for k, (agg, res, _, _) in enumerate(rows):
            if (agg, res) not in kinds:
                raise NotFound(f"readings[{k}].resource_id: aggregator {agg!r} has no resource {res!r}")
        now = now_us()
        conn.executemany("INSERT INTO resource_history (aggregator_id, resource_id, interval_us, kw, submitted_by, "
                         "submitted_us) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (aggregator_id, resource_id, interval_us) "
                         "DO UPDATE SET kw = excluded.kw, submitted_by = excluded.submitted_by, "
                         "submitted_us = excluded.submitted_us", [(*r, who.name, now) for r in rows])
        store._audit(conn, who, "resource_history.submit", {"readings": [list(r) for r in rows]}, now)
        return {"count": len(rows)}

    return store._idempotent(conn, who, request_id, digest, run)


def record_imbalance(conn, who: Principal, market_id: str, lines: list[tuple], interface: list[dict],
                     totals: dict) -> dict:
    """Store the metered settlement of a SETTLED market once: statement lines (kind ``imbalance``, or
    ``demand_response`` for a resource settled on its baseline) and the
    interface imbalance with the totals."""
    market = store.get_market(conn, market_id)
    store.require_state(market, ("settled",), "settling imbalance")
    if conn.execute("SELECT 1 FROM imbalance_settlements WHERE market_id = ?", (market_id,)).fetchone():
        raise FailedPrecondition(f"market_id: the imbalance of market {market_id!r} is already settled")
    now = now_us()
    conn.executemany("INSERT INTO statements (market_id, aggregator_id, bid_id, resource_id, interval_idx, "
                     "settlement, kw, kvar, price, price_q, amount, kind) VALUES (?, ?, '', ?, ?, ?, ?, 0, ?, "
                     "'0', ?, ?)", [(market_id, a, r, t, market["kind"], kw, p, amt, kind)
                                    for a, r, t, kw, p, amt, kind in lines])
    conn.execute("INSERT INTO imbalance_settlements (market_id, totals, interface, created_us) VALUES (?, ?, ?, ?)",
                 (market_id, json.dumps(totals), json.dumps(interface), now))
    store._audit(conn, who, "imbalance.settle", {"market_id": market_id, "totals": totals}, now)
    return {"count": len(lines)}


def store_forecast(conn, who: Principal, market_id: str, rows: list[tuple], request_id: str, digest: str) -> dict:
    """Replace the forecast of the intervals ``rows`` name (``(bus, interval_idx, p_kw, q_kvar)``), while the
    market is open and those intervals' gates are open."""
    def run():
        market = store.get_market(conn, market_id)
        store.require_state(market, ("open",), "a forecast")
        now = now_us()
        intervals = sorted({t for _, t, _, _ in rows})
        store._check_gates(conn, market, enumerate(intervals), lambda j: "forecast.interval_start", now)
        conn.executemany("DELETE FROM forecasts WHERE market_id = ? AND interval_idx = ?",
                         [(market_id, t) for t in intervals])
        conn.executemany("INSERT INTO forecasts (market_id, bus, interval_idx, p_kw, q_kvar) VALUES (?, ?, ?, ?, ?)",
                         [(market_id, *r) for r in rows])
        store._audit(conn, who, "forecast.submit", {"market_id": market_id, "rows": [list(r) for r in rows]}, now)
        return {"count": len(rows)}

    return store._idempotent(conn, who, request_id, digest, run)


def cleared_imports(conn, market_id: str) -> list[tuple[int, float]]:
    """The import of each interval's exact curve at the forecast ISO price of the clearing (empty before it)."""
    row = conn.execute("SELECT summary FROM clearings WHERE market_id = ? AND stage = 'clear' AND status = "
                       "'optimal'", (market_id,)).fetchone()
    if row is None:
        return []
    forecast = json.loads(row[0]).get("forecast") or []
    out = []
    for t, bands in conn.execute("SELECT interval_idx, bands FROM curves WHERE market_id = ? ORDER BY interval_idx",
                                 (market_id,)):
        bands = json.loads(bands)
        price = float(forecast[t] if len(forecast) > 1 else forecast[0]) if forecast else \
            (float(bands[0][0]) + float(bands[-1][1])) / 2.0
        out.append((t, next(q for lo, hi, q in bands if float(hi) >= price)))
    return out


def store_history(conn, who: Principal, feeder_id: str, rows: list[tuple], request_id: str, digest: str) -> dict:
    """Store metered load history ``(bus, interval_us, p_kw, q_kvar)`` of a feeder; a row replaces the earlier
    reading of its bus and interval."""
    def run():
        if not conn.execute("SELECT 1 FROM feeders WHERE feeder_id = ?", (feeder_id,)).fetchone():
            raise NotFound(f"feeder_id: no feeder {feeder_id!r}")
        now = now_us()
        conn.executemany("INSERT INTO load_history (feeder_id, bus, interval_us, p_kw, q_kvar) VALUES (?, ?, ?, ?, ?) "
                         "ON CONFLICT (feeder_id, interval_us, bus) DO UPDATE SET p_kw = excluded.p_kw, "
                         "q_kvar = excluded.q_kvar", [(feeder_id, *r) for r in rows])
        store._audit(conn, who, "history.submit", {"feeder_id": feeder_id, "rows": [list(r) for r in rows]}, now)
        return {"count": len(rows)}

    return store._idempotent(conn, who, request_id, digest, run)


# -- rolling gates: each interval of a real-time or hour-ahead market closes, clears and publishes on its own ----

def interval_steps(conn, market_ids) -> dict[str, dict[int, dict[str, str]]]:
    """``market_id -> interval_idx -> step -> status`` of the rolling steps taken (close, clear, publish, settle),
    and ``award`` for each interval the ISO has awarded."""
    out: dict = {}
    for part in store._chunks(sorted(market_ids)):
        marks = store._marks(len(part))
        for m, k, step, status in conn.execute(
                f"SELECT market_id, interval_idx, step, status FROM interval_steps WHERE market_id IN ({marks}) "
                f"UNION ALL SELECT market_id, interval_idx, 'award', 'done' FROM iso_awards WHERE market_id IN "
                f"({marks})", (*part, *part)):
            out.setdefault(m, {}).setdefault(k, {})[step] = status
    return out


def rolled(conn, market_id: str) -> bool:
    """True for a market whose intervals rolled through their own gates: it settles interval by interval."""
    return conn.execute("SELECT 1 FROM interval_steps WHERE market_id = ? AND step = 'publish' LIMIT 1",
                        (market_id,)).fetchone() is not None


def settle_networks(conn, market: dict) -> dict[int, tuple[int, list]]:
    """``interval_idx -> (version, change rows)`` each awarded interval of a rolled market settles on: the network
    its dispatch in force was made on (the interval award's, then that of each network re-dispatch that did not
    fail; a failed one's standing dispatch stays on its own), so that its settlement is that dispatch at the prices
    listed for it. Older awards without a version: the feeder's latest."""
    feeder = market["feeder_id"]
    latest = store.network_version(conn, feeder)
    versions = {k: latest if v is None else int(v) for k, v in conn.execute(
        "SELECT interval_idx, network_version FROM iso_awards WHERE market_id = ?", (market["market_id"],))}
    changes = {v: store.network_changes(conn, feeder, v) if v else [] for v in set(versions.values())}
    return {k: (v, changes[v]) for k, v in versions.items()}


def listed_award_prices(conn, market_id: str) -> dict[int, list[tuple[str, str, str]]]:
    """``interval_idx -> [(bus, dlmp, loss)]`` (decimal texts per MWh) of each awarded interval: the prices
    ListMarketPrices lists for it (its award's, or its latest network re-dispatch's), which it settles at."""
    out: dict[int, list] = {}
    for k, bus, dlmp, loss in conn.execute("SELECT interval_idx, bus, dlmp, loss FROM prices WHERE market_id = ? "
                                           "AND stage = 'award' ORDER BY interval_idx, bus", (market_id,)):
        out.setdefault(int(k), []).append((bus, dlmp, loss))
    return out


def settled_intervals(conn, market_id: str) -> set[int]:
    return {k for (k,) in conn.execute("SELECT interval_idx FROM interval_steps WHERE market_id = ? AND step = "
                                       "'settle'", (market_id,))}


def deliverable_awards(conn, market_id: str) -> dict[int, tuple[float, str]]:
    """``interval_idx -> (import_kw, price text)`` a rolled market's awarded intervals settle at: the ISO's award, or
    where the latest network re-dispatch of the interval could deliver only part of it (mode ``partial``), that
    part, the revised schedule the ISO was sent (the award itself cannot be dispatched on the network in effect)."""
    awards = {k: (q, p) for k, q, p in store.iso_award_rows(conn, market_id)}
    for k, kw in conn.execute(
            "SELECT interval_idx, import_kw FROM interface_schedules WHERE mode = 'partial' AND seq IN (SELECT MAX(seq) "
            "FROM interface_schedules WHERE market_id = ? AND source = 'network' GROUP BY interval_idx)", (market_id,)):
        awards[k] = (float(kw), awards[k][1])
    return awards


def record_interval_settlement(conn, who: Principal, market_id: str, k: int, outcome, network_version: int,
                               award: tuple[float, str], listed: list[tuple] | None = None) -> dict:
    """Store the settlement of awarded interval ``k`` of a market settled by interval once (:func:`server.
    markets_engine.settle_interval` on ``network_version`` at ``award``, :func:`deliverable_awards`, and at the
    ``listed`` prices, :func:`listed_award_prices`), audited as ``interval.settle``;
    the last interval settled makes the AWARDED market SETTLED, with the intervals' totals added (``market.settle``,
    ``by_interval``)."""
    market = store.get_market(conn, market_id)
    store.require_state(market, ("open", "published", "awarded"), "settling an interval")
    when = timeline.iso(timeline.interval_start(market, k))
    if k not in awarded_intervals(conn, market_id):
        raise FailedPrecondition(f"interval {when} of market {market_id!r}: it has no award to settle")
    if k in settled_intervals(conn, market_id):
        raise FailedPrecondition(f"interval {when} of market {market_id!r}: it is settled")
    now = now_us()
    store.insert_statements(conn, market, outcome.statements)
    _step(conn, market_id, k, "settle", "done", {"totals": outcome.totals}, now)
    store._audit(conn, who, "interval.settle", {"market_id": market_id, "interval_idx": k, "totals": outcome.totals,
                                                "digest": outcome.digest, "network_version": network_version,
                                                "award": list(award),
                                                **({} if listed is None else {"prices": [list(r) for r in listed]})},
                 now)
    done = [json.loads(d)["totals"] for (d,) in conn.execute(
        "SELECT detail FROM interval_steps WHERE market_id = ? AND step = 'settle' ORDER BY interval_idx",
        (market_id,))]
    if market["state"] == "awarded" and len(done) == int(market["interval_count"]):
        totals = markets_engine.sum_totals(done)
        conn.execute("INSERT INTO settlements (market_id, totals, created_us) VALUES (?, ?, ?)",
                     (market_id, json.dumps(totals), now))
        market = store._set_state(conn, market, "settled", now)
        store._audit(conn, who, "market.settle", {"market_id": market_id, "totals": totals, "by_interval": True},
                     now)
    return market


def _rolling_step(conn, market_id: str, k: int, step: str, before: str | None, retry: bool = False) -> dict:
    """The open rolling market, after checking that interval ``k`` took ``before`` and not ``step`` yet (``retry``:
    or took it without success: a clearing that was not optimal)."""
    market = store.get_market(conn, market_id)
    store.require_state(market, ("open",), f"the rolling {step} of an interval")
    if market["kind"] not in timeline.ROLLING:
        raise FailedPrecondition(f"market {market_id!r} is {market['kind']}: only real-time and hour-ahead markets "
                                 "clear interval by interval")
    taken = {s: st for s, st in conn.execute("SELECT step, status FROM interval_steps WHERE market_id = ? AND "
                                             "interval_idx = ?", (market_id, k))}
    when = timeline.iso(timeline.interval_start(market, k))
    if step in taken and not (retry and taken[step] not in ("optimal", "done")):
        raise FailedPrecondition(f"interval {when} of market {market_id!r}: its {step} is done")
    if before is not None and taken.get(before) not in ("optimal", "done"):
        raise FailedPrecondition(f"interval {when} of market {market_id!r}: its {before} is not done")
    return market


def _step(conn, market_id: str, k: int, step: str, status: str, detail, now: int) -> None:
    conn.execute("INSERT INTO interval_steps (market_id, interval_idx, step, status, detail, created_us) "
                 "VALUES (?, ?, ?, ?, ?, ?)", (market_id, k, step, status, json.dumps(detail), now))


def close_interval(conn, who: Principal, market_id: str, k: int) -> dict:
    """Close interval ``k``'s gate alone (its bids, replacements, withdrawals and forecast stop; later intervals
    stay open); the market stays OPEN."""
    _rolling_step(conn, market_id, k, "close", None)
    now = now_us()
    _step(conn, market_id, k, "close", "done", {}, now)
    store._audit(conn, who, "interval.close", {"market_id": market_id, "interval_idx": k}, now)
    return {"interval_idx": k}


def failed_intervals(conn, market_id: str) -> list[int]:
    """Intervals of a rolling market whose clearing was not optimal: the operator's ClearMarket clears them again."""
    return [k for (k,) in conn.execute("SELECT interval_idx FROM interval_steps WHERE market_id = ? AND step = 'clear' "
                                       "AND status <> 'optimal' ORDER BY interval_idx", (market_id,))]


def record_interval_clearing(conn, who: Principal, market_id: str, indices: list[int], forecast: list[str],
                             outcome, retry: bool = False) -> dict:
    """Store the clearing of closed intervals ``indices``, cleared together on their own bids
    (:func:`server.markets_engine.clear_intervals`; the scheduler clears together the intervals whose gates
    one tick found closed): their prices and unpublished curves when optimal. A clearing that is not optimal
    is recorded with its diagnosis for each interval and not retried on its own: those intervals stay
    unpublished until the operator clears them again (``retry``: OperatorService.ClearMarket)."""
    for k in indices:
        _rolling_step(conn, market_id, k, "clear", "close", retry)
    if retry:
        conn.executemany("DELETE FROM interval_steps WHERE market_id = ? AND interval_idx = ? AND step = 'clear'",
                         [(market_id, k) for k in indices])
    now = now_us()
    if outcome.status == "optimal":
        store.store_clearing_tables(conn, market_id, outcome)
        # The clearing the forecast schedule reads (``cleared_imports``): the same forecast rule for every interval.
        store._record_outcome(conn, market_id, "clear", "optimal", {
            "forecast": forecast, "network_version": outcome.network_version, "by_interval": True}, outcome.digest,
            now)
    for j, k in enumerate(indices):
        # The interval's own forecast price (none: the default), so that a network change re-clears it as it was.
        own = forecast[j:j + 1] if len(forecast) > 1 else forecast
        _step(conn, market_id, k, "clear", outcome.status, {"diagnosis": list(outcome.diagnosis), "forecast": own},
              now)
    store._audit(conn, who, "interval.clear", {
        "market_id": market_id, "interval_indices": list(indices), "forecast": forecast, "status": outcome.status,
        "diagnosis": list(outcome.diagnosis), "digest": outcome.digest, "network_version": outcome.network_version},
        now)
    return {"status": outcome.status}


def publish_interval(conn, who: Principal, market_id: str, k: int) -> dict:
    """Publish interval ``k``'s curve to the ISO's stream; the last interval published makes the market
    PUBLISHED (then it is awarded, settled and metered as any market). Returns the market row."""
    market = _rolling_step(conn, market_id, k, "publish", "clear")
    now = now_us()
    (base,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM curves").fetchone()
    conn.execute("UPDATE curves SET seq = ?, published_us = ? WHERE market_id = ? AND interval_idx = ?",
                 (base + 1, now, market_id, k))
    _step(conn, market_id, k, "publish", "done", {}, now)
    store._audit(conn, who, "interval.publish", {"market_id": market_id, "interval_idx": k}, now)
    (published,) = conn.execute("SELECT COUNT(*) FROM interval_steps WHERE market_id = ? AND step = 'publish'",
                                (market_id,)).fetchone()
    if published == int(market["interval_count"]):
        market = store._set_state(conn, market, "published", now, "optimal")
        store._audit(conn, who, "market.publish", {"market_id": market_id, "by_interval": True}, now)
    return market

"""Meters and imbalance: validation, settlement of metered deviations, demand-response baselines, performance.

Sign convention as everywhere: a resource's ``kw`` is net injection (positive
into the feeder), metered as the average over the interval; the interface's
``import_kw`` is positive from the ISO.

Settlement (:func:`settle_imbalance`), per interval of length ``hours``:

- each resource: ``deviation_kw = metered - instructed``, settled at the real-time
  DLMP of its bus: ``amount = deviation_kw x DLMP x hours / 1000`` (paid to the
  aggregator when positive: more injection or less consumption than instructed);
- the DSO at the interface: ``imbalance_kw = metered - scheduled`` import,
  settled at the ISO's price: ``amount = -imbalance_kw x price x hours / 1000``
  (positive = paid to the DSO: it imported less than scheduled);
- the residual: whatever the two do not cover (the deviations of unmetered fixed
  load, losses, and the DLMPs' congestion and voltage parts on the deviations)
  stays with the DSO: ``residual = -(sum of the lines above)``, so every
  statement's amounts add up to zero, to the cent.

Every amount is rounded half-even to the cent on its own line (the decimal of
its float computed to 1e-6 first), and the residual is the exact negative sum of
the rounded lines, so the books balance exactly.

Demand-response baseline (:func:`baseline_10_of_10`): for each event interval,
the mean metered kW of the same interval on the 10 most recent prior days that
have a reading and are not event days (the "10-of-10" method of North American
ISOs), plus a same-day additive adjustment: the mean of (metered - unadjusted
baseline) over the ``adjust_hours`` hours that end ``gap_hours`` before the
event's first interval, limited to +/- ``cap`` of the unadjusted baseline.
Delivered reduction = baseline - metered load.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import numpy as np
import polars as pl

from dsomarket.engine.errors import InputError
from dsomarket.engine.network import _normalise

UTC = pl.Datetime("us", "UTC")
RESOURCE_METER_SCHEMA = {"aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "interval": UTC, "kw": pl.Float64}
INTERFACE_METER_SCHEMA = {"interval": UTC, "import_kw": pl.Float64}
DIRECTIONS = ("injection", "withdrawal", "both")
"""What a resource can do physically: only inject (PV), only withdraw (a load, an EV), or both (storage)."""
SIGN_TOLERANCE_KW = 1e-3
_CENT = Decimal("0.01")


def cents(x: float) -> Decimal:
    """A currency amount rounded half-even to the cent (the float's 6-decimal text first)."""
    return Decimal(f"{x:.6f}").quantize(_CENT, rounding=ROUND_HALF_EVEN) + Decimal("0.00")


def validate_resource_meters(table: pl.DataFrame, intervals: list, directions: dict | None = None,
                             required: pl.DataFrame | None = None) -> pl.DataFrame:
    """Resource meter readings, typed; InputError (table ``meters``) naming the first bad row.

    Checks: a reading per resource and interval at most once (duplicates), every interval one of
    ``intervals``, finite kW, the sign a resource can physically have (``directions``: resource
    -> one of :data:`DIRECTIONS`; within :data:`SIGN_TOLERANCE_KW`), and no gap: every
    ``(aggregator_id, resource_id, interval)`` of ``required`` has a reading.
    """
    t = _normalise(table, RESOURCE_METER_SCHEMA, "meters", {"aggregator_id": ""})
    kw = t["kw"].to_numpy()
    bad = np.nonzero(~np.isfinite(kw))[0]
    if len(bad):
        raise InputError("meters", "kw", "must be finite", row=int(bad[0]))
    key = ["aggregator_id", "resource_id", "interval"]
    dup = t.select(pl.struct(key).is_duplicated()).to_series().to_numpy()
    if dup.any():
        row = int(np.nonzero(dup)[0][-1])
        raise InputError("meters", "interval", f"a second reading of {t['resource_id'][row]!r} in "
                         f"{t['interval'][row]}", row=row)
    known = set(intervals)
    for row, iv in enumerate(t["interval"].to_list()):
        if iv not in known:
            raise InputError("meters", "interval", f"{iv} is not an interval of this market", row=row)
    for row, (res, value) in enumerate(zip(t["resource_id"].to_list(), kw)):
        way = (directions or {}).get(res, "both")
        if (way == "injection" and value < -SIGN_TOLERANCE_KW) or (way == "withdrawal" and value > SIGN_TOLERANCE_KW):
            raise InputError("meters", "kw", f"{value:g} kW is impossible for {res!r}, which can only "
                             f"{'inject' if way == 'injection' else 'withdraw'}", row=row)
    if required is not None and required.height:
        missing = required.select(key).join(t.select(key), on=key, how="anti").sort(key)
        if missing.height:
            m = missing.row(0, named=True)
            raise InputError("meters", "interval", f"gap: no reading of {m['resource_id']!r} "
                             f"({m['aggregator_id']}) in {m['interval']}")
    return t


def validate_interface_meters(table: pl.DataFrame, intervals: list) -> pl.DataFrame:
    """Interface meter readings: one per interval of the market, each once, finite (gaps are errors)."""
    t = _normalise(table, INTERFACE_METER_SCHEMA, "interface_meters", {})
    vals = t["import_kw"].to_numpy()
    bad = np.nonzero(~np.isfinite(vals))[0]
    if len(bad):
        raise InputError("interface_meters", "import_kw", "must be finite", row=int(bad[0]))
    seen: dict = {}
    for row, iv in enumerate(t["interval"].to_list()):
        if iv in seen:
            raise InputError("interface_meters", "interval", f"a second reading in {iv}", row=row)
        if iv not in set(intervals):
            raise InputError("interface_meters", "interval", f"{iv} is not an interval of this market", row=row)
        seen[iv] = row
    gaps = [iv for iv in intervals if iv not in seen]
    if gaps:
        raise InputError("interface_meters", "interval", f"gap: no reading in {gaps[0]}")
    return t


def settle_imbalance(instructed: pl.DataFrame, metered: pl.DataFrame, dlmp: pl.DataFrame,
                     scheduled: pl.DataFrame, interface_metered: pl.DataFrame | None, hours: float) -> dict:
    """Metered deviations and the interface imbalance (see the module docstring).

    Parameters
    ----------
    instructed
        ``aggregator_id, resource_id, interval, kw``: the final instruction (net injection, kW).
    metered
        Validated resource readings (:func:`validate_resource_meters`); a metered resource-interval without
        an instruction deviates from zero.
    dlmp
        ``aggregator_id, resource_id, interval, dlmp``: the real-time DLMP at each resource's bus, per MWh. A
        resource without one (its bus cut off) gets no line where it metered what it was told, else InputError.
    scheduled
        ``interval, import_kw, price``: the interface schedule (the award, or its latest revision) and the
        ISO's price per MWh.
    interface_metered
        Validated interface readings, or None (then no interface line and no residual).
    hours
        Interval length.

    Returns
    -------
    dict
        ``resources``: aggregator_id, resource_id, interval, instructed_kw, metered_kw, deviation_kw, dlmp,
        amount (Decimal cents, paid to the aggregator); ``interface``: interval, scheduled_kw, metered_kw,
        imbalance_kw, price, amount (Decimal, paid to the DSO); ``residual`` (Decimal, kept by the DSO);
        ``totals`` (Decimal): resources, interface, residual; their sum is exactly zero when the interface
        is metered.
    """
    key = ["aggregator_id", "resource_id", "interval"]
    both = (metered.select(*key, pl.col("kw").alias("metered_kw"))
            .join(instructed.select(*key, pl.col("kw").alias("instructed_kw")), on=key, how="full", coalesce=True)
            .with_columns(pl.col("metered_kw").fill_null(0.0), pl.col("instructed_kw").fill_null(0.0))
            .join(dlmp.select(*key, "dlmp"), on=key, how="left")
            .with_columns(deviation_kw=pl.col("metered_kw") - pl.col("instructed_kw"))
            .sort(key))
    # A bus without a price in an interval is cut off from the feeder there (a network change): its resource,
    # instructed to 0, owes nothing if it metered 0; any other deviation there has no price to settle at.
    unpriced = both.filter(pl.col("dlmp").is_null() & (pl.col("deviation_kw") != 0.0))
    if unpriced.height:
        row = unpriced.row(0, named=True)
        raise InputError("meters", "resource_id", f"no real-time price for {row['resource_id']!r} in "
                         f"{row['interval']} (its bus is not priced: cut off from the feeder?), where it deviates "
                         f"{row['deviation_kw']:.3f} kW")
    both = both.filter(pl.col("dlmp").is_not_null())
    res_amounts = [cents(d * p * hours / 1000.0) for d, p in zip(both["deviation_kw"], both["dlmp"])]
    resources = both.with_columns(pl.Series("amount", [str(a) for a in res_amounts], dtype=pl.Utf8))
    out = {"resources": resources, "interface": None, "residual": None,
           "totals": {"resources": sum(res_amounts, Decimal("0.00"))}}
    if interface_metered is None:
        return out
    iface = (scheduled.select("interval", pl.col("import_kw").alias("scheduled_kw"), "price")
             .join(interface_metered.select("interval", pl.col("import_kw").alias("metered_kw")), on="interval",
                   how="left")
             .with_columns(imbalance_kw=pl.col("metered_kw") - pl.col("scheduled_kw")).sort("interval"))
    if_amounts = [cents(-d * p * hours / 1000.0) for d, p in zip(iface["imbalance_kw"], iface["price"])]
    out["interface"] = iface.with_columns(pl.Series("amount", [str(a) for a in if_amounts], dtype=pl.Utf8))
    out["totals"]["interface"] = sum(if_amounts, Decimal("0.00"))
    out["residual"] = -(out["totals"]["resources"] + out["totals"]["interface"])
    out["totals"]["residual"] = out["residual"]
    return out


def performance(instructed: pl.DataFrame, metered: pl.DataFrame, awarded: pl.DataFrame | None = None) -> pl.DataFrame:
    """Delivered against instructed per aggregator and interval.

    ``instructed_kw`` and ``metered_kw`` are sums of net injection over the aggregator's resources;
    ``error_kw = metered - instructed``; ``delivery`` = ``1 - |error| / |instructed|`` (null when nothing was
    instructed). With ``awarded`` (the award's instructions), ``instructed_move_kw`` and ``delivered_move_kw``
    compare the move away from the award that the DSO asked for (an override) with what the meters show.
    """
    key = ["aggregator_id", "resource_id", "interval"]
    both = (instructed.select(*key, pl.col("kw").alias("instructed_kw"))
            .join(metered.select(*key, pl.col("kw").alias("metered_kw")), on=key, how="full", coalesce=True)
            .fill_null(0.0))
    if awarded is not None:
        both = both.join(awarded.select(*key, pl.col("kw").alias("awarded_kw")), on=key, how="left").fill_null(0.0)
    aggs = [pl.col("instructed_kw").sum(), pl.col("metered_kw").sum()]
    if awarded is not None:
        aggs.append(pl.col("awarded_kw").sum())
    out = (both.group_by("aggregator_id", "interval").agg(*aggs)
           .with_columns(error_kw=pl.col("metered_kw") - pl.col("instructed_kw"))
           .with_columns(delivery=pl.when(pl.col("instructed_kw").abs() > 1e-9)
                         .then(1.0 - pl.col("error_kw").abs() / pl.col("instructed_kw").abs()).otherwise(None)))
    if awarded is not None:
        out = out.with_columns(instructed_move_kw=pl.col("instructed_kw") - pl.col("awarded_kw"),
                               delivered_move_kw=pl.col("metered_kw") - pl.col("awarded_kw"))
    return out.sort("aggregator_id", "interval")


def baseline_10_of_10(history: pl.DataFrame, event: list, event_days: set | None = None, days: int = 10,
                      adjust_hours: float = 2.0, gap_hours: float = 1.0, cap: float = 0.2) -> pl.DataFrame:
    """The 10-of-10 baseline with a same-day additive adjustment (see the module docstring).

    Parameters
    ----------
    history
        Metered load of one resource, ``interval, kw`` (withdrawal positive here: a baseline is of load),
        covering the previous days and the event day up to the event.
    event
        The event's interval starts (UTC), ascending, on one day.
    event_days
        Dates (``datetime.date``) excluded from the baseline days (earlier events).

    Returns
    -------
    pl.DataFrame
        ``interval, unadjusted_kw, adjustment_kw, baseline_kw, days_used``.
    """
    if not event:
        raise InputError("baseline", "event", "needs at least one interval")
    h = history.select(pl.col("interval").cast(UTC), pl.col("kw").cast(pl.Float64))
    lookup = dict(zip(h["interval"].to_list(), h["kw"].to_list()))
    skip = set(event_days or ()) | {event[0].date()}
    candidates = sorted({iv.date() for iv in lookup if iv.date() < event[0].date() and iv.date() not in skip},
                        reverse=True)

    def unadjusted(iv) -> tuple[float | None, int]:
        values = []
        for day in candidates:
            past = iv - timedelta(days=(iv.date() - day).days)
            if past in lookup:
                values.append(lookup[past])
            if len(values) == days:
                break
        return (float(np.mean(values)) if values else None), len(values)

    window_end = event[0] - timedelta(hours=gap_hours)
    window = [iv for iv in lookup if window_end - timedelta(hours=adjust_hours) <= iv < window_end]
    diffs = []
    for iv in window:
        base, _ = unadjusted(iv)
        if base is not None:
            diffs.append(lookup[iv] - base)
    shift = float(np.mean(diffs)) if diffs else 0.0
    rows = []
    for iv in event:
        base, n = unadjusted(iv)
        if base is None:
            raise InputError("baseline", "history", f"no prior non-event day has a reading for {iv}")
        adj = float(np.clip(shift, -cap * abs(base), cap * abs(base)))
        rows.append((iv, base, adj, base + adj, n))
    return pl.DataFrame(rows, schema={"interval": UTC, "unadjusted_kw": pl.Float64, "adjustment_kw": pl.Float64,
                                      "baseline_kw": pl.Float64, "days_used": pl.Int64}, orient="row")

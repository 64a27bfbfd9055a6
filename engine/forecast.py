"""Forecasts of the inflexible net load per bus and interval, and the built-in forecaster.

A forecast is a table ``bus, interval, p_kw, q_kvar``: the expected net
*injection* of everything at the bus that does not bid (kW, kvar; positive =
into the feeder, so a load is negative and rooftop PV positive), per UTC
interval start. It is the same table whether an operator gives it, the
built-in forecaster makes it from metered history, or another engine module
(say, DER operating envelopes) reads it.

Built-in forecaster (:func:`same_interval_mean`): the forecast of bus b in
interval t is the mean of the metered net injection of b at the same time of
day on the ``days`` previous days (``t - 1 day``, ..., ``t - days days``),
over the days that have a reading. A bus and interval with no reading on any
of those days keeps the feeder's own load there (its base load, or its load
profile), so the forecaster never invents a number out of nothing. It is the
"same interval, previous days" average that many DSOs use as a naive
baseline; it knows no weather, and says so.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl

from dsomarket.engine.errors import InputError
from dsomarket.engine.network import Feeder, _normalise

FORECAST_SCHEMA = {"bus": pl.Utf8, "interval": pl.Datetime("us", "UTC"), "p_kw": pl.Float64, "q_kvar": pl.Float64}
"""Columns of a forecast (and of metered bus history): net injection per bus and interval, kW and kvar."""


def validate_forecast(table: pl.DataFrame, feeder: Feeder, name: str = "forecast") -> pl.DataFrame:
    """A forecast (or metered history) with typed columns; InputError naming the first bad row.

    Checks: columns present (``q_kvar`` defaults to 0), values finite, buses on
    the feeder, no bus and interval twice.
    """
    t = _normalise(table, FORECAST_SCHEMA, name, {"q_kvar": 0.0})
    feeder.topology.bus_index_of(t["bus"].to_list(), table=name)
    for col in ("p_kw", "q_kvar"):
        bad = np.nonzero(~np.isfinite(t[col].to_numpy()))[0]
        if len(bad):
            raise InputError(name, col, "must be finite", row=int(bad[0]))
    dup = t.select(pl.struct("bus", "interval").is_duplicated()).to_series().to_numpy()
    if dup.any():
        row = int(np.nonzero(dup)[0][-1])
        raise InputError(name, "interval", f"bus {t['bus'][row]!r} appears twice in {t['interval'][row]}", row=row)
    return t


def apply_forecast(feeder: Feeder, forecast: pl.DataFrame) -> Feeder:
    """The feeder with its fixed load replaced by the forecast where the forecast gives one.

    A forecast row ``(bus, interval, p_kw, q_kvar)`` becomes the load profile
    entry ``load_kw = -p_kw``, ``load_kvar = -q_kvar`` (injection positive in
    the forecast, withdrawal positive in the feeder); other buses and
    intervals keep the feeder's own load. The feeder is not modified.
    """
    rows = forecast.select("bus", "interval", (-pl.col("p_kw")).alias("load_kw"),
                           (-pl.col("q_kvar")).alias("load_kvar"))
    if feeder.load_profile is not None and feeder.load_profile.height:
        kept = feeder.load_profile.join(rows.select("bus", "interval"), on=["bus", "interval"], how="anti")
        rows = pl.concat([kept, rows])
    return feeder.with_changes(load_profile=rows.sort("interval", "bus"))


def feeder_forecast(feeder: Feeder, intervals: list) -> pl.DataFrame:
    """The feeder's own fixed load as a forecast table (every bus, every interval)."""
    p, q = feeder.loads(intervals)
    topo = feeder.topology
    n, T = topo.n_bus, len(intervals)
    return pl.DataFrame({"bus": np.tile(topo.bus_ids, T).astype(str),
                         "interval": pl.Series([iv for iv in intervals for _ in range(n)],
                                               dtype=pl.Datetime("us", "UTC")),
                         "p_kw": -p.T.ravel() + 0.0, "q_kvar": -q.T.ravel() + 0.0})


def same_interval_mean(feeder: Feeder, history: pl.DataFrame, intervals: list, days: int = 7) -> pl.DataFrame:
    """The built-in forecaster: mean of the same interval on the ``days`` previous days (see the module).

    Parameters
    ----------
    history
        Metered net injection per bus and interval (:data:`FORECAST_SCHEMA`), validated.
    intervals
        UTC interval starts to forecast.

    Returns
    -------
    pl.DataFrame
        A forecast for every bus and interval, with a column ``source``:
        ``history`` (the mean of ``n_days`` readings) or ``feeder`` (no reading).
    """
    if days < 1:
        raise InputError("forecast", "days", "must be at least 1")
    base = feeder_forecast(feeder, intervals)
    if history.height == 0:
        return base.with_columns(source=pl.lit("feeder"), n_days=pl.lit(0, pl.Int64))
    shifted = pl.concat([history.select("bus", pl.col("interval") + timedelta(days=k), "p_kw", "q_kvar")
                         for k in range(1, days + 1)])
    means = shifted.group_by("bus", "interval").agg(pl.col("p_kw").mean().alias("p_hist"),
                                                      pl.col("q_kvar").mean().alias("q_hist"),
                                                      pl.len().cast(pl.Int64).alias("n_days"))
    out = base.join(means, on=["bus", "interval"], how="left", maintain_order="left")
    has = pl.col("n_days").is_not_null()
    return out.select("bus", "interval",
                      pl.when(has).then(pl.col("p_hist")).otherwise(pl.col("p_kw")).alias("p_kw"),
                      pl.when(has).then(pl.col("q_hist")).otherwise(pl.col("q_kvar")).alias("q_kvar"),
                      pl.when(has).then(pl.lit("history")).otherwise(pl.lit("feeder")).alias("source"),
                      pl.col("n_days").fill_null(0))


def interface_schedule(forecast: pl.DataFrame, expected: pl.DataFrame | None = None) -> pl.DataFrame:
    """The forecast interface schedule per interval: ``interval, fixed_kw, expected_kw, import_kw``.

    ``fixed_kw`` is the forecast inflexible net load (withdrawal, kW: minus the
    sum of the forecast injections); ``expected_kw`` the expected cleared net
    withdrawal of the bids (``expected``: ``interval, import_kw`` of a clearing
    at the forecast ISO price minus its fixed load, or 0 without one); the
    schedule ``import_kw`` is their sum (positive = import from the ISO;
    lossless, as the LinDistFlow balance).
    """
    fixed = forecast.group_by("interval").agg((-pl.col("p_kw").sum()).alias("fixed_kw")).sort("interval")
    if expected is None:
        fixed = fixed.with_columns(expected_kw=pl.lit(0.0))
    else:
        fixed = fixed.join(expected.select("interval", pl.col("expected_kw")), on="interval", how="left").with_columns(
            pl.col("expected_kw").fill_null(0.0))
    return fixed.with_columns(import_kw=pl.col("fixed_kw") + pl.col("expected_kw"))

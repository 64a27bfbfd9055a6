"""Input files of the commands that talk to a server, read into the client library's objects.

Every reader takes CSV or Parquet (by extension), reads prices as the decimal
text written in the file (never through a float), and times as ISO 8601 UTC.
A problem raises :class:`InputError` naming the table, the row (its index
among the data rows, as :class:`InputError` takes it) and the column.
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl

from dsomarket.clients.api import (BidSegment, FlexNeed, FlexOffer, IntervalAward, MeterReading, NetworkChange,
                                   Resource)
from dsomarket.clients.files import one_column_hint, parse_intervals
from dsomarket.engine.errors import InputError

_TEXT = ("aggregator_id", "bid_id", "offer_id", "need_id", "resource_id", "feeder_id", "bus", "element", "side",
         "direction", "kind",
         "price", "max_price", "availability_price", "interval", "interval_start", "departure",
         "change_id", "start", "end", "reason", "why")
_RESOURCE_NUMBERS = ("capacity_kw", "energy_kwh", "charge_kw", "discharge_kw", "eta_charge", "eta_discharge",
                     "soc_init_kwh", "soc_end_kwh", "soc_min_kwh", "ramp_kw")


def read(path: Path, table: str, required: tuple[str, ...]) -> pl.DataFrame:
    """A CSV or Parquet file with ids, prices and times read as text and the ``required`` columns checked."""
    path = Path(path)
    if not path.is_file():
        raise InputError(table, "file", f"{path}: no such file")
    try:
        if path.suffix.lower() == ".csv":
            header = pl.read_csv(path, n_rows=0).columns
            df = pl.read_csv(path, schema_overrides={c: pl.Utf8 for c in _TEXT if c in header},
                             infer_schema_length=None)
            one_column_hint(df, path, table)
        elif path.suffix.lower() in (".parquet", ".pq"):
            df = pl.read_parquet(path)
        else:
            raise InputError(table, "file", f"{path}: unsupported extension {path.suffix!r} (use .csv or .parquet)")
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(table, "file", f"{path}: cannot read: {str(exc).strip().splitlines()[0]}") from None
    for col in required:
        if col not in df.columns:
            raise InputError(table, col, "column is missing")
    if df.height == 0:
        raise InputError(table, "file", f"{path}: no rows")
    return df


def _utc(df: pl.DataFrame, column: str, table: str, required: bool = True) -> pl.Series:
    """``column`` as UTC timestamps (:func:`clients.files.parse_intervals`: ISO 8601 only, a naive
    timestamp taken as UTC); an empty cell names its row when ``required``."""
    parsed = parse_intervals(df, table, column)[column]
    if required and parsed.null_count():
        raise InputError(table, column, "is empty: give a time, ISO 8601 UTC", row=int(parsed.is_null().arg_max()))
    return parsed


def _numbers(df: pl.DataFrame, columns, table: str, default: float | None = 0.0) -> pl.DataFrame:
    """``columns`` as floats (missing columns get ``default``); a non-number names its row."""
    for col in columns:
        if col not in df.columns:
            df = df.with_columns(pl.lit(default, dtype=pl.Float64).alias(col))
            continue
        cast = df[col].cast(pl.Float64, strict=False)
        bad = cast.is_null() & df[col].is_not_null()
        if bad.any():
            row = int(bad.arg_max())
            raise InputError(table, col, f"{df[col][row]!r} is not a number", row=row)
        df = df.with_columns(cast.fill_null(default) if default is not None else cast)
    return df


def _text(df: pl.DataFrame, columns, default: str = "") -> pl.DataFrame:
    return df.with_columns((pl.col(c).cast(pl.Utf8).fill_null(default) if c in df.columns
                            else pl.lit(default)).alias(c) for c in columns)


def _bools(df: pl.DataFrame, column: str, table: str, default: bool) -> pl.DataFrame:
    if column not in df.columns:
        return df.with_columns(pl.lit(default).alias(column))
    if df.schema[column] == pl.Boolean:
        return df.with_columns(pl.col(column).fill_null(default))
    text = df[column].cast(pl.Utf8).str.to_lowercase()
    known = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    bad = ~text.is_in(list(known)) & text.is_not_null()
    if bad.any():
        row = int(bad.arg_max())
        raise InputError(table, column, f"{df[column][row]!r} is not true or false", row=row)
    return df.with_columns(text.replace_strict(known, default=default, return_dtype=pl.Boolean)
                           .fill_null(default).alias(column))


def read_bids(path: Path) -> list[BidSegment]:
    """Columns ``bid_id, resource_id, side (buy|sell), quantity_kw, price (per MWh), interval[, tan_phi]``."""
    df = read(path, "bids", ("bid_id", "resource_id", "side", "quantity_kw", "price", "interval"))
    df = _numbers(df.with_columns(_utc(df, "interval", "bids")), ("quantity_kw", "tan_phi"), "bids")
    df = _text(df, ("price",))
    return [BidSegment(r["bid_id"], r["resource_id"], r["side"], r["quantity_kw"], r["price"], r["interval"],
                       r["tan_phi"]) for r in df.iter_rows(named=True)]


def read_bid_ids(path: Path) -> list[str]:
    """The ``bid_id`` column of a file (a bids file will do)."""
    return read(path, "bids", ("bid_id",))["bid_id"].cast(pl.Utf8).to_list()


def read_flex_offers(path: Path) -> list[FlexOffer]:
    """Columns ``offer_id, resource_id, direction (up|down), quantity_kw, price, interval`` and optionally
    ``availability_price, divisible, min_kw, tan_phi``."""
    df = read(path, "offers", ("offer_id", "resource_id", "direction", "quantity_kw", "price", "interval"))
    df = _numbers(df.with_columns(_utc(df, "interval", "offers")), ("quantity_kw", "min_kw", "tan_phi"), "offers")
    df = _bools(_text(_text(df, ("price",)), ("availability_price",), "0"), "divisible", "offers", True)
    df = df.with_columns(pl.when(pl.col("availability_price") == "").then(pl.lit("0"))
                         .otherwise(pl.col("availability_price")).alias("availability_price"))
    return [FlexOffer(r["offer_id"], r["resource_id"], r["direction"], r["quantity_kw"], r["price"], r["interval"],
                      r["availability_price"], r["divisible"], r["min_kw"], r["tan_phi"])
            for r in df.iter_rows(named=True)]


def read_needs(path: Path) -> list[FlexNeed]:
    """The needs table of :mod:`engine.flexibility`: ``need_id, kind, interval, max_price`` and, by kind,
    ``element, direction, required_kw, required_pu, partial_ok``."""
    df = read(path, "needs", ("need_id", "kind", "interval", "max_price"))
    df = _numbers(df.with_columns(_utc(df, "interval", "needs")), ("required_kw", "required_pu"), "needs")
    df = _bools(_text(df, ("element", "direction", "max_price")), "partial_ok", "needs", False)
    return [FlexNeed(r["need_id"], r["kind"], r["interval"], r["max_price"], r["element"], r["direction"],
                     r["required_kw"], r["required_pu"], r["partial_ok"]) for r in df.iter_rows(named=True)]


def read_resources(path: Path) -> list[Resource]:
    """Columns ``resource_id, feeder_id, bus, kind (pv|battery|ev|flexible_load), capacity_kw`` and, as the
    kind needs them, ``energy_kwh, charge_kw, discharge_kw, eta_charge, eta_discharge, soc_init_kwh,
    soc_end_kwh, soc_min_kwh, ramp_kw`` (kW, kWh) and ``departure`` (ISO 8601 UTC, EVs)."""
    df = read(path, "resources", ("resource_id", "feeder_id", "bus", "kind", "capacity_kw"))
    df = _numbers(df, _RESOURCE_NUMBERS, "resources")
    if "departure" in df.columns:
        df = df.with_columns(_utc(df, "departure", "resources", required=False))
    out = []
    for k, r in enumerate(df.iter_rows(named=True)):
        for col in _RESOURCE_NUMBERS:
            if not math.isfinite(r[col]):
                raise InputError("resources", col, "must be finite", row=k)
        out.append(Resource(r["resource_id"], r["feeder_id"], r["bus"], r["kind"],
                            **{c: r[c] for c in _RESOURCE_NUMBERS}, departure=r.get("departure")))
    return out


def read_award(path: Path) -> list[IntervalAward]:
    """Columns ``interval, import_kw[, price]`` (kW, negative = export; price per MWh, empty = marginal).

    ``interval_start`` may stand for ``interval``: the interface table of ``markets clear`` is then an award
    of the import cleared at the forecast price (its ``iso_price`` column is not read).
    """
    df = read(path, "award", ())
    if "interval" not in df.columns and "interval_start" in df.columns:
        df = df.rename({"interval_start": "interval"})
    for col in ("interval", "import_kw"):
        if col not in df.columns:
            raise InputError("award", col, "column is missing")
    df = _numbers(df.with_columns(_utc(df, "interval", "award")), ("import_kw",), "award", default=None)
    df = _text(df, ("price",))
    return [IntervalAward(r["interval"], r["import_kw"], r["price"] or None) for r in df.iter_rows(named=True)]


_CHANGE_VALUES = ("s_max_kva", "vmin_pu", "vmax_pu", "import_max_kw", "export_max_kw")


def read_meter_readings(path: Path, table: str = "meters") -> list[MeterReading]:
    """Columns ``resource_id, interval, kw[, aggregator_id]``: net injection averaged over the interval, kW
    (positive into the feeder); an empty ``resource_id`` is the interface meter (its ``kw`` the import)."""
    df = read(path, table, ("resource_id", "interval", "kw"))
    df = _text(_numbers(df.with_columns(_utc(df, "interval", table)), ("kw",), table, default=None),
               ("resource_id", "aggregator_id"))
    missing = df["kw"].is_null()
    if missing.any():
        raise InputError(table, "kw", "is empty: give the reading, kW", row=int(missing.arg_max()))
    return [MeterReading(r["resource_id"], r["interval"], r["kw"], r["aggregator_id"])
            for r in df.iter_rows(named=True)]


def read_network_changes(path: Path) -> list[NetworkChange]:
    """The network changes table of the offline ``--network-changes`` (see :mod:`engine.network_changes`):
    ``change_id, kind, element, start[, end, s_max_kva, vmin_pu, vmax_pu, import_max_kw, export_max_kw, shed]``
    and the reason as ``reason`` (or the offline file's ``why``)."""
    df = read(path, "network_changes", ("change_id", "kind", "start"))
    if "reason" not in df.columns and "why" in df.columns:
        df = df.rename({"why": "reason"})
    df = df.with_columns(_utc(df, "start", "network_changes"))
    df = df.with_columns(_utc(df, "end", "network_changes")) if "end" in df.columns \
        else df.with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("end"))
    df = _bools(_text(_numbers(df, _CHANGE_VALUES, "network_changes", default=None), ("element", "reason")),
                "shed", "network_changes", False)
    return [NetworkChange(r["change_id"], r["kind"], r["element"], r["start"], r["reason"], r["end"],
                          **{c: r[c] for c in _CHANGE_VALUES}, shed=r["shed"]) for r in df.iter_rows(named=True)]

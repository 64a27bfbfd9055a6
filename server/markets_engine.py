"""The one place where the server calls the engine's market functions.

Everything the server hands the engine passes through here: stored rows
become a :class:`MarketInputs` (feeder, rules, intervals, bid table,
resources), decimal price strings become floats, and the engine's tables come
back with prices and amounts as decimal strings and ids split back into the
aggregator's own. Servicers and the replay use only these functions, so an
engine signature change touches this module alone.

Ids: resource and bid ids are scoped per aggregator, while the engine wants
them unique in a market. They cross the boundary as ``aggregator/id``; ids
cannot contain ``/`` (see :data:`server.convert.ID_PATTERN`), so the split is
unambiguous. The same composite bid id in a day-ahead and a real-time market
lets settlement match a real-time bid to its day-ahead position.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

import numpy as np
import polars as pl

from dsomarket.engine.bids import MarketRules, couples_intervals, parse_commitments, parse_resources, validate_bids
from dsomarket.engine.clearing import ClearingOptions
from dsomarket.engine.disaggregation import Disaggregation, holding_day_ahead
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import builtin
from dsomarket.engine.flexibility import BaseCase, apply_activations, clear_flexibility, validate_needs
from dsomarket.engine.forecast import (apply_forecast, feeder_forecast, interface_schedule, same_interval_mean,
                                       validate_forecast)
from dsomarket.engine.network import Feeder
from dsomarket.engine.network_changes import CHANGE_SCHEMA, validate_changes
from dsomarket.engine.metering import (baseline_10_of_10, performance, settle_imbalance, validate_interface_meters,
                                       validate_resource_meters)
from dsomarket.engine.overrides import POSITION_SCHEMA, curtailment_payments, redispatch
from dsomarket.engine.runs import (KeptMarket, disaggregate_rolling, disaggregate_runs, redispatch_award, run_book,
                                  runs_for)
from dsomarket.engine.settlement import loss_components, settle
from dsomarket.engine.territory import IntervalCurves, substation
from dsomarket.server import timeline
from dsomarket.server.errors import FailedPrecondition, InvalidArgument, ServiceError

log = logging.getLogger("dsomarket.server")

ISO_SEGMENTS = 10
"""Priced segments per kind (demand, supply) in the curve handed to the ISO."""

log = logging.getLogger(__name__)

_SEP = "/"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ENGINE_RESOURCE_KIND = {"battery": "battery", "ev": "ev", "flexible_load": "flexible_load"}

LEGACY_FORMULATION = "lossless"
"""The clearing model of a market whose stored row or audit record names none: every market created before
the per-market setting was cleared on the lossless LP, so its replay must be too."""


def decimal_text(x: float) -> str:
    """A float from the engine as a decimal string with at most 6 decimals ('-0' is '0')."""
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def us_to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _engine_id(aggregator: pl.Expr, local: pl.Expr) -> pl.Expr:
    return pl.concat_str([aggregator, pl.lit(_SEP), local])


def _local_id(col: str) -> pl.Expr:
    """The aggregator's own id of an ``aggregator/id`` column; empty stays empty."""
    local = pl.col(col).str.splitn(_SEP, 2).struct.field("field_1")
    return pl.when(pl.col(col) == "").then(pl.lit("")).otherwise(local).alias(col)


# -- feeders -------------------------------------------------------------------

def feeder_from_tables(tables: dict) -> Feeder:
    """A validated feeder from stored tables (``header``, ``buses``, ``lines`` as column lists).

    Raises :class:`InputError` naming the table, row and field of the first problem.
    """
    lines = dict(tables["lines"])
    if "s_max_kva" in lines:
        lines["s_max_kva"] = [math.inf if v is None else float(v) for v in lines["s_max_kva"]]
    return Feeder.from_tables(tables["header"], pl.DataFrame(tables["buses"]), pl.DataFrame(lines))


def load_feeder(kind: str, source) -> tuple[Feeder, dict]:
    """A validated feeder and its stored tables, from a built-in name or uploaded tables.

    ``kind`` is ``"builtin"`` (``source`` a name: ``ieee33``, ``ieee69``,
    ``synth:N:SEED``) or ``"tables"`` (``source`` as :func:`feeder_from_tables`
    takes). The stored tables carry every default filled in, so a replay
    builds the same feeder whatever the engine's defaults become.
    """
    feeder = builtin(source) if kind == "builtin" else feeder_from_tables(source)
    return feeder, feeder_to_tables(feeder)


def interface_feeder(interface_id: str, members: list[tuple[str, dict]], import_max_kw: float = math.inf,
                     export_max_kw: float = math.inf) -> tuple[Feeder, dict]:
    """The feeder of a T-D interface: stored feeders behind one substation transformer, merged.

    ``members`` are ``(feeder_id, tables)`` of stored feeders; limits in kW (``inf`` = none). The members'
    roots become bus ``substation`` and their other buses ``<feeder_id>/<bus>``
    (:func:`engine.territory.substation`); one member keeps its bus ids and takes the limits. The feeder
    is named ``interface_id``. Returns it and its tables, as :func:`load_feeder` does.
    """
    feeders = [feeder_from_tables(tables).with_changes(name=feeder_id) for feeder_id, tables in members]
    merged = substation(interface_id, feeders, [pl.DataFrame()] * len(feeders), import_max_kw, export_max_kw)
    feeder = merged.feeder.with_changes(name=interface_id)
    return feeder, feeder_to_tables(feeder)


def feeder_summary(feeder: Feeder) -> dict:
    """What the feeders table keeps beside the tables: name, root bus, base kV, bus and line counts."""
    return {"name": feeder.name, "root_bus": feeder.root_bus, "base_kv": feeder.base_kv,
            "bus_count": feeder.topology.n_bus, "line_count": feeder.lines.height}


def feeder_to_tables(feeder: Feeder) -> dict:
    """JSON-ready tables of a feeder; an unlimited thermal rating is stored as null."""
    s_max = pl.col("s_max_kva")
    lines = feeder.lines.with_columns(
        pl.when(s_max.is_infinite()).then(None).otherwise(s_max).alias("s_max_kva"))
    return {"header": feeder.header(), "buses": feeder.buses.to_dict(as_series=False),
            "lines": lines.to_dict(as_series=False)}


# -- market inputs ---------------------------------------------------------------

ACTIVATION_COLUMNS = ("bus", "interval_idx", "direction", "accepted_kw", "tan_phi", "aggregator_id", "resource_id")
"""Columns of accepted flexibility activations as :func:`market_inputs` takes them (the aggregator's own
resource id)."""


@dataclass(frozen=True, eq=False)
class MarketInputs:
    """Everything a clearing of one market reads, already in the engine's form.

    ``feeder`` already carries the accepted flexibility activations the market is built on (see
    :func:`market_inputs`). ``changes`` is the feeder's validated network change set of
    ``network_version`` (:mod:`engine.network_changes`), or None for the feeder as loaded.
    ``day_ahead``: for a real-time market, the positions of the awarded day-ahead market it refers to
    (:class:`DayAheadPositions`; None before that market is awarded): they are held in the clearing and the
    curves as the award holds them (:func:`engine.disaggregation.holding_day_ahead`).
    """

    feeder: Feeder
    rules: MarketRules
    intervals: list
    bids: pl.DataFrame
    resources: tuple
    changes: pl.DataFrame | None = None
    network_version: int = 0
    formulation: str = "lossaware"
    day_ahead: DayAheadPositions | None = None

    def options(self, time_limit: float | None) -> ClearingOptions:
        """How every clearing, curve and award of the market is solved: its own formulation."""
        return ClearingOptions(formulation=self.formulation, time_limit=time_limit)

    def book(self):
        return validate_bids(self.bids, self.feeder, self.rules, self.intervals)

    def runs(self, book):
        """The runs of one network state of the market's intervals (InputError for a loop or islanded load)."""
        return runs_for(self.feeder, self.changes, book)


def market_rules(market: dict) -> MarketRules:
    voll = market.get("value_of_lost_load")
    return MarketRules(price_floor=float(market["price_floor"]), price_cap=float(market["price_cap"]),
                       interval_minutes=float(market["interval_minutes"]),
                       value_of_lost_load=float(voll) if voll else None)


def market_intervals(market: dict) -> list[datetime]:
    """Start of every interval of a market, as aware UTC datetimes."""
    step = timedelta(minutes=int(market["interval_minutes"]))
    start = us_to_datetime(market["delivery_start_us"])
    return [start + k * step for k in range(market["interval_count"])]


def market_inputs(feeder: Feeder, market: dict, bids: pl.DataFrame, resources: pl.DataFrame,
                  activations: pl.DataFrame | None = None, network: tuple[int, list] = (0, []),
                  forecast: dict | None = None) -> MarketInputs:
    """Engine inputs of a market from its stored rows.

    Parameters
    ----------
    market
        The market row (``price_floor``, ``price_cap`` decimal strings,
        ``interval_minutes``, ``delivery_start_us``, ``interval_count``,
        ``value_of_lost_load``, ``formulation``: :data:`LEGACY_FORMULATION` when absent).
    bids
        Active bid rows: ``aggregator_id, bid_id, resource_id, bus, side,
        quantity_kw, price`` (decimal string), ``interval_idx, tan_phi``.
    resources
        Resource rows of the bids' resources (see ``server.db`` table ``resources``).
    activations
        Accepted flexibility activations to fold into the feeder's fixed load
        (``server.store.ACTIVATION_SCHEMA``: bus, interval_idx, direction ``up`` = more injection or
        less load, accepted_kw >= 0, tan_phi, aggregator_id, resource_id), or None. The clearing, the
        interface curves and the disaggregation of an award are then all built on that net load
        (:func:`engine.flexibility.apply_activations`), and a kW is sold once: a resource with
        activations in an interval gets an :class:`engine.bids.Commitment` there (see
        :func:`_commitments`).
    network
        ``(version, change rows)``: the feeder's network version and its change rows in version order
        (:func:`change_table` takes them); version 0 with no rows is the feeder as loaded.
    forecast
        ``operator``: the operator's forecast rows ``(bus, interval_idx, p_kw, q_kvar)``; ``history``: the
        feeder's metered rows ``(bus, interval_us, p_kw, q_kvar)``. With history, every bus and interval gets the
        built-in forecast (:func:`engine.forecast.same_interval_mean`), the operator's rows replacing it where
        given; the result is the fixed load (:func:`engine.forecast.apply_forecast`) before any activation.
    """
    intervals = market_intervals(market)
    version, change_rows = network
    changes = change_table(feeder, change_rows) if change_rows else None
    feeder = forecast_feeder(feeder, intervals, forecast or {})
    interval = pl.Series("interval", intervals, dtype=pl.Datetime("us", "UTC"))
    commitments = ()
    if activations is not None and activations.height:
        # One order for every run, so that the per-bus sums come out bit for bit the same.
        acts = activations.sort(*ACTIVATION_COLUMNS)
        feeder = apply_activations(feeder, acts.select(
            "bus", interval.gather(acts["interval_idx"]).alias("interval"), "direction", "accepted_kw", "tan_phi"))
        commitments = _commitments(acts, resources, interval)
    # One order for every run (server and replay), whatever order the rows came in.
    rows = bids.sort("aggregator_id", "bid_id")
    table = rows.select(_engine_id(pl.col("aggregator_id"), pl.col("bid_id")).alias("bid_id"),
                        "bus", "side", "quantity_kw", pl.col("price").cast(pl.Float64),
                        interval.gather(rows["interval_idx"]).alias("interval"), "aggregator_id",
                        _engine_id(pl.col("aggregator_id"), pl.col("resource_id")).alias("resource_id"),
                        "tan_phi")
    return MarketInputs(feeder=feeder, rules=market_rules(market), intervals=intervals, bids=table,
                        resources=_resources(resources) + commitments, changes=changes, network_version=version,
                        formulation=market.get("formulation") or LEGACY_FORMULATION)


def stored_inputs(rows, feeder: Feeder | None = None) -> MarketInputs:
    """:func:`market_inputs` of a market's stored rows (``server.store.market_rows``); the feeder is built from
    the stored tables unless given (a cache's)."""
    market, tables, bids, resources, activations, network, forecast = rows
    feeder = feeder_from_tables(tables) if feeder is None else feeder
    return market_inputs(feeder, market, bids, resources, activations, network, forecast)


def forecast_table(intervals: list, rows) -> pl.DataFrame:
    """The engine's forecast table from stored rows ``(bus, interval_idx, p_kw, q_kvar)``."""
    t = pl.DataFrame(list(rows), schema={"bus": pl.Utf8, "interval_idx": pl.Int64, "p_kw": pl.Float64,
                                         "q_kvar": pl.Float64}, orient="row")
    stamps = pl.Series("interval", intervals, dtype=pl.Datetime("us", "UTC"))
    return t.select("bus", stamps.gather(t["interval_idx"]).alias("interval"), "p_kw", "q_kvar")


def forecast_feeder(feeder: Feeder, intervals: list, forecast: dict) -> Feeder:
    """The feeder with the market's forecast as its fixed load (see :func:`market_inputs`)."""
    operator, history = forecast.get("operator") or (), forecast.get("history") or ()
    if not operator and not history:
        return feeder
    table = forecast_table(intervals, operator) if operator else None
    if history:
        past = pl.DataFrame(list(history), schema={"bus": pl.Utf8, "us": pl.Int64, "p_kw": pl.Float64,
                                                   "q_kvar": pl.Float64}, orient="row")
        past = past.select("bus", pl.col("us").cast(pl.Datetime("us", "UTC")).alias("interval"), "p_kw", "q_kvar")
        built = same_interval_mean(feeder, past, intervals, days=timeline.HISTORY_DAYS).select("bus", "interval", "p_kw",
                                                                                     "q_kvar")
        if table is not None:
            built = pl.concat([built.join(table.select("bus", "interval"), on=["bus", "interval"], how="anti"), table])
        table = built.sort("interval", "bus")
    return apply_forecast(feeder, table)


def check_forecast(feeder: Feeder, market: dict, rows: list) -> None:
    """The engine's checks of forecast rows (known buses, finite, each bus and interval once); InvalidArgument
    naming ``forecast.field`` with the row."""
    try:
        validate_forecast(forecast_table(market_intervals(market), rows), feeder)
    except InputError as exc:
        raise InvalidArgument(f"forecast.{exc.field}[{exc.row}]" if exc.row is not None else f"forecast.{exc.field}",
                              exc.reason) from None


def check_history(feeder: Feeder, rows: list) -> None:
    """Metered history rows ``(bus, interval_us, p_kw, q_kvar)`` by the forecast rules; InvalidArgument naming
    ``history.field[row]``."""
    t = pl.DataFrame(list(rows), schema={"bus": pl.Utf8, "us": pl.Int64, "p_kw": pl.Float64, "q_kvar": pl.Float64},
                     orient="row")
    try:
        validate_forecast(t.select("bus", pl.col("us").cast(pl.Datetime("us", "UTC")).alias("interval"), "p_kw",
                                   "q_kvar"), feeder, "history")
    except InputError as exc:
        raise InvalidArgument(f"history.{exc.field}[{exc.row}]" if exc.row is not None else f"history.{exc.field}",
                              exc.reason) from None


def forecast_schedule(inputs: MarketInputs, cleared: pl.DataFrame | None) -> pl.DataFrame:
    """The forecast interface schedule (:func:`engine.forecast.interface_schedule`): the market's fixed net load
    per interval, plus the expected position of a clearing (``interval_idx, import_kw`` at the forecast price)."""
    fixed = feeder_forecast(inputs.feeder, inputs.intervals)
    expected = None
    if cleared is not None and cleared.height:
        stamps = pl.Series("interval", inputs.intervals, dtype=pl.Datetime("us", "UTC"))
        fixed_kw = fixed.group_by("interval").agg((-pl.col("p_kw").sum()).alias("f"))
        expected = (cleared.select(stamps.gather(cleared["interval_idx"]).alias("interval"), "import_kw")
                    .join(fixed_kw, on="interval").select("interval", (pl.col("import_kw") - pl.col("f"))
                                                          .alias("expected_kw")))
    out = interface_schedule(fixed, expected)
    return out.with_columns(_interval_idx(inputs, out["interval"]))


def change_table(feeder: Feeder, rows: list[dict]) -> pl.DataFrame:
    """The engine's validated change table from stored change rows (in version order)."""
    utc = pl.Datetime("us", "UTC")
    table = pl.DataFrame({
        "change_id": [r["change_id"] for r in rows], "kind": [r["kind"] for r in rows],
        "element": [r["element"] for r in rows],
        "start": pl.Series([r["start_us"] for r in rows], dtype=pl.Int64).cast(utc),
        "end": pl.Series([r["end_us"] for r in rows], dtype=pl.Int64).cast(utc),
        **{c: pl.Series([r[c] for r in rows], dtype=pl.Float64)
           for c in ("s_max_kva", "vmin_pu", "vmax_pu", "import_max_kw", "export_max_kw")},
        "shed": pl.Series([bool(r["shed"]) for r in rows], dtype=pl.Boolean),
        "who": [r["submitted_by"] for r in rows], "why": [r["reason"] for r in rows],
    }, schema=CHANGE_SCHEMA)
    return validate_changes(table, feeder)


def _commitments(acts: pl.DataFrame, resources: pl.DataFrame, interval: pl.Series) -> tuple:
    """What each resource with accepted activations may still sell and buy in the energy market, per interval.

    With capacity C and net accepted activation A (up positive) in an interval, its bids there may sell
    at most ``max(C - max(A, 0), 0)`` and buy at most ``max(C - max(-A, 0), 0)``. Only resources
    among ``resources`` (those with bids) matter; rows are sorted so that every run builds the same.
    """
    sign = pl.when(pl.col("direction") == "up").then(1.0).otherwise(-1.0)
    net = (acts.group_by("aggregator_id", "resource_id", "interval_idx")
           .agg((sign * pl.col("accepted_kw")).sum().alias("a"))
           .join(resources.select("aggregator_id", "resource_id", "capacity_kw"),
                 on=["aggregator_id", "resource_id"], how="inner")
           .sort("aggregator_id", "resource_id", "interval_idx"))
    if net.height == 0:
        return ()
    cap = pl.col("capacity_kw")
    return parse_commitments(net.select(
        _engine_id(pl.col("aggregator_id"), pl.col("resource_id")).alias("resource_id"),
        interval.gather(net["interval_idx"]).alias("interval"),
        pl.max_horizontal(cap - pl.max_horizontal(pl.col("a"), 0.0), 0.0).alias("max_sell_kw"),
        pl.max_horizontal(cap - pl.max_horizontal(-pl.col("a"), 0.0), 0.0).alias("max_buy_kw")))


def _resources(rows: pl.DataFrame) -> tuple:
    coupled = rows.filter(pl.col("kind").is_in(list(_ENGINE_RESOURCE_KIND))
                          & ((pl.col("kind") != "flexible_load") | (pl.col("ramp_kw") > 0)))
    if coupled.height == 0:
        return ()
    table = coupled.sort("aggregator_id", "resource_id").select(
        _engine_id(pl.col("aggregator_id"), pl.col("resource_id")).alias("resource_id"),
        pl.col("kind").replace_strict(_ENGINE_RESOURCE_KIND),
        "energy_kwh", "charge_kw", "discharge_kw", "eta_charge", "eta_discharge", "soc_init_kwh",
        "soc_end_kwh", "soc_min_kwh", "ramp_kw",
        pl.from_epoch(pl.col("departure_us"), time_unit="us").dt.replace_time_zone("UTC").alias("departure"))
    return parse_resources(table)


def _interval_idx(inputs, col: pl.Series) -> pl.Series:
    """Interval index of each timestamp; ``inputs`` has the market's ``intervals``."""
    return col.replace_strict(pl.Series(inputs.intervals, dtype=col.dtype), pl.Series(range(len(inputs.intervals))),
                              return_dtype=pl.Int64).alias("interval_idx")


def _decimals(df: pl.DataFrame, cols: tuple) -> pl.DataFrame:
    return df.with_columns(pl.Series(c, [decimal_text(v) for v in df[c].to_list()], dtype=pl.Utf8)
                           for c in cols)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update((part.write_csv() if isinstance(part, pl.DataFrame) else repr(part)).encode("utf-8"))
    return h.hexdigest()


_WAY_OUT = ("the market stays closed: clear it again (another forecast), or reopen it (ReopenMarket) so that "
            "bids can be withdrawn or replaced")


def _diagnosis(items) -> tuple[str, ...]:
    out = []
    for d in items:
        where = f" at {d['element']}" if d.get("element") else ""
        when = f" ({d['interval']})" if d.get("interval") else ""
        what = f": {d['violation']:.6g} {d.get('unit', '')}".rstrip() if "violation" in d else ""
        out.append(f"{d['limit']}{where}{when}{what}" + (f": {d['detail']}" if d.get("detail") else ""))
    return tuple(out)


# -- clearing and interface curves ---------------------------------------------------

@dataclass(frozen=True, eq=False)
class ClearOutcome:
    """A clearing at the forecast ISO price plus the exact interface curves.

    ``prices``: bus, interval_idx, dlmp, energy, congestion, voltage, loss
    (decimal strings). ``interface``: interval_idx, import_kw, iso_price.
    ``curves``: one dict per interval (interval_idx, fixed_kw, conditional,
    segments, bands). Tables are empty unless ``status == "optimal"``. ``network_version`` is the
    feeder's network version the clearing used. ``warm``: a territory worker re-used the market it kept from
    an earlier clearing of the same inputs (:func:`clear_kept`); the outcome is the same either way.
    """

    status: str
    diagnosis: tuple
    welfare: str
    prices: pl.DataFrame
    interface: pl.DataFrame
    curves: list
    area: str
    seconds: float
    digest: str
    network_version: int = 0
    warm: bool = False


def clear_market(inputs: MarketInputs, forecast: list[str], time_limit: float | None = None,
                 trace=None) -> ClearOutcome:
    """Clear at the forecast ISO price and trace the interface curves.

    ``forecast`` holds decimal strings per MWh: none (the midpoint of floor and
    cap), one for every interval, or one per interval. The engine refusing the
    stored inputs, or failing, is an ``error`` outcome that says why (and is
    recorded like any failed clearing), never an exception out of the call: the
    operator then has the market's diagnosis and ReopenMarket. ``trace`` traces the curves of a market of
    several intervals (:meth:`engine.runs.KeptMarket.curve`; the server's :class:`server.runner.CurveFanOut`).
    """
    return _clear_kept(None, inputs, forecast, time_limit, keep=False, trace=trace)[0]


def clearing_error(reason: str, seconds: float = 0.0, network_version: int = 0) -> ClearOutcome:
    """A clearing that could not run (the engine refused its inputs or failed), recorded like an infeasible
    one: the reason and the operator's way out in its diagnosis."""
    return ClearOutcome("error", (reason, _WAY_OUT), "", pl.DataFrame(), pl.DataFrame(), [], "", seconds,
                        _digest("error", reason), network_version)


def clear_stored(rows, forecast: list[str], time_limit: float | None = None) -> ClearOutcome:
    """:func:`clear_market` of a market's stored rows (``server.store.market_rows``)."""
    return clear_market(stored_inputs(rows), forecast, time_limit)


@dataclass(frozen=True, eq=False)
class Kept:
    """What a territory's worker keeps of an interface between clearings (:func:`clear_kept`): the market
    built on inputs whose digest is ``key`` (everything a clearing reads but the ISO price forecast); its
    ``curves`` are the single-interval curves of the interface's markets so far (a day-ahead market's
    intervals, for the real-time sessions whose interval is the same model), its ``offers`` their ISO
    offers. ``feeder`` is the engine's feeder built from the stored feeder ``tables`` (a feeder never
    changes once stored: the next market of the interface that reads the same tables takes it as built)."""

    key: str
    market: KeptMarket
    tables: dict
    feeder: Feeder


def clear_kept(kept: Kept | None, rows, forecast: list[str], time_limit: float | None = None,
               day_ahead: DayAheadPositions | None = None) -> tuple[ClearOutcome, Kept | None]:
    """:func:`clear_stored`, re-using what the worker kept of the interface from its last clearing; ``day_ahead``
    is the positions of the awarded day-ahead market a real-time market holds (:attr:`MarketInputs.day_ahead`),
    as ClearMarket clears it.

    What a territory's worker runs for each interface (a :class:`server.runner.Task` with ``keep``). When
    the market reads exactly what the kept one read but for the ISO price forecast (a real-time session
    of the same feeders and bids as the day-ahead one), the kept model and curve are re-used
    (:class:`engine.runs.KeptMarket`), with the outcome of a fresh clearing; the outcome says
    ``warm``. Returns the outcome and what to keep for the next clearing (None after a failure).
    """
    tables = rows[1]
    feeder = kept.feeder if kept is not None and kept.tables == tables else feeder_from_tables(tables)
    inputs = stored_inputs(rows, feeder)
    if day_ahead is not None:
        inputs = dataclasses.replace(inputs, day_ahead=day_ahead)
    outcome, market = _clear_kept(kept, inputs, forecast, time_limit)
    return outcome, None if market is None else Kept(market[0], market[1], tables, feeder)


@dataclass(frozen=True, eq=False)
class DayAheadPositions:
    """What a real-time market's clearing reads of the awarded day-ahead market it refers to: that award's
    dispatch (``Disaggregation.clearing.dispatch``: the positions held, with their ``tan_phi``) and interval
    length (minutes). It is fixed once the day-ahead market is awarded, so a server computes it once per
    award and keeps it (much smaller than the whole disaggregation). ``key`` names it for a territory's
    workers (:class:`server.runner.Shared`): the day-ahead market's id and a digest of ``dispatch`` and
    ``interval_minutes``, so that a re-dispatched day-ahead market is another key."""

    key: str
    dispatch: pl.DataFrame
    interval_minutes: float

    @property
    def nbytes(self) -> int:
        """Estimated memory held (bytes)."""
        return self.dispatch.estimated_size()


def disaggregation_bytes(dis: Disaggregation) -> int:
    """Estimated memory (bytes) of a disaggregation's tables, its re-clear's included."""
    frames = [dis.award, dis.instructions, dis.fixed_load]
    frames += [v for v in vars(dis.clearing).values() if isinstance(v, pl.DataFrame)]
    return sum(f.estimated_size() for f in frames)


def day_ahead_positions(market_id: str, day_ahead: Disaggregation) -> DayAheadPositions:
    """The :class:`DayAheadPositions` of the awarded day-ahead market ``market_id`` of disaggregation
    ``day_ahead``."""
    dispatch = day_ahead.clearing.dispatch
    buf = io.BytesIO()
    dispatch.write_ipc(buf)
    h = hashlib.sha256(buf.getvalue())
    h.update(repr(day_ahead.interval_minutes).encode("utf-8"))
    return DayAheadPositions(f"{market_id}/{h.hexdigest()}", dispatch, day_ahead.interval_minutes)


def award_positions(market_id: str, rows, awards: list[tuple[int, float, str]], forecast: list[str], by_interval: bool,
                    time_limit: float | None = None) -> DayAheadPositions:
    """The :class:`DayAheadPositions` of the awarded day-ahead market ``market_id`` derived from its stored rows
    (``server.store.market_rows``) and award (``server.realtime_store.award_context``): what a server holds once
    it has disaggregated the award (:func:`whole_award`). What a territory's worker runs for a server that no
    longer holds them (restarted)."""
    outcome = whole_award(stored_inputs(rows), awards, by_interval, forecast, None, time_limit)
    if outcome.disaggregation is None:
        raise InputError("award", "market_id", f"the award of {market_id!r} no longer disaggregates: "
                         f"{'; '.join(outcome.diagnosis)}")
    return day_ahead_positions(market_id, outcome.disaggregation)


def _inputs_key(inputs: MarketInputs, time_limit: float | None) -> tuple[str, bool]:
    """Digest of everything a clearing of ``inputs`` reads except the ISO price forecast, and whether it
    leaves out the interval starts: where nothing but the bids names an interval (no load profile or
    forecast, no resources or activations, no network changes), the bids' intervals count by index, so
    that the same standing bids in the next real-time session match (:meth:`engine.runs.KeptMarket.relabel`)."""
    f = inputs.feeder
    by_index = ((f.load_profile is None or f.load_profile.height == 0) and not inputs.resources
                and (inputs.changes is None or inputs.changes.height == 0))
    intervals, bids = inputs.intervals, inputs.bids
    if by_index:
        intervals = len(intervals)
        bids = bids.with_columns(_interval_idx(inputs, bids["interval"]).alias("interval"))
    return _digest(f.network_digest, f.load_profile, inputs.rules, intervals, bids, inputs.resources,
                   inputs.changes, inputs.formulation, time_limit), by_index


def _clear_kept(kept: Kept | None, inputs: MarketInputs, forecast: list[str], time_limit: float | None,
                keep: bool = True, trace=None) -> tuple[ClearOutcome, tuple[str, KeptMarket] | None]:
    """The clearing of ``inputs`` on what was ``kept``, and (with ``keep``) the key and market to keep."""
    t0 = time.perf_counter()
    try:
        return _clear_market(inputs, forecast, time_limit, t0, kept, keep, trace)
    except InputError as exc:
        reason = str(exc)
    except ServiceError:   # the server's processes that traced the curves failed: no outcome, the caller's status
        raise
    except Exception as exc:  # a defect: logged with its traceback, the market keeps a reason
        log.exception("clearing failed")
        reason = f"the engine failed ({type(exc).__name__}); the server log has the details"
    return clearing_error(reason, time.perf_counter() - t0, inputs.network_version), None


def _clear_market(inputs: MarketInputs, forecast: list[str], time_limit: float | None, t0: float,
                  kept: Kept | None, keep: bool, trace=None) -> tuple[ClearOutcome, tuple[str, KeptMarket] | None]:
    book = validated_on = None   # the bids validated, and the feeder they were validated against
    if inputs.day_ahead is not None:
        # The curve the ISO awards from describes the feeder the award is disaggregated on. Holding positions
        # changes the feeder's loads, not its buses, so the bids validated against it are this same book.
        book, validated_on = inputs.book(), inputs.feeder
        inputs = dataclasses.replace(inputs, feeder=holding_day_ahead(
            inputs.feeder, book, inputs.day_ahead.dispatch, inputs.day_ahead.interval_minutes))
    rules = inputs.rules
    forecast = ([float(p) for p in forecast] if forecast else [(rules.price_floor + rules.price_cap) / 2.0])
    forecast = forecast * len(inputs.intervals) if len(forecast) == 1 else forecast
    version = inputs.network_version
    key, by_index = _inputs_key(inputs, time_limit) if keep else ("", False)
    warm = keep and kept is not None and kept.key == key
    kept_curves = None if not keep else (kept.market.curves if kept is not None else IntervalCurves())
    kept_offers = None if not keep else (kept.market.offers if kept is not None else OrderedDict())
    if warm and not by_index:
        book, market = kept.market.book, kept.market
    else:
        if book is None:
            book, validated_on = inputs.book(), inputs.feeder
        try:
            runs = inputs.runs(book)
        except InputError as exc:  # a set of changes that loops or islands load the stored checks did not see
            return clearing_error(str(exc), time.perf_counter() - t0, version), None
        if warm:
            market = kept.market
            market.relabel(runs, book, validated_on)   # the same bids, perhaps at the next session's starts
        else:
            market = KeptMarket(runs, book, rules, inputs.resources, inputs.options(time_limit), kept_curves,
                                kept_offers, validated_on)
    t_book = time.perf_counter()
    result = market.clear(forecast)
    t_clear = time.perf_counter()
    log.info("clearing: %d bid segments, %d intervals, %d buses; bids and network %.3f s, clear %.3f s (%s%s)",
             book.n, len(inputs.intervals), inputs.feeder.topology.n_bus, t_book - t0, t_clear - t_book,
             result.status, ", kept model" if market.reused else "")
    if not result.ok:
        # A failure always says why, and what the operator can do about it.
        diagnosis = _diagnosis(result.diagnosis) or (f"the solver ended with status {result.status!r} and named "
                                                     "no violated limit",)
        return ClearOutcome(result.status, diagnosis + (_WAY_OUT,), "", pl.DataFrame(), pl.DataFrame(),
                            [], "", time.perf_counter() - t0, _digest(result.status), version, warm), None
    try:
        curve = market.curve(forecast, trace)
    except InputError as exc:  # the market is feasible at the forecast but not across floor..cap
        return clearing_error(str(exc), time.perf_counter() - t0, version), None
    t_curve = time.perf_counter()
    warm = warm or market.reused   # a model kept from another market (a day-ahead interval's curve)
    offer, area = market.iso_offer(ISO_SEGMENTS)
    prices = _price_table(inputs, result)
    interface = result.interface.select(_interval_idx(inputs, result.interface["interval"]), "import_kw",
                                        pl.Series("iso_price", [decimal_text(p) for p in forecast]))
    curves = _curves(inputs, curve, offer)
    dispatch = result.dispatch.select("bid_id", "interval", "cleared_kw")
    log.info("clearing: curves %.3f s (%d bands, %d solves, %d bound flips%s), ISO offer and tables %.3f s; "
             "total %.3f s", t_curve - t_clear, curve.bands.height, curve.solves, curve.bound_flips,
             ", kept curve" if market.reused else "", time.perf_counter() - t_curve, time.perf_counter() - t0)
    return ClearOutcome("optimal", (), decimal_text(result.welfare), prices, interface, curves,
                        decimal_text(area), time.perf_counter() - t0,
                        _digest(prices, interface, dispatch, curves, area), version, warm), \
        (key, market) if keep else None


def only_intervals(inputs: MarketInputs, indices: list[int]) -> MarketInputs:
    """The market reduced to some of its intervals (by index, in that order) and their bids; their
    outcome's ``interval_idx`` are positions in ``indices``."""
    keep = [inputs.intervals[k] for k in indices]
    return dataclasses.replace(inputs, intervals=keep, bids=inputs.bids.filter(pl.col("interval").is_in(keep)))


def clear_intervals(inputs: MarketInputs, indices: list[int], forecast: list[str],
                    time_limit: float | None = None) -> ClearOutcome:
    """Clear some intervals of a market whose intervals are independent on their own (a rolling gate).

    Only the bids of those intervals take part; ``forecast`` as :func:`clear_market` takes it for them. The
    outcome's tables carry the market's interval indices.
    """
    out = clear_market(only_intervals(inputs, indices), forecast, time_limit)
    if out.status != "optimal":
        return out
    back = pl.col("interval_idx").replace_strict(dict(enumerate(indices)), return_dtype=pl.Int64)
    prices, interface = out.prices.with_columns(back), out.interface.with_columns(back)
    curves = [c | {"interval_idx": indices[c["interval_idx"]]} for c in out.curves]
    return dataclasses.replace(out, prices=prices, interface=interface, curves=curves,
                               digest=_digest(prices, interface, curves, out.area))


def _price_table(inputs: MarketInputs, result) -> pl.DataFrame:
    """DLMPs and their parts of a clearing, per bus and interval index, as decimal strings."""
    parts = ("dlmp", "energy", "congestion", "voltage", "loss")
    table = result.prices.select("bus", _interval_idx(inputs, result.prices["interval"]), *parts)
    return _decimals(table, parts)


def _curves(inputs: MarketInputs, curve, offer: pl.DataFrame) -> list[dict]:
    fixed = curve.fixed_net_load_kw
    fixed_kw = dict(zip(_interval_idx(inputs, fixed["interval"]).to_list(), fixed["fixed_kw"].to_list()))
    bands = _by_interval(inputs, curve.bands, ("price_low", "price_high", "import_kw"))
    steps = _by_interval(inputs, offer, ("kind", "segment", "price", "mw"))
    return [{
        "interval_idx": t, "fixed_kw": float(fixed_kw[t]), "conditional": bool(curve.conditional),
        "bands": [[decimal_text(lo), decimal_text(hi), float(q)] for lo, hi, q in bands[t]],
        # The ISO offer comes in MW; the API carries kW everywhere.
        "segments": [[kind, int(seg), "" if p is None else decimal_text(p), float(mw) * 1000.0]
                     for kind, seg, p, mw in steps[t]],
    } for t in range(len(inputs.intervals))]


def _by_interval(inputs: MarketInputs, table: pl.DataFrame, cols: tuple) -> list[list[tuple]]:
    """The rows (``cols``) of a table with an ``interval`` column, per interval index of the market, each in the
    table's order."""
    table = table.select(*cols, _interval_idx(inputs, table["interval"])).sort("interval_idx", maintain_order=True)
    ends = np.cumsum(np.bincount(table["interval_idx"].to_numpy(), minlength=len(inputs.intervals)))
    rows = list(zip(*(table[c].to_list() for c in cols)))
    return [rows[a:b] for a, b in zip(np.concatenate([[0], ends[:-1]]).tolist(), ends.tolist())]


# -- ISO award ---------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class AwardOutcome:
    """The disaggregation of an ISO award.

    ``awards``: aggregator_id, bid_id, resource_id (the aggregator's own ids),
    interval_idx, side, cleared_kw, price (DLMP at the bid's bus, decimal).
    ``instructions``: aggregator_id, resource_id, interval_idx, kw (net
    injection). ``disaggregation`` is the engine object, kept for settlement.
    """

    status: str
    diagnosis: tuple
    prices: pl.DataFrame
    awards: pl.DataFrame
    instructions: pl.DataFrame
    digest: str
    disaggregation: Disaggregation | None


def award_table(inputs: MarketInputs, awards: list[tuple[int, float, str]]) -> pl.DataFrame:
    """The engine's award table from ``(interval_idx, import_kw, price)`` rows; price '' = none."""
    return pl.DataFrame({
        "interval": pl.Series([inputs.intervals[t] for t, _, _ in awards], dtype=pl.Datetime("us", "UTC")),
        "import_kw": [q for _, q, _ in awards],
        "price": pl.Series([float(p) if p else None for _, _, p in awards], dtype=pl.Float64),
    })


def disaggregate_award(inputs: MarketInputs, awards: list[tuple[int, float, str]],
                       day_ahead: Disaggregation | None = None,
                       time_limit: float | None = None) -> AwardOutcome:
    """Re-clear at the ISO's award; a real-time market passes its day-ahead disaggregation (FailedPrecondition
    for a ``socp`` market)."""
    _check_awardable(inputs)
    book = inputs.book()
    dis = disaggregate_runs(inputs.runs(book), book, award_table(inputs, awards), inputs.rules,
                            inputs.resources, inputs.options(time_limit),
                            day_ahead=None if day_ahead is None else day_ahead.clearing.dispatch,
                            day_ahead_minutes=60.0 if day_ahead is None else day_ahead.interval_minutes)
    return _award_outcome(inputs, dis)


def _award_outcome(inputs: MarketInputs, dis: Disaggregation, only: list[int] | None = None) -> AwardOutcome:
    """The service's tables of a disaggregation (of the interval indices ``only``, default all)."""
    res = dis.clearing
    if not res.ok:
        empty = pl.DataFrame()
        return AwardOutcome(res.status, _diagnosis(res.diagnosis), empty, empty, empty, _digest(res.status),
                            None)
    prices = _price_table(inputs, res)
    bids = res.dispatch.join(res.prices.select("bus", "interval", "dlmp"), on=["bus", "interval"], how="left")
    awards_df = _decimals(bids.select("aggregator_id", _local_id("bid_id"), _local_id("resource_id"),
                                      _interval_idx(inputs, bids["interval"]), "side", "cleared_kw",
                                      pl.col("dlmp").alias("price")), ("price",))
    instr = dis.instructions.select("aggregator_id", _local_id("resource_id"),
                                    _interval_idx(inputs, dis.instructions["interval"]), "kw")
    if only is not None:
        prices, awards_df, instr = (t.filter(pl.col("interval_idx").is_in(only)) for t in (prices, awards_df, instr))
    return AwardOutcome("optimal", (), prices, awards_df, instr, _digest(prices, awards_df, instr), dis)


def _check_awardable(inputs: MarketInputs) -> None:
    """FailedPrecondition for a ``socp`` market: disaggregation re-clears a linear model, and re-clearing the
    award on another model than the market's would not be the market's dispatch."""
    if inputs.formulation == "socp":
        raise FailedPrecondition("formulation: the market clears on the socp model, whose awards cannot be "
                                 "disaggregated (an award re-clears a linear model): create the market with "
                                 "formulation lossaware or lossless to award it")


def disaggregate_rolling_award(inputs: MarketInputs, awards: list[tuple[int, float, str]], forecast: list[str],
                               day_ahead: Disaggregation | None = None, time_limit: float | None = None,
                               only: list[int] | None = None) -> AwardOutcome:
    """Interval-by-interval awards of a market whose resources link its intervals (storage, EV, ramps).

    ``awards`` are ``(interval_idx, import_kw, price)`` of every interval awarded so far; each interval
    is one step of :func:`engine.runs.disaggregate_rolling` in interval order (a submission of several
    intervals is taken interval by interval, so a recomputation from the stored awards repeats it):
    the intervals before it held at their dispatch, the open ones re-optimised at the clearing's
    ``forecast`` ISO prices (decimal strings, one or one per interval). The outcome's tables are those
    of the interval indices ``only`` (default every awarded one).
    """
    _check_awardable(inputs)
    book = inputs.book()
    fc = [float(p) for p in forecast] if forecast else None
    dis = disaggregate_rolling(inputs.runs(book), book, [award_table(inputs, [a]) for a in sorted(awards)],
                               inputs.rules, inputs.resources, inputs.options(time_limit),
                               day_ahead=None if day_ahead is None else day_ahead.clearing.dispatch,
                               day_ahead_minutes=60.0 if day_ahead is None else day_ahead.interval_minutes,
                               forecast=None if fc is None else (fc[0] if len(fc) == 1 else fc))
    return _award_outcome(inputs, dis, only)


def interval_award(inputs: MarketInputs, done: list[tuple[int, float, str]], awards: list[tuple[int, float, str]],
                   forecast: list[str], day_ahead: Disaggregation | None = None,
                   time_limit: float | None = None) -> AwardOutcome:
    """The ISO's award of some intervals of a market (``done``: the intervals awarded before), with the
    outcome's tables in the market's interval indices.

    Independent intervals are disaggregated on their own (:func:`disaggregate_intervals`). Where storage,
    EV or ramps link them, each award must be of the next intervals in order (FAILED_PRECONDITION naming
    the interval otherwise: the dispatched past is held, the open future re-optimised) and they are
    disaggregated by :func:`disaggregate_rolling_award`.
    """
    if not couples(inputs):
        return disaggregate_intervals(inputs, awards, day_ahead, time_limit)
    due = len(done) + np.arange(len(awards))
    given = np.array(sorted(k for k, _, _ in awards))
    if sorted(k for k, _, _ in done) != list(range(len(done))) or not np.array_equal(given, due):
        wrong = int(given[np.argmax(given != due)])
        raise FailedPrecondition(f"awards: interval {inputs.intervals[wrong].isoformat()} is not the next to award "
                                 f"({inputs.intervals[len(done)].isoformat()} is); a market whose storage, EV or "
                                 "ramp resources link its intervals is awarded in interval order")
    return disaggregate_rolling_award(inputs, list(done) + list(awards), forecast, day_ahead, time_limit,
                                      only=[k for k, _, _ in awards])


def whole_award(inputs: MarketInputs, awards: list[tuple[int, float, str]], by_interval: bool, forecast: list[str],
                day_ahead: Disaggregation | None = None, time_limit: float | None = None) -> AwardOutcome:
    """The disaggregation of an AWARDED market from its stored awards, as it was dispatched: interval by
    interval (:func:`disaggregate_rolling_award`) where it was so awarded and its intervals are linked,
    else at once (:func:`disaggregate_award`)."""
    if by_interval and couples(inputs):
        return disaggregate_rolling_award(inputs, awards, forecast, day_ahead, time_limit)
    return disaggregate_award(inputs, awards, day_ahead, time_limit)


@dataclass(frozen=True, eq=False)
class NetworkRedispatch:
    """The awarded intervals of a market re-dispatched on a new network version
    (:func:`engine.runs.redispatch_award`).

    ``intervals``: per re-dispatched interval ``interval_idx``, ``mode`` (redispatched, partial,
    failed), ``awarded_import_kw``, ``import_kw`` (the revised schedule: the delivered import, or the
    standing schedule when failed), ``shortfall_kw``, ``override`` (kept, dropped, or '' without one),
    ``reason``, and ``instructions`` ``(aggregator_id, resource_id, kw)`` of every resource after the
    re-dispatch (own ids; empty when failed). ``digest`` identifies it for a replay. ``prices``: the
    DLMPs of the re-dispatch (as :class:`AwardOutcome` has them, market interval indices) of the intervals
    not failed: the market's least-cost dispatch on the new network (an operator's override kept on top
    of it moves resources, not prices, as ``OverrideDispatch`` does), with ``prices_digest``.
    """

    intervals: list
    digest: str = ""
    prices: pl.DataFrame = dataclasses.field(default_factory=pl.DataFrame)
    prices_digest: str = ""


def standing_dispatch(inputs: MarketInputs, awards: list[tuple[int, float, str]], by_interval: bool,
                      forecast: list[str], day_ahead: Disaggregation | None = None,
                      time_limit: float | None = None) -> Disaggregation | None:
    """The dispatch of a market's awarded intervals as the server dispatched them (None if it fails now)."""
    if len(awards) < len(inputs.intervals) and not couples(inputs):
        outcome = disaggregate_intervals(inputs, awards, day_ahead, time_limit)
    else:
        outcome = whole_award(inputs, awards, by_interval or len(awards) < len(inputs.intervals), forecast,
                              day_ahead, time_limit)
    return outcome.disaggregation


_MODE_REASONS = {"redispatched": "the award re-dispatched on the new network",
                 "failed": "the award cannot be delivered on the new network; the dispatch stands unchanged"}


def redispatch_after_change(before: MarketInputs, after: MarketInputs, awards: list[tuple[int, float, str]],
                            by_interval: bool, touched: list[int], forecast: list[str],
                            scheduled: dict, day_ahead: Disaggregation | None = None,
                            time_limit: float | None = None, overrides: dict | None = None) -> NetworkRedispatch:
    """Re-dispatch the standing award of the ``touched`` interval indices on the network of ``after``.

    ``before`` is the market on the network its award was dispatched on, ``awards`` its stored awards,
    ``scheduled`` the current interface schedule (kW) of each touched interval. Every other awarded interval
    stays as dispatched; the open ones are re-optimised at the clearing's ``forecast``. ``overrides``: per
    interval index, the operator's overrides standing in it (rows ``aggregator_id, resource_id, bus, kw``, as
    :func:`redispatch_interval` takes them): they are constraints of the re-dispatch, applied on the new
    network as the override was (:func:`engine.overrides.redispatch`: the others held, or re-dispatched
    around it at the award's price); one the new network cannot carry is dropped, and the reason says so.
    """
    held = pl.DataFrame(schema={"bid_id": pl.Utf8, "interval": pl.Datetime("us", "UTC"), "cleared_kw": pl.Float64})
    local = {k: k for k in touched}
    if couples(after):
        standing = standing_dispatch(before, awards, by_interval, forecast, day_ahead, time_limit)
        keep = [iv for k, iv in enumerate(after.intervals) if k not in touched]
        if standing is not None:
            held = standing.clearing.dispatch.filter(pl.col("interval").is_in(keep) & ~pl.col("held").fill_null(False))
    else:
        # Independent intervals: the touched ones on their own (nothing else would be held, and an interval
        # still open that the new network cannot clear must not fail them).
        after, local, forecast = only_intervals(after, touched), {k: j for j, k in enumerate(touched)}, []
    book = after.book()
    fc = [float(p) for p in forecast] if forecast else None
    dis, report = redispatch_award(after.runs(book), book,
                                   award_table(after, [(local[k], q, p) for k, q, p in awards if k in local]),
                                   held, after.rules, after.resources, after.options(time_limit),
                                   day_ahead=None if day_ahead is None else day_ahead.clearing.dispatch,
                                   day_ahead_minutes=60.0 if day_ahead is None else day_ahead.interval_minutes,
                                   forecast=None if fc is None else (fc[0] if len(fc) == 1 else fc))
    awarded = dict((k, q) for k, q, _ in awards)
    buses = after.bids.select("aggregator_id", "resource_id", "bus").unique()
    out = []
    for k, row in zip(touched, report.iter_rows(named=True)):
        mode, fixed = row["mode"], (overrides or {}).get(k, [])
        shortfall = row["shortfall_kw"]
        iv = {"interval_idx": k, "mode": mode, "awarded_import_kw": float(awarded[k]),
              "import_kw": float(scheduled[k]) if mode == "failed" else float(row["import_kw"]),
              "shortfall_kw": None if mode == "failed" else float(shortfall), "override": "",
              "reason": _MODE_REASONS.get(mode) or f"only {row['import_kw']:.3f} of {awarded[k]:.3f} kW deliverable "
                                                   f"on the new network (shortfall {shortfall:.3f} kW)",
              "instructions": []}
        if mode != "failed":
            mine = dis.instructions.filter(pl.col("interval") == after.intervals[local[k]])
            iv["instructions"] = list(mine.select("aggregator_id", _local_id("resource_id"), "kw").iter_rows())
            if fixed:
                iv |= _keep_overrides(after, local[k], dis, mine.join(buses, on=["aggregator_id", "resource_id"]),
                                      fixed, iv["reason"], time_limit)
        elif fixed:  # nothing moves: the standing dispatch, overrides included, stays
            iv["override"] = "kept"
        out.append(iv)
    moved = {local[iv["interval_idx"]]: iv["interval_idx"] for iv in out if iv["mode"] != "failed"}
    prices = pl.DataFrame()
    if moved:
        prices = _price_table(after, dis.clearing).filter(pl.col("interval_idx").is_in(list(moved))).with_columns(
            pl.col("interval_idx").replace_strict(moved, return_dtype=pl.Int64)).sort("interval_idx", "bus")
    return NetworkRedispatch(out, _digest(out), prices, _digest(prices))


def _keep_overrides(after: MarketInputs, j: int, dis: Disaggregation, current: pl.DataFrame, fixed: list[dict],
                    reason: str, time_limit: float | None) -> dict:
    """The operator's overrides ``fixed`` of interval ``j`` of ``after`` applied on top of its network re-dispatch
    ``current`` (engine ids, with bus), at the award's price: the changed ``instructions``, ``import_kw``,
    ``override`` and ``reason``; the re-dispatch stands, and the reason names the overrides, when the new
    network cannot carry them."""
    price = float(dis.award.filter(pl.col("interval") == after.intervals[j])["price"][0])
    rows = current.select("aggregator_id", _local_id("resource_id"), "bus", "kw").to_dicts()
    names = ", ".join(f"{f['aggregator_id']}/{f['resource_id']} at {f['kw']:.3f} kW" for f in fixed)
    try:
        kept = redispatch_interval(after, j, price, rows, fixed, time_limit=time_limit)
    except InputError as exc:  # an overridden resource's bus is cut off from the feeder now
        kept = RedispatchOutcome("refused", (f"the new network no longer reaches it ({exc.reason})",), math.nan,
                                 pl.DataFrame())
    if kept.mode == "refused":
        return {"override": "dropped", "reason": f"{reason}; the override of {names} can no longer be honoured: "
                                                 + "; ".join(kept.diagnosis)}
    return {"override": "kept", "import_kw": float(kept.import_kw),
            "instructions": list(kept.instructions.iter_rows()),
            "reason": f"{reason}; the override of {names} is kept ({kept.mode})"}


def couples(inputs: MarketInputs) -> bool:
    """True when resources with bids link the market's intervals (storage, EV energy, ramps)."""
    return couples_intervals(inputs.book(), inputs.resources)


def disaggregate_intervals(inputs: MarketInputs, awards: list[tuple[int, float, str]],
                           day_ahead: Disaggregation | None = None,
                           time_limit: float | None = None) -> AwardOutcome:
    """The ISO's award of some intervals of a market whose intervals are independent, on their own.

    ``awards`` are ``(interval_idx, import_kw, price)`` of the market's interval indices; the bids of the
    other intervals take no part, and the outcome's tables carry the market's interval indices.
    """
    indices = [k for k, _, _ in awards]
    out = disaggregate_award(only_intervals(inputs, indices), [(j, q, p) for j, (_, q, p) in enumerate(awards)],
                             day_ahead, time_limit)
    if out.status != "optimal":
        return out
    back = pl.col("interval_idx").replace_strict(dict(enumerate(indices)), return_dtype=pl.Int64)
    prices, award_rows, instr = (t.with_columns(back) for t in (out.prices, out.awards, out.instructions))
    return dataclasses.replace(out, prices=prices, awards=award_rows, instructions=instr,
                               digest=_digest(prices, award_rows, instr))


@dataclass(frozen=True, eq=False)
class RedispatchOutcome:
    """An override or emergency instruction applied to one interval (:func:`engine.overrides.redispatch`).

    ``mode`` held, redispatched or refused; ``instructions``: aggregator_id, resource_id (own ids), kw for
    every resource after the change; ``import_kw`` the revised interface schedule.
    """

    mode: str
    diagnosis: tuple
    import_kw: float
    instructions: pl.DataFrame


def redispatch_interval(inputs: MarketInputs, k: int, iso_price: float, current: list[dict], fixed: list[dict],
                        import_max_kw: float | None = None, export_max_kw: float | None = None,
                        time_limit: float | None = None) -> RedispatchOutcome:
    """Apply an override (``fixed``) or interface caps to interval ``k`` of an awarded market.

    ``current`` and ``fixed`` are rows ``aggregator_id, resource_id`` (own ids), ``bus``, ``kw`` (net
    injection). The interval's network is the one its clearing used (network changes included).
    """
    sub = only_intervals(inputs, [k])
    book = sub.book()
    (run,) = sub.runs(book)

    def positions(rows: list[dict]) -> pl.DataFrame:
        table = pl.DataFrame(rows, schema={c: POSITION_SCHEMA[c] for c in ("aggregator_id", "resource_id", "bus",
                                                                               "kw")}, orient="row")
        return table.select("aggregator_id", _engine_id(pl.col("aggregator_id"), pl.col("resource_id"))
                            .alias("resource_id"), "bus", "kw", pl.lit(0.0).alias("tan_phi"))

    out = redispatch(run.feeder, run_book(book, run, inputs.rules), iso_price, positions(current), positions(fixed),
                     inputs.rules, inputs.options(time_limit), import_max_kw, export_max_kw)
    if out.mode == "refused":
        return RedispatchOutcome("refused", _diagnosis(out.diagnosis), float("nan"), pl.DataFrame())
    instr = out.disaggregation.instructions.select("aggregator_id", _local_id("resource_id"), "kw")
    return RedispatchOutcome(out.mode, (), out.import_kw, instr)


def curtailment_lines(inputs: MarketInputs, own: Disaggregation, moved: pl.DataFrame) -> pl.DataFrame:
    """Statement lines of instructed deviations from the award (:func:`engine.overrides.curtailment_payments`).

    ``moved``: aggregator_id, resource_id (own ids), interval_idx, kw: the final instruction of each resource
    an override, re-dispatch or emergency instruction moved. Returns two lines per deviation, in the statement
    columns: kind ``override`` (the deviation at the award's DLMP) and ``curtailment`` (the lost margin), with
    no bid, amounts rounded half-even to the cent.
    """
    cols = ("aggregator_id", "bid_id", "resource_id", "interval_idx", "kw", "kvar", "price", "price_q", "amount",
            "kind")
    if moved.height == 0:
        return pl.DataFrame(schema={c: (pl.Float64 if c in ("kw", "kvar") else pl.Int64 if c == "interval_idx"
                                        else pl.Utf8) for c in cols})
    stamps = pl.Series("interval", inputs.intervals, dtype=pl.Datetime("us", "UTC"))
    d = own.clearing.dispatch.filter(~pl.col("held"))
    dlmp = own.clearing.prices.select("bus", "interval", "dlmp")
    bus = d.group_by("aggregator_id", "resource_id").agg(pl.col("bus").first())
    awarded = (own.instructions.join(bus, on=["aggregator_id", "resource_id"], how="left")
               .join(dlmp, on=["bus", "interval"], how="left").drop("bus"))
    instructed = moved.select("aggregator_id", _engine_id(pl.col("aggregator_id"), pl.col("resource_id"))
                              .alias("resource_id"), stamps.gather(moved["interval_idx"]).alias("interval"), "kw")
    pay = curtailment_payments(awarded, d.select("aggregator_id", "resource_id", "interval", "side", "price",
                                                 "cleared_kw"), instructed, inputs.rules.hours)
    pay = pay.with_columns(_interval_idx(inputs, pay["interval"]), _local_id("resource_id"))
    rows = []
    for r in pay.iter_rows(named=True):
        for kind, kw, price, amount in (("override", r["delta_kw"], r["dlmp"], r["energy_amount"]),
                                        ("curtailment", abs(r["delta_kw"]), r["margin_price"],
                                         r["curtailment_amount"])):
            rows.append((r["aggregator_id"], "", r["resource_id"], r["interval_idx"], kw, 0.0, decimal_text(price),
                         "0", _money_text(_money(amount, ROUND_HALF_EVEN)), kind))
    return pl.DataFrame(rows, schema=list(cols), orient="row")


# -- settlement ----------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class SettleOutcome:
    """Statement lines of one market's bids (day ahead) or positions (real time), and the market's totals.

    ``statements``: aggregator_id, bid_id, resource_id, interval_idx, kw, kvar,
    price, price_q, amount (prices and amounts as decimal strings), kind (``energy`` or ``loss``, proto
    ``StatementKind``);
    ``totals`` maps names to decimal strings.
    """

    statements: pl.DataFrame
    totals: dict
    digest: str


def settle_market(inputs: MarketInputs, own: Disaggregation, reference: Disaggregation | None,
                  prices: pl.DataFrame | None = None) -> SettleOutcome:
    """Settle a market; a real-time market with a day-ahead reference settles its deviations.

    The engine settles a day-ahead market alone, or day-ahead and real time
    together; only this market's lines and totals are returned (the day-ahead
    market's were stored when it settled). ``prices``: ``bus, interval, dlmp, loss``
    to settle at instead of the clearing's (those listed for it, :func:`engine.settlement.at_prices`).
    """
    result = settle(own, prices=prices) if reference is None else settle(reference, own, prices)
    market = "day_ahead" if reference is None else "real_time"
    mine = (pl.col("market") == market) & pl.col("party").is_in(["bid", "position"])
    loss = own.clearing.prices if prices is None else prices
    lines = loss_components(result.statements.filter(mine), loss, inputs.rules.hours).sort(
        "interval", "aggregator_id", "bid_id", "resource_id", "kind")
    table = lines.select("aggregator_id", _local_id("bid_id"), _local_id("resource_id"),
                         _interval_idx(inputs, lines["interval"]), "kw", "kvar", "price",
                         pl.col("price_q").fill_null(0.0), "amount", "kind")
    statements = _decimals(table, ("price", "price_q", "amount"))
    totals = {k: decimal_text(v) for k, v in result.summary["markets"][market].items() if k != "lines"}
    return SettleOutcome(statements, totals, _digest(statements, sorted(totals.items())))


def settle_interval(inputs: MarketInputs, k: int, award: tuple[float, str], reference: Disaggregation | None,
                    moved: list[tuple], listed: list[tuple] | None = None) -> SettleOutcome:
    """Settle interval ``k`` of a market whose intervals are independent, on its own (a market awarded interval
    by interval settles each awarded interval once its meter window has passed).

    ``award``: the ISO's ``(import_kw, price)`` of the interval; ``moved``: ``(aggregator_id, resource_id, kw)``,
    the final instruction of each resource an override, re-dispatch or emergency instruction moved in it;
    ``listed``: ``(bus, dlmp, loss)`` (decimal texts per MWh), the prices listed for the interval (its award's
    or re-dispatch's), which it settles at (None: its dispatch's own). The lines are those :func:`settle_market`
    (and :func:`curtailment_lines`) give the interval in a settlement of the whole market; its totals are the
    interval's. FailedPrecondition when the award cannot be dispatched on the inputs' network.
    """
    sub = only_intervals(inputs, [k])
    own = disaggregate_award(sub, [(0, *award)], reference).disaggregation
    if own is None:
        raise FailedPrecondition(f"interval_start: the award of {inputs.intervals[k].isoformat()} cannot be "
                                 "dispatched on the market's network to settle it")
    prices = None if listed is None else pl.DataFrame(
        {"bus": [b for b, _, _ in listed], "interval": pl.Series([sub.intervals[0]] * len(listed),
                                                                 dtype=pl.Datetime("us", "UTC")),
         "dlmp": [float(d) for _, d, _ in listed], "loss": [float(x) for _, _, x in listed]})
    out = settle_market(sub, own, reference, prices)
    at_k = pl.lit(k, dtype=pl.Int64).alias("interval_idx")
    # The digest is of the settlement before the deviation lines, as :func:`with_lines` keeps it (a replay
    # recomputes the settlement, not the instructions that moved).
    digest = _digest(out.statements.with_columns(at_k), sorted(out.totals.items()))
    if moved:
        table = pl.DataFrame([(a, r, 0, kw) for a, r, kw in moved], schema=_POSITION_COLUMNS, orient="row")
        out = with_lines(out, curtailment_lines(sub, own, table))
    return SettleOutcome(out.statements.with_columns(at_k), out.totals, digest)


def sum_totals(totals: list[dict]) -> dict:
    """The totals of several settlements (decimal currency strings) added, key by key (a key one lacks is 0)."""
    keys = sorted({key for t in totals for key in t})
    return {key: _money_text(sum((Decimal(t.get(key, "0")) for t in totals), Decimal(0))) for key in keys}


def with_lines(outcome: SettleOutcome, lines: pl.DataFrame) -> SettleOutcome:
    """A settlement with extra statement lines (overrides: :func:`curtailment_lines`), their sums in the totals
    as ``override_energy`` and ``curtailment_payments`` (paid to aggregators, decimal currency)."""
    totals = dict(outcome.totals)
    for kind, name in (("override", "override_energy"), ("curtailment", "curtailment_payments")):
        amounts = lines.filter(pl.col("kind") == kind)["amount"].to_list()
        totals[name] = _money_text(sum((Decimal(a) for a in amounts), Decimal(0)))
    statements = pl.concat([outcome.statements, lines.cast(outcome.statements.schema)])
    return SettleOutcome(statements, totals, outcome.digest)


_KIND_DIRECTION = {"pv": "injection", "ev": "withdrawal", "flexible_load": "withdrawal", "battery": "both"}
_POSITION_COLUMNS = {"aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "interval_idx": pl.Int64, "kw": pl.Float64}


def _positions(intervals: list, rows: list[tuple], name: str = "kw") -> pl.DataFrame:
    t = pl.DataFrame(rows, schema=_POSITION_COLUMNS, orient="row")
    stamps = pl.Series("interval", intervals, dtype=pl.Datetime("us", "UTC"))
    return t.select("aggregator_id", "resource_id", stamps.gather(t["interval_idx"]).alias("interval"),
                    pl.col("kw").alias(name))


def check_meters(market: dict, rows: list[tuple], kinds: dict) -> None:
    """Resource readings ``(aggregator_id, resource_id, interval_idx, kw)`` checked by the engine's rules
    (duplicates, impossible signs); the interface meter's rows (resource_id '') are checked alone."""
    res = [r for r in rows if r[1]]
    directions = {res_id: _KIND_DIRECTION.get(kinds.get((agg, res_id)), "both") for agg, res_id, _, _ in res}
    try:
        intervals = market_intervals(market)
        validate_resource_meters(_positions(intervals, res), intervals, directions)
        iface = [r for r in rows if not r[1]]
        seen = set()
        for k, r in enumerate(iface):
            if r[2] in seen:
                raise InputError("meters", "interval", "a second reading of the interface", row=k)
            seen.add(r[2])
    except InputError as exc:
        raise InvalidArgument(f"readings.{exc.field}", exc.reason) from None


def _dr_baselines(inputs: MarketInputs, data: dict, instructed: pl.DataFrame) -> pl.DataFrame:
    """The baselines of the market's demand-response resources: ``aggregator_id, resource_id, interval,
    baseline_kw`` (load, withdrawal positive) of each flexible load with history whose instructions in this
    market are all reductions (net injection >= 0); InputError naming the resource when its history cannot
    make a baseline."""
    rows = []
    for (agg, res), b in sorted(data.get("baselines", {}).items()):
        mine = instructed.filter((pl.col("aggregator_id") == agg) & (pl.col("resource_id") == res))
        if mine.height == 0 or (mine["kw"] < 0).any():
            continue  # not instructed here, or instructed to consume: settled on its meter alone
        history = pl.DataFrame({"interval": pl.Series([us for us, _ in b["history"]], dtype=pl.Int64).cast(
            pl.Datetime("us", "UTC")), "kw": [-kw for _, kw in b["history"]]})
        event_days = {us_to_datetime(us).date() for us in b["events"]}
        try:
            base = baseline_10_of_10(history, list(inputs.intervals), event_days)
        except InputError as exc:
            raise InputError("baseline", "history", f"{res!r} of {agg!r}: {exc.reason}") from None
        rows += [(agg, res, iv, kw) for iv, kw in base.select("interval", "baseline_kw").iter_rows()]
    return pl.DataFrame(rows, schema={"aggregator_id": pl.Utf8, "resource_id": pl.Utf8,
                                      "interval": pl.Datetime("us", "UTC"), "baseline_kw": pl.Float64}, orient="row")


def metered_settlement(inputs: MarketInputs, data: dict, iso_prices: list[float]) -> dict:
    """Metered deviations and the interface imbalance of a market (:func:`engine.metering.settle_imbalance`).

    ``data`` as :func:`server.realtime_store.imbalance_inputs` reads it; ``iso_prices`` per interval (per
    MWh). Gaps (an instructed resource or an interface interval without a reading) raise InputError.
    A demand-response resource (:func:`_dr_baselines`) is measured against its baseline: its metered net
    injection relative to the baseline, ``metered + baseline_kw`` (= the delivered reduction), stands for its
    meter, so its deviation is delivered minus instructed reduction.
    Returns ``lines`` (aggregator_id, resource_id, interval_idx, deviation kW, DLMP text, amount text, kind),
    ``interface`` (JSON-ready rows), ``demand_response`` (JSON-ready rows of the baseline-settled lines) and
    ``totals`` (decimal texts; ``demand_response`` is the part of ``resources`` settled on baselines).
    """
    instructed = _positions(inputs.intervals, data["instructed"])
    readings = [r for r in data["readings"] if r[1]]
    directions = {res: _KIND_DIRECTION.get(kind, "both") for (_, res), kind in data["kinds"].items()}
    metered = validate_resource_meters(_positions(inputs.intervals, readings), inputs.intervals, directions,
                                       required=instructed)
    key = ["aggregator_id", "resource_id", "interval"]
    baselines = _dr_baselines(inputs, data, instructed)
    relative = _relative_to_baselines(metered, baselines)
    dlmp = _positions(inputs.intervals, [(a, r, t, float(p)) for a, r, t, p in data["dlmp"]], "dlmp")
    iface_rows = [(t, kw) for _, r, t, kw in data["readings"] if not r]
    iface = validate_interface_meters(pl.DataFrame({
        "interval": pl.Series([inputs.intervals[t] for t, _ in iface_rows], dtype=pl.Datetime("us", "UTC")),
        "import_kw": [kw for _, kw in iface_rows]}), inputs.intervals)
    scheduled = pl.DataFrame({"interval": pl.Series([inputs.intervals[t] for t, _, _ in data["scheduled"]],
                                                    dtype=pl.Datetime("us", "UTC")),
                              "import_kw": [q for _, q, _ in data["scheduled"]],
                              "price": [iso_prices[t] for t, _, _ in data["scheduled"]]})
    out = settle_imbalance(instructed, relative, dlmp, scheduled, iface, inputs.rules.hours)
    r = (out["resources"].join(baselines, on=key, how="left")
         .with_columns(_interval_idx(inputs, out["resources"]["interval"])))
    lines = [(a, res, t, dev, decimal_text(p), amt, "imbalance" if base is None else "demand_response")
             for a, res, t, dev, p, amt, base in r.select("aggregator_id", "resource_id", "interval_idx",
                                                           "deviation_kw", "dlmp", "amount", "baseline_kw").iter_rows()]
    demand_response = [{"aggregator_id": a, "resource_id": res, "interval_idx": t, "baseline_kw": base,
                        "metered_kw": base - rel, "delivered_kw": rel, "instructed_kw": ins, "deviation_kw": dev,
                        "price": decimal_text(p), "amount": amt}
                       for a, res, t, base, rel, ins, dev, p, amt in r.filter(pl.col("baseline_kw").is_not_null())
                       .select("aggregator_id", "resource_id", "interval_idx", "baseline_kw", "metered_kw",
                               "instructed_kw", "deviation_kw", "dlmp", "amount").iter_rows()]
    i = out["interface"].with_columns(_interval_idx(inputs, out["interface"]["interval"]))
    interface = [{"interval_idx": t, "scheduled_kw": s, "metered_kw": m, "imbalance_kw": d, "price": decimal_text(p),
                  "amount": amt} for t, s, m, d, p, amt in
                 i.select("interval_idx", "scheduled_kw", "metered_kw", "imbalance_kw", "price", "amount").iter_rows()]
    totals = {k: str(v) for k, v in out["totals"].items()}
    totals["demand_response"] = str(sum((Decimal(x["amount"]) for x in demand_response), Decimal("0.00")))
    return {"lines": lines, "interface": interface, "demand_response": demand_response, "totals": totals}


def _relative_to_baselines(metered: pl.DataFrame, baselines: pl.DataFrame) -> pl.DataFrame:
    """Metered net injection with each demand-response resource's baseline added (``metered + baseline_kw``:
    its delivered reduction), the way its instruction is meant (see :func:`metered_settlement`)."""
    key = ["aggregator_id", "resource_id", "interval"]
    return (metered.join(baselines, on=key, how="left")
            .with_columns((pl.col("kw") + pl.col("baseline_kw").fill_null(0.0)).alias("kw")).select(metered.columns))


def performance_rows(inputs: MarketInputs, data: dict, awarded: list[tuple]) -> pl.DataFrame:
    """Delivered against instructed per aggregator and interval (:func:`engine.metering.performance`); a
    demand-response resource delivers its reduction below its baseline (InputError when its history cannot
    make one)."""
    readings = [r for r in data["readings"] if r[1]]
    instructed = _positions(inputs.intervals, data["instructed"])
    metered = _relative_to_baselines(_positions(inputs.intervals, readings), _dr_baselines(inputs, data, instructed))
    out = performance(instructed, metered, _positions(inputs.intervals, awarded))
    return out.with_columns(_interval_idx(inputs, out["interval"]))


# -- flexibility auction ---------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _Intervals:
    intervals: list


def _money(x: float, rounding: str) -> Decimal:
    """An amount in currency to the cent; rounding to 1e-6 first keeps float noise from costing a cent."""
    return Decimal(f"{x:.6f}").quantize(Decimal("0.01"), rounding=rounding)


def _money_text(d: Decimal) -> str:
    text = format(d.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _need_table(needs: pl.DataFrame, intervals: list | None) -> pl.DataFrame:
    """The engine's needs table from stored need rows, in their order (no interval when ``intervals`` is None)."""
    rows = needs
    cols = [pl.col("need_id"), pl.col("kind"), pl.col("element"), pl.col("direction"), pl.col("required_kw"),
            pl.col("required_pu"), pl.col("max_price").cast(pl.Float64), pl.col("partial_ok").cast(pl.Boolean)]
    if intervals is not None:
        stamps = pl.Series("interval", intervals, dtype=pl.Datetime("us", "UTC"))
        cols.append(stamps.gather(rows["interval_idx"]).alias("interval"))
    return rows.select(cols)


_NEED_CHECK_SCHEMA = {"need_id": pl.Utf8, "kind": pl.Utf8, "element": pl.Utf8, "direction": pl.Utf8,
                      "required_kw": pl.Float64, "required_pu": pl.Float64, "max_price": pl.Utf8,
                      "partial_ok": pl.Boolean}


def check_flex_needs(feeder: Feeder, needs: list[dict]) -> None:
    """Check needs against the feeder with the engine's own rules (known line or bus, not the root bus).

    ``needs`` are the request's rows in request order (:func:`server.convert.flex_needs`); the first
    problem raises :class:`InvalidArgument` naming ``needs[k].field``.
    """
    table = pl.DataFrame([[r[c] for c in _NEED_CHECK_SCHEMA] for r in needs], schema=_NEED_CHECK_SCHEMA,
                         orient="row")
    try:
        validate_needs(_need_table(table, None), feeder)
    except InputError as exc:
        if exc.row is None:
            raise
        raise InvalidArgument(f"needs[{exc.row}].{exc.field}", exc.reason) from None


@dataclass(frozen=True, eq=False)
class FlexOutcome:
    """A cleared flexibility auction, in stored form.

    ``awards``: aggregator_id, offer_id, resource_id (the aggregator's own ids), bus, interval_idx,
    direction, quantity_kw, accepted_kw, price (decimal per MWh, '' when nothing is accepted),
    payment (decimal currency, rounded down to the cent), reason, conflict, need_ids (JSON list).
    ``needs``: need_id, kind, element, interval_idx, met, shortfall, shortfall_kw, cost (decimal
    currency), marginal_price (decimal, '' when none). Both are empty unless ``status == "optimal"``;
    ``total_cost`` is the sum of the payments, ``shortfall_cost`` the relief not bought at max_price.
    ``activations``: the accepted offers as :func:`market_inputs` folds them into the energy market
    (:data:`ACTIVATION_COLUMNS`, the aggregator's own resource ids, in offer order). ``committed``: the energy-market positions that
    used up capability (aggregator_id, resource_id, interval_idx, kw net injection; only resources and
    intervals with offers, nonzero kW).
    """

    status: str
    awards: pl.DataFrame
    needs: pl.DataFrame
    total_cost: str
    shortfall_cost: str
    seconds: float
    digest: str
    activations: pl.DataFrame = field(default_factory=pl.DataFrame)
    committed: pl.DataFrame = field(default_factory=pl.DataFrame)


def clear_flex(feeder: Feeder, market: dict, needs: pl.DataFrame, offers: pl.DataFrame, pricing: str,
               time_limit: float | None = None, committed: pl.DataFrame | None = None) -> FlexOutcome:
    """Clear the flexibility auction of a market.

    Parameters
    ----------
    market
        The market row: its intervals and interval length.
    needs
        Need rows (``server.store.FLEX_NEED_SCHEMA``; max_price a decimal string per MWh).
    offers
        Active offer rows with their resource's ``capacity_kw`` (``server.store.FLEX_OFFER_SCHEMA``).
    pricing
        ``pay_as_bid`` or ``uniform``.
    committed
        What each resource already sold in the market's energy award, per interval: rows
        ``aggregator_id, resource_id, interval_idx, kw`` (net injection, positive = up), or None.

    Notes
    -----
    Each resource may move at most its ``capacity_kw`` up and as much down per interval, across all
    its offers (the engine's capability table), less what it already sold in the energy market in
    that direction (``already_committed_kw = kw``: an award to inject uses up capability up, one to
    consume capability down); an offer cut by it gets reason ``capability`` and ``conflict``. The
    activations must create no new violation of the feeder's limits in the lossless LinDistFlow base
    case of the feeder's own load forecast in the intervals with needs
    (:meth:`engine.flexibility.BaseCase.from_feeder`).
    """
    t0 = time.perf_counter()
    ivs = _Intervals(market_intervals(market))
    stamps = pl.Series("interval", ivs.intervals, dtype=pl.Datetime("us", "UTC"))
    need_tab = _need_table(needs.sort("need_id"), ivs.intervals)
    rows = offers.sort("aggregator_id", "offer_id")
    offer_tab = rows.select(
        _engine_id(pl.col("aggregator_id"), pl.col("offer_id")).alias("offer_id"), "aggregator_id",
        _engine_id(pl.col("aggregator_id"), pl.col("resource_id")).alias("resource_id"), "bus",
        stamps.gather(rows["interval_idx"]).alias("interval"), "direction", "quantity_kw",
        pl.col("price").cast(pl.Float64), pl.col("availability_price").cast(pl.Float64),
        pl.col("divisible").cast(pl.Boolean), "min_kw", "tan_phi")
    capabilities = (offer_tab.select("resource_id", "interval").with_columns(rows["capacity_kw"])
                    .unique(["resource_id", "interval"], maintain_order=True)
                    .select("resource_id", "interval", pl.col("capacity_kw").alias("capability_up_kw"),
                            pl.col("capacity_kw").alias("capability_down_kw")))
    capabilities, used = _committed(capabilities, committed, ivs)
    watched = sorted(set(need_tab["interval"].to_list()))
    result = clear_flexibility(feeder, need_tab, offer_tab, capabilities, base=BaseCase.from_feeder(feeder, watched),
                               pricing=pricing, interval_minutes=float(market["interval_minutes"]),
                               time_limit=time_limit)
    seconds = time.perf_counter() - t0
    if result.status != "optimal":
        return FlexOutcome(result.status, pl.DataFrame(), pl.DataFrame(), "", "", seconds,
                           _digest(result.status), committed=used)
    a = result.awards
    payments = [_money(p, ROUND_FLOOR) for p in a["payment"].to_list()]
    awards = a.select(
        "aggregator_id", _local_id("offer_id"), _local_id("resource_id"), "bus",
        _interval_idx(ivs, a["interval"]), "direction", "quantity_kw", "accepted_kw",
        pl.Series("price", ["" if p is None else decimal_text(p) for p in a["price"].to_list()], dtype=pl.Utf8),
        pl.Series("payment", [_money_text(p) for p in payments], dtype=pl.Utf8),
        pl.col("reason").fill_null(""), "conflict",
        pl.Series("need_ids", [json.dumps(ids) for ids in a["need_ids"].to_list()], dtype=pl.Utf8))
    n = result.needs
    need_out = n.select(
        "need_id", "kind", pl.col("element").fill_null(""), _interval_idx(ivs, n["interval"]), "met",
        "shortfall", "shortfall_kw",
        pl.Series("cost", [_money_text(_money(c, ROUND_HALF_EVEN)) for c in n["cost"].to_list()], dtype=pl.Utf8),
        pl.Series("marginal_price", ["" if p is None else decimal_text(p) for p in n["marginal_price"].to_list()],
                  dtype=pl.Utf8))
    total = _money_text(sum(payments, Decimal(0)))
    shortfall = _money_text(_money(result.shortfall_cost, ROUND_HALF_EVEN))
    accepted = a.filter(pl.col("accepted_kw") > 0)
    activations = accepted.select("bus", _interval_idx(ivs, accepted["interval"]), "direction", "accepted_kw",
                                  "tan_phi", "aggregator_id", _local_id("resource_id"))
    return FlexOutcome("optimal", awards, need_out, total, shortfall, seconds,
                       _digest(awards, need_out, total, shortfall), activations, used)


def _committed(capabilities: pl.DataFrame, committed: pl.DataFrame | None,
               ivs: _Intervals) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The capability table with ``already_committed_kw`` from energy-market positions, and the positions used.

    ``capabilities`` has engine resource ids and interval timestamps; ``committed`` is in stored form
    (see :func:`clear_flex`). Positions of resources or intervals without offers do not matter and are
    left out of the returned ``used`` table (stored form, nonzero kW only).
    """
    schema = {"aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "interval_idx": pl.Int64, "kw": pl.Float64}
    if committed is None or not committed.height:
        return capabilities.with_columns(pl.lit(0.0).alias("already_committed_kw")), pl.DataFrame(schema=schema)
    stamps = pl.Series("interval", ivs.intervals, dtype=pl.Datetime("us", "UTC"))
    rows = committed.sort("aggregator_id", "resource_id", "interval_idx")
    positions = (rows.select(_engine_id(pl.col("aggregator_id"), pl.col("resource_id")).alias("resource_id"),
                             stamps.gather(rows["interval_idx"]).alias("interval"), "kw")
                 .group_by("resource_id", "interval", maintain_order=True).agg(pl.col("kw").sum()))
    caps = (capabilities.join(positions, on=["resource_id", "interval"], how="left", maintain_order="left")
            .with_columns(pl.col("kw").fill_null(0.0).alias("already_committed_kw")).drop("kw"))
    hit = positions.join(capabilities.select("resource_id", "interval"), on=["resource_id", "interval"], how="semi",
                         maintain_order="left").filter(pl.col("kw") != 0.0)
    used = hit.select(pl.col("resource_id").str.splitn(_SEP, 2).struct.field("field_0").alias("aggregator_id"),
                      _local_id("resource_id"), _interval_idx(ivs, hit["interval"]), "kw")
    return caps, used.cast(schema)

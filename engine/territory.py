"""A DSO territory: many T-D interfaces, each cleared on its own.

A territory is a set of interfaces. An interface is what the ISO sees as one
node: one feeder, or several feeders behind one substation transformer, whose
rating is the interface's import and export limit. Interfaces share nothing
(their markets, curves and failures are independent), which is what lets an
executor outside the engine fan them out over processes or machines
(``dsomarket.server.runner``).

This module holds the per-interface pieces an executor needs:

- :func:`substation`: several feeders behind one transformer merged into the
  one radial feeder that the interface clears (their roots become the
  substation busbar);
- :class:`InterfaceSession`: one interface's market, built once and kept, so
  that a real-time re-clear at a new ISO price re-solves the day-ahead model
  warm (HiGHS keeps its basis) instead of rebuilding it;
- :class:`IntervalCurves`: the curves of single intervals an interface's worker
  keeps by the model each was traced on, so that a real-time session whose
  interval is the same model as a day-ahead interval (the same bids and fixed
  load on the same network) takes that interval's curve instead of tracing it;
- :func:`synthetic_territory`: seeded feeders and bids for tests and benchmarks.

Units and signs are the engine's: kW, per MWh, import ``P0 > 0`` from the ISO.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import polars as pl

from dsomarket.engine.bids import (BidBook, MarketRules, Resource, canonical, couples_intervals, for_interval,
                                   resources_for_interval, validate_bids)
from dsomarket.engine.clearing import ClearingOptions, ClearingResult, NodalMarket, clear, iso_prices
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import synthetic
from dsomarket.engine.lindistflow import market_loads
from dsomarket.engine.network import Feeder

if TYPE_CHECKING:   # imported where a curve is traced: a clearing (prices_for) never loads the curve modules
    from dsomarket.engine.interface import InterfaceCurve

SUBSTATION_BUS = "substation"
"""Bus id of the shared busbar (the T-D interface) of a multi-feeder interface."""


@dataclass(frozen=True, eq=False)
class Interface:
    """One T-D interface of a territory, ready to clear.

    Attributes
    ----------
    interface_id
        Name the ISO knows the interface by.
    feeder
        The radial network below it (several feeders merged by :func:`substation`).
    bids
        Bid table of the interface (columns of :mod:`engine.bids`), bus ids of ``feeder``.
    members
        Names of the feeders behind the interface.
    resources
        Intertemporal resources and commitments of the bids (:func:`engine.bids.parse_resources`).
    """

    interface_id: str
    feeder: Feeder
    bids: pl.DataFrame
    members: tuple[str, ...]
    resources: tuple[Resource, ...] = ()


def substation(interface_id: str, feeders: Sequence[Feeder], bids: Sequence[pl.DataFrame],
               import_max_kw: float = math.inf, export_max_kw: float = math.inf,
               resources: tuple[Resource, ...] = ()) -> Interface:
    """Feeders behind one substation transformer as one interface.

    Parameters
    ----------
    interface_id
        The interface's name.
    feeders, bids
        The member feeders and one bid table per member (bus ids of that member).
    import_max_kw, export_max_kw
        The transformer's limits on import from (and export to) the ISO, kW; ``inf`` = none.
    resources
        Resources of the interface's bids (resource ids are unique across members).

    Returns
    -------
    Interface
        One member without limits is returned as it is (its outputs equal a
        standalone clearing of that feeder). Otherwise the member roots become
        the bus ``substation``; every other bus and line id is prefixed with its
        feeder's name and ``/``; impedances are referred to the first member's
        base voltage (``z * (kv_first / kv_member)^2``, which keeps each line's
        per-unit impedance); the members' fixed root loads add up at the
        busbar. Bid ids must be unique across members.

    Raises
    ------
    InputError
        No member; members with different names, root voltages, or their own
        interface limits (behind a shared transformer a feeder head is limited
        by its first line's ``s_max_kva``).
    """
    if not feeders or len(feeders) != len(bids):
        raise InputError("territory", "feeders", f"interface {interface_id!r} needs one bid table per feeder "
                         f"and at least one feeder")
    names = tuple(f.name for f in feeders)
    if len(set(names)) != len(names):
        raise InputError("territory", "feeders", f"interface {interface_id!r} lists a feeder twice")
    if len(feeders) == 1:
        f = feeders[0]
        if math.isfinite(import_max_kw) or math.isfinite(export_max_kw):
            f = f.with_changes(import_max_kw=min(import_max_kw, f.import_max_kw),
                               export_max_kw=min(export_max_kw, f.export_max_kw))
        return Interface(interface_id, f, bids[0], names, resources)
    first = feeders[0]
    for f in feeders:
        if f.v0_pu != first.v0_pu:
            raise InputError("territory", "v0_pu", f"feeder {f.name!r} holds {f.v0_pu} pu at its root, "
                             f"{first.name!r} {first.v0_pu}: feeders on one busbar share its voltage")
        if math.isfinite(f.import_max_kw) or math.isfinite(f.export_max_kw):
            raise InputError("territory", "import_max_kw", f"feeder {f.name!r} has its own interface limit but "
                             f"sits behind substation {interface_id!r}: rate its head line instead")
    roots = [f.buses.filter(pl.col("bus") == f.root_bus) for f in feeders]
    root = roots[0].select("vmin_pu", "vmax_pu").with_columns(
        bus=pl.lit(SUBSTATION_BUS), load_kw=pl.lit(sum(float(r["load_kw"][0]) for r in roots)),
        load_kvar=pl.lit(sum(float(r["load_kvar"][0]) for r in roots)))
    bus_parts = [root.select("bus", "vmin_pu", "vmax_pu", "load_kw", "load_kvar")]
    line_parts, profile_parts, bid_parts = [], [], []
    for f, b in zip(feeders, bids, strict=True):
        rename = _renamer(f)
        bus_parts.append(f.buses.filter(pl.col("bus") != f.root_bus).with_columns(rename(pl.col("bus")))
                         .select("bus", "vmin_pu", "vmax_pu", "load_kw", "load_kvar"))
        z = (first.base_kv / f.base_kv) ** 2
        line_parts.append(f.lines.with_columns(
            (pl.lit(f.name + "/") + pl.col("line")).alias("line"), rename(pl.col("from_bus")),
            rename(pl.col("to_bus")), pl.col("r_ohm") * z, pl.col("x_ohm") * z))
        if f.load_profile is not None and f.load_profile.height:
            profile_parts.append(f.load_profile.with_columns(rename(pl.col("bus"))))
        if "bus" in b.columns:
            b = b.with_columns(rename(pl.col("bus").cast(pl.Utf8)))
        bid_parts.append(b)
    header = {"name": interface_id, "root_bus": SUBSTATION_BUS, "base_kv": first.base_kv, "v0_pu": first.v0_pu,
              "import_max_kw": import_max_kw if math.isfinite(import_max_kw) else None,
              "export_max_kw": export_max_kw if math.isfinite(export_max_kw) else None}
    merged = Feeder.from_tables(header, pl.concat(bus_parts), pl.concat(line_parts, how="diagonal_relaxed"),
                                pl.concat(profile_parts) if profile_parts else None)
    return Interface(interface_id, merged, pl.concat(bid_parts, how="diagonal_relaxed"), names, resources)


def _renamer(f: Feeder):
    """Bus ids of a member in the merged feeder: its root is the busbar, the rest are prefixed."""
    prefix = f.name + "/"

    def rename(col: pl.Expr) -> pl.Expr:
        return pl.when(col == f.root_bus).then(pl.lit(SUBSTATION_BUS)).otherwise(pl.lit(prefix) + col).alias(
            col.meta.output_name())

    return rename


def prices_for(book: BidBook, iso_price: float | Mapping[datetime, float]) -> np.ndarray:
    """ISO price per interval of a bid book (per MWh).

    ``iso_price`` is one price for every interval or a mapping from interval
    start (UTC) to price; InputError names the first interval without a price.
    """
    if isinstance(iso_price, Mapping):
        missing = [iv for iv in book.intervals if iv not in iso_price]
        if missing:
            raise InputError("iso_price", "interval", f"no price for interval {missing[0]}")
        return np.array([iso_price[iv] for iv in book.intervals], dtype=float)
    return iso_prices(iso_price, book.n_interval)


class InterfaceSession:
    """One interface's market, kept built between clearing cycles.

    The first :meth:`clear` builds the LinDistFlow model exactly as
    :func:`engine.clearing.clear` does (so its result is that of a standalone
    clearing); later calls change the ISO price in place and re-solve from the
    last basis (the loss-aware model re-linearises from where the last cycle
    converged). The SOCP formulation has no warm model and re-clears cold.

    Parameters
    ----------
    interface
        The interface and its bids.
    rules, options
        Market rules and clearing options, as for :func:`engine.clearing.clear`.

    Raises
    ------
    InputError
        For bids that do not fit the feeder or the rules.
    """

    def __init__(self, interface: Interface, rules: MarketRules = MarketRules(),
                 options: ClearingOptions = ClearingOptions()):
        self.interface, self.rules, self.options = interface, rules, options
        self.book = validate_bids(interface.bids, interface.feeder, rules)
        self._market: NodalMarket | None = None

    @property
    def warm(self) -> bool:
        """True once a model is built, so the next :meth:`clear` re-solves warm."""
        return self._market is not None

    def clear(self, iso_price: float | Mapping[datetime, float]) -> ClearingResult:
        """Clear at an ISO price (per MWh; one, or one per interval start); see :func:`prices_for`."""
        prices = prices_for(self.book, iso_price)
        f, rules, res = self.interface.feeder, self.rules, self.interface.resources
        if self.options.formulation == "socp":
            return clear(f, self.book, prices, rules=rules, resources=res, options=self.options)
        if self._market is None:
            # The book was validated against this feeder: its bus indices are permuted, not looked up again.
            self._market = NodalMarket(f, canonical(self.book, f, rules, indexed=True), prices, rules, res,
                                       self.options)
        else:
            self._market.set_iso_price(prices)
        return self._market.solve()

    def curve(self, forecast: float | None = None, **socp_options) -> InterfaceCurve:
        """The interface curve (:func:`engine.interface.trace_curve`) of the same market, traced on the model
        the last :meth:`clear` solved where that is one lossless interval (from the clearing's basis)."""
        from dsomarket.engine.interface import trace_curve

        i = self.interface
        return trace_curve(i.feeder, self.book, self.rules, i.resources, self.options, forecast=forecast,
                           market=self._market, **socp_options)


KEPT_INTERVALS = 48
"""Single-interval curves one :class:`IntervalCurves` keeps at most (two days of hourly intervals)."""

_MODEL_COLUMNS = ("bus", "side", "quantity_kw", "price", "tan_phi", "resource_id")
"""The bid columns a single interval's LP reads (in the canonical order of its bids; the ids only order them)."""


class IntervalCurves:
    """Curves of single intervals, kept by the model each was traced on.

    Intervals that nothing couples are separate problems, and :func:`engine.interface.trace_curve` traces
    each on a model of its own: the network, the interval's bids in canonical order and its fixed load,
    under the market's price limits and formulation (and the interval's commitments of flexibility sold).
    Whatever else differs (the interval's start or length,
    the bids' ids, the ISO price forecast) does not enter that model. A day-ahead clearing therefore leaves
    the curve that a real-time session re-uses for an interval whose model is the same (standing bids bid
    again, the same positions held), and a real-time session leaves its interval's curve for the next
    session of the same model. Each interval's curve is the one :func:`trace_curve` of that interval alone
    gives, so the whole curve equals a fresh trace's (bands, fixed load, solves; only ``seconds`` differ).

    Parameters
    ----------
    limit
        Intervals kept at most; the least recently used are dropped first.
    """

    def __init__(self, limit: int = KEPT_INTERVALS):
        self.limit = limit
        self._curves: OrderedDict[str, InterfaceCurve] = OrderedDict()
        self.reused = 0   # intervals the last :meth:`trace` took from what was kept

    @staticmethod
    def applies(book: BidBook, resources: tuple[Resource, ...], options: ClearingOptions) -> bool:
        """Whether a curve of ``book`` is made of single-interval models: an LP formulation, timed intervals
        that no resource couples."""
        return (options.formulation != "socp" and None not in book.intervals
                and not couples_intervals(book, resources))

    def trace(self, feeder: Feeder, book: BidBook, rules: MarketRules, resources: tuple[Resource, ...],
              options: ClearingOptions, forecast, market: NodalMarket | None = None) -> InterfaceCurve:
        """:func:`engine.interface.trace_curve` of a book :meth:`applies` to, interval by interval, taking each
        interval whose model was traced before from what is kept (the count is :attr:`reused`).

        ``forecast`` (per MWh, scalar or one per interval) is passed on; it does not change the curves of
        uncoupled intervals. ``market``: the caller's solved market of these inputs (its clearing's), which
        a one-interval curve not kept is traced on (``trace_curve``'s ``market``).
        """
        from dsomarket.engine.interface import _fixed_table, join_curves, trace_curve

        t0 = time.perf_counter()
        book = canonical(book, feeder, rules)
        T = book.n_interval
        fc = np.broadcast_to(np.asarray(forecast, dtype=float), (T,)).copy()
        load_p, load_q = market_loads(feeder, book)
        # The interval length enters only what couples intervals: a 5-minute interval is the 60-minute model.
        network = _digest(feeder.network_digest, repr(dataclasses.replace(rules, interval_minutes=60.0)),
                          repr(dataclasses.replace(options, ac_check=False)))
        pieces, self.reused = [], 0
        for t in range(T):
            one, own = for_interval(book, t), resources_for_interval(resources, book.intervals[t])
            cols = [c for c in _MODEL_COLUMNS if c in one.table.columns]
            key = _digest(network, one.table.select(cols).write_csv(), load_p[:, t].tobytes(), load_q[:, t].tobytes(),
                          repr([dataclasses.replace(r, interval=None) for r in own]))
            curve = self._curves.get(key)
            if curve is None:
                curve = trace_curve(feeder, one, rules, own, options, forecast=fc[t:t + 1],
                                    load_p_kw=load_p[:, t:t + 1], load_q_kvar=load_q[:, t:t + 1],
                                    market=market if T == 1 else None)
                self._curves[key] = curve
                while len(self._curves) > self.limit:
                    self._curves.popitem(last=False)
            else:
                self._curves.move_to_end(key)
                self.reused += 1
            pieces.append(_at_interval(curve, book.intervals[t]))
        # The fixed load summed over the whole (bus x interval) array, as trace_curve sums it (a column summed
        # on its own can differ in the last bit); seconds are this call's, most intervals being kept ones.
        return dataclasses.replace(join_curves(pieces, fc), fixed_net_load_kw=_fixed_table(book, load_p),
                                   seconds=time.perf_counter() - t0)


def _at_interval(curve: InterfaceCurve, start: datetime) -> InterfaceCurve:
    """A single-interval curve's bands labelled with another interval start."""
    bands = curve.bands.with_columns(pl.lit(start, dtype=curve.bands.schema["interval"]).alias("interval"))
    return dataclasses.replace(curve, bands=bands)


def _digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def synthetic_bids(feeder: Feeder, n: int, seed: int, prefix: str = "b") -> pl.DataFrame:
    """``n`` seeded single-interval bids on a feeder's non-root buses.

    Half buys and half sells on average, 1-30 kW, prices uniform over -50..250
    per MWh to the cent, ids ``<prefix>00000``...; aggregator ``agg<k>`` by bus.
    """
    rng = np.random.default_rng(seed)
    buses = feeder.topology.bus_ids[1:].astype(str)
    at = rng.choice(buses, n) if len(buses) else np.array([], dtype=str)
    return pl.DataFrame({"bid_id": [f"{prefix}{k:05d}" for k in range(n)], "bus": at,
                         "side": np.where(rng.random(n) < 0.5, "buy", "sell"),
                         "quantity_kw": np.round(rng.uniform(1, 30, n), 1),
                         "price": np.round(rng.uniform(-50, 250, n), 2),
                         "aggregator_id": [f"agg{len(b) % 7}" for b in at]},
                        schema={"bid_id": pl.Utf8, "bus": pl.Utf8, "side": pl.Utf8, "quantity_kw": pl.Float64,
                                "price": pl.Float64, "aggregator_id": pl.Utf8})


def synthetic_territory(n_feeders: int, n_buses: int, n_bids: int, seed: int
                        ) -> list[tuple[Feeder, pl.DataFrame]]:
    """Seeded feeders and bids of a territory: feeder ``k`` is ``feeder-<k>``, its bids ``feeder-<k>-b<j>``.

    Each feeder is :func:`engine.feeders.synthetic` and its bids
    :func:`synthetic_bids`, both seeded from ``(seed, k)``, so one feeder does
    not change when the territory grows.
    """
    for name, value in (("feeders", n_feeders), ("buses", n_buses), ("bids", n_bids), ("seed", seed)):
        if not isinstance(value, (int, np.integer)) or value < (1 if name == "feeders" else 0):
            raise InputError("territory", name, f"must be a {'positive' if name == 'feeders' else 'non-negative'} "
                             f"integer (got {value!r})")
    return [synthetic_member(k, n_feeders, n_buses, n_bids, seed) for k in range(n_feeders)]


def synthetic_member(k: int, n_feeders: int, n_buses: int, n_bids: int, seed: int) -> tuple[Feeder, pl.DataFrame]:
    """Feeder ``k`` of :func:`synthetic_territory` and its bids, built alone (in the worker that clears it)."""
    width = max(4, len(str(n_feeders - 1)))
    s_feeder, s_bids = (int(v) for v in np.random.SeedSequence([seed, k]).generate_state(2))
    f = synthetic(n_buses, s_feeder).with_changes(name=f"feeder-{k:0{width}d}")
    return f, synthetic_bids(f, n_bids, s_bids, prefix=f"{f.name}-b")

"""Clearing options and results shared by every formulation (LP, loss-aware LP, SOCP).

The formulation modules (:mod:`engine.lindistflow`, :mod:`engine.losses`,
:mod:`engine.socp`) and the orchestrator (:mod:`engine.clearing`) all import
these types from here, so no formulation imports the orchestrator.

Sign conventions: DLMP at a bus is the cost of one more kW *withdrawn* there,
per MWh. ``dlmp = energy + loss + congestion + voltage`` where ``energy`` is
the ISO price at the interface, ``loss`` the marginal losses priced at it,
``congestion`` collects thermal limits and any interface import/export limit,
and ``voltage`` the voltage limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from dsomarket.engine import lindistflow
from dsomarket.engine.bids import BidBook, merge_columns
from dsomarket.engine.errors import InputError
from dsomarket.engine.network import S_BASE_KVA, Feeder

FORMULATIONS = ("lossaware", "lossless", "lindistflow", "socp")
"""Names of the clearing models; ``lindistflow`` is the lossless LP under its older name."""
LOSSLESS = ("lossless", "lindistflow")
EXACT_GAP = 1e-4
"""Relative SOCP relaxation gap above which the dispatch is flagged as possibly not physical."""
ECOS_MAX_BUSES = 500
ROUND_KW = 6  # decimals of kW kept in outputs: sub-milliwatt solver noise is not a dispatch


@dataclass(frozen=True)
class ClearingOptions:
    """How to clear.

    Attributes
    ----------
    formulation
        ``lossaware`` (the LinDistFlow LP linearised at the AC operating point and
        iterated to it: AC-accurate prices with a loss component, :mod:`engine.losses`),
        ``lossless`` or its alias ``lindistflow`` (the LinDistFlow LP without losses) or
        ``socp`` (the branch-flow SOCP relaxation with losses).
    polygon_sides
        Sides of the inscribed polygon approximating each thermal limit in the LP.
    ac_check
        Run an AC power flow of the cleared dispatch and report the linear model's error.
    time_limit
        Seconds the solver may take; ``None`` for no limit.
    socp_solver
        ``ecos``, ``clarabel`` or ``auto``: ECOS up to ``ECOS_MAX_BUSES`` buses
        (tighter cones on small feeders), Clarabel above (ECOS returns
        inaccurate answers from about 1,000 buses).
    """

    formulation: str = "lossaware"
    polygon_sides: int = lindistflow.POLYGON_SIDES
    ac_check: bool = True
    time_limit: float | None = None
    socp_solver: str = "auto"

    def __post_init__(self):
        if self.formulation not in FORMULATIONS:
            raise InputError("options", "formulation", f"must be one of {FORMULATIONS} "
                             f"(got {self.formulation!r})")
        if self.socp_solver not in ("auto", "ecos", "clarabel"):
            raise InputError("options", "socp_solver", f"must be auto, ecos or clarabel (got {self.socp_solver!r})")


@dataclass(frozen=True, eq=False)
class TableLayout:
    """The columns of a market's result tables that its solution does not change, built once per
    (feeder, bid book): a kept market's re-clears (a territory's real-time cycles) reuse them instead of
    rebuilding a thousand buses' id and interval columns each cycle.

    ``bus``/``bus_interval`` label the (T, n) per-bus rows, ``line``/``line_interval`` the (T, m) per-line
    rows, ``interval`` the T interface rows; ``s_lim`` is each line row's rating (kVA, ``inf`` =
    unlimited); ``bids`` is the dispatch table without ``cleared_kw``.
    """

    bus: pl.Series
    bus_interval: pl.Series
    line: pl.Series
    line_interval: pl.Series
    interval: pl.Series
    s_lim: np.ndarray
    bids: pl.DataFrame

    @classmethod
    def of(cls, feeder: Feeder, book: BidBook) -> TableLayout:
        """The layout of the tables of a market of ``feeder`` and ``book`` (the book's order and intervals)."""
        topo, ivs, T = feeder.topology, book.intervals, book.n_interval
        # The id columns depend on the network and the interval count alone: made once per feeder.
        return cls(bus=topo.memo(("bus column", T), lambda: _id_column(topo.bus_ids, T).alias("bus")),
                   bus_interval=_iv_column(ivs, np.repeat(np.arange(T), topo.n_bus)),
                   line=topo.memo(("line column", T), lambda: _id_column(topo.line_ids, T).alias("line")),
                   line_interval=_iv_column(ivs, np.repeat(np.arange(T), topo.n_line)),
                   interval=_iv_column(ivs, np.arange(T)), s_lim=np.tile(topo.s_max_kva, T),
                   bids=dispatch_columns(book.table))


_BID_COLUMNS = ("bid_id", "interval", "bus", "side", "aggregator_id", "resource_id", "price", "quantity_kw",
                "tan_phi")
"""The bid book's columns a dispatch table repeats, before ``cleared_kw``."""


def dispatch_columns(table: pl.DataFrame) -> pl.DataFrame:
    """``table``'s :data:`_BID_COLUMNS` in that order: its own columns in a new frame, as ``select`` gives them
    without a query's planning (a third of select's cost at 10,000 bids)."""
    return pl.DataFrame([table.get_column(name) for name in _BID_COLUMNS])


@dataclass(frozen=True, eq=False)
class MarketContext:
    """What a formulation's arrays need around them to become result tables.

    ``layout``: the market's kept :class:`TableLayout` of ``feeder`` and ``book`` (None: built per call).
    """

    feeder: Feeder
    book: BidBook
    iso_price: np.ndarray
    formulation: str
    build_seconds: float
    layout: TableLayout | None = None


@dataclass(frozen=True, eq=False)
class ClearingResult:
    """Outcome of one clearing; tables are in kW, kvar, pu and per MWh.

    ``dispatch``: bid_id, interval, bus, side, aggregator_id, resource_id, price,
    quantity_kw, tan_phi, cleared_kw, in (interval, bid_id) order. ``prices``: bus, interval, dlmp, energy, congestion,
    voltage, loss, dlmp_q (reactive, per Mvarh). ``lines``: line, interval,
    p_kw, q_kvar (from_bus -> to_bus as given), loading_pct (null where
    unlimited). ``buses``: bus, interval, v_pu. ``interface``: interval,
    import_kw, import_kvar, iso_price. ``welfare`` is in currency over all
    intervals (buyers' value minus sellers' cost minus the ISO energy bill).
    """

    status: str
    formulation: str
    intervals: list
    welfare: float
    dispatch: pl.DataFrame
    prices: pl.DataFrame
    lines: pl.DataFrame
    buses: pl.DataFrame
    interface: pl.DataFrame
    solver: str
    build_seconds: float
    solve_seconds: float
    diagnosis: tuple = ()
    shed: pl.DataFrame | None = None
    ac_check: dict | None = None
    relaxation_gap: float | None = None
    convergence: dict | None = None

    @property
    def ok(self) -> bool:
        return self.status == "optimal"

    @property
    def interface_import_kw(self) -> np.ndarray:
        return self.interface["import_kw"].to_numpy()

    def warnings(self) -> list[str]:
        """Why this optimal dispatch may not hold on the physical feeder (empty when it does).

        The AC power flow of the dispatch violates a voltage or thermal limit or does
        not converge; the SOCP's relaxation gap exceeds ``EXACT_GAP``; or the loss-aware
        iteration stopped before the AC power flow and the LP agreed.
        """
        out = []
        ac = self.ac_check
        if ac is not None and not ac.get("converged", True):
            out.append("the AC power flow of the dispatch does not converge")
        for v in (ac or {}).get("violations", [])[:3]:
            unit = "%" if v["limit"] == "line_thermal" else " pu"
            out.append(f"AC power flow: {v['limit']} at {v['element']}"
                       + (f" ({v['interval']})" if v["interval"] else "") + f": {v['value']:.4f}{unit} "
                       f"against {v['bound']:g}{unit}")
        more = len((ac or {}).get("violations", [])) - 3
        if more > 0:
            out.append(f"{more} more AC violations in summary.json")
        if self.relaxation_gap is not None and self.relaxation_gap > EXACT_GAP:
            out.append(f"SOCP relaxation gap {self.relaxation_gap:.3g} above {EXACT_GAP:g}: "
                       "the dispatch may not be physical")
        if self.convergence is not None and not self.convergence["converged"]:
            out.append(f"loss-aware iteration stopped after {self.convergence['iterations']} solves with "
                       f"import residual {self.convergence['residual_import_kw']:.3g} kW")
        return out

    def summary(self) -> dict:
        """The JSON-ready summary written as ``summary.json``."""
        out = {
            "status": self.status,
            "formulation": self.formulation,
            "welfare": self.welfare,
            "interface_import_kw": (self.interface_import_kw.tolist() if len(self.intervals) > 1
                                    else (float(self.interface_import_kw[0]) if self.ok else None)),
            "solver": self.solver,
            "build_seconds": self.build_seconds,
            "solve_seconds": self.solve_seconds,
            "intervals": [None if iv is None else iv.isoformat() for iv in self.intervals],
            "ac_check": self.ac_check,
        }
        if self.diagnosis:
            out["diagnosis"] = list(self.diagnosis)
        if self.relaxation_gap is not None:
            out["relaxation_gap"] = self.relaxation_gap
        if self.convergence is not None:
            out["convergence"] = self.convergence
        if self.ok:
            out["warnings"] = self.warnings()
        if self.shed is not None and self.shed.height:
            out["shed_kw"] = float(self.shed["shed_kw"].sum())
        return out


def iso_prices(iso_price, T: int) -> np.ndarray:
    p = np.atleast_1d(np.asarray(iso_price, dtype=float))
    if p.size == 1:
        p = np.repeat(p, T)
    if p.shape != (T,):
        raise InputError("iso_price", "iso_price", f"needs one price per interval ({T}), got {p.size}")
    if not np.all(np.isfinite(p)):
        raise InputError("iso_price", "iso_price", "must be finite")
    return p


def pro_rata(book: BidBook, x: np.ndarray) -> np.ndarray:
    """Share the cleared total of identical bids in proportion to their quantities.

    Bids at the same bus, interval, side, price, tan_phi and resource are the
    same column of the LP up to its bound, so any split of their total is
    optimal; the solver's vertex picks one arbitrarily. Splitting pro rata makes
    the outcome fair and independent of input order. (:class:`NodalMarket`
    merges such bids into one column before building its model.)
    """
    columns = merge_columns(book)
    return columns.split(columns.total(x), book)


def _iv_column(intervals: list, t_idx: np.ndarray) -> pl.Series:
    """The interval start of each index (a gather: a column of a thousand buses' rows is no Python loop)."""
    column = pl.Series("interval", intervals, dtype=pl.Datetime("us", "UTC"))
    if len(intervals) == 1:    # one value repeated (an untimed market's null): no gather of an index array
        return column.new_from_index(0, len(t_idx))
    return column.gather(np.asarray(t_idx, dtype=np.int64))


def _id_column(ids: np.ndarray, T: int) -> pl.Series:
    """Bus or line ids (the topology's, strings) repeated for ``T`` intervals, as text: from a list, which
    polars takes in a seventh of the time numpy's fixed-width strings (``astype(str)``) cost at 1,000 buses."""
    return pl.Series(np.tile(ids, T).tolist(), dtype=pl.Utf8)


def _tables(market: MarketContext, status: str, x, line_p, line_q, v, p0, q0, y_p, y_q, parts, welfare,
            solve_seconds, shed=None, ac=None, solver="highs", gap=None, convergence=None,
            losses_kw=None) -> ClearingResult:
    """Result tables from arrays in MW / pu, shaped (T, n) per bus and (T, m) per line.

    ``losses_kw`` (per interval) are the model's line losses, the import less the net
    withdrawal it serves: zero in the lossless LP.
    """
    feeder, book = market.feeder, market.book
    topo = feeder.topology
    ivs = book.intervals
    lay = market.layout or TableLayout.of(feeder, book)
    # Round first, then clip: rounding a full acceptance up must not exceed the bid.
    cleared = np.clip(np.round(x * S_BASE_KVA, ROUND_KW), 0.0, book.quantity_kw) + 0.0
    dispatch = lay.bids.hstack([pl.Series("cleared_kw", cleared)])
    energy, congestion, voltage, loss = parts
    # + 0.0 turns the solver's signed zeros into plain zeros in the files.
    prices = pl.DataFrame([lay.bus, lay.bus_interval] + [
        pl.Series(name, a.ravel() + 0.0) for name, a in (("dlmp", y_p), ("energy", energy), ("congestion", congestion),
                                                         ("voltage", voltage), ("loss", loss), ("dlmp_q", y_q))])
    p_kw = np.round(line_p * S_BASE_KVA * topo.line_sign[None, :], ROUND_KW) + 0.0
    q_kvar = np.round(line_q * S_BASE_KVA * topo.line_sign[None, :], ROUND_KW) + 0.0
    loading = np.hypot(p_kw, q_kvar).ravel() / lay.s_lim * 100.0
    lines = pl.DataFrame([lay.line, lay.line_interval, pl.Series("p_kw", p_kw.ravel()),
                          pl.Series("q_kvar", q_kvar.ravel()),
                          pl.Series("loading_pct", np.where(np.isfinite(lay.s_lim), loading, np.nan), nan_to_null=True)])
    buses = pl.DataFrame([lay.bus, lay.bus_interval, pl.Series("v_pu", np.sqrt(np.maximum(v.ravel(), 0.0)))])
    T = book.n_interval
    interface = pl.DataFrame([lay.interval, pl.Series("import_kw", np.round(p0 * S_BASE_KVA, ROUND_KW) + 0.0),
                              pl.Series("import_kvar", np.round(q0 * S_BASE_KVA, ROUND_KW) + 0.0),
                              pl.Series("iso_price", market.iso_price),
                              pl.Series("losses_kw", np.round(np.zeros(T) if losses_kw is None else losses_kw,
                                                              ROUND_KW) + 0.0)])
    shed_df = None
    if shed is not None:
        tt, jj = np.nonzero(shed > 1e-6)
        shed_df = pl.DataFrame({"bus": topo.bus_ids[jj].astype(str), "interval": _iv_column(ivs, tt),
                                "shed_kw": shed[tt, jj]})
    return ClearingResult(status=status, formulation=market.formulation, intervals=list(ivs),
                          welfare=float(welfare), dispatch=dispatch, prices=prices, lines=lines, buses=buses,
                          interface=interface, solver=solver, build_seconds=market.build_seconds,
                          solve_seconds=solve_seconds, shed=shed_df, ac_check=ac, relaxation_gap=gap,
                          convergence=convergence)


def _failed(market: MarketContext, status: str, solve_seconds: float, diagnosis: tuple,
            solver: str = "highs") -> ClearingResult:
    empty = pl.DataFrame()
    dispatch = dispatch_columns(market.book.table).with_columns(cleared_kw=pl.lit(None, pl.Float64))
    return ClearingResult(status=status, formulation=market.formulation,
                          intervals=list(market.book.intervals), welfare=float("nan"), dispatch=dispatch,
                          prices=empty, lines=empty, buses=empty,
                          interface=pl.DataFrame({"interval": _iv_column(market.book.intervals,
                                                                         np.arange(market.book.n_interval)),
                                                  "import_kw": np.full(market.book.n_interval, np.nan)}),
                          solver=solver, build_seconds=market.build_seconds, solve_seconds=solve_seconds,
                          diagnosis=diagnosis)


VIOLATION_TOL_V_PU = 1e-5
"""A voltage of the AC power flow beyond its limit by more than this (pu) is a violation."""
VIOLATION_TOL_PCT = 0.01
"""A line loading of the AC power flow above 100 % by more than this (percentage points) is a violation."""


def ac_check(feeder: Feeder, book: BidBook, x_mw: np.ndarray, line_p, line_q, v, loads, shed_kw=None) -> dict:
    """AC power flow of the cleared dispatch, interval by interval, against the linear model and the limits.

    Returns a JSON-ready dict: ``converged``; ``losses_kw`` (worst interval);
    ``min_v_pu`` / ``min_v_bus`` and ``max_v_pu`` / ``max_v_bus``; the worst
    voltage (pu) and sending-end flow (kW) error of the linear model;
    ``max_loading_pct`` with ``max_loading_line`` and ``max_loading_end``
    (``sending`` or ``receiving``: apparent power at each end over its rating);
    and ``violations``, every bus voltage outside ``[vmin, vmax]`` by more than
    ``VIOLATION_TOL_V_PU`` and every line end above its rating by more than
    ``VIOLATION_TOL_PCT``, each ``{limit, element, interval, value, bound}``
    (``limit`` is ``bus_v_min``, ``bus_v_max`` or ``line_thermal``; values in pu or %);
    ``import_kw``, the AC power flow's interface import per interval (losses included).
    ``ok`` is true when the power flow converged and nothing is violated.
    """
    from dsomarket.engine.powerflow import ac_power_flow, linear_model_error

    topo = feeder.topology
    w_p, w_q = net_withdrawal(feeder, book, x_mw, loads, shed_kw)
    worst: dict = {"losses_kw": 0.0, "min_v_pu": np.inf, "min_v_bus": None, "max_v_pu": -np.inf,
                   "max_v_bus": None, "max_v_error_pu": 0.0, "max_flow_error_kw": 0.0, "converged": True,
                   "max_loading_pct": None, "max_loading_line": None, "max_loading_end": None}
    violations: list[dict] = []
    imports: list[float] = []
    rating = topo.s_max_kva
    rated = np.isfinite(rating)
    for t in range(book.n_interval):
        iv = None if book.intervals[t] is None else book.intervals[t].isoformat()
        pf = ac_power_flow(feeder, w_p[:, t], w_q[:, t])
        worst["converged"] &= bool(pf.converged)
        worst["losses_kw"] = max(worst["losses_kw"], float(pf.losses_kw))
        imports.append(float(pf.p0_kw))
        if pf.min_v_pu < worst["min_v_pu"]:
            worst["min_v_pu"], worst["min_v_bus"] = float(pf.min_v_pu), str(pf.min_v_bus)
            if book.n_interval > 1:
                worst["min_v_interval"] = iv
        k_hi = int(np.argmax(pf.v_pu))
        if pf.v_pu[k_hi] > worst["max_v_pu"]:
            worst["max_v_pu"], worst["max_v_bus"] = float(pf.v_pu[k_hi]), str(topo.bus_ids[k_hi])
        err = linear_model_error(feeder, w_p[:, t], w_q[:, t], np.sqrt(np.maximum(v[t], 0)),
                                 line_p[t] * S_BASE_KVA, line_q[t] * S_BASE_KVA, ac=pf)
        worst["max_v_error_pu"] = max(worst["max_v_error_pu"], float(err["max_v_error_pu"]))
        worst["max_flow_error_kw"] = max(worst["max_flow_error_kw"], float(err["max_flow_error_kw"]))
        for limit, bad, bound in (("bus_v_min", pf.v_pu < topo.vmin_pu - VIOLATION_TOL_V_PU, topo.vmin_pu),
                                  ("bus_v_max", pf.v_pu > topo.vmax_pu + VIOLATION_TOL_V_PU, topo.vmax_pu)):
            bad[0] = False   # the root is held by the ISO's side, not a limit of this market
            violations += [{"limit": limit, "element": str(topo.bus_ids[j]), "interval": iv,
                            "value": float(pf.v_pu[j]), "bound": float(bound[j])} for j in np.nonzero(bad)[0]]
        if rated.any():
            ends = np.stack([np.hypot(pf.line_p_kw, pf.line_q_kvar),
                             np.hypot(pf.line_p_recv_kw, pf.line_q_recv_kvar)])
            loading = np.where(rated, ends / np.where(rated, rating, 1.0) * 100.0, -np.inf)
            e, k = np.unravel_index(int(np.argmax(loading)), loading.shape)
            if worst["max_loading_pct"] is None or loading[e, k] > worst["max_loading_pct"]:
                worst["max_loading_pct"] = float(loading[e, k])
                worst["max_loading_line"] = str(topo.line_ids[k])
                worst["max_loading_end"] = ("sending", "receiving")[e]
            over = loading.max(axis=0)
            violations += [{"limit": "line_thermal", "element": str(topo.line_ids[k]), "interval": iv,
                            "value": float(over[k]), "bound": 100.0}
                           for k in np.nonzero(over > 100.0 + VIOLATION_TOL_PCT)[0]]
    worst["import_kw"] = imports
    worst["violations"] = violations
    worst["ok"] = bool(worst["converged"]) and not violations
    return worst


def net_withdrawal(feeder: Feeder, book: BidBook, x_mw: np.ndarray, loads, shed_kw=None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Net withdrawal per bus (topology order) and interval, kW and kvar, shape (n, T).

    Fixed load plus cleared buys minus cleared sells minus shed load.
    """
    load_p, load_q = loads
    w_p = load_p.astype(float).copy()
    w_q = load_q.astype(float).copy()
    kw = x_mw * S_BASE_KVA * book.withdraw_sign
    np.add.at(w_p, (book.bus_idx, book.t_idx), kw)
    np.add.at(w_q, (book.bus_idx, book.t_idx), kw * book.tan_phi)
    if shed_kw is not None:
        ratio = np.divide(load_q, load_p, out=np.zeros_like(load_q, dtype=float), where=load_p > 0)
        w_p -= shed_kw.T
        w_q -= shed_kw.T * ratio
    return w_p, w_q

"""Local flexibility auction: the DSO buys activations that relieve its own network needs.

A *need* is posted by the DSO for one interval: remove flow from a line, move a
bus voltage, or cut the interface import (or export). An *offer* is an
aggregator's activation of one resource at one bus: ``up`` = more injection or
less consumption, ``down`` = the reverse. The auction buys the cheapest mix of
offers that meets each need through the feeder's LinDistFlow sensitivities,
creates no new violation on the monitored lines and buses, and never sells a
resource's kW twice (flexibility vs energy market vs direct ISO participation).

Tables
------
needs (one row per need)

============== ======== =========================================================
column         type     meaning
============== ======== =========================================================
need_id        str      unique
kind           str      ``line``, ``voltage`` or ``import``
element        str      line id (``line``), bus id (``voltage``); ignored for ``import``
direction      str      ``line``/``import``: ``forward`` (default) relieves flow in the
                        line's ``from_bus -> to_bus`` input direction (for ``import``:
                        cuts the import), ``reverse`` the opposite flow (for ``import``:
                        the export). ``voltage``: ``raise`` (default) or ``lower``
interval       datetime UTC start of the interval; null or empty for a single interval
required_kw    float    > 0, kW of flow to remove (``line`` and ``import`` needs)
required_pu    float    > 0, change of LinDistFlow's squared voltage ``v = |V|^2`` at the
                        bus, per unit (``voltage`` needs; near 1 pu a change of
                        ``d`` in ``|V|`` is about ``2 d`` in ``v``)
max_price      float    >= 0, per MWh: the most the DSO pays for one MWh of relief
partial_ok     bool     default false: whether part of the need is worth buying
============== ======== =========================================================

offers (one row per offer)

=================== ======== ====================================================
column              type     meaning
=================== ======== ====================================================
offer_id            str      unique
aggregator_id       str      who answers for the offer
resource_id         str      the DER; one bus per resource
bus                 str      feeder bus the resource sits at
interval            datetime as for needs; an offer only serves needs of its interval
direction           str      ``up`` (more injection / less load) or ``down``
quantity_kw         float    > 0, the most that may be accepted
price               float    >= 0, per MWh activated
availability_price  float    >= 0, per MW made available per hour (default 0)
divisible           bool     default true; false = all or nothing
min_kw              float    >= 0, smallest acceptable part of a divisible offer (default 0)
tan_phi             float    kvar moved per kW moved, same sign (default 0)
=================== ======== ====================================================

capabilities (optional; one row per resource and interval)

==================== ======== ===================================================
resource_id          str      the DER
interval             datetime as above
capability_up_kw     float    >= 0, the most the resource can move up in the interval
capability_down_kw   float    >= 0, the most it can move down
already_committed_kw float    kW already sold elsewhere (energy market, direct ISO
                              participation); positive = up, negative = down;
                              it uses up capability in its own direction (default 0)
==================== ======== ===================================================

Clearing (see :func:`build_model` for the equations) minimises the DSO's cost: the
offers' prices plus, for relief not bought, each need's ``max_price``. Choices made:

- A need with ``partial_ok`` has a continuous shortfall priced at ``max_price`` per MWh,
  so no kW of relief is bought dearer than that. Any other need is met in full or not
  at all (a binary): it is met when meeting it in full costs at most ``max_price`` per
  MWh *on average*, so one dear offer may be bought along with cheap ones.
- A voltage need's requirement is turned into MW of relief at its own bus (divided by
  twice the bus's path resistance); its ``max_price`` and marginal price are per MWh of
  that relief, so an offer elsewhere counts for its share of the bus's sensitivity.
- Only offers with a positive effect on some need of their interval are candidates: the
  auction never buys a counter-trade to repair another offer's side effect. With a
  :class:`BaseCase` given, the side effects must create no new violation.
- Indivisible offers and all-or-nothing needs make a MILP; its binaries are then fixed
  and the LP re-solved, so that needs get duals (marginal prices) and offers marginal
  values, which decide the reason codes and the uniform prices.
- Ties between equal offers are broken by the solver, deterministically for equal input.

Sign conventions follow :mod:`engine.network`: injection is positive, line flow
``P_l > 0`` runs away from the root inside the engine and is reported in the
input's ``from_bus -> to_bus`` direction, interface import ``P0 > 0`` buys from
the ISO. Prices are per MWh, powers in kW at the boundary and in MW (per unit
on ``S_BASE_KVA``) inside the model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import polars as pl
import scipy.sparse as sp

from dsomarket.engine.errors import InputError
from dsomarket.engine.network import S_BASE_KVA, Feeder, Topology, _normalise, _utc, as_polars
from dsomarket.engine.solver import HighsSolver, LinearModel

NEED_KINDS = ("line", "voltage", "import")
NEED_DIRECTIONS = {"line": ("forward", "reverse"), "import": ("forward", "reverse"),
                   "voltage": ("raise", "lower")}
OFFER_DIRECTIONS = ("up", "down")
PRICING = ("pay_as_bid", "uniform")
REASONS = ("accepted", "price", "location", "capability", "not_needed", "min_kw")
"""Why an offer got what it got, in the order they are decided:

- ``accepted``: some kW accepted (see ``accepted_kw``);
- ``location``: no positive effect on any need of its interval (e.g. upstream of the
  congested line), or its side effects would break a monitored limit;
- ``price``: dearer than the alternatives, or than the needs' ``max_price``;
- ``capability``: worth buying, but its resource's capability was used up;
- ``min_kw``: worth buying in part, but not in the indivisible size offered;
- ``not_needed``: as cheap as the accepted offers, but the needs were already met.
"""

ROUND_KW = 6  # decimals of kW kept in outputs: sub-milliwatt solver noise is not an award
_UTC = pl.Datetime("us", "UTC")
_NO_INTERVAL = np.iinfo(np.int64).min
_SENS_TOL = 1e-9  # relief per kW below which an offer counts as having no effect

NEED_SCHEMA = {"need_id": pl.Utf8, "kind": pl.Utf8, "element": pl.Utf8, "direction": pl.Utf8,
               "interval": _UTC, "required_kw": pl.Float64, "required_pu": pl.Float64,
               "max_price": pl.Float64, "partial_ok": pl.Boolean}
OFFER_SCHEMA = {"offer_id": pl.Utf8, "aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "bus": pl.Utf8,
                "interval": _UTC, "direction": pl.Utf8, "quantity_kw": pl.Float64, "price": pl.Float64,
                "availability_price": pl.Float64, "divisible": pl.Boolean, "min_kw": pl.Float64,
                "tan_phi": pl.Float64}
CAPABILITY_SCHEMA = {"resource_id": pl.Utf8, "interval": _UTC, "capability_up_kw": pl.Float64,
                     "capability_down_kw": pl.Float64, "already_committed_kw": pl.Float64}
BASE_LINE_SCHEMA = {"line": pl.Utf8, "interval": _UTC, "p_kw": pl.Float64, "p_min_kw": pl.Float64,
                    "p_max_kw": pl.Float64}
BASE_BUS_SCHEMA = {"bus": pl.Utf8, "interval": _UTC, "v_pu": pl.Float64, "vmin_pu": pl.Float64,
                   "vmax_pu": pl.Float64}
BASE_INTERFACE_SCHEMA = {"interval": _UTC, "import_kw": pl.Float64, "import_max_kw": pl.Float64,
                         "export_max_kw": pl.Float64}


# -- inputs ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FlexNeed:
    """One need of the DSO, for building a needs table in code (see the module notes).

    Attributes
    ----------
    need_id
        Unique id.
    kind
        ``line``, ``voltage`` or ``import``.
    max_price
        Per MWh of relief, >= 0.
    element
        Line id or bus id; empty for ``import``.
    direction
        ``forward``/``reverse`` (line, import), ``raise``/``lower`` (voltage); empty
        for the kind's default (``forward``, ``raise``).
    required_kw
        kW of flow to remove (line, import).
    required_pu
        Change of the squared voltage ``v = |V|^2``, per unit (voltage).
    interval
        UTC timestamp (ISO 8601 text or aware datetime), or None for a single interval.
    partial_ok
        Whether part of the need is worth buying.
    """

    need_id: str
    kind: str
    max_price: float
    element: str = ""
    direction: str = ""
    required_kw: float | None = None
    required_pu: float | None = None
    interval: str | datetime | None = None
    partial_ok: bool = False


def needs_table(needs: Iterable[FlexNeed]) -> pl.DataFrame:
    """A needs table (the form :func:`clear_flexibility` takes) from :class:`FlexNeed` objects."""
    rows = [{"need_id": n.need_id, "kind": n.kind, "element": n.element, "direction": n.direction,
             "interval": None if n.interval is None else str(n.interval), "required_kw": n.required_kw,
             "required_pu": n.required_pu, "max_price": n.max_price, "partial_ok": n.partial_ok}
            for n in needs]
    schema = {**NEED_SCHEMA, "interval": pl.Utf8}
    return pl.DataFrame(rows, schema=schema)


@dataclass(frozen=True)
class BaseCase:
    """The forecast operating point the activations are added to, with the limits to keep.

    Only the elements listed here are monitored, and only where a finite limit
    applies. An element already outside its limit in the base case may not get
    worse, but need not be repaired: the activations create no *new* violation.

    Attributes
    ----------
    lines
        ``line, interval, p_kw[, p_min_kw, p_max_kw]``: active flow in the input's
        ``from_bus -> to_bus`` direction, kW; limits default to ``-/+ s_max_kva``
        (the operator derates them for reactive flow where it matters).
    buses
        ``bus, interval, v_pu[, vmin_pu, vmax_pu]``: voltage magnitude, per unit;
        limits default to the feeder's.
    interface
        ``interval, import_kw[, import_max_kw, export_max_kw]``: interface import,
        kW (negative = export); limits default to the feeder's.
    """

    lines: pl.DataFrame | None = None
    buses: pl.DataFrame | None = None
    interface: pl.DataFrame | None = None

    @staticmethod
    def from_feeder(feeder: Feeder, intervals: list | None = None) -> BaseCase:
        """The lossless LinDistFlow operating point of the feeder's own load forecast.

        Parameters
        ----------
        feeder
            Its fixed loads (and load profile, per interval) are the forecast.
        intervals
            UTC timestamps (aware datetimes); None for a single interval.

        Returns
        -------
        BaseCase
            Every line, non-root bus and the interface in every interval, with the
            feeder's limits (lines without a thermal limit are listed but not monitored).

        Notes
        -----
        ``P = A w`` (flow = downstream withdrawal) and ``v = v0^2 - 2 A^T (r P + x Q)``
        (Baran & Wu 1989, without losses), ``A`` the line x bus path matrix.
        """
        topo = feeder.topology
        p_kw, q_kvar = feeder.loads(intervals)
        ivs = list(intervals) if intervals else [None]
        flow_p = np.atleast_2d(topo.downstream_sum(p_kw))
        flow_q = np.atleast_2d(topo.downstream_sum(q_kvar))
        drop = topo.path_sum(topo.r_pu[:, None] * flow_p + topo.x_pu[:, None] * flow_q) / S_BASE_KVA
        v_pu = np.sqrt(np.maximum(feeder.v0_pu ** 2 - 2.0 * drop, 0.0))
        t_line = np.repeat(np.arange(len(ivs)), topo.n_line)
        t_bus = np.repeat(np.arange(len(ivs)), topo.n_bus - 1)
        lines = pl.DataFrame({
            "line": np.tile(topo.line_ids, len(ivs)).astype(str),
            "interval": _interval_series(ivs, t_line),
            "p_kw": (flow_p * topo.line_sign[:, None]).T.ravel(),
        })
        buses = pl.DataFrame({
            "bus": np.tile(topo.bus_ids[1:], len(ivs)).astype(str),
            "interval": _interval_series(ivs, t_bus),
            "v_pu": v_pu[1:].T.ravel(),
        })
        interface = pl.DataFrame({"interval": _interval_series(ivs, np.arange(len(ivs))),
                                  "import_kw": p_kw.sum(axis=0)})
        return BaseCase(lines=lines, buses=buses, interface=interface)


# -- the built model --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class FlexModel:
    """A built flexibility auction: the solver model plus what is needed to read it back.

    ``model`` is an :class:`engine.solver.LinearModel` with variable blocks
    ``offer`` (MW accepted), ``offer_on`` (binary, indivisible offers),
    ``need_shortfall`` (MW, partial needs), ``need_unmet`` (binary, other needs),
    ``flow_p``/``flow_q``/``v_change`` (changes of line flows, MW and Mvar, and of squared
    voltages, pu, in monitored intervals) and constraint blocks ``need_relief``,
    ``resource_capability``, ``offer_min``/``offer_max``, ``interface_import``,
    ``bus_p_balance``/``bus_q_balance`` and ``voltage_drop``.
    Offers with no positive effect on any need are left out of the model.
    """

    feeder: Feeder
    model: LinearModel
    needs: pl.DataFrame            # validated needs table
    offers: pl.DataFrame           # validated offers table
    intervals: list                # distinct intervals, None first; capability "t" indexes it
    need_required_mw: np.ndarray   # requirement in MW of relief (kW-equivalent / 1000)
    need_unit_per_mw: np.ndarray   # need's own unit (kW or pu) per MW of relief
    need_partial: np.ndarray
    offer_bus: np.ndarray          # topology order
    offer_cost: np.ndarray         # per MWh: activation + availability
    offer_indivisible: np.ndarray
    relief: sp.csc_matrix          # need x offer, MW of relief per MW accepted
    in_model: np.ndarray           # offer rows that are model columns, in column order
    capability: pl.DataFrame       # one row per capability constraint
    capability_of: np.ndarray      # per model column: its capability row, or -1
    value_rows: dict = field(repr=False)  # constraint block -> (rows x model offers) matrix
    build_seconds: float = 0.0


@dataclass(frozen=True, eq=False)
class FlexResult:
    """The outcome of one flexibility auction.

    Attributes
    ----------
    status
        ``optimal``, or the solver's failure (``time_limit``, ``infeasible``,
        ``error``), in which case nothing is accepted.
    pricing
        ``pay_as_bid`` or ``uniform``.
    awards
        One row per offer: ``offer_id, aggregator_id, resource_id, bus, interval,
        direction, quantity_kw, tan_phi`` as offered, ``accepted_kw``, ``price`` (per MWh
        paid, null when nothing is accepted),
        ``payment`` (currency), ``reason`` (see :data:`REASONS`), ``conflict`` (the
        resource's capability cut this offer) and ``need_ids`` (the needs it relieves).
    needs
        One row per need: ``need_id, kind, element, interval, met, shortfall`` (in the
        need's unit: kW, or pu of squared voltage), ``shortfall_kw`` (kW of relief
        missing), ``cost`` (payments allotted to the need, currency) and
        ``marginal_price`` (per MWh of relief; null for an all-or-nothing need left unmet).
    conflicts
        One row per resource, interval and direction whose capability cut an offer that
        was worth buying: ``resource_id, aggregator_id, interval, direction,
        capability_kw, committed_kw, available_kw, offered_kw, accepted_kw, offer_ids``.
    total_cost
        Sum of payments, currency.
    shortfall_cost
        Relief not bought, valued at each need's ``max_price``, currency: the DSO's
        notional cost of what it still lacks. ``total_cost + shortfall_cost`` under
        pay-as-bid is the objective the auction minimises.
    interval_minutes
        Length of the interval the payments are for.
    build_seconds, solve_seconds
        Time to validate and build, and time spent in HiGHS (all solves).
    """

    status: str
    pricing: str
    awards: pl.DataFrame
    needs: pl.DataFrame
    conflicts: pl.DataFrame
    total_cost: float
    shortfall_cost: float
    interval_minutes: float
    build_seconds: float
    solve_seconds: float
    feeder: Feeder = field(repr=False)
    bus_index: np.ndarray = field(repr=False)  # per award row, topology order

    def activation_by_bus(self, intervals: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Accepted activations as a change of net injection per bus and interval.

        Parameters
        ----------
        intervals
            UTC timestamps (aware datetimes, as :meth:`Feeder.loads` takes; a None
            entry, as in ``BidBook.intervals == [None]``, is the single interval of
            awards without one); None for ``[None]``.

        Returns
        -------
        p_kw, q_kvar
            Arrays of shape ``(n_bus, len(intervals))`` (one column for None) in
            topology order; positive = more injection. Subtract them from
            :meth:`Feeder.loads` to get the net load the interface curve is built on.
        """
        topo = self.feeder.topology
        ivs = list(intervals) if intervals else [None]
        keys = _interval_keys(_interval_series(ivs, np.arange(len(ivs))))
        order = np.argsort(keys, kind="stable")
        a = self.awards.with_columns(pl.Series("_bus", self.bus_index)).filter(pl.col("accepted_kw") > 0)
        award_keys = _interval_keys(a["interval"])
        pos = np.minimum(np.searchsorted(keys[order], award_keys), len(keys) - 1)
        hit = keys[order][pos] == award_keys
        kw = (a["accepted_kw"].to_numpy() * np.where(a["direction"].to_numpy() == "up", 1.0, -1.0))[hit]
        idx = (a["_bus"].to_numpy()[hit], order[pos][hit])
        shape = (topo.n_bus, len(ivs))
        p = sp.coo_matrix((kw, idx), shape=shape).toarray()
        q = sp.coo_matrix((kw * a["tan_phi"].to_numpy()[hit], idx), shape=shape).toarray()
        return p, q


# -- validation -------------------------------------------------------------------------------------

def _interval_series(ivs: list, t_idx: np.ndarray) -> pl.Series:
    return pl.Series("interval", ivs, dtype=_UTC).gather(np.asarray(t_idx, dtype=np.int64))


def _interval_keys(series: pl.Series) -> np.ndarray:
    """Microseconds since the epoch, with ``_NO_INTERVAL`` for null: a sortable, null-free key."""
    return series.cast(_UTC).dt.epoch("us").fill_null(_NO_INTERVAL).to_numpy()


def _with_intervals(df: pl.DataFrame, table: str) -> pl.DataFrame:
    """Cast ``interval`` to UTC timestamps; empty text and a missing column mean no interval."""
    if "interval" not in df.columns:
        return df.with_columns(pl.lit(None, dtype=_UTC).alias("interval"))
    col = df["interval"]
    if col.dtype == pl.Null:
        return df.with_columns(col.cast(_UTC))
    if isinstance(col.dtype, pl.Datetime):
        if col.dtype.time_zone is None:
            return df.with_columns(col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
        return df.with_columns(col.cast(_UTC))
    if col.dtype not in (pl.Utf8, pl.String):
        raise InputError(table, "interval", f"must be a UTC timestamp (got a {col.dtype} column)")
    text = col.str.strip_chars()
    text = text.set(text == "", None)
    # Few distinct intervals, each parsed once: ISO 8601 in any of its spellings, naive = UTC.
    parsed = {}
    for value in text.unique(maintain_order=True).drop_nulls().to_list():
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            row = int(np.nonzero((text == value).to_numpy())[0][0])
            raise InputError(table, "interval", f"{value!r} is not an ISO 8601 timestamp", row=row) from None
        parsed[value] = (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).astimezone(UTC)
    lookup = pl.DataFrame({"_text": list(parsed), "_stamp": list(parsed.values())},
                          schema={"_text": pl.Utf8, "_stamp": _UTC})
    stamps = pl.DataFrame({"_text": text}).join(lookup, on="_text", how="left", maintain_order="left")
    return df.with_columns(stamps["_stamp"].alias("interval"))


def _first(mask: np.ndarray) -> int | None:
    hits = np.nonzero(mask)[0]
    return int(hits[0]) if len(hits) else None


def _check(mask: np.ndarray, table: str, col: str, values: np.ndarray, reason: str) -> None:
    """Raise for the first row where ``mask`` is true, quoting its value."""
    row = _first(mask)
    if row is not None:
        value = values[row].item() if isinstance(values[row], np.generic) else values[row]
        raise InputError(table, col, f"{reason} (got {value!r})", row=row)


def _unique(table: pl.DataFrame, cols: list[str], name: str) -> None:
    dup = table.select(cols).is_duplicated().to_numpy()
    if dup.any():
        hits = np.nonzero(dup)[0]
        row = int(hits[1])  # the second occurrence is the duplicate
        value = table[cols[0]][row]
        raise InputError(name, cols[0], f"duplicate {', '.join(cols)} ({cols[0]} {value!r})", row=row)


def _prepare(df: pl.DataFrame, schema: dict, table: str, defaults: dict, nullable: tuple) -> pl.DataFrame:
    return _normalise(_with_intervals(df, table), schema, table, defaults, nullable=nullable)


def _lookup(ids: pl.Series, known: np.ndarray, table: str, col: str, what: str,
            rows: np.ndarray | None = None) -> np.ndarray:
    """Positions of ids in ``known``; raise for the first unknown one among ``rows`` (default all).

    Rows outside ``rows`` get -1.
    """
    index = pl.DataFrame({"_id": known.astype(str), "_pos": np.arange(len(known))},
                         schema={"_id": pl.Utf8, "_pos": pl.Int64})
    pos = pl.DataFrame({"_id": ids}).join(index, on="_id", how="left", maintain_order="left")["_pos"]
    missing = pos.is_null().to_numpy()
    _check(missing if rows is None else missing & rows, table, col, ids.to_numpy(), f"unknown {what}")
    return pos.fill_null(-1).to_numpy()


def validate_needs(needs: pl.DataFrame, feeder: Feeder) -> pl.DataFrame:
    """Check a needs table (see the module notes) against a feeder.

    Returns the normalised table (defaults filled, ``interval`` as UTC timestamps,
    ``direction`` explicit) with an ``element_index`` column: the line's or bus's
    position in topology order (0 for ``import`` needs).

    Raises
    ------
    InputError
        Naming the row and field of the first problem: missing column, duplicate
        ``need_id``, unknown kind, direction, line or bus, a voltage need at the root,
        a requirement that is missing, NaN or not > 0, ``max_price`` NaN, negative or
        infinite.
    """
    t = _prepare(needs, NEED_SCHEMA, "needs",
                 {"element": None, "direction": None, "interval": None, "required_kw": None,
                  "required_pu": None, "partial_ok": False},
                 nullable=("element", "direction", "interval", "required_kw", "required_pu"))
    _unique(t, ["need_id"], "needs")
    kind = t["kind"].to_numpy()
    _check(~np.isin(kind, NEED_KINDS), "needs", "kind", kind, f"must be one of {NEED_KINDS}")
    default_dir = np.where(kind == "voltage", "raise", "forward")
    direction = t["direction"].fill_null("").to_numpy().astype(str)
    direction = np.where(direction == "", default_dir, direction)
    allowed = np.where(kind == "voltage", np.isin(direction, NEED_DIRECTIONS["voltage"]),
                       np.isin(direction, NEED_DIRECTIONS["line"]))
    _check(~allowed, "needs", "direction", direction, "must be forward/reverse for line and import needs, "
           "raise/lower for voltage needs")
    price = t["max_price"].to_numpy()
    _check(~((price >= 0) & np.isfinite(price)), "needs", "max_price", price, "must be a finite number >= 0")
    is_v = kind == "voltage"
    for col, rows, kinds in (("required_kw", ~is_v, "line and import"), ("required_pu", is_v, "voltage")):
        req = t[col].fill_null(np.nan).to_numpy()
        _check(rows & ~((req > 0) & np.isfinite(req)), "needs", col, req,
               f"must be a positive finite number for {kinds} needs")

    topo = feeder.topology
    element = t["element"].fill_null("")
    index = np.zeros(t.height, dtype=np.int64)
    is_line = kind == "line"
    if is_line.any():
        index[is_line] = _lookup(element, topo.line_ids, "needs", "element", "or out-of-service line",
                                 rows=is_line)[is_line]
    if is_v.any():
        index[is_v] = _lookup(element, topo.bus_ids, "needs", "element", "bus", rows=is_v)[is_v]
        _check(is_v & (index == 0), "needs", "element", element.to_numpy(),
               "is the root bus, whose voltage the interface holds: no offer can move it")
    return t.with_columns(pl.Series("direction", direction), pl.Series("element", element),
                          pl.Series("element_index", index))


def validate_offers(offers: pl.DataFrame, feeder: Feeder) -> pl.DataFrame:
    """Check an offers table (see the module notes) against a feeder.

    Returns the normalised table with a ``bus_index`` column (topology order) and
    ``min_kw`` set to ``quantity_kw`` for offers that are not divisible.

    Raises
    ------
    InputError
        Naming the row and field of the first problem: missing column, duplicate
        ``offer_id``, unknown bus, direction not up/down, quantity not > 0, price or
        availability price negative, ``min_kw`` negative or above ``quantity_kw``,
        any NaN, or one resource at two buses.
    """
    t = _prepare(offers, OFFER_SCHEMA, "offers",
                 {"interval": None, "availability_price": 0.0, "divisible": True, "min_kw": 0.0,
                  "tan_phi": 0.0}, nullable=("interval",))
    _unique(t, ["offer_id"], "offers")
    d = t["direction"].to_numpy()
    _check(~np.isin(d, OFFER_DIRECTIONS), "offers", "direction", d, "must be 'up' or 'down'")
    q = t["quantity_kw"].to_numpy()
    _check(~((q > 0) & np.isfinite(q)), "offers", "quantity_kw", q, "must be a positive finite number")
    for col in ("price", "availability_price", "min_kw"):
        v = t[col].to_numpy()
        _check(~((v >= 0) & np.isfinite(v)), "offers", col, v, "must be a finite number >= 0")
    m = t["min_kw"].to_numpy()
    _check(m > q, "offers", "min_kw", m, "must not exceed quantity_kw")
    tan_phi = t["tan_phi"].to_numpy()
    _check(~np.isfinite(tan_phi), "offers", "tan_phi", tan_phi, "must be finite")
    buses = t.select("resource_id", "bus")
    first_bus = buses.group_by("resource_id", maintain_order=True).agg(pl.col("bus").first().alias("_first"))
    moved = buses.join(first_bus, on="resource_id", how="left", maintain_order="left")
    _check((moved["bus"] != moved["_first"]).to_numpy(), "offers", "bus", moved["bus"].to_numpy(),
           "differs from an earlier offer of the same resource_id: a resource sits at one bus")
    bus_index = _lookup(t["bus"], feeder.topology.bus_ids, "offers", "bus", "bus")
    return t.with_columns(pl.Series("bus_index", bus_index),
                          pl.when(pl.col("divisible")).then(pl.col("min_kw")).otherwise(pl.col("quantity_kw"))
                          .alias("min_kw"))


def validate_capabilities(capabilities: pl.DataFrame) -> pl.DataFrame:
    """Check a capability table (see the module notes).

    Raises
    ------
    InputError
        Missing column, NaN, a negative capability, or a resource listed twice for
        one interval.
    """
    t = _prepare(capabilities, CAPABILITY_SCHEMA, "capabilities",
                 {"interval": None, "already_committed_kw": 0.0}, nullable=("interval",))
    _unique(t, ["resource_id", "interval"], "capabilities")
    for col in ("capability_up_kw", "capability_down_kw"):
        v = t[col].to_numpy()
        _check(~((v >= 0) & np.isfinite(v)), "capabilities", col, v, "must be a finite number >= 0")
    c = t["already_committed_kw"].to_numpy()
    _check(~np.isfinite(c), "capabilities", "already_committed_kw", c, "must be finite")
    return t


def _filled(t: pl.DataFrame, col: str, default: np.ndarray, table: str) -> np.ndarray:
    """An optional limit column with per-row defaults; NaN is an error, inf is no limit."""
    v = t[col].to_numpy()
    given = t[col].is_not_null().to_numpy()
    _check(given & np.isnan(v), table, col, v, "is NaN")
    return np.where(given, v, default)


def _validate_base(base: BaseCase, feeder: Feeder) -> tuple:
    """The base case as arrays: (lines, buses, interface), each a dict of aligned arrays or None."""
    topo = feeder.topology
    lines = buses = interface = None
    if base.lines is not None and base.lines.height:
        t = _prepare(base.lines, BASE_LINE_SCHEMA, "base_lines",
                     {"interval": None, "p_min_kw": None, "p_max_kw": None},
                     nullable=("interval", "p_min_kw", "p_max_kw"))
        _unique(t, ["line", "interval"], "base_lines")
        idx = _lookup(t["line"], topo.line_ids, "base_lines", "line", "or out-of-service line")
        s = topo.s_max_kva[idx]
        lo = _filled(t, "p_min_kw", -s, "base_lines")
        hi = _filled(t, "p_max_kw", s, "base_lines")
        _check(lo > hi, "base_lines", "p_min_kw", lo, "must not exceed p_max_kw")
        lines = {"index": idx, "t_key": _interval_keys(t["interval"]), "p": t["p_kw"].to_numpy(),
                 "lo": lo, "hi": hi}
    if base.buses is not None and base.buses.height:
        t = _prepare(base.buses, BASE_BUS_SCHEMA, "base_buses",
                     {"interval": None, "vmin_pu": None, "vmax_pu": None},
                     nullable=("interval", "vmin_pu", "vmax_pu"))
        _unique(t, ["bus", "interval"], "base_buses")
        idx = _lookup(t["bus"], topo.bus_ids, "base_buses", "bus", "bus")
        v = t["v_pu"].to_numpy()
        _check(~(v > 0), "base_buses", "v_pu", v, "must be a positive number")
        lo = _filled(t, "vmin_pu", topo.vmin_pu[idx], "base_buses")
        hi = _filled(t, "vmax_pu", topo.vmax_pu[idx], "base_buses")
        _check(lo > hi, "base_buses", "vmin_pu", lo, "must not exceed vmax_pu")
        buses = {"index": idx, "t_key": _interval_keys(t["interval"]), "v": v, "lo": lo, "hi": hi}
    if base.interface is not None and base.interface.height:
        t = _prepare(base.interface, BASE_INTERFACE_SCHEMA, "base_interface",
                     {"interval": None, "import_max_kw": None, "export_max_kw": None},
                     nullable=("interval", "import_max_kw", "export_max_kw"))
        _unique(t, ["interval"], "base_interface")
        imp = _filled(t, "import_max_kw", np.full(t.height, feeder.import_max_kw), "base_interface")
        exp = _filled(t, "export_max_kw", np.full(t.height, feeder.export_max_kw), "base_interface")
        for col, v in (("import_max_kw", imp), ("export_max_kw", exp)):
            _check(v < 0, "base_interface", col, v, "must be >= 0")
        interface = {"t_key": _interval_keys(t["interval"]), "p": t["import_kw"].to_numpy(),
                     "lo": -exp, "hi": imp}
    return lines, buses, interface


# -- sensitivities ------------------------------------------------------------------------------------

def _need_rows(topo: Topology, needs: pl.DataFrame, need_t: np.ndarray, n_key: int
               ) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """Relief of each need per MW injected at each (interval, bus) key, for P and for Q.

    Returns ``(N_p, N_q, path_r)``: ``N_p[n, t*n_bus + j]`` is the MW of relief of
    need n per MW more injection at bus j in interval t (zero unless t is the need's
    interval); ``N_q`` the same per Mvar. ``path_r`` is, per voltage need, the
    resistance from the root to its bus (pu), which turns its requirement into MW.
    """
    n_bus = topo.n_bus
    kind = needs["kind"].to_numpy()
    direction = needs["direction"].to_numpy()
    elem = needs["element_index"].to_numpy()
    sign = np.where(np.isin(direction, ("forward", "raise")), 1.0, -1.0)
    rows, cols, vals = [], [], []
    qrows, qcols, qvals = [], [], []

    line_n = np.nonzero(kind == "line")[0]
    if len(line_n):
        # An injection below line l lowers its root-to-leaf flow by as much (lossless).
        sub = topo.path_matrix[elem[line_n]].tocoo()
        rows.append(line_n[sub.row])
        cols.append(need_t[line_n[sub.row]] * n_bus + sub.col)
        vals.append((sign[line_n] * topo.line_sign[elem[line_n]])[sub.row])

    imp_n = np.nonzero(kind == "import")[0]
    if len(imp_n):
        rows.append(np.repeat(imp_n, n_bus))
        cols.append((need_t[imp_n][:, None] * n_bus + np.arange(n_bus)[None, :]).ravel())
        vals.append(np.repeat(sign[imp_n], n_bus))

    v_n = np.nonzero(kind == "voltage")[0]
    path_r = np.ones(len(needs))
    if len(v_n):
        # dv_k / dP_j = 2 sum of r over the lines shared by the paths 0->k and 0->j; scaled by the
        # bus's own path resistance, an injection at the bus itself relieves 1 MW per MW.
        on_path = topo.path_matrix.tocsc()[:, elem[v_n]].toarray()
        shared_r = topo.path_sum(topo.r_pu[:, None] * on_path)
        shared_x = topo.path_sum(topo.x_pu[:, None] * on_path)
        own_r = shared_r[elem[v_n], np.arange(len(v_n))]
        path_r[v_n] = own_r
        j, k = np.nonzero(shared_r)
        rows.append(v_n[k])
        cols.append(need_t[v_n[k]] * n_bus + j)
        vals.append(sign[v_n[k]] * shared_r[j, k] / own_r[k])
        j, k = np.nonzero(shared_x)
        qrows.append(v_n[k])
        qcols.append(need_t[v_n[k]] * n_bus + j)
        qvals.append(sign[v_n[k]] * shared_x[j, k] / own_r[k])

    def assemble(r, c, v):
        if not r:
            return sp.csr_matrix((len(needs), n_key))
        return sp.csr_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))),
                             shape=(len(needs), n_key))

    return assemble(rows, cols, vals), assemble(qrows, qcols, qvals), path_r


# -- building -------------------------------------------------------------------------------------------

def build_model(feeder: Feeder, needs: pl.DataFrame, offers: pl.DataFrame,
                capabilities: pl.DataFrame | None = None, base: BaseCase | None = None) -> FlexModel:
    """Validate the inputs and build the auction's mixed-integer linear model.

    Parameters
    ----------
    feeder
        The radial feeder the needs and offers are on.
    needs, offers, capabilities
        Tables as in the module notes; ``capabilities`` None = no capability limits.
    base
        Operating point and limits to monitor for new violations; None = none.

    Returns
    -------
    FlexModel

    Notes
    -----
    With ``x_o`` the MW accepted of offer o (``d_o = +1`` up, ``-1`` down) and
    ``s_no`` the relief of need n per MW of o (LinDistFlow, Baran & Wu 1989,
    lossless; DESIGN.md section 4):

    - line need on line l, forward: ``s = d_o`` if o's bus lies below l, else 0;
    - import need: ``s = d_o``;
    - voltage need at bus k, raise: ``s = d_o (R_ko + tan_phi_o X_ko) / R_kk`` where
      ``R_ko`` (``X_ko``) sums r (x) over the lines shared by the paths 0->k and 0->o,
      and the requirement ``required_pu / (2 R_kk)`` is in MW of relief at bus k;
    - ``reverse`` and ``lower`` flip the sign.

    The model minimises ``sum_o (price_o + availability_price_o) x_o + sum_n max_price_n u_n``
    subject to ``sum_o s_no x_o + u_n >= required_n`` per need, where the shortfall
    ``u_n`` is continuous in ``[0, required_n]`` when ``partial_ok`` and in
    ``{0, required_n}`` otherwise (a binary: the need is met in full or not at all,
    and it is met when doing so costs at most ``max_price`` per MWh on average).
    Per resource, interval and direction, ``sum x_o <= capability - committed``.
    Indivisible offers take ``x_o in {0} U [min_kw, quantity_kw]`` through a binary.
    In monitored intervals the changes of line flows ``dP, dQ`` and of squared voltages
    ``dv`` follow the incremental LinDistFlow equations ``M dP = -d x`` and
    ``dv_child - dv_parent = -2 (r dP + x dQ)`` with bounds that keep each monitored
    element within ``[min(lower, base), max(upper, base)]``; the interface import
    changes by ``-sum d_o x_o``. Only offers that relieve some need (``s_no > 0``) are
    variables: the auction does not buy counter-trades for side effects.
    """
    t0 = time.perf_counter()
    topo = feeder.topology
    n_bus = topo.n_bus
    need_tab = validate_needs(needs, feeder)
    off = validate_offers(offers, feeder)
    caps = validate_capabilities(capabilities) if capabilities is not None else None
    base_lines, base_buses, base_iface = _validate_base(base, feeder) if base is not None else (None,) * 3

    # One code per distinct interval across all tables, no interval first.
    keys = [_interval_keys(need_tab["interval"]), _interval_keys(off["interval"])]
    keys += [b["t_key"] for b in (base_lines, base_buses, base_iface) if b is not None]
    if caps is not None:
        keys.append(_interval_keys(caps["interval"]))
    uniq = np.unique(np.concatenate(keys)) if any(len(k) for k in keys) else np.zeros(0, dtype=np.int64)
    intervals = [None if k == _NO_INTERVAL else datetime.fromtimestamp(k / 1e6, tz=UTC)
                 for k in uniq.tolist()]
    n_t = max(len(intervals), 1)
    need_t = np.searchsorted(uniq, _interval_keys(need_tab["interval"]))
    offer_t = np.searchsorted(uniq, _interval_keys(off["interval"]))

    # Relief per MW of each offer, then keep the offers that relieve something.
    n_key = n_t * n_bus
    n_p, n_q, path_r = _need_rows(topo, need_tab, need_t, n_key)
    sign = np.where(off["direction"].to_numpy() == "up", 1.0, -1.0)
    tan_phi = off["tan_phi"].to_numpy()
    bus = off["bus_index"].to_numpy()
    n_off = off.height
    col = np.arange(n_off)
    at_key = sp.csr_matrix((sign, (offer_t * n_bus + bus, col)), shape=(n_key, n_off))
    at_key_q = sp.csr_matrix((sign * tan_phi, (offer_t * n_bus + bus, col)), shape=(n_key, n_off))
    relief = (n_p @ at_key + n_q @ at_key_q).tocsc()
    relief.eliminate_zeros()
    best = relief.max(axis=0).toarray().ravel() if n_off and len(need_tab) else np.zeros(n_off)
    in_model = np.nonzero(best > _SENS_TOL)[0]
    nx = len(in_model)

    kind = need_tab["kind"].to_numpy()
    is_v = kind == "voltage"
    required_mw = np.where(is_v, need_tab["required_pu"].fill_null(0.0).to_numpy() / (2.0 * path_r),
                           need_tab["required_kw"].fill_null(0.0).to_numpy() / S_BASE_KVA)
    unit_per_mw = np.where(is_v, 2.0 * path_r, S_BASE_KVA)
    partial = need_tab["partial_ok"].to_numpy()
    max_price = need_tab["max_price"].to_numpy()

    q_kw = off["quantity_kw"].to_numpy()
    min_kw = off["min_kw"].to_numpy()
    cost = off["price"].to_numpy() + off["availability_price"].to_numpy()
    indivisible = min_kw > 0

    model = LinearModel()
    value_rows: dict = {}
    model.add_variables("offer", nx, 0.0, q_kw[in_model] / S_BASE_KVA, cost=cost[in_model])
    x_rel = relief[:, in_model]
    p_idx = np.nonzero(partial)[0]
    b_idx = np.nonzero(~partial)[0]
    need_terms = {"offer": x_rel}
    if len(p_idx):
        model.add_variables("need_shortfall", len(p_idx), 0.0, required_mw[p_idx], cost=max_price[p_idx])
        need_terms["need_shortfall"] = sp.csr_matrix((np.ones(len(p_idx)), (p_idx, np.arange(len(p_idx)))),
                                                     shape=(len(need_tab), len(p_idx)))
    if len(b_idx):
        model.add_variables("need_unmet", len(b_idx), 0.0, 1.0, cost=max_price[b_idx] * required_mw[b_idx],
                            integer=True)
        need_terms["need_unmet"] = sp.csr_matrix((required_mw[b_idx], (b_idx, np.arange(len(b_idx)))),
                                                 shape=(len(need_tab), len(b_idx)))
    if len(need_tab):
        model.add_constraints("need_relief", need_terms, required_mw, np.inf)
        value_rows["need_relief"] = x_rel

    ind = np.nonzero(indivisible[in_model])[0]
    if len(ind):
        # x <= quantity * on and x >= min * on: an indivisible offer is off or at least min_kw.
        model.add_variables("offer_on", len(ind), 0.0, 1.0, integer=True)
        pick = sp.csr_matrix((np.ones(len(ind)), (np.arange(len(ind)), ind)), shape=(len(ind), nx))
        model.add_constraints("offer_max", {"offer": pick, "offer_on": sp.diags(-q_kw[in_model][ind]
                                                                               / S_BASE_KVA)}, -np.inf, 0.0)
        model.add_constraints("offer_min", {"offer": pick, "offer_on": sp.diags(-min_kw[in_model][ind]
                                                                               / S_BASE_KVA)}, 0.0, np.inf)

    capability, capability_of = _capability_rows(model, off, caps, in_model, offer_t, uniq)
    if nx:
        _interface_rows(model, value_rows, base_iface, uniq, offer_t[in_model], sign[in_model])
        _network_rows(model, value_rows, topo, base_lines, base_buses, uniq, offer_t[in_model],
                      bus[in_model], sign[in_model], tan_phi[in_model])

    return FlexModel(
        feeder=feeder, model=model, needs=need_tab, offers=off, intervals=intervals,
        need_required_mw=required_mw, need_unit_per_mw=unit_per_mw, need_partial=partial,
        offer_bus=bus, offer_cost=cost, offer_indivisible=indivisible,
        relief=relief, in_model=in_model, capability=capability, capability_of=capability_of,
        value_rows=value_rows, build_seconds=time.perf_counter() - t0,
    )


def _capability_rows(model: LinearModel, off: pl.DataFrame, caps: pl.DataFrame | None, in_model: np.ndarray,
                     offer_t: np.ndarray, uniq: np.ndarray) -> tuple[pl.DataFrame, np.ndarray]:
    """``sum x <= capability - committed`` per resource, interval and direction with a capability row."""
    nx = len(in_model)
    empty = pl.DataFrame(schema={"resource_id": pl.Utf8, "t": pl.Int64, "direction": pl.Utf8,
                                 "capability_kw": pl.Float64, "committed_kw": pl.Float64,
                                 "available_kw": pl.Float64})
    if caps is None or not nx:
        return empty, np.full(nx, -1)
    cap_t = np.searchsorted(uniq, _interval_keys(caps["interval"]))
    committed = caps["already_committed_kw"]
    per_dir = pl.concat([
        caps.select("resource_id", pl.Series("t", cap_t), pl.lit("up").alias("direction"),
                    pl.col("capability_up_kw").alias("capability_kw"),
                    committed.clip(lower_bound=0.0).alias("committed_kw")),
        caps.select("resource_id", pl.Series("t", cap_t), pl.lit("down").alias("direction"),
                    pl.col("capability_down_kw").alias("capability_kw"),
                    (-committed).clip(lower_bound=0.0).alias("committed_kw")),
    ])
    cols = off[in_model].select("resource_id", "direction").with_columns(
        pl.Series("t", offer_t[in_model]), pl.Series("_col", np.arange(nx)))
    matched = cols.join(per_dir, on=["resource_id", "t", "direction"], how="inner")
    if not matched.height:
        return empty, np.full(nx, -1)
    groups = (matched.select("resource_id", "t", "direction", "capability_kw", "committed_kw").unique(
        maintain_order=True).with_columns(
        available_kw=(pl.col("capability_kw") - pl.col("committed_kw")).clip(lower_bound=0.0))
        .with_row_index("_row"))
    matched = matched.join(groups.select("resource_id", "t", "direction", "_row"),
                           on=["resource_id", "t", "direction"], how="left")
    row = matched["_row"].to_numpy().astype(np.int64)
    colx = matched["_col"].to_numpy()
    mat = sp.csr_matrix((np.ones(len(row)), (row, colx)), shape=(groups.height, nx))
    model.add_constraints("resource_capability", {"offer": mat}, -np.inf,
                          groups["available_kw"].to_numpy() / S_BASE_KVA)
    capability_of = np.full(nx, -1)
    capability_of[colx] = row
    return groups.drop("_row"), capability_of


def _relaxed(base: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds on the change from ``base`` that break no limit the base case keeps (no new violation)."""
    return np.minimum(lo, base) - base, np.maximum(hi, base) - base


def _interface_rows(model: LinearModel, value_rows: dict, iface: dict | None, uniq: np.ndarray,
                    t_x: np.ndarray, sign_x: np.ndarray) -> None:
    if iface is None:
        return
    keep = np.isfinite(iface["lo"]) | np.isfinite(iface["hi"])
    if not keep.any():
        return
    row_of_t = np.full(len(uniq), -1)
    row_of_t[np.searchsorted(uniq, iface["t_key"][keep])] = np.arange(keep.sum())
    lo, hi = _relaxed(iface["p"][keep], iface["lo"][keep], iface["hi"][keep])
    row = row_of_t[t_x]
    cols = np.nonzero(row >= 0)[0]
    mat = sp.csr_matrix((-sign_x[cols], (row[cols], cols)), shape=(int(keep.sum()), len(t_x)))
    model.add_constraints("interface_import", {"offer": mat}, lo / S_BASE_KVA, hi / S_BASE_KVA)
    value_rows["interface_import"] = mat


def _network_rows(model: LinearModel, value_rows: dict, topo: Topology, lines: dict | None,
                  buses: dict | None, uniq: np.ndarray, t_x: np.ndarray, bus_x: np.ndarray,
                  sign_x: np.ndarray, tan_phi_x: np.ndarray) -> None:
    """Incremental LinDistFlow in the intervals with a monitored line or bus, limits as bounds."""
    if lines is not None:
        keep = np.isfinite(lines["lo"]) | np.isfinite(lines["hi"])
        lines = {k: v[keep] for k, v in lines.items()}
    if buses is not None:
        keep = buses["index"] > 0  # the root's voltage is held by the interface
        buses = {k: v[keep] for k, v in buses.items()}
    line_t = lines["t_key"] if lines is not None else np.zeros(0, dtype=np.int64)
    bus_t = buses["t_key"] if buses is not None else np.zeros(0, dtype=np.int64)
    watched = np.unique(np.concatenate([line_t, bus_t]))
    if not len(watched):
        return
    m = topo.n_line
    n_w = len(watched)
    w_of_t = np.full(len(uniq), -1)
    w_of_t[np.searchsorted(uniq, watched)] = np.arange(n_w)

    flow_lo = np.full((n_w, m), -np.inf)
    flow_hi = np.full((n_w, m), np.inf)
    if lines is not None and len(line_t):
        w = w_of_t[np.searchsorted(uniq, line_t)]
        ls = topo.line_sign[lines["index"]]
        # Input direction to the engine's root-to-leaf direction.
        p = ls * lines["p"]
        lo = np.where(ls > 0, lines["lo"], -lines["hi"])
        hi = np.where(ls > 0, lines["hi"], -lines["lo"])
        flow_lo[w, lines["index"]], flow_hi[w, lines["index"]] = _relaxed(p, lo, hi)
    model.add_variables("flow_p", n_w * m, flow_lo.ravel() / S_BASE_KVA, flow_hi.ravel() / S_BASE_KVA)

    row = w_of_t[t_x]
    at_bus = np.nonzero((row >= 0) & (bus_x > 0))[0]
    bal_rows = row[at_bus] * m + bus_x[at_bus] - 1
    inc = topo.incidence[1:, :]
    eye = sp.identity(n_w, format="csr")
    inject = sp.csr_matrix((sign_x[at_bus], (bal_rows, at_bus)), shape=(n_w * m, len(t_x)))
    model.add_constraints("bus_p_balance", {"flow_p": sp.kron(eye, inc, format="csr"), "offer": inject},
                          0.0, 0.0)
    value_rows["bus_p_balance"] = inject
    if buses is None or not len(bus_t):
        return

    v_lo = np.full((n_w, m), -np.inf)
    v_hi = np.full((n_w, m), np.inf)
    w = w_of_t[np.searchsorted(uniq, bus_t)]
    v_lo[w, buses["index"] - 1], v_hi[w, buses["index"] - 1] = _relaxed(buses["v"] ** 2, buses["lo"] ** 2,
                                                                        buses["hi"] ** 2)
    model.add_variables("v_change", n_w * m, v_lo.ravel(), v_hi.ravel())
    drop = {"v_change": sp.kron(eye, inc.T, format="csr"),
            "flow_p": sp.kron(eye, sp.diags(2.0 * topo.r_pu), format="csr")}
    if np.any(tan_phi_x[at_bus] != 0):
        model.add_variables("flow_q", n_w * m)
        inject_q = sp.csr_matrix((sign_x[at_bus] * tan_phi_x[at_bus], (bal_rows, at_bus)),
                                 shape=(n_w * m, len(t_x)))
        model.add_constraints("bus_q_balance", {"flow_q": sp.kron(eye, inc, format="csr"), "offer": inject_q},
                              0.0, 0.0)
        value_rows["bus_q_balance"] = inject_q
        drop["flow_q"] = sp.kron(eye, sp.diags(2.0 * topo.x_pu), format="csr")
    model.add_constraints("voltage_drop", drop, 0.0, 0.0)


# -- clearing -----------------------------------------------------------------------------------------

def clear_flexibility(feeder: Feeder, needs: pl.DataFrame, offers: pl.DataFrame,
                      capabilities: pl.DataFrame | None = None, base: BaseCase | None = None,
                      pricing: str = "pay_as_bid", interval_minutes: float = 60.0,
                      time_limit: float | None = None) -> FlexResult:
    """Clear a local flexibility auction: least cost to the DSO that meets its needs.

    Parameters
    ----------
    feeder
        The radial feeder.
    needs, offers, capabilities
        Tables as in the module notes.
    base
        Base-case flows, voltages and import with the limits to keep; None = monitor nothing.
    pricing
        ``pay_as_bid`` (default): each accepted offer is paid its price plus its
        availability price. ``uniform``: each accepted offer is paid the marginal value
        of its relief, ``sum_n marginal_price_n s_no`` (plus the value of its effect on
        binding monitored limits), which for a line or import need is that need's
        marginal price; an indivisible offer is paid at least its own price (make-whole).
    interval_minutes
        Length of the interval, for payments (price per MWh x MW x hours).
    time_limit
        Seconds HiGHS may take per solve; None = no limit.

    Returns
    -------
    FlexResult

    Raises
    ------
    InputError
        For bad tables (naming row and field) or an unknown ``pricing``.

    Notes
    -----
    The model is :func:`build_model`'s. With indivisible offers or all-or-nothing
    needs it is a MILP; its binaries are then fixed at the optimum and the LP re-solved,
    so that every need has a dual (its marginal price, per MWh of relief) and every offer
    a marginal value for the reason codes and uniform prices.
    """
    if pricing not in PRICING:
        raise InputError("options", "pricing", f"must be one of {PRICING} (got {pricing!r})")
    if not (interval_minutes > 0 and math.isfinite(interval_minutes)):
        raise InputError("options", "interval_minutes",
                         f"must be a positive number (got {interval_minutes!r})")
    needs, offers = as_polars(needs, "needs"), as_polars(offers, "offers")
    capabilities = None if capabilities is None else as_polars(capabilities, "capabilities")
    fm = build_model(feeder, needs, offers, capabilities, base)
    status, x, duals, seconds = _solve(fm, time_limit)
    return _result(fm, status, x, duals, seconds, pricing, interval_minutes)


def _solve(fm: FlexModel, time_limit: float | None
           ) -> tuple[str, np.ndarray | None, np.ndarray | None, float]:
    """Solve; for a MILP fix the binaries at the optimum and re-solve the LP for duals.

    Returns ``(status, column values, row duals, seconds in HiGHS)``; values are None on failure.
    """
    model = fm.model
    if not model.n_col:
        return "optimal", np.zeros(0), np.zeros(model.n_row), 0.0
    solver = HighsSolver(model, time_limit=time_limit)
    sol = solver.solve()
    seconds = sol.solve_seconds
    if not sol.ok:
        return sol.status, None, None, seconds
    binaries = [name for name in ("offer_on", "need_unmet") if model.has_var(name)]
    if binaries:
        cols = np.concatenate([np.arange(model.var(b).start, model.var(b).start + model.var(b).size)
                               for b in binaries])
        for b in binaries:
            fixed = np.round(solver.block(sol.x, b))
            solver.set_col_bounds(b, fixed, fixed)
        solver.h.changeColsIntegrality(len(cols), cols.astype(np.int32), np.zeros(len(cols), dtype=np.uint8))
        sol = solver.solve()
        seconds += sol.solve_seconds
        if not sol.ok:
            return sol.status, None, None, seconds
    return "optimal", sol.x, sol.row_dual, seconds


def _result(fm: FlexModel, status: str, x: np.ndarray | None, duals: np.ndarray | None, seconds: float,
            pricing: str, interval_minutes: float) -> FlexResult:
    model, off, nd = fm.model, fm.offers, fm.needs
    n_off, n_need, nx = off.height, nd.height, len(fm.in_model)
    hours = interval_minutes / 60.0
    q_kw = off["quantity_kw"].to_numpy()
    c = fm.offer_cost
    ok = x is not None

    accepted = np.zeros(n_off)
    lam = np.zeros(n_need)
    value = np.zeros(n_off)        # marginal value per MWh of one more MW of the offer
    need_value = np.zeros(n_off)   # the part of it that comes from the needs
    shortfall_mw = fm.need_required_mw.copy()
    cap_binding = np.zeros(n_off, dtype=bool)
    if ok:
        xo = x[model.var("offer").slice]
        accepted[fm.in_model] = np.clip(np.round(xo * S_BASE_KVA, ROUND_KW), 0.0, q_kw[fm.in_model])
        if model.has_con("need_relief"):
            # A >= row's dual is >= 0; clipping drops solver noise of the order of 1e-12.
            lam = np.maximum(duals[model.con("need_relief").slice], 0.0)
        v = np.zeros(nx)
        for name, mat in fm.value_rows.items():
            v += mat.T @ duals[model.con(name).slice]
        value[fm.in_model] = v
        need_value[fm.in_model] = fm.value_rows["need_relief"].T @ lam if n_need else 0.0
        shortfall_mw = np.zeros(n_need)
        if model.has_var("need_shortfall"):
            shortfall_mw[fm.need_partial] = x[model.var("need_shortfall").slice]
        if model.has_var("need_unmet"):
            shortfall_mw[~fm.need_partial] = np.round(x[model.var("need_unmet").slice]) * \
                fm.need_required_mw[~fm.need_partial]
        if model.has_con("resource_capability"):
            avail = fm.capability["available_kw"].to_numpy()
            used = np.bincount(fm.capability_of[fm.capability_of >= 0],
                               weights=accepted[fm.in_model][fm.capability_of >= 0], minlength=len(avail))
            binding = used >= avail - 1e-6 * np.maximum(1.0, avail)
            cap_binding[fm.in_model[fm.capability_of >= 0]] = binding[fm.capability_of[fm.capability_of >= 0]]

    effective = np.zeros(n_off, dtype=bool)
    effective[fm.in_model] = True
    tol = 1e-6 * np.maximum(1.0, np.abs(c))
    gap = c - value
    acc = accepted > 0
    # The needs alone would buy an offer whose price is below ``need_value``; if the full marginal
    # value (needs plus monitored limits) says no, its side effects elsewhere kept it out.
    needs_want = c - need_value < -tol
    reason = np.select(
        [acc, ~effective | ((gap > tol) & (c - need_value <= tol)), gap > tol,
         cap_binding & (gap < -tol), fm.offer_indivisible & (gap < -tol), needs_want],
        ["accepted", "location", "price", "capability", "min_kw", "location"], "not_needed").astype(object)
    if not ok:
        reason[:] = None
    conflict = cap_binding & (accepted < q_kw - 1e-6) & (gap < -tol)

    price = np.where(pricing == "uniform", np.maximum(value, c), c)
    price = np.where(acc, price, np.nan)
    payment = np.where(acc, price * accepted / S_BASE_KVA * hours, 0.0)

    relief_pos = fm.relief.multiply(fm.relief > _SENS_TOL).tocsc()
    need_ids = nd["need_id"].to_numpy()
    coo = relief_pos.tocoo()
    by_offer = (pl.DataFrame({"_o": coo.col, "_n": need_ids[coo.row]}, schema={"_o": pl.Int64, "_n": pl.Utf8})
                .sort("_o", "_n").group_by("_o", maintain_order=True).agg(pl.col("_n")))
    lists = pl.DataFrame({"_o": np.arange(n_off)}).join(by_offer, on="_o", how="left", maintain_order="left")

    ivs = fm.intervals
    awards = off.select("offer_id", "aggregator_id", "resource_id", "bus", "interval", "direction",
                        "quantity_kw", "tan_phi").with_columns(
        pl.Series("accepted_kw", accepted),
        pl.Series("price", price).fill_nan(None),
        pl.Series("payment", payment),
        pl.Series("reason", reason, dtype=pl.Utf8),
        pl.Series("conflict", conflict),
        lists["_n"].fill_null([]).alias("need_ids"),
    )

    met = shortfall_mw <= 1e-9 + 1e-6 * fm.need_required_mw
    marginal = np.where(~fm.need_partial & ~met, np.nan, lam) if ok else np.full(n_need, np.nan)
    need_cost = _allotted(relief_pos, lam, payment) if ok else np.zeros(n_need)
    needs_out = nd.select("need_id", "kind", "element", "interval").with_columns(
        pl.Series("met", met & ok),
        pl.Series("shortfall", shortfall_mw * fm.need_unit_per_mw),
        pl.Series("shortfall_kw", shortfall_mw * S_BASE_KVA),
        pl.Series("cost", need_cost),
        pl.Series("marginal_price", marginal).fill_nan(None),
    )
    conflicts = _conflicts(fm, awards, conflict, ivs)
    return FlexResult(status=status, pricing=pricing, awards=awards, needs=needs_out, conflicts=conflicts,
                      total_cost=float(payment.sum()),
                      shortfall_cost=float(nd["max_price"].to_numpy() @ shortfall_mw * hours),
                      interval_minutes=interval_minutes,
                      build_seconds=fm.build_seconds, solve_seconds=seconds, feeder=fm.feeder,
                      bus_index=fm.offer_bus)


def _allotted(relief_pos: sp.csc_matrix, lam: np.ndarray, payment: np.ndarray) -> np.ndarray:
    """Each offer's payment shared among the needs it relieves, by the value of its relief to each.

    Where no need puts a value on the offer (zero duals), by the relief itself.
    """
    by_value = sp.diags(np.maximum(lam, 0.0)) @ relief_pos
    value_sum = np.asarray(by_value.sum(axis=0)).ravel()
    relief_sum = np.asarray(relief_pos.sum(axis=0)).ravel()
    use_value = value_sum > 1e-12
    weights = by_value @ sp.diags(use_value.astype(float)) + relief_pos @ sp.diags((~use_value).astype(float))
    total = np.where(use_value, value_sum, relief_sum)
    share = np.divide(payment, total, out=np.zeros_like(payment), where=total > 0)
    return weights @ share


def _conflicts(fm: FlexModel, awards: pl.DataFrame, conflict: np.ndarray, ivs: list) -> pl.DataFrame:
    """Capability rows that cut at least one offer worth buying, for the DSO and the aggregators."""
    schema = {"resource_id": pl.Utf8, "aggregator_id": pl.Utf8, "interval": _UTC, "direction": pl.Utf8,
              "capability_kw": pl.Float64, "committed_kw": pl.Float64, "available_kw": pl.Float64,
              "offered_kw": pl.Float64, "accepted_kw": pl.Float64, "offer_ids": pl.List(pl.Utf8)}
    if not conflict.any() or not fm.capability.height:
        return pl.DataFrame(schema=schema)
    cap = fm.capability.with_row_index("_row")
    rows = np.full(awards.height, -1)
    rows[fm.in_model] = fm.capability_of
    members = (awards.select("offer_id", "aggregator_id", "quantity_kw", "accepted_kw")
               .with_columns(pl.Series("_row", rows), pl.Series("_conflict", conflict))
               .filter(pl.col("_row") >= 0).with_columns(pl.col("_row").cast(pl.UInt32)))
    per_row = members.group_by("_row").agg(
        pl.col("aggregator_id").first(),
        pl.col("quantity_kw").sum().alias("offered_kw"),
        pl.col("accepted_kw").sum(),
        pl.col("offer_id").filter(pl.col("_conflict")).sort().alias("offer_ids"),
        pl.col("_conflict").any().alias("_any"),
    ).filter(pl.col("_any"))
    out = cap.join(per_row, on="_row", how="inner").sort("_row")
    return out.select(
        "resource_id", "aggregator_id", _interval_series(ivs, out["t"].to_numpy()), "direction",
        "capability_kw", "committed_kw", "available_kw", "offered_kw", "accepted_kw", "offer_ids")


# -- effect on the interface -------------------------------------------------------------------------

def apply_activations(feeder: Feeder, awards: pl.DataFrame) -> Feeder:
    """The feeder with accepted flexibility activations folded into its fixed load.

    Parameters
    ----------
    awards
        ``bus, interval, direction, accepted_kw[, tan_phi]`` (as in
        ``FlexResult.awards`` or the ``awards.csv`` of ``dsomarket flex clear``);
        ``direction = up`` is more injection (less load). Rows without an
        interval change the base load; timed rows become per-interval load
        profile entries.

    Returns
    -------
    Feeder
        A new feeder whose net load is what the nodal market, the interface
        curve and the disaggregation should be built on once the DSO has
        bought these activations. The input feeder is not modified.
    """
    awards = as_polars(awards, "flex_awards")
    for col in ("bus", "interval", "direction", "accepted_kw"):
        if col not in awards.columns:
            raise InputError("flex_awards", col, "column is missing")
    a = awards.filter(pl.col("accepted_kw") > 0)
    if "tan_phi" not in a.columns:
        a = a.with_columns(tan_phi=pl.lit(0.0))
    bad = a.filter(~pl.col("direction").is_in(["up", "down"]))
    if bad.height:
        raise InputError("flex_awards", "direction", f"must be up or down (got {bad['direction'][0]!r})")
    feeder.topology.bus_index_of(a["bus"].cast(pl.Utf8).to_list(), table="flex_awards")
    sign = pl.when(pl.col("direction") == "up").then(-1.0).otherwise(1.0)
    delta = (a.with_columns(pl.col("bus").cast(pl.Utf8), _utc(pl.col("interval"), a.schema["interval"]),
                            dp=sign * pl.col("accepted_kw"), dq=sign * pl.col("accepted_kw") * pl.col("tan_phi"))
             .group_by(["bus", "interval"]).agg(pl.col("dp").sum(), pl.col("dq").sum()))
    untimed = delta.filter(pl.col("interval").is_null()).drop("interval")
    timed = delta.filter(pl.col("interval").is_not_null())
    buses = (feeder.buses.join(untimed, on="bus", how="left")
             .with_columns(load_kw=pl.col("load_kw") + pl.col("dp").fill_null(0.0),
                           load_kvar=pl.col("load_kvar") + pl.col("dq").fill_null(0.0))
             .drop("dp", "dq"))
    profile = feeder.load_profile
    if timed.height:
        ivs = sorted(set(timed["interval"].to_list()))
        p, q = feeder.loads(ivs)
        topo = feeder.topology
        base = pl.DataFrame({"bus": np.repeat(topo.bus_ids.astype(str), len(ivs)),
                             "interval": pl.Series(ivs * topo.n_bus, dtype=_UTC),
                             "load_kw": p.ravel(), "load_kvar": q.ravel()})
        changed = (base.join(timed, on=["bus", "interval"], how="inner")
                   .with_columns(load_kw=pl.col("load_kw") + pl.col("dp"),
                                 load_kvar=pl.col("load_kvar") + pl.col("dq")).drop("dp", "dq"))
        kept = None if profile is None else profile.join(changed.select("bus", "interval"),
                                                         on=["bus", "interval"], how="anti")
        profile = changed if kept is None else pl.concat([kept, changed.select(kept.columns)])
    return feeder.with_changes(buses=buses, load_profile=profile)

"""DER bids, market rules and resources.

A bid segment is one row of a polars table:

========== ======== ==========================================================
column     type     meaning
========== ======== ==========================================================
bid_id     str      unique
bus        str      feeder bus the DER sits at
side       str      ``buy`` = withdraw; ``sell`` = inject or reduce consumption
quantity_kw float   > 0, the most that may be cleared
price      float    per MWh; a buy bid's willingness to pay, a sell offer's ask
interval   datetime UTC start of the interval; null for a single-interval market
aggregator_id str   optional, who answers for the bid
resource_id str     optional, the DER (links the bid to a :class:`Battery`, ...)
tan_phi    float    kvar per kW moved with the bid (default 0); a buy withdraws
                    ``tan_phi * p`` kvar, a sell injects it
========== ======== ==========================================================

A step curve is several segments of one resource; the welfare-maximising
clearing fills cheaper (dearer, for buys) segments first on its own, so no
ordering constraint between segments is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from dsomarket.engine.errors import InputError
from dsomarket.engine.network import Feeder, _normalise, _utc, as_polars

BID_SCHEMA = {"bid_id": pl.Utf8, "bus": pl.Utf8, "side": pl.Utf8, "quantity_kw": pl.Float64,
              "price": pl.Float64, "interval": pl.Datetime("us", "UTC"), "aggregator_id": pl.Utf8,
              "resource_id": pl.Utf8, "tan_phi": pl.Float64}
SIDES = ("buy", "sell")


@dataclass(frozen=True)
class MarketRules:
    """Rules of one market.

    Attributes
    ----------
    price_floor, price_cap
        Lowest and highest admissible bid price, per MWh.
    interval_minutes
        Length of each interval (60 day-ahead, 5 real-time); a single-interval
        market defaults to one hour, so welfare per interval equals welfare per hour.
    value_of_lost_load
        Per MWh. When set, fixed load may be shed at this price instead of the
        market being declared infeasible.
    """

    price_floor: float = -1000.0
    price_cap: float = 3000.0
    interval_minutes: float = 60.0
    value_of_lost_load: float | None = None

    def __post_init__(self):
        for name in ("price_floor", "price_cap", "interval_minutes"):
            if not math.isfinite(getattr(self, name)):
                raise InputError("market", name, "must be a finite number")
        if self.price_floor >= self.price_cap:
            raise InputError("market", "price_floor", "must be below price_cap")
        if self.interval_minutes <= 0:
            raise InputError("market", "interval_minutes", "must be positive")
        if self.value_of_lost_load is not None and not self.value_of_lost_load > 0:
            raise InputError("market", "value_of_lost_load", "must be positive")

    @property
    def hours(self) -> float:
        return self.interval_minutes / 60.0


@dataclass(frozen=True, eq=False)
class BidBook:
    """Validated bids as arrays aligned with ``table`` rows.

    ``intervals`` is the sorted list of distinct intervals (``[None]`` for a
    single-interval market); ``t_idx`` indexes it and ``bus_idx`` indexes the
    feeder's topology order. ``withdraw_sign`` is +1 for buys, -1 for sells.
    """

    table: pl.DataFrame
    intervals: list
    bus_idx: np.ndarray
    t_idx: np.ndarray
    withdraw_sign: np.ndarray
    quantity_kw: np.ndarray
    price: np.ndarray
    tan_phi: np.ndarray

    @property
    def n(self) -> int:
        return self.table.height

    @property
    def n_interval(self) -> int:
        return len(self.intervals)


def empty_bids() -> pl.DataFrame:
    return pl.DataFrame(schema=BID_SCHEMA)


def validate_bids(bids: pl.DataFrame, feeder: Feeder, rules: MarketRules = MarketRules(),
                  intervals: list | None = None) -> BidBook:
    """Check a bid table against a feeder and the market rules.

    Raises :class:`InputError` naming the row and field of the first problem:
    missing column, unknown bus, side not buy/sell, quantity not > 0 or NaN,
    price NaN or outside ``[price_floor, price_cap]``, duplicate ``bid_id``,
    ``tan_phi`` NaN. ``intervals`` may give the market's intervals (a superset
    of those bid in); otherwise the distinct bid intervals are used.
    """
    bids = as_polars(bids, "bids")
    for col in ("bid_id", "bus", "side", "quantity_kw", "price"):
        if col not in bids.columns:
            raise InputError("bids", col, "column is missing")
    table = _normalise(bids, BID_SCHEMA, "bids", {"interval": None, "aggregator_id": "",
                                                   "resource_id": "", "tan_phi": 0.0},
                       nullable=("interval",))
    ids = table["bid_id"]
    if ids.n_unique() < len(ids):   # a count first: some 4x cheaper than marking every duplicate
        dup = ids.is_duplicated().to_numpy()
        row = int(np.nonzero(dup)[0][1]) if dup.sum() > 1 else int(np.nonzero(dup)[0][0])
        raise InputError("bids", "bid_id", f"duplicate bid_id {ids[row]!r}", row=row)
    # Compared in polars: numpy compares an object array string by string (~5x slower); two equalities are
    # some 8x cheaper than is_in, and the first gives the withdrawal sign (no side is null: _normalise).
    side = table["side"]
    buy = (side == SIDES[0]).to_numpy()
    bad = np.nonzero(~(buy | (side == SIDES[1]).to_numpy()))[0]
    if len(bad):
        raise InputError("bids", "side", f"must be 'buy' or 'sell' (got {side[int(bad[0])]!r})", row=int(bad[0]))
    q = table["quantity_kw"].to_numpy()
    bad = np.nonzero(~(q > 0) | ~np.isfinite(q))[0]
    if len(bad):
        raise InputError("bids", "quantity_kw", f"must be a positive finite number (got {q[bad[0]]})",
                         row=int(bad[0]))
    price = table["price"].to_numpy()
    bad = np.nonzero(~((price >= rules.price_floor) & (price <= rules.price_cap)))[0]
    if len(bad):
        raise InputError("bids", "price", f"{price[bad[0]]} is outside the market's floor "
                         f"{rules.price_floor} and cap {rules.price_cap}", row=int(bad[0]))
    tan_phi = table["tan_phi"].to_numpy()
    bad = np.nonzero(~np.isfinite(tan_phi))[0]
    if len(bad):
        raise InputError("bids", "tan_phi", "must be finite", row=int(bad[0]))
    bus_idx = feeder.topology.bus_index_of(table["bus"], table="bids")
    intervals, t_idx = _interval_index(table["interval"], intervals)
    return BidBook(table=table, intervals=list(intervals), bus_idx=bus_idx, t_idx=t_idx,
                   withdraw_sign=np.where(buy, 1.0, -1.0), quantity_kw=q, price=price,
                   tan_phi=tan_phi)


def _interval_index(iv: pl.Series, intervals: list | None) -> tuple[list, np.ndarray]:
    """The market's intervals and each bid's index into them (column-wise, no per-row Python)."""
    n_null = iv.null_count()
    if 0 < n_null < len(iv):
        raise InputError("bids", "interval", "is empty while other bids give one: a market is either "
                         "single-interval (all empty) or timed (all set)",
                         row=int(np.nonzero(iv.is_null().to_numpy())[0][0]))
    if intervals is None:
        intervals = iv.unique().sort().to_list() if len(iv) and not n_null else [None]
    if len(iv) == 0:
        return list(intervals), np.zeros(0, dtype=np.int64)
    if n_null:
        if None not in intervals:
            raise InputError("bids", "interval", "None is not an interval of this market", row=0)
        return list(intervals), np.full(len(iv), intervals.index(None), dtype=np.int64)
    known = pl.Series(intervals, dtype=iv.dtype) if None not in intervals else pl.Series([], dtype=iv.dtype)
    t = pl.DataFrame({"iv": iv}).join(pl.DataFrame({"iv": known, "t": np.arange(len(known), dtype=np.int64)}),
                                      on="iv", how="left", maintain_order="left")["t"]
    missing = t.is_null().to_numpy()
    if missing.any():
        row = int(np.nonzero(missing)[0][0])
        raise InputError("bids", "interval", f"{iv[row]} is not an interval of this market", row=row)
    return list(intervals), t.to_numpy()


def canonical(book: BidBook, feeder: Feeder, rules: MarketRules, *, indexed: bool = False) -> BidBook:
    """The same bids in interval and bid_id order, so that input order cannot change the LP.

    The book's rows are permuted, not validated again (they were checked when the book was made); only
    the buses are indexed again, in ``feeder``'s topology, which may be another run's network.
    ``indexed``: the book was just validated against ``feeder`` itself, so its bus indices are permuted
    instead of looked up again.
    """
    order = _canonical_rows(book.table)
    if order is None:
        return book
    table = book.table[order]
    bus_idx = book.bus_idx[order] if indexed else feeder.topology.bus_index_of(table["bus"])
    return BidBook(table=table, intervals=book.intervals, bus_idx=bus_idx,
                   t_idx=book.t_idx[order], withdraw_sign=book.withdraw_sign[order],
                   quantity_kw=book.quantity_kw[order], price=book.price[order], tan_phi=book.tan_phi[order])


def _canonical_rows(table: pl.DataFrame) -> np.ndarray | None:
    """The rows of a bid table in interval (empty first) and bid_id order; None when they are in it already.

    An order already canonical (a book that was canonical, saved and read back) is recognised by one
    comparison of neighbours. A market is single-interval (intervals all empty) or timed (all set): the
    bid ids are sorted alone, and a timed book's rows then stably by interval, some 5x cheaper than a
    two-key sort of the table; a table that mixes the two keeps that sort.
    """
    ids, iv = table["bid_id"], table["interval"]
    n, n_null = table.height, iv.null_count()
    if n < 2:
        return None
    if 0 < n_null < n:
        return table.with_row_index("_row").sort(["interval", "bid_id"], nulls_last=False)["_row"].to_numpy()
    if n_null:           # single-interval: polars's own check of the neighbours, which stops at the first descent
        return None if ids.is_sorted() else ids.arg_sort().to_numpy()
    t = iv.to_physical().to_numpy()
    ascending = (ids.slice(1) >= ids.slice(0, n - 1)).to_numpy()
    if ((t[1:] > t[:-1]) | ((t[1:] == t[:-1]) & ascending)).all():
        return None
    order = ids.arg_sort().to_numpy()
    return order[np.argsort(t[order], kind="stable")]


def for_interval(book: BidBook, t: int) -> BidBook:
    """The bids of interval index ``t`` alone, as a single-interval book of that interval."""
    rows = np.nonzero(book.t_idx == t)[0]
    return BidBook(table=book.table[rows], intervals=[book.intervals[t]], bus_idx=book.bus_idx[rows],
                   t_idx=np.zeros(len(rows), dtype=np.int64), withdraw_sign=book.withdraw_sign[rows],
                   quantity_kw=book.quantity_kw[rows], price=book.price[rows], tan_phi=book.tan_phi[rows])


@dataclass(frozen=True, eq=False)
class BidColumns:
    """Bids merged into the distinct columns of the clearing LP.

    Bids of one interval, bus, side, price, tan_phi and resource are the same
    LP column up to its upper bound, so the model carries one column per such
    group with the group's total quantity: a gate closure of 100,000 segments
    held 5,120 distinct columns, and a smaller LP clears and traces faster.

    Attributes
    ----------
    book
        One row per column (the group's first bid, quantity_kw summed), in order of first appearance.
    of_bid
        Column index of each bid of the original book.
    first_bid
        Row of the original book that each column's row was taken from.
    """

    book: BidBook
    of_bid: np.ndarray
    first_bid: np.ndarray

    @property
    def merged(self) -> bool:
        return self.book.n < len(self.of_bid)

    def split(self, x_col: np.ndarray, bids: BidBook) -> np.ndarray:
        """Per-bid values of column values, pro rata to quantity within each column (deterministic)."""
        if not self.merged:
            return x_col
        share = x_col / np.where(self.book.quantity_kw > 0, self.book.quantity_kw, 1.0)
        return share[self.of_bid] * bids.quantity_kw

    def total(self, x_bid: np.ndarray) -> np.ndarray:
        """Column values of per-bid values (their sum within each column)."""
        if not self.merged:
            return x_bid
        return np.bincount(self.of_bid, weights=x_bid, minlength=self.book.n)


KEY_MIX = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)
"""Odd multipliers of :func:`merge_columns`' key hash, one per key (integer code, price, tan_phi)."""


def merge_columns(book: BidBook, coupled: set | None = None) -> BidColumns:
    """Group identical bid columns (see :class:`BidColumns`); the book itself when all are distinct.

    ``coupled`` holds the resource ids that have rows of their own in the model
    (storage, EV, ramp, commitment): only those set a bid's column apart. None
    keeps every resource id apart.
    """
    if book.n == 0:
        return BidColumns(book, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    if coupled is not None and not coupled:
        resource = np.zeros(book.n, dtype=np.int64)   # no resource has rows of its own: ids set nothing apart
    else:
        rid = book.table["resource_id"]
        if coupled is not None:
            rid = pl.select(pl.when(rid.is_in(list(coupled))).then(rid).otherwise(pl.lit(""))).to_series()
        resource = rid.rank("dense").to_numpy()
    # The integer keys (interval, bus, side, resource) as one; + 0.0 makes -0.0 and 0.0 one key; a tan_phi
    # every bid shares sets nothing apart.
    side = (np.asarray(book.withdraw_sign) > 0).astype(np.int64)
    n_bus, n_res = int(book.bus_idx.max()) + 1, int(resource.max()) + 1
    code = (((book.t_idx.astype(np.int64) * n_bus + book.bus_idx) * 2 + side) * n_res + resource).astype(np.int64)
    tan_phi = book.tan_phi + 0.0
    keys = (code, book.price + 0.0) + ((tan_phi,) if np.any(tan_phi != tan_phi[0]) else ())
    # Equal keys hash alike: only rows whose hash repeats may share a column, and a book has few of those, so
    # one sort of a uint64 finds them and only they are grouped exactly (a lexsort of every row's keys cost
    # ~4x more). A collision of distinct keys only makes a candidate that the exact grouping sets apart.
    h = np.zeros(book.n, dtype=np.uint64)
    for k, m in zip(keys, KEY_MIX):
        h ^= np.ascontiguousarray(k).view(np.uint64) * np.uint64(m)
    hs = np.sort(h)
    repeated = hs[1:][hs[1:] == hs[:-1]]
    rows = np.arange(book.n)
    if not len(repeated):
        return BidColumns(book, rows, rows)
    cand = np.nonzero(np.isin(h, repeated))[0]
    order = cand[np.lexsort(tuple(np.asarray(k)[cand] for k in keys[::-1]))]   # stable: equal keys in book order
    new_group = np.zeros(len(cand), dtype=bool)
    new_group[0] = True
    for k in keys:
        ks = np.asarray(k)[order]
        new_group[1:] |= ks[1:] != ks[:-1]
    head = rows.copy()                              # the first bid of each bid's group (its own row if alone)
    head[order] = order[new_group][np.cumsum(new_group) - 1]
    first = head == rows
    if first.all():
        return BidColumns(book, rows, rows)
    first_bid = np.nonzero(first)[0]                # columns in order of first appearance
    of_bid = (np.cumsum(first) - 1)[head]
    quantity = np.bincount(of_bid, weights=book.quantity_kw, minlength=len(first_bid))
    table = book.table[first_bid]   # a new frame: its quantities replaced in place, without a with_columns query
    table.replace_column(table.get_column_index("quantity_kw"), pl.Series("quantity_kw", quantity))
    merged = BidBook(table=table, intervals=book.intervals, bus_idx=book.bus_idx[first_bid],
                     t_idx=book.t_idx[first_bid], withdraw_sign=book.withdraw_sign[first_bid],
                     quantity_kw=quantity, price=book.price[first_bid], tan_phi=book.tan_phi[first_bid])
    return BidColumns(merged, of_bid, first_bid)


def couples_intervals(book: BidBook, resources: tuple) -> bool:
    """True when some resource with bids links the book's intervals (storage, EV energy, ramps)."""
    if book.n_interval < 2 or not resources:
        return False
    used = set(book.table["resource_id"].unique().to_list())
    return any(r.resource_id in used for r in resources if not isinstance(r, Commitment))


def resources_for_interval(resources: tuple, interval) -> tuple:
    """The resources that matter to one interval on its own: its commitments (nothing else is per-interval)."""
    return tuple(r for r in resources if isinstance(r, Commitment) and r.interval == interval)


# -- resources -------------------------------------------------------------------

@dataclass(frozen=True)
class Battery:
    """Storage whose buy bids charge it and sell bids discharge it.

    ``e_t = e_{t-1} + eta_charge * charge_t * dt - discharge_t * dt / eta_discharge``,
    ``soc_min_kwh <= e_t <= energy_kwh``, ``e_T >= soc_end_kwh``; kW limits on the
    sum of cleared buy (charge) and sell (discharge) bids per interval.
    """

    resource_id: str
    energy_kwh: float
    charge_kw: float
    discharge_kw: float
    eta_charge: float = 0.95
    eta_discharge: float = 0.95
    soc_init_kwh: float = 0.0
    soc_end_kwh: float = 0.0
    soc_min_kwh: float = 0.0


@dataclass(frozen=True)
class FlexibleLoad:
    """A load whose cleared net withdrawal may change by at most ``ramp_kw`` between intervals."""

    resource_id: str
    ramp_kw: float


@dataclass(frozen=True)
class ElectricVehicle:
    """An EV that must take ``energy_kwh`` (into the battery, after ``eta_charge``) before ``departure``.

    Its buy bids charge it, at most ``charge_kw`` per interval; bids for
    intervals starting at or after the departure are rejected.
    """

    resource_id: str
    energy_kwh: float
    charge_kw: float
    departure: datetime
    eta_charge: float = 0.95


@dataclass(frozen=True)
class Commitment:
    """kW a resource has already sold outside this market in one interval.

    A kW is sold once: after flexibility activations or direct ISO
    participation, the resource's bids in ``interval`` may clear at most
    ``max_sell_kw`` of sells (more injection / less load) and ``max_buy_kw``
    of buys in total. ``interval`` is None in a single-interval market.
    """

    resource_id: str
    interval: datetime | None
    max_sell_kw: float
    max_buy_kw: float


Resource = Battery | FlexibleLoad | ElectricVehicle | Commitment

RESOURCE_SCHEMA = {"resource_id": pl.Utf8, "kind": pl.Utf8, "energy_kwh": pl.Float64,
                   "charge_kw": pl.Float64, "discharge_kw": pl.Float64, "eta_charge": pl.Float64,
                   "eta_discharge": pl.Float64, "soc_init_kwh": pl.Float64, "soc_end_kwh": pl.Float64,
                   "soc_min_kwh": pl.Float64, "ramp_kw": pl.Float64,
                   "departure": pl.Datetime("us", "UTC")}
_REQUIRED = {"battery": ("energy_kwh", "charge_kw", "discharge_kw"),
             "flexible_load": ("ramp_kw",),
             "ev": ("energy_kwh", "charge_kw", "departure")}


def parse_resources(table: pl.DataFrame | None) -> tuple[Resource, ...]:
    """Resources from one table with a ``kind`` column (battery, flexible_load, ev).

    Columns not used by a kind may be empty. Raises :class:`InputError` naming
    the row and field of the first problem.
    """
    if table is None:
        return ()
    table = as_polars(table, "resources")
    if table.height == 0:
        return ()
    for col in ("resource_id", "kind"):
        if col not in table.columns:
            raise InputError("resources", col, "column is missing")
    exprs = []
    for col, dtype in RESOURCE_SCHEMA.items():
        if col not in table.columns:
            exprs.append(pl.lit(None, dtype=dtype).alias(col))
        elif isinstance(dtype, pl.Datetime):
            exprs.append(_utc(pl.col(col), table.schema[col]).alias(col))
        else:
            exprs.append(pl.col(col).cast(dtype, strict=False).alias(col))
    t = table.select(exprs)
    out: list[Resource] = []
    seen: set = set()
    for row, rec in enumerate(t.iter_rows(named=True)):
        rid, kind = rec["resource_id"], rec["kind"]
        if not rid:
            raise InputError("resources", "resource_id", "is empty", row=row)
        if rid in seen:
            raise InputError("resources", "resource_id", f"duplicate resource_id {rid!r}", row=row)
        seen.add(rid)
        if kind not in _REQUIRED:
            raise InputError("resources", "kind", f"must be one of {sorted(_REQUIRED)} (got {kind!r})", row=row)
        for col in _REQUIRED[kind]:
            v = rec[col]
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                raise InputError("resources", col, f"is required for a {kind}", row=row)
        for col in ("energy_kwh", "charge_kw", "discharge_kw", "ramp_kw", "soc_init_kwh", "soc_end_kwh",
                    "soc_min_kwh"):
            v = rec[col]
            if v is not None and not (v >= 0 and math.isfinite(v)):
                raise InputError("resources", col, f"must be a non-negative number (got {v})", row=row)
        for col in ("eta_charge", "eta_discharge"):
            v = rec[col]
            if v is not None and not (0 < v <= 1):
                raise InputError("resources", col, f"must be in (0, 1] (got {v})", row=row)
        if kind == "battery":
            b = Battery(rid, rec["energy_kwh"], rec["charge_kw"], rec["discharge_kw"],
                        rec["eta_charge"] or 0.95, rec["eta_discharge"] or 0.95,
                        rec["soc_init_kwh"] or 0.0, rec["soc_end_kwh"] or 0.0, rec["soc_min_kwh"] or 0.0)
            for col in ("soc_init_kwh", "soc_end_kwh"):
                if not b.soc_min_kwh <= getattr(b, col) <= b.energy_kwh:
                    raise InputError("resources", col, "must lie between soc_min_kwh and energy_kwh", row=row)
            out.append(b)
        elif kind == "flexible_load":
            out.append(FlexibleLoad(rid, rec["ramp_kw"]))
        else:
            out.append(ElectricVehicle(rid, rec["energy_kwh"], rec["charge_kw"], rec["departure"],
                                       rec["eta_charge"] or 0.95))
    return tuple(out)


COMMITMENT_SCHEMA = {"resource_id": pl.Utf8, "interval": pl.Datetime("us", "UTC"), "max_sell_kw": pl.Float64,
                     "max_buy_kw": pl.Float64}


def parse_commitments(table: pl.DataFrame | None) -> tuple[Commitment, ...]:
    """Commitments from a table ``resource_id, interval, max_sell_kw, max_buy_kw``.

    ``interval`` may be empty (single-interval market); a missing limit column
    means no limit on that side. Raises :class:`InputError` naming row and field.
    """
    if table is None or table.height == 0:
        return ()
    if "resource_id" not in table.columns:
        raise InputError("commitments", "resource_id", "column is missing")
    t = _normalise(table, COMMITMENT_SCHEMA, "commitments",
                   {"interval": None, "max_sell_kw": math.inf, "max_buy_kw": math.inf}, nullable=("interval",))
    for col in ("max_sell_kw", "max_buy_kw"):
        bad = np.nonzero(~(t[col].to_numpy() >= 0))[0]
        if len(bad):
            raise InputError("commitments", col, "must be a non-negative number of kW", row=int(bad[0]))
    dup = t.select("resource_id", "interval").is_duplicated().to_numpy()
    if dup.any():
        raise InputError("commitments", "interval", "a resource has two rows for this interval",
                         row=int(np.nonzero(dup)[0][-1]))
    return tuple(Commitment(r["resource_id"], r["interval"], r["max_sell_kw"], r["max_buy_kw"])
                 for r in t.iter_rows(named=True))

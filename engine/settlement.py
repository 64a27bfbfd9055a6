"""Two-settlement of a Total-DSO market: day-ahead positions, real-time deviations.

``amount`` is what the DSO pays the party (positive) or charges it (negative),
in currency with two decimals; ``kw`` is a withdrawal (positive for a buyer,
negative for a seller) and ``kvar`` its reactive part (``tan_phi * kw``):

- day ahead, each bid: ``-(dlmp kW + dlmp_q kvar) x hours / 1000``: a seller
  earns the DLMP of its bus, a buyer pays it;
- day ahead, the fixed (inflexible) load of each bus: the same, the DSO's retail side;
- day ahead, the ISO: ``price x award x hours / 1000`` (positive: the DSO pays for an import);
- real time, per position (a resource, or a bid that names none) and bus: the
  same on the deviation of its real-time position (bids cleared again, or held)
  from its day-ahead position in the day-ahead interval containing the
  real-time one, at real-time prices; the fixed load's deviation likewise, and
  the ISO's ``(real-time import - day-ahead import)`` at the real-time ISO price.

Merchandising surplus = charges collected - payments made (ISO included):
``-sum(amount)``. On the LinDistFlow market it is the congestion and voltage
rent, ``sum_l mu_l S_l + sum_j nu_j (v0^2 - v_j)``, which is never negative
when the interface DLMP equals the ISO's price (an award on the curve, a price,
or a quantity alone); settling reactive power at ``dlmp_q`` is what makes that
identity exact when voltage limits bind. In real time the surplus on deviations
is the real-time rent less the day-ahead schedule valued at real-time prices,
again non-negative because the day-ahead schedule is feasible on the same
feeder (revenue adequacy). Both need the award on the curve of the feeder it
is disaggregated on: a real-time market's curve is therefore traced with the
day-ahead positions it holds (:func:`engine.disaggregation.holding_day_ahead`).
An award off the curve (the ISO imposing a quantity and a price the curve does
not pair) is settled as given, and the DSO bears the difference.

On the loss-aware market the surplus also holds the loss residual
``pi (sum_j LF_j w_j - L)``: every withdrawal ``w_j`` pays the loss component
``pi LF_j`` of its DLMP, and the DSO pays the ISO for the losses ``L`` inside
the import (:func:`losses_settled`). Losses are convex in the withdrawals, so
marginal losses exceed average ones (about twice) and the residual has the sign
of the ISO price: the DSO keeps it at ``pi >= 0`` and pays it at ``pi < 0``
(a negative surplus of about ``|pi| L`` that is the right price of its losses;
tests/test_settlement.py solves one by hand). In real time the linearisation's
losses are the tangent of the convex AC losses at the real-time point, so they
never overstate the day-ahead schedule's losses netted against them, and the
deviations stay revenue adequate at non-negative ISO prices.

Money is counted in integer cents. Every line is rounded to the cent in the
DSO's favour (payments down, charges up), so the statements balance to the
cent by construction and rounding can never turn the surplus negative.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

import numpy as np
import polars as pl

from dsomarket.engine.disaggregation import Disaggregation
from dsomarket.engine.errors import InputError
from dsomarket.engine.network import _utc

STATEMENT_SCHEMA = {"party": pl.Utf8, "aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "bid_id": pl.Utf8,
                    "bus": pl.Utf8, "interval": pl.Datetime("us", "UTC"), "market": pl.Utf8, "kw": pl.Float64,
                    "kvar": pl.Float64, "price": pl.Float64, "price_q": pl.Float64, "amount": pl.Float64}
_IV = pl.Datetime("us", "UTC")


@dataclass(frozen=True, eq=False)
class MarketOutcome:
    """What settlement needs of one cleared and awarded market, as tables.

    ``dispatch``: bid_id, interval, bus, side, cleared_kw and optionally
    aggregator_id, resource_id, tan_phi, held; ``prices``: bus, interval, dlmp and
    optionally dlmp_q; ``award``: interval, import_kw, price; ``fixed_load``:
    bus, interval, load_kw and optionally load_kvar; ``interval_minutes``.
    """

    dispatch: pl.DataFrame
    prices: pl.DataFrame
    award: pl.DataFrame
    fixed_load: pl.DataFrame
    interval_minutes: float

    @staticmethod
    def of(dis: Disaggregation | MarketOutcome) -> MarketOutcome:
        if isinstance(dis, MarketOutcome):
            return dis
        if not dis.clearing.ok:
            raise InputError("settlement", "status", f"cannot settle a {dis.clearing.status} clearing")
        return MarketOutcome(dis.clearing.dispatch, dis.clearing.prices, dis.award, dis.fixed_load,
                             dis.interval_minutes)


@dataclass(frozen=True, eq=False)
class Settlement:
    """Statement lines and a DSO summary.

    ``statements``: ``party`` (``bid``, ``position``, ``fixed_load`` or ``iso``),
    ``aggregator_id``, ``resource_id``, ``bid_id``, ``bus``, ``interval``,
    ``market`` (``day_ahead`` / ``real_time``), ``kw`` and ``kvar`` (settled
    quantity: position or deviation; withdrawal positive for bids and loads,
    import positive for the ISO), ``price`` and ``price_q`` (per MWh / Mvarh)
    and ``amount`` (currency, paid by the DSO when positive). Day-ahead bids
    settle one line per bid (``bid``); real-time deviations one line per
    position (``position``: a resource, or a bid without one).
    """

    statements: pl.DataFrame
    summary: dict

    def by_aggregator(self) -> pl.DataFrame:
        """Net amount, energy (kWh withdrawn) and line count per aggregator and market."""
        st = self.statements.filter(pl.col("party").is_in(["bid", "position"]))
        return (st.with_columns(cents=_cents_expr())
                .group_by(["aggregator_id", "market"])
                .agg((pl.col("cents").sum() / 100.0).alias("amount"), pl.len().alias("lines"))
                .sort(["aggregator_id", "market"]))

    def statement(self, aggregator_id: str) -> pl.DataFrame:
        """The statement lines of one aggregator."""
        return self.statements.filter(pl.col("aggregator_id") == aggregator_id)


def _cents_expr() -> pl.Expr:
    return (pl.col("amount") * 100.0).round(0).cast(pl.Int64)


def _to_cents(x: np.ndarray) -> np.ndarray:
    """Integer cents of amounts in currency, rounded in the DSO's favour (towards minus infinity).

    Rounding to 1e-6 cent first keeps a product that is a whole number of cents in
    exact arithmetic from losing a cent to floating point.
    """
    return np.floor(np.round(np.asarray(x, dtype=float) * 100.0, 6)).astype(np.int64)


# -- input tables ---------------------------------------------------------------------------------

def _col(df: pl.DataFrame, name: str, dtype, default, table: str) -> pl.Expr:
    if name not in df.columns:
        if default is _REQUIRED:
            raise InputError(table, name, "column is missing")
        return pl.lit(default, dtype=dtype).alias(name)
    if isinstance(dtype, pl.Datetime):
        return _utc(pl.col(name), df.schema[name]).alias(name)
    e = pl.col(name).cast(dtype)
    if default is not _REQUIRED and default is not None:
        e = e.fill_null(default)
    return e.alias(name)


_REQUIRED = object()


def _read(df: pl.DataFrame, table: str, spec: dict) -> pl.DataFrame:
    try:
        return df.select([_col(df, k, dt, dv, table) for k, (dt, dv) in spec.items()])
    except pl.exceptions.PolarsError as exc:
        raise InputError(table, "?", str(exc).splitlines()[0]) from None


def _dispatch(o: MarketOutcome) -> pl.DataFrame:
    d = _read(o.dispatch, "dispatch", {
        "bid_id": (pl.Utf8, _REQUIRED), "interval": (_IV, None), "bus": (pl.Utf8, _REQUIRED),
        "side": (pl.Utf8, _REQUIRED), "aggregator_id": (pl.Utf8, ""), "resource_id": (pl.Utf8, ""),
        "tan_phi": (pl.Float64, 0.0), "held": (pl.Boolean, False), "cleared_kw": (pl.Float64, _REQUIRED)})
    sign = pl.when(pl.col("side") == "buy").then(1.0).otherwise(-1.0)
    return d.with_columns(kw=sign * pl.col("cleared_kw").fill_null(0.0)).with_columns(
        kvar=pl.col("kw") * pl.col("tan_phi"))


def _prices(o: MarketOutcome) -> pl.DataFrame:
    return _read(o.prices, "prices", {"bus": (pl.Utf8, _REQUIRED), "interval": (_IV, None),
                                      "dlmp": (pl.Float64, _REQUIRED), "dlmp_q": (pl.Float64, 0.0)})


def _fixed(o: MarketOutcome) -> pl.DataFrame:
    return _read(o.fixed_load, "fixed_load", {"bus": (pl.Utf8, _REQUIRED), "interval": (_IV, None),
                                              "load_kw": (pl.Float64, _REQUIRED),
                                              "load_kvar": (pl.Float64, 0.0)})


def _award(o: MarketOutcome) -> pl.DataFrame:
    return _read(o.award, "award", {"interval": (_IV, None), "import_kw": (pl.Float64, _REQUIRED),
                                    "price": (pl.Float64, _REQUIRED)})


def _lines(df: pl.DataFrame, party: str, market: str, hours: float, iso: bool = False) -> pl.DataFrame:
    """Statement lines from a table with the statement columns but ``amount``."""
    if iso:
        exact = df["price"].to_numpy() * df["kw"].to_numpy() * hours / 1000.0
    else:
        exact = -(df["price"].to_numpy() * df["kw"].to_numpy()
                  + df["price_q"].to_numpy() * df["kvar"].to_numpy()) * hours / 1000.0
    if np.any(~np.isfinite(exact)):
        raise InputError("prices", "dlmp", f"a {party} line has no price (its bus or interval is missing "
                         "from the prices)")
    out = df.with_columns(party=pl.lit(party), market=pl.lit(market),
                          amount=pl.Series(_to_cents(exact) / 100.0))
    for col, dtype in STATEMENT_SCHEMA.items():
        if col not in out.columns:
            out = out.with_columns(pl.lit("" if dtype == pl.Utf8 else None, dtype=dtype).alias(col))
    return out.select([pl.col(c).cast(t) for c, t in STATEMENT_SCHEMA.items()])


# -- the two markets ------------------------------------------------------------------------------

def _day_ahead(o: MarketOutcome) -> list[pl.DataFrame]:
    hours = o.interval_minutes / 60.0
    prices = _prices(o)
    keys = ["bus", "interval"]
    bids = (_dispatch(o).join(prices, on=keys, how="left", nulls_equal=True)
            .rename({"dlmp": "price", "dlmp_q": "price_q"})
            .sort(["interval", "bid_id"], nulls_last=False))
    fixed = (_fixed(o).rename({"load_kw": "kw", "load_kvar": "kvar"})
             .filter((pl.col("kw") != 0) | (pl.col("kvar") != 0))
             .join(prices, on=keys, how="left", nulls_equal=True)
             .rename({"dlmp": "price", "dlmp_q": "price_q"})
             .sort(["interval", "bus"], nulls_last=False))
    iso = _award(o).rename({"import_kw": "kw"}).sort("interval", nulls_last=False)
    return [_lines(bids, "bid", "day_ahead", hours), _lines(fixed, "fixed_load", "day_ahead", hours),
            _lines(iso, "iso", "day_ahead", hours, iso=True)]


def _containing(rt_intervals: list, da_intervals: list, da_minutes: float) -> dict:
    """For each real-time interval, the day-ahead interval containing it."""
    span = timedelta(minutes=da_minutes)
    timed = sorted({d for d in da_intervals if d is not None})
    out = {}
    for iv in rt_intervals:
        if None in da_intervals:
            out[iv] = None
        elif iv is None:
            if len(timed) != 1:
                raise InputError("real_time", "interval", "the day-ahead market has several intervals: the "
                                 "real-time market needs timed intervals to be settled against it")
            out[iv] = timed[0]
        else:
            hits = [d for d in timed if d <= iv < d + span]
            if not hits:
                raise InputError("real_time", "interval", f"{iv} lies in no day-ahead interval")
            out[iv] = hits[-1]
    return out


def _real_time(rt: MarketOutcome, da: MarketOutcome) -> list[pl.DataFrame]:
    hours = rt.interval_minutes / 60.0
    prices = _prices(rt)
    award_rt, award_da = _award(rt), _award(da)
    rt_ivs = award_rt["interval"].to_list()
    cont = _containing(rt_ivs, award_da["interval"].to_list(), da.interval_minutes)
    link = pl.DataFrame({"interval": pl.Series(rt_ivs, dtype=_IV),
                         "da_interval": pl.Series([cont[iv] for iv in rt_ivs], dtype=_IV)})
    key = pl.when(pl.col("resource_id") != "").then(pl.lit("")).otherwise(pl.col("bid_id"))
    pos_keys = ["resource_id", "bid_id", "bus", "interval"]

    def positions(d: pl.DataFrame) -> pl.DataFrame:
        return (d.with_columns(bid_id=key)
                .group_by(pos_keys)
                .agg(pl.col("kw").sum(), pl.col("kvar").sum(),
                     pl.col("aggregator_id").filter(pl.col("aggregator_id") != "").first()))

    now = positions(_dispatch(rt))
    before = (positions(_dispatch(da)).rename({"interval": "da_interval"})
              .join(link, on="da_interval", how="inner", nulls_equal=True).drop("da_interval"))
    dev = (now.join(before, on=pos_keys, how="full", coalesce=True, nulls_equal=True, suffix="_da")
           .with_columns(kw=pl.col("kw").fill_null(0.0) - pl.col("kw_da").fill_null(0.0),
                         kvar=pl.col("kvar").fill_null(0.0) - pl.col("kvar_da").fill_null(0.0),
                         aggregator_id=pl.coalesce("aggregator_id", "aggregator_id_da", pl.lit("")))
           .join(prices, on=["bus", "interval"], how="left", nulls_equal=True)
           .rename({"dlmp": "price", "dlmp_q": "price_q"})
           .sort(["interval", "aggregator_id", "resource_id", "bid_id", "bus"], nulls_last=False))

    f_now = _fixed(rt)
    f_before = (_fixed(da).rename({"interval": "da_interval"})
                .join(link, on="da_interval", how="inner", nulls_equal=True).drop("da_interval"))
    f_dev = (f_now.join(f_before, on=["bus", "interval"], how="full", coalesce=True, nulls_equal=True,
                        suffix="_da")
             .with_columns(kw=pl.col("load_kw").fill_null(0.0) - pl.col("load_kw_da").fill_null(0.0),
                           kvar=pl.col("load_kvar").fill_null(0.0) - pl.col("load_kvar_da").fill_null(0.0))
             .filter((pl.col("kw") != 0) | (pl.col("kvar") != 0))
             .join(prices, on=["bus", "interval"], how="left", nulls_equal=True)
             .rename({"dlmp": "price", "dlmp_q": "price_q"})
             .sort(["interval", "bus"], nulls_last=False))

    iso = (award_rt.join(link, on="interval", how="left", nulls_equal=True)
           .join(award_da.rename({"interval": "da_interval", "import_kw": "da_kw", "price": "da_price"}),
                 on="da_interval", how="left", nulls_equal=True)
           .with_columns(kw=pl.col("import_kw") - pl.col("da_kw").fill_null(0.0))
           .sort("interval", nulls_last=False))
    # A position that did not move owes nothing: no line.
    dev = dev.filter((pl.col("kw") != 0) | (pl.col("kvar") != 0))
    return [_lines(dev, "position", "real_time", hours), _lines(f_dev, "fixed_load", "real_time", hours),
            _lines(iso, "iso", "real_time", hours, iso=True)]


def _totals(st: pl.DataFrame) -> dict:
    cents = (st["amount"].to_numpy() * 100.0).round().astype(np.int64)
    party = st["party"].to_numpy()
    bid = np.isin(party, ["bid", "position"])
    return {
        "paid_to_bids": int(cents[bid & (cents > 0)].sum()) / 100.0,
        "charged_to_bids": int(-cents[bid & (cents < 0)].sum()) / 100.0,
        "fixed_load_charges": int(-cents[party == "fixed_load"].sum()) / 100.0,
        "iso_payment": int(cents[party == "iso"].sum()) / 100.0,
        "merchandising_surplus": int(-cents.sum()) / 100.0,
        "lines": int(st.height),
    }


def losses_settled(o: MarketOutcome) -> dict | None:
    """Who pays for the losses of a day-ahead outcome, in currency (None without a ``loss`` price column).

    The loss component of each bus's DLMP (the ISO price times the bus's marginal loss
    factor) is inside every line of :func:`settle`: each withdrawal (a buy, the fixed
    load) pays it and each injection (a sell) is paid it, in proportion to how much one
    more kW there changes the feeder's losses. The DSO pays the ISO for the energy lost,
    which is inside the awarded import. ``loss_charges`` is the loss component collected
    (net of what injections earn), ``losses_kwh`` the energy lost (import less the net
    withdrawal served), ``loss_cost`` that energy at the ISO price, and ``loss_surplus``
    their difference: marginal losses are about twice average losses, so it is positive
    and stays with the DSO, inside the merchandising surplus.
    """
    if "loss" not in o.prices.columns:
        return None
    hours = o.interval_minutes / 60.0
    keys = ["bus", "interval"]
    loss = _read(o.prices, "prices", {"bus": (pl.Utf8, _REQUIRED), "interval": (_IV, None),
                                      "loss": (pl.Float64, 0.0)})
    w = pl.concat([_dispatch(o).select(*keys, "kw"),
                   _fixed(o).select(*keys, pl.col("load_kw").alias("kw"))])
    charges = float((w.join(loss, on=keys, how="left", nulls_equal=True)
                     .select((pl.col("loss").fill_null(0.0) * pl.col("kw")).sum()).item() or 0.0) * hours / 1000.0)
    per_iv = w.group_by("interval").agg(served_kw=pl.col("kw").sum())
    award = _award(o).join(per_iv, on="interval", how="left", nulls_equal=True)
    lost_kw = (award["import_kw"] - award["served_kw"].fill_null(0.0)).to_numpy()
    cost = float(np.sum(lost_kw * award["price"].to_numpy()) * hours / 1000.0)
    return {"who_pays": "each withdrawal pays, and each injection earns, the loss component of its bus's DLMP; "
                        "the DSO pays the ISO for the energy lost (inside the import); the difference is the "
                        "DSO's loss surplus, part of the merchandising surplus",
            "loss_charges": round(charges, 2), "losses_kwh": float(np.sum(lost_kw) * hours),
            "loss_cost": round(cost, 2), "loss_surplus": round(charges - cost, 2)}


def loss_components(lines: pl.DataFrame, prices: pl.DataFrame, hours: float) -> pl.DataFrame:
    """Statement lines with the loss component of each DLMP as a line of its own, and a ``kind`` column.

    Parameters
    ----------
    lines
        Statement lines (:data:`STATEMENT_SCHEMA`; ``kw`` a withdrawal, ``price`` the DLMP per MWh, ``amount``
        in currency with two decimals, paid to the party when positive).
    prices
        ``bus, interval, loss``: the loss part of each DLMP, per MWh (the loss-aware formulation's marginal
        losses; zero or missing on a lossless clearing).
    hours
        Interval length, hours.

    Returns
    -------
    pl.DataFrame
        Every line as ``kind = energy`` at ``price - loss``, and where the loss part is not zero a line
        ``kind = loss`` of the same kW at ``loss`` (no kvar): ``-(loss x kw) x hours / 1000``, rounded in the
        DSO's favour like every line. The energy line keeps the rest of the original amount, so the two add
        up to it to the cent and the totals do not move.
    """
    loss = prices.select("bus", "interval", pl.col("loss").cast(pl.Float64))
    joined = lines.join(loss, on=["bus", "interval"], how="left", nulls_equal=True).with_columns(
        pl.col("loss").fill_null(0.0))
    split = ((joined["loss"] != 0.0) & (joined["kw"] != 0.0)).to_numpy()
    loss_cents = np.where(split, _to_cents(-joined["loss"].to_numpy() * joined["kw"].to_numpy() * hours / 1000.0), 0)
    total_cents = np.round(joined["amount"].to_numpy() * 100.0).astype(np.int64)
    energy = joined.with_columns(
        kind=pl.lit("energy"), price=pl.Series(np.where(split, joined["price"] - joined["loss"], joined["price"])),
        amount=pl.Series((total_cents - loss_cents) / 100.0))
    losses = joined.filter(pl.Series(split)).with_columns(
        kind=pl.lit("loss"), price=pl.col("loss"), kvar=pl.lit(0.0), price_q=pl.lit(0.0),
        amount=pl.Series(loss_cents[split] / 100.0))
    cols = [*STATEMENT_SCHEMA, "kind"]
    return pl.concat([energy.select(cols), losses.select(cols)])


def at_prices(o: MarketOutcome, prices: pl.DataFrame) -> MarketOutcome:
    """The outcome with its DLMPs (and their loss parts) replaced by ``prices``.

    Parameters
    ----------
    o
        A cleared and awarded outcome.
    prices
        ``bus, interval, dlmp`` and optionally ``loss`` (per MWh): a price for every bus and interval of
        ``o.prices``, e.g. those published with the award. Where the optimal duals are not unique (a marginal
        bid, a bus cut off the feeder) a clearing computed again may pick other ones than the dispatch that was
        published; settling at the published ones keeps the statements equal to what was listed. Other columns
        (``dlmp_q``, the reactive price) stay the outcome's.

    Raises
    ------
    InputError
        ``prices``/``dlmp`` naming a bus and interval of the outcome without a price.
    """
    given = _read(prices, "prices", {"bus": (pl.Utf8, _REQUIRED), "interval": (_IV, None),
                                     "dlmp": (pl.Float64, _REQUIRED),
                                     **({"loss": (pl.Float64, 0.0)} if "loss" in prices.columns else {})})
    own = o.prices.with_columns(_utc(pl.col("interval"), o.prices.schema["interval"]))
    joined = own.drop([c for c in given.columns if c not in ("bus", "interval") and c in own.columns]).join(
        given, on=["bus", "interval"], how="left", nulls_equal=True)
    missing = joined.filter(pl.col("dlmp").is_null())
    if missing.height:
        raise InputError("prices", "dlmp", f"no price for bus {missing['bus'][0]!r} at {missing['interval'][0]}")
    return replace(o, prices=joined)


def settle(day_ahead: Disaggregation | MarketOutcome,
           real_time: Disaggregation | MarketOutcome | None = None,
           prices: pl.DataFrame | None = None) -> Settlement:
    """Settle a day-ahead market and, optionally, its real-time deviations.

    Returns statements per bid (day ahead), per position (real time), fixed
    load and ISO, and a summary: totals in currency (``paid_to_bids``,
    ``charged_to_bids``, ``fixed_load_charges``, ``iso_payment`` and
    ``merchandising_surplus`` = charges - payments, so that every line and the
    surplus sum to zero cents), the same per market, per aggregator, and
    ``losses``: who pays for the day-ahead losses (:func:`losses_settled`).
    ``prices``: the DLMPs the market being settled (``real_time`` if given, else
    ``day_ahead``) is settled at in place of its clearing's (:func:`at_prices`).
    """
    da = MarketOutcome.of(day_ahead)
    if prices is not None and real_time is None:
        da = at_prices(da, prices)
    parts = _day_ahead(da)
    if real_time is not None:
        rt = MarketOutcome.of(real_time)
        parts += _real_time(rt if prices is None else at_prices(rt, prices), da)
    st = pl.concat(parts)
    summary = _totals(st)
    summary["markets"] = {m: _totals(st.filter(pl.col("market") == m))
                          for m in ("day_ahead", "real_time") if (st["market"] == m).any()}
    summary["rounding"] = "each line to the cent in the DSO's favour (payments down, charges up)"
    losses = losses_settled(da)
    if losses is not None:
        summary["losses"] = losses
    line_cents = sum(round(a * 100) for a in st["amount"].to_list())
    summary["balanced"] = bool(line_cents + round(summary["merchandising_surplus"] * 100) == 0)
    out = Settlement(statements=st, summary=summary)
    summary["aggregators"] = {r["aggregator_id"] if r["aggregator_id"] else "(none)": {}
                              for r in out.by_aggregator().iter_rows(named=True)}
    for r in out.by_aggregator().iter_rows(named=True):
        summary["aggregators"][r["aggregator_id"] or "(none)"][r["market"]] = r["amount"]
    return out

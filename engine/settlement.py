"""Two-settlement of a Total-DSO market: day-ahead positions, real-time deviations.

Money is counted in integer cents so that statements balance to the cent.
``amount`` is what the DSO pays the party (positive) or charges it (negative):

- a bid in the day-ahead market: ``DLMP x cleared kW x hours / 1000``, paid to
  sellers and charged to buyers;
- a bid in real time: the same on the deviation from its day-ahead dispatch
  (in the day-ahead interval containing the real-time one), at real-time DLMPs;
- the fixed (inflexible) load at each bus is charged its DLMP: the DSO's retail side;
- the ISO is paid ``price x award x hours`` (day-ahead) and the deviation in real time.

Merchandising surplus = charges collected - payments made. With LinDistFlow
duals it equals the congestion and voltage rent and is never negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from engine.disaggregation import Disaggregation


@dataclass(frozen=True, eq=False)
class MarketOutcome:
    """What settlement needs of one cleared and awarded market, as tables.

    ``dispatch``: bid_id, interval, bus, side, aggregator_id, cleared_kw;
    ``prices``: bus, interval, dlmp; ``award``: interval, import_kw, price;
    ``fixed_load``: bus, interval, load_kw; ``interval_minutes``.
    """

    dispatch: pl.DataFrame
    prices: pl.DataFrame
    award: pl.DataFrame
    fixed_load: pl.DataFrame
    interval_minutes: float

    @staticmethod
    def of(dis: "Disaggregation | MarketOutcome") -> "MarketOutcome":
        if isinstance(dis, MarketOutcome):
            return dis
        if not dis.clearing.ok:
            raise ValueError(f"cannot settle a {dis.clearing.status} clearing")
        return MarketOutcome(dis.clearing.dispatch, dis.clearing.prices, dis.award, dis.fixed_load,
                             dis.interval_minutes)

STATEMENT_SCHEMA = {"party": pl.Utf8, "aggregator_id": pl.Utf8, "bid_id": pl.Utf8,
                    "interval": pl.Datetime("us", "UTC"), "market": pl.Utf8, "kw": pl.Float64,
                    "price": pl.Float64, "amount": pl.Float64}


@dataclass(frozen=True, eq=False)
class Settlement:
    """Statement lines and a DSO summary.

    ``statements`` has ``party`` (``bid``, ``fixed_load`` or ``iso``),
    ``aggregator_id``, ``bid_id`` (the bus for fixed load), ``interval``,
    ``market`` (``day_ahead`` / ``real_time``), ``kw`` (settled quantity:
    position or deviation, positive = withdrawal for loads/bids, import for the
    ISO), ``price`` (per MWh) and ``amount`` (currency, 2 decimals).
    """

    statements: pl.DataFrame
    summary: dict

    def by_aggregator(self) -> pl.DataFrame:
        """Net amount per aggregator and market."""
        return (self.statements.filter(pl.col("party") == "bid")
                .group_by(["aggregator_id", "market"]).agg(pl.col("amount").sum().round(2))
                .sort(["aggregator_id", "market"]))


def _cents(x: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(x, dtype=float) * 100.0).astype(np.int64)


def _market_lines(dis: MarketOutcome, market: str, reference: MarketOutcome | None) -> list[pl.DataFrame]:
    hours = dis.interval_minutes / 60.0
    prices = dis.prices.select("bus", "interval", "dlmp")
    bids = dis.dispatch.join(prices, on=["bus", "interval"], how="left", nulls_equal=True)
    kw = bids["cleared_kw"].to_numpy()
    if reference is not None:
        kw = kw - _reference_kw(bids, reference.dispatch, reference.interval_minutes)
    withdraw = np.where(bids["side"].to_numpy() == "buy", kw, -kw)
    bid_amount = _cents(-bids["dlmp"].to_numpy() * withdraw * hours / 1000.0)
    out = [pl.DataFrame({
        "party": "bid", "aggregator_id": bids["aggregator_id"], "bid_id": bids["bid_id"],
        "interval": bids["interval"], "market": market, "kw": withdraw, "price": bids["dlmp"],
        "amount": bid_amount / 100.0,
    }, schema=STATEMENT_SCHEMA)]
    # Fixed load: the DSO's retail side, charged its DLMP; real time settles no
    # deviation for it (it is a forecast the DSO carries).
    if reference is None:
        fl = dis.fixed_load.join(prices, on=["bus", "interval"], how="left", nulls_equal=True)
        amt = _cents(-fl["dlmp"].to_numpy() * fl["load_kw"].to_numpy() * hours / 1000.0)
        out.append(pl.DataFrame({"party": "fixed_load", "aggregator_id": "", "bid_id": fl["bus"],
                                 "interval": fl["interval"], "market": market, "kw": fl["load_kw"],
                                 "price": fl["dlmp"], "amount": amt / 100.0}, schema=STATEMENT_SCHEMA))
    aw = dis.award
    q = aw["import_kw"].to_numpy()
    if reference is not None:
        q = q - _reference_import(aw, reference.award, reference.interval_minutes)
    out.append(pl.DataFrame({"party": "iso", "aggregator_id": "", "bid_id": "", "interval": aw["interval"],
                             "market": market, "kw": q, "price": aw["price"],
                             "amount": _cents(aw["price"].to_numpy() * q * hours / 1000.0) / 100.0},
                            schema=STATEMENT_SCHEMA))
    return out


def _reference_kw(bids: pl.DataFrame, reference: pl.DataFrame, ref_minutes: float) -> np.ndarray:
    """Day-ahead dispatch (kW) of each real-time bid's bid_id in the containing day-ahead interval."""
    ref = reference.select("bid_id", pl.col("interval").alias("da_interval"), pl.col("cleared_kw").alias("da_kw"))
    span = timedelta(minutes=ref_minutes)
    j = bids.select("bid_id", "interval").with_row_index("row").join(ref, on="bid_id", how="left")
    inside = j.filter(pl.col("da_interval").is_null() | ((pl.col("da_interval") <= pl.col("interval"))
                                                          & (pl.col("interval") < pl.col("da_interval") + span)))
    out = np.zeros(bids.height)
    rows = inside["row"].to_numpy()
    out[rows] = inside["da_kw"].fill_null(0.0).to_numpy()
    return out


def _reference_import(award: pl.DataFrame, reference: pl.DataFrame, ref_minutes: float) -> np.ndarray:
    span = timedelta(minutes=ref_minutes)
    out = np.zeros(award.height)
    da = list(zip(reference["interval"].to_list(), reference["import_kw"].to_list()))
    for k, iv in enumerate(award["interval"].to_list()):
        for start, q in da:
            if start is None or iv is None or start <= iv < start + span:
                out[k] = q
                break
    return out


def settle(day_ahead: Disaggregation | MarketOutcome,
           real_time: Disaggregation | MarketOutcome | None = None) -> Settlement:
    """Settle a day-ahead market and, optionally, its real-time deviations.

    Returns statements per bid, fixed load and ISO, and a summary with the
    totals in currency: ``paid_to_sellers``, ``charged_to_buyers``,
    ``fixed_load_charges``, ``iso_payment`` and ``merchandising_surplus``
    (``charges - payments``, balancing every line to the cent).
    """
    da = MarketOutcome.of(day_ahead)
    parts = _market_lines(da, "day_ahead", None)
    if real_time is not None:
        parts += _market_lines(MarketOutcome.of(real_time), "real_time", da)
    st = pl.concat(parts)
    cents = _cents(st["amount"].to_numpy())
    party = st["party"].to_numpy()
    bid = party == "bid"
    iso = party == "iso"
    fixed = party == "fixed_load"
    summary = {
        "paid_to_bids": float(cents[bid & (cents > 0)].sum()) / 100.0,
        "charged_to_bids": float(-cents[bid & (cents < 0)].sum()) / 100.0,
        "fixed_load_charges": float(-cents[fixed].sum()) / 100.0,
        "iso_payment": float(cents[iso].sum()) / 100.0,
        "merchandising_surplus": float(-cents.sum()) / 100.0,
        "lines": int(st.height),
    }
    return Settlement(statements=st, summary=summary)

"""Overrides and emergency instructions after an award: network check, least-cost re-dispatch, curtailment pay.

One interval at a time. The current dispatch is every resource's latest
instruction (net injection, kW). An operator override fixes one resource's
injection; an ISO emergency instruction bounds the interface import or export.

:func:`redispatch` decides, in this order (the stated rule):

1. **held**: the override (or the new interface bound) with everyone else held
   at their current instruction, the interface taking the difference. If the
   AC-free LinDistFlow feeder can carry that (every line, voltage and interface
   limit), nothing else moves.
2. **redispatched**: otherwise every other resource's bids of the interval are
   free again and the market is re-cleared at the ISO's price of the interval
   with the override held: the least-cost re-dispatch that respects it (social
   welfare at the ISO price is largest). Equal-priced marginal bids share the
   change pro rata to their quantity, across buses (the disaggregation's rule,
   :mod:`engine.disaggregation`), so the allocation is deterministic.
3. **refused**: if even that is infeasible, nothing changes and the diagnosis
   names the limits.

The interface import of the outcome is the revised schedule reported to the ISO.

Curtailment payment (:func:`curtailment_payments`): a resource instructed away
from its award by ``delta`` kW (instruction minus award, injection positive)
keeps its award's settlement, is settled for ``delta`` at the award's DLMP
(the energy it did not, or did additionally, deliver), and is paid its lost
margin ``|delta| x max(0, sign(delta) (p_m - DLMP))``, where ``p_m`` is the
price of its marginal bid in that interval (the accepted bid whose price is
nearest the DLMP; with none accepted, its bid nearest the DLMP): a seller cut
back loses ``DLMP - p_m`` a kWh, a buyer cut back ``p_m - DLMP``, a seller
pushed above its price is made whole for ``p_m - DLMP``; a move that the DLMP
already pays for earns nothing more. Its profit is then what the award gave
it: it neither gains nor loses by following the DSO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from dsomarket.engine.bids import BidBook, MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions
from dsomarket.engine.disaggregation import Disaggregation, disaggregate
from dsomarket.engine.network import Feeder

POSITION_SCHEMA = {"aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "bus": pl.Utf8, "kw": pl.Float64,
                   "tan_phi": pl.Float64}
"""A resource's instructed net injection in the interval (kW, positive into the feeder), where and its tan(phi)."""


@dataclass(frozen=True, eq=False)
class Redispatch:
    """Outcome of :func:`redispatch`: ``mode`` held, redispatched or refused.

    ``disaggregation`` is the re-clear (None when refused); its ``instructions`` are every resource's
    instruction after the change and its interface import the revised schedule.
    """

    mode: str
    disaggregation: Disaggregation | None
    diagnosis: tuple

    @property
    def import_kw(self) -> float:
        return float(self.disaggregation.clearing.interface["import_kw"][0])


def _held(positions: pl.DataFrame, interval) -> pl.DataFrame:
    """Positions as held dispatch rows (one pseudo-bid per resource)."""
    return positions.select(
        (pl.lit("held:") + pl.col("aggregator_id") + pl.lit("/") + pl.col("resource_id")).alias("bid_id"),
        pl.lit(interval, dtype=pl.Datetime("us", "UTC")).alias("interval"), "bus",
        pl.when(pl.col("kw") >= 0).then(pl.lit("sell")).otherwise(pl.lit("buy")).alias("side"),
        pl.col("kw").abs().alias("cleared_kw"), "aggregator_id", "resource_id", "tan_phi")


def redispatch(feeder: Feeder, book: BidBook, iso_price: float, current: pl.DataFrame, fixed: pl.DataFrame,
               rules: MarketRules, options: ClearingOptions = ClearingOptions(),
               import_max_kw: float | None = None, export_max_kw: float | None = None) -> Redispatch:
    """Apply an override or an interface bound to one interval's dispatch (see the module docstring).

    Parameters
    ----------
    book
        The interval's bids (a single-interval book; ``resource_id`` as in ``current``).
    iso_price
        The ISO's price of the interval, per MWh.
    current, fixed
        :data:`POSITION_SCHEMA` tables: every resource's current instruction, and the instructions to
        impose (a fixed resource's row in ``current`` is replaced).
    import_max_kw, export_max_kw
        New interface bounds (kW, >= 0), or None to keep the feeder's.
    """
    interval = book.intervals[0]
    if import_max_kw is not None or export_max_kw is not None:
        feeder = feeder.with_changes(
            import_max_kw=min(feeder.import_max_kw, math.inf if import_max_kw is None else import_max_kw),
            export_max_kw=min(feeder.export_max_kw, math.inf if export_max_kw is None else export_max_kw))
    award = pl.DataFrame({"interval": pl.Series([interval], dtype=pl.Datetime("us", "UTC")), "price": [iso_price]})
    key = ["aggregator_id", "resource_id"]
    others = current.join(fixed.select(key), on=key, how="anti")
    held = _held(pl.concat([others, fixed]).sort(key), interval)
    empty = validate_bids(book.table.clear(), feeder, rules, book.intervals)
    first = disaggregate(feeder, empty, award, rules, (), options, day_ahead=held,
                         day_ahead_minutes=rules.interval_minutes)
    if first.clearing.ok:
        return Redispatch("held", first, ())
    owner = pl.col("aggregator_id") + pl.lit("\x00") + pl.col("resource_id")
    fixed_ids = fixed.select(owner.alias("k"))["k"].to_list()
    free_rows = book.table.filter(~owner.is_in(fixed_ids))
    free = validate_bids(free_rows, feeder, rules, book.intervals)
    second = disaggregate(feeder, free, award, rules, (), options, day_ahead=_held(fixed, interval),
                          day_ahead_minutes=rules.interval_minutes)
    if second.clearing.ok:
        return Redispatch("redispatched", second, ())
    return Redispatch("refused", None, second.clearing.diagnosis or first.clearing.diagnosis)


def curtailment_payments(awarded: pl.DataFrame, bids: pl.DataFrame, instructed: pl.DataFrame,
                         hours: float) -> pl.DataFrame:
    """Settlement of instructed deviations from the award (see the module docstring).

    Parameters
    ----------
    awarded
        ``aggregator_id, resource_id, interval, kw, dlmp``: the award's net injection and the DLMP at the
        resource's bus (per MWh).
    bids
        ``aggregator_id, resource_id, interval, side, price, cleared_kw``: the resource's bids in the award.
    instructed
        ``aggregator_id, resource_id, interval, kw``: the final instruction (only resources moved by an
        override, a re-dispatch or an emergency instruction).
    hours
        Interval length.

    Returns
    -------
    pl.DataFrame
        ``aggregator_id, resource_id, interval, delta_kw, dlmp, energy_amount, margin_price,
        curtailment_amount``: currency amounts, positive = paid to the aggregator.
    """
    key = ["aggregator_id", "resource_id", "interval"]
    moved = (instructed.join(awarded.rename({"kw": "award_kw"}), on=key, how="left")
             .with_columns(pl.col("award_kw").fill_null(0.0))
             .with_columns(delta_kw=pl.col("kw") - pl.col("award_kw"))
             .filter(pl.col("delta_kw").abs() > 1e-9))
    # Marginal bid: accepted bids first, then the one whose price is nearest the DLMP.
    near = (bids.join(moved.select(*key, "dlmp"), on=key, how="inner")
            .with_columns(gap=(pl.col("price") - pl.col("dlmp")).abs(), unaccepted=pl.col("cleared_kw") <= 0)
            .sort([*key, "unaccepted", "gap", "price"])
            .group_by(key, maintain_order=True).first()
            .select(*key, pl.col("price").alias("p_m")))
    out = moved.join(near, on=key, how="left").with_columns(
        margin_price=pl.max_horizontal(pl.col("delta_kw").sign() * (pl.col("p_m").fill_null(pl.col("dlmp"))
                                                                     - pl.col("dlmp")), 0.0))
    return out.select(
        *key, "delta_kw", "dlmp",
        (pl.col("delta_kw") * pl.col("dlmp") * hours / 1000.0).alias("energy_amount"), "margin_price",
        (pl.col("delta_kw").abs() * pl.col("margin_price") * hours / 1000.0).alias("curtailment_amount"),
    ).sort(key)

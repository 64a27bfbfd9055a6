"""Total-DSO net demand curves at the T-D interface.

``Q_t(lambda)`` is the optimal interface import of interval t when the ISO
price there is ``lambda`` (per MWh). For the LinDistFlow market it is a
non-increasing step function whose steps sit where congestion and voltage
limits put them, not at the raw bid prices.

Tracing is exact: solve at the price floor, ask HiGHS over which range of
P0's cost the optimal basis stays optimal (cost ranging), jump just past its
upper end, re-solve warm, and repeat up to the cap. Every quantity on the
curve is a clearing of the full network model, so it is deliverable; quantities
between two steps are deliverable too, because the feasible interface imports
of an LP form an interval.

Intervals coupled by storage, EVs or ramps are traced one at a time with the
other intervals' ISO prices held at a forecast: such curves are conditional on
that forecast, and say so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from engine.bids import BidBook, MarketRules, Resource
from engine.clearing import ClearingOptions, NodalMarket, _iv_column
from engine.errors import InputError
from engine.network import S_BASE_KVA, Feeder

_MERGE_KW = 1e-6  # steps closer than a milliwatt are one step (solver noise)


@dataclass(frozen=True, eq=False)
class InterfaceCurve:
    """Exact net demand curve per interval of one T-D interface.

    Attributes
    ----------
    bands
        ``interval, price_low, price_high, import_kw``: on ``[price_low,
        price_high]`` the optimal import is ``import_kw`` (kW, positive = from
        the ISO). Bands of an interval cover floor to cap; neighbours share
        their boundary price, where the import is anything between theirs.
    fixed_net_load_kw
        ``interval, fixed_kw``: the inflexible net load (fixed loads) below the interface.
    conditional
        True when intervals are coupled and each curve assumes ``forecast`` prices elsewhere.
    forecast
        ISO prices per interval assumed for the other intervals (per MWh).
    solves
        Number of LP solves used.
    seconds
        Wall time of the tracing.
    """

    bands: pl.DataFrame
    fixed_net_load_kw: pl.DataFrame
    conditional: bool
    forecast: np.ndarray
    solves: int
    seconds: float

    def import_at(self, t: int, price: float) -> float:
        """Optimal import (kW) of interval index t at an ISO price strictly inside a band."""
        iv = sorted(set(self.bands["interval"].to_list()), key=_sort_key)[t]
        b = self.bands.filter(_iv_eq(iv))
        hit = b.filter((pl.col("price_low") <= price) & (pl.col("price_high") >= price))
        return float(hit["import_kw"][0])

    def iso_offer(self, max_segments: int = 10) -> tuple[pl.DataFrame, float]:
        """The curve in the ISO's units: MW and per MWh, at most ``max_segments`` per bid.

        Returns ``(table, area)``. The table has ``interval, kind, segment,
        price, mw`` with ``kind`` one of ``fixed_demand`` (imported at any price
        up to the cap), ``demand`` (a demand bid step: ``mw`` more is bought when
        the ISO price is at most ``price``), ``supply`` (an offer step: ``mw``
        more is sold when the price is at least ``price``) and ``fixed_supply``.
        When the exact curve has more steps than allowed, steps are merged so
        that the welfare area between the exact and the reduced curve (``area``,
        currency per hour summed over intervals) is least; the quantities at
        segment ends stay on the exact curve, so every one is deliverable.
        """
        rows: list[dict] = []
        area = 0.0
        for iv, grp in self.bands.group_by("interval", maintain_order=True):
            q = grp["import_kw"].to_numpy() / 1000.0
            hi = grp["price_high"].to_numpy()
            drops = q[:-1] - q[1:]          # MW released at each breakpoint
            prices = hi[:-1]
            q_cap, q_floor = q[-1], q[0]
            interval = iv[0]
            if q_cap > 0:
                rows.append(_row(interval, "fixed_demand", 0, None, round(float(q_cap), 9)))
            if q_floor < 0:
                rows.append(_row(interval, "fixed_supply", 0, None, round(float(-q_floor), 9)))
            # Split each drop into its part above zero (demand) and below (supply).
            upper = q[:-1]
            lower = q[1:]
            dem = np.clip(upper, 0, None) - np.clip(lower, 0, None)
            sup = np.clip(-lower, 0, None) - np.clip(-upper, 0, None)
            for kind, w in (("demand", dem), ("supply", sup)):
                keep = w > _MERGE_KW / 1000.0
                seg_p, seg_w, err = reduce_steps(prices[keep], w[keep], max_segments)
                area += err
                order = np.argsort(-seg_p) if kind == "demand" else np.argsort(seg_p)
                for k, i in enumerate(order):
                    rows.append(_row(interval, kind, k + 1, float(seg_p[i]), round(float(seg_w[i]), 9)))
        schema = {"interval": pl.Datetime("us", "UTC"), "kind": pl.Utf8, "segment": pl.Int64,
                  "price": pl.Float64, "mw": pl.Float64}
        return pl.DataFrame(rows, schema=schema), area


def _row(interval, kind, segment, price, mw) -> dict:
    return {"interval": interval, "kind": kind, "segment": segment, "price": price, "mw": mw}


def _sort_key(iv):
    return (iv is not None, iv)


def _iv_eq(iv) -> pl.Expr:
    return pl.col("interval").is_null() if iv is None else pl.col("interval") == iv


def reduce_steps(prices: np.ndarray, widths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Merge a staircase's steps into at most ``k`` with the least area between the two curves.

    ``prices`` (ascending) are the step prices and ``widths`` the quantity of each
    step. A merged segment keeps the total quantity of its steps (so its ends lie
    on the exact curve) at the weighted median of their prices, which minimises
    ``sum w |p - p_seg|`` inside the segment; a dynamic programme over
    contiguous groups minimises the total. Returns prices, widths, area.
    """
    n = len(prices)
    if n <= k:
        return prices.astype(float), widths.astype(float), 0.0
    wc = np.concatenate([[0.0], np.cumsum(widths)])
    pc = np.concatenate([[0.0], np.cumsum(widths * prices)])
    cost = np.full((n, n), np.inf)
    med = np.zeros((n, n), dtype=np.int64)
    for i in range(n):
        j = np.arange(i, n)
        half = wc[i] + (wc[j + 1] - wc[i]) / 2.0
        m = np.minimum(np.maximum(np.searchsorted(wc, half, side="left") - 1, i), j)
        pm = prices[m]
        left = pm * (wc[m + 1] - wc[i]) - (pc[m + 1] - pc[i])
        right = (pc[j + 1] - pc[m + 1]) - pm * (wc[j + 1] - wc[m + 1])
        cost[i, i:] = left + right
        med[i, i:] = m
    best = cost[0].copy()                      # best[j]: steps 0..j in one segment
    choice = [np.zeros(n, dtype=np.int64)]
    for _ in range(1, k):
        # new[j] = min_i best[i-1] + cost[i, j], i in 1..j
        cand = best[:-1, None] + cost[1:, :]   # (i-1, j)
        cand[np.tril_indices(n - 1, 0, n)] = np.inf
        arg = np.argmin(cand, axis=0)
        new = cand[arg, np.arange(n)]
        improve = new < best
        choice.append(np.where(improve, arg + 1, -1))
        best = np.where(improve, new, best)
    # Walk back the segment starts.
    starts, j, level = [], n - 1, k - 1
    while j >= 0:
        while level > 0 and choice[level][j] < 0:
            level -= 1
        i = int(choice[level][j]) if level > 0 else 0
        starts.append((i, j))
        j, level = i - 1, level - 1
    starts.reverse()
    seg_p = np.array([prices[med[i, j]] for i, j in starts])
    seg_w = np.array([wc[j + 1] - wc[i] for i, j in starts])
    return seg_p, seg_w, float(best[n - 1])


def trace_curve(feeder: Feeder, book: BidBook, rules: MarketRules = MarketRules(),
                resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                forecast=None, load_p_kw: np.ndarray | None = None,
                load_q_kvar: np.ndarray | None = None) -> InterfaceCurve:
    """Trace ``Q_t(lambda)`` exactly from ``rules.price_floor`` to ``rules.price_cap``.

    Parameters
    ----------
    forecast
        ISO price per interval (per MWh) held in the *other* intervals while one
        is traced; only matters when resources couple intervals. Defaults to the
        midpoint of floor and cap.
    load_p_kw, load_q_kvar
        Fixed withdrawal per bus and interval (n, T), e.g. after accepted
        flexibility activations; defaults to the feeder's loads.

    Returns
    -------
    InterfaceCurve
        Bands per interval covering floor to cap; raises :class:`InputError`
        when the market is infeasible at some price (no curve exists).
    """
    if options.formulation != "lindistflow":
        raise InputError("options", "formulation", "exact curves are traced on the LinDistFlow market")
    t0 = time.perf_counter()
    T = book.n_interval
    fc = np.full(T, (rules.price_floor + rules.price_cap) / 2.0) if forecast is None else \
        np.broadcast_to(np.asarray(forecast, dtype=float), (T,)).copy()
    opts = ClearingOptions(formulation="lindistflow", polygon_sides=options.polygon_sides, ac_check=False,
                           time_limit=options.time_limit)
    market = NodalMarket(feeder, book, fc, rules, resources, opts, load_p_kw, load_q_kvar)
    coupled = any(market.model.has_con(c) for c in ("battery_soc", "ev_energy", "ramp"))
    rows, solves = [], 0
    for t in range(T):
        steps, n = _trace_one(market, t, fc, rules)
        solves += n
        for lo, hi, q in steps:
            rows.append((t, lo, hi, q))
    t_idx = np.array([r[0] for r in rows], dtype=np.int64)
    bands = pl.DataFrame({
        "interval": _iv_column(book.intervals, t_idx),
        "price_low": np.array([r[1] for r in rows], dtype=float),
        "price_high": np.array([r[2] for r in rows], dtype=float),
        "import_kw": np.round([r[3] for r in rows], 6),
    })
    lp, _ = market._loads()
    fixed = pl.DataFrame({"interval": _iv_column(book.intervals, np.arange(T)), "fixed_kw": lp.sum(axis=0)})
    return InterfaceCurve(bands=bands, fixed_net_load_kw=fixed, conditional=coupled and T > 1,
                          forecast=fc, solves=solves, seconds=time.perf_counter() - t0)


def _trace_one(market: NodalMarket, t: int, forecast: np.ndarray, rules: MarketRules):
    """Bands ``(price_low, price_high, import_kw)`` of interval t by cost ranging with warm starts."""
    prices = forecast.copy()
    lam = rules.price_floor
    cap = rules.price_cap
    raw: list[tuple[float, float, float]] = []   # (price solved at, import kW, end of the basis's range)
    solves = 0
    col = market.model.var("import_p").start + t
    while True:
        prices[t] = lam
        market.set_iso_price(prices)
        sol = market.solve_raw()
        solves += 1
        if not sol.ok:
            raise InputError("market", "iso_price", f"the market is {sol.status} at an ISO price of {lam:g} "
                             f"in interval {t}: no interface curve exists")
        _, up = market.solver.cost_ranging("import_p", t)
        raw.append((lam, float(sol.x[col] * S_BASE_KVA), up))
        if not np.isfinite(up) or up >= cap:
            break
        # Step just past the end of the basis's range; degenerate bases give
        # zero-length ranges, so always move by at least a relative epsilon.
        lam = max(up, lam) + 1e-9 * max(1.0, abs(up))
        if lam >= cap:
            break
    # Consecutive solves of equal import form one band; a band ends where the
    # range of the last basis giving its import ends.
    bands: list[list[float]] = []
    prev_up = rules.price_floor
    for lam_k, q, up in raw:
        if bands and abs(bands[-1][2] - q) <= _MERGE_KW:
            prev_up = up
            continue
        if bands:
            bands[-1][1] = min(max(prev_up, bands[-1][0]), cap)
        bands.append([bands[-1][1] if bands else rules.price_floor, cap, q])
        prev_up = up
    return [(lo, hi, q) for lo, hi, q in bands], solves

"""An independent LinDistFlow market, written the textbook way, to check the engine against.

Nothing here comes from the engine's model: no topology order, no incidence or
path operators, no block assembly. One cvxpy constraint per bus and per line,
in the input's own line orientation (``v_to = v_from - 2 (r P + x Q)`` holds
whichever end is nearer the root), solved by a different solver (Clarabel by
default). It is also the "obvious" model the clearing benchmark compares with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cvxpy as cp
import polars as pl


@dataclass(frozen=True)
class ReferenceResult:
    status: str
    welfare: float              # per hour, currency
    import_kw: float
    cleared_kw: dict            # bid_id -> kW
    dlmp: dict                  # bus -> per MWh
    v_pu: dict                  # bus -> pu
    build_seconds: float
    solve_seconds: float


CLARABEL_TIGHT = {"tol_feas": 1e-12, "tol_gap_abs": 1e-12, "tol_gap_rel": 1e-12, "tol_ktratio": 1e-10, "max_iter": 500}
"""Clarabel's tolerances for a reference: at its defaults (1e-8 on the scaled problem) an interior point may leave a
voltage floor by ~1e-6 pu^2 in the LinDistFlow rows, which on a face where that floor's dual is large moves which bid
is marginal (bench_hidden_physics --cases 6 --seed 5100, synth200-s5104 at -53.99: DLMPs 10.1 per MWh off HiGHS's
vertex and 0.0019 per hour more welfare than the LP has; at these tolerances both agree to 1e-4 per MWh)."""


CLARABEL_LADDER = (1.0, 10.0, 100.0)
"""Factors on :data:`CLARABEL_TIGHT`'s tolerances tried in turn while Clarabel ends ``optimal_inaccurate``: at 1e-12
it can stall short of them (bench_hidden_physics --cases 12 --seed 18000, synth100-s18009 at 24.93), where at 1e-11
it is optimal and agrees with the engine (tests/test_hidden_physics.py)."""


def _solve(prob: cp.Problem, solver: str) -> None:
    if solver != "CLARABEL":
        prob.solve(solver=solver)
        return
    for factor in CLARABEL_LADDER:
        prob.solve(solver=solver, **{k: v * factor if k.startswith("tol") else v for k, v in CLARABEL_TIGHT.items()})
        if prob.status != cp.OPTIMAL_INACCURATE:
            return


def solve_reference(feeder, bids: pl.DataFrame, iso_price: float, sides: int = 16,
                    solver: str = "CLARABEL", import_kw: float | None = None) -> ReferenceResult:
    """Single-interval LinDistFlow clearing of ``feeder`` and ``bids`` at ``iso_price`` per MWh
    (with the interface import held at ``import_kw`` when given: a disaggregation)."""
    import time

    t0 = time.perf_counter()
    bid_rows = bids.to_dicts()
    one = _interval(feeder, bid_rows, sides)
    cons = one.cons
    if import_kw is not None:
        cons = cons + [one.p0 == import_kw / S_BASE]
    prob = cp.Problem(cp.Maximize(one.bid_welfare - iso_price * one.p0), cons)
    t1 = time.perf_counter()
    _solve(prob, solver)
    t2 = time.perf_counter()
    if prob.status != cp.OPTIMAL:
        return ReferenceResult(prob.status, math.nan, math.nan, {}, {}, {}, t1 - t0, t2 - t1)
    # cvxpy's dual of an equality "lhs == load" in a maximisation is d(welfare)/d(load) up to
    # sign convention: pinned by the 2-bus test, where the price must equal the marginal bid.
    dlmp = {j: float(-c.dual_value) for j, c in one.balance.items()}
    return ReferenceResult(
        status="optimal", welfare=float(prob.value), import_kw=float(one.p0.value) * S_BASE,
        cleared_kw={k: float(var.value) * S_BASE for k, var in one.p.items()}, dlmp=dlmp,
        v_pu={j: math.sqrt(max(float(var.value), 0.0)) for j, var in one.v.items()},
        build_seconds=t1 - t0, solve_seconds=t2 - t1)


def horizon_reference(feeder, bids: pl.DataFrame, batteries=(), interval_hours: float = 1.0, sides: int = 16,
                      solver: str = "CLARABEL"):
    """A horizon cleared at once, storage linking its intervals: ``imports(iso_prices)`` gives each
    interval's interface import (kW) at ISO prices per interval (per MWh), built once (the prices
    are a cvxpy parameter).

    One :func:`solve_reference` network per interval (``bids`` has an ``interval`` column;
    intervals in sorted order) and per battery (``engine.bids.Battery``, its bids by
    ``resource_id``: buys charge, sells discharge) ``e_t = e_{t-1} + eta_c dt charge_t - dt
    discharge_t / eta_d``, ``soc_min <= e_t <= energy``, ``e_T >= soc_end``, charge and discharge
    within their kW limits. Welfare is summed over the intervals.
    """
    intervals = sorted(set(bids["interval"].to_list()))
    parts = [_interval(feeder, bids.filter(pl.col("interval") == iv).to_dicts(), sides) for iv in intervals]
    cons = [c for one in parts for c in one.cons]
    dt = interval_hours
    for bat in batteries:
        e = cp.Variable(len(intervals))
        before = bat.soc_init_kwh / S_BASE
        for t, one in enumerate(parts):
            mine = [b for b in one.rows if (b.get("resource_id") or "") == bat.resource_id]
            charge = sum((one.p[b["bid_id"]] for b in mine if b["side"] == "buy"), start=0)
            discharge = sum((one.p[b["bid_id"]] for b in mine if b["side"] == "sell"), start=0)
            cons += [e[t] == before + bat.eta_charge * dt * charge - dt * discharge / bat.eta_discharge,
                     e[t] >= bat.soc_min_kwh / S_BASE, e[t] <= bat.energy_kwh / S_BASE,
                     charge <= bat.charge_kw / S_BASE, discharge <= bat.discharge_kw / S_BASE]
            before = e[t]
        cons.append(e[len(intervals) - 1] >= bat.soc_end_kwh / S_BASE)
    price = cp.Parameter(len(intervals))
    welfare = sum((one.bid_welfare - price[t] * one.p0 for t, one in enumerate(parts)), start=0)
    prob = cp.Problem(cp.Maximize(welfare), cons)

    def imports(iso_prices) -> list[float]:
        price.value = [float(v) for v in iso_prices]
        _solve(prob, solver)
        assert prob.status == cp.OPTIMAL, prob.status
        return [float(one.p0.value) * S_BASE for one in parts]

    return imports


S_BASE = 1000.0
"""kVA of one per-unit MW."""


@dataclass
class _Interval:
    rows: list          # the interval's bids as dicts
    p: dict             # bid_id -> cleared MW
    p0: cp.Variable     # interface import, MW
    v: dict             # bus -> squared voltage
    balance: dict       # bus -> its active power balance
    cons: list
    bid_welfare: object  # buyers' value less sellers' price, per hour


def _interval(feeder, bid_rows: list[dict], sides: int) -> _Interval:
    """One interval's textbook LinDistFlow network and bids."""
    z_base = feeder.base_kv ** 2 / (S_BASE / 1000.0)
    buses = feeder.buses.to_dicts()
    lines = [ln for ln in feeder.lines.to_dicts() if ln["in_service"]]

    p = {b["bid_id"]: cp.Variable(name=f"p_{b['bid_id']}") for b in bid_rows}
    P = {ln["line"]: cp.Variable(name=f"P_{ln['line']}") for ln in lines}
    Q = {ln["line"]: cp.Variable(name=f"Q_{ln['line']}") for ln in lines}
    v = {b["bus"]: cp.Variable(name=f"v_{b['bus']}") for b in buses}
    p0, q0 = cp.Variable(), cp.Variable()

    cons = []
    balance = {}
    for bus in buses:
        j = bus["bus"]
        inflow_p = sum((P[ln["line"]] for ln in lines if ln["to_bus"] == j), start=0)
        outflow_p = sum((P[ln["line"]] for ln in lines if ln["from_bus"] == j), start=0)
        inflow_q = sum((Q[ln["line"]] for ln in lines if ln["to_bus"] == j), start=0)
        outflow_q = sum((Q[ln["line"]] for ln in lines if ln["from_bus"] == j), start=0)
        buy = sum((p[b["bid_id"]] for b in bid_rows if b["bus"] == j and b["side"] == "buy"), start=0)
        sell = sum((p[b["bid_id"]] for b in bid_rows if b["bus"] == j and b["side"] == "sell"), start=0)
        tan = {b["bid_id"]: (b.get("tan_phi") or 0.0) for b in bid_rows}
        buy_q = sum((tan[b["bid_id"]] * p[b["bid_id"]] for b in bid_rows if b["bus"] == j and b["side"] == "buy"),
                    start=0)
        sell_q = sum((tan[b["bid_id"]] * p[b["bid_id"]] for b in bid_rows
                      if b["bus"] == j and b["side"] == "sell"), start=0)
        root = j == feeder.root_bus
        # Withdrawal side on the right: a dual of this row is the price of one more MW withdrawn at j.
        c = (inflow_p - outflow_p + (p0 if root else 0) - buy + sell == bus["load_kw"] / S_BASE)
        balance[j] = c
        cons.append(c)
        cons.append(inflow_q - outflow_q + (q0 if root else 0) - buy_q + sell_q == bus["load_kvar"] / S_BASE)
        if root:
            cons.append(v[j] == feeder.v0_pu ** 2)
        else:
            cons += [v[j] >= bus["vmin_pu"] ** 2, v[j] <= bus["vmax_pu"] ** 2]
    for ln in lines:
        r, x = ln["r_ohm"] / z_base, ln["x_ohm"] / z_base
        cons.append(v[ln["to_bus"]] == v[ln["from_bus"]] - 2 * (r * P[ln["line"]] + x * Q[ln["line"]]))
        if math.isfinite(ln["s_max_kva"]):
            s = ln["s_max_kva"] / S_BASE * math.cos(math.pi / sides)
            for k in range(sides // 2):
                phi = (2 * k + 1) * math.pi / sides
                cons.append(cp.abs(math.cos(phi) * P[ln["line"]] + math.sin(phi) * Q[ln["line"]]) <= s)
    for b in bid_rows:
        cons += [p[b["bid_id"]] >= 0, p[b["bid_id"]] <= b["quantity_kw"] / S_BASE]
    welfare = (sum((b["price"] * p[b["bid_id"]] for b in bid_rows if b["side"] == "buy"), start=0)
               - sum((b["price"] * p[b["bid_id"]] for b in bid_rows if b["side"] == "sell"), start=0))
    return _Interval(bid_rows, p, p0, v, balance, cons, welfare)


def water_fill_one_limit_per_round(margin, sens, cap, weight):
    """Max-min fair filling the textbook way: one interval, and one binding limit per round.

    The engine's :func:`dsomarket.engine.envelopes.water_fill` before it stopped every determined DER
    at once and filled all intervals together; kept as its reference and as the benchmark's baseline.
    ``margin`` ``(c,)``, ``sens`` ``(c, d)`` dense and >= 0, ``cap`` and ``weight`` ``(d,)``. Returns the
    allocation ``(d,)`` kW.
    """
    import numpy as np

    sens = np.asarray(sens, dtype=float)
    alloc = np.zeros(len(cap))
    rising = (cap > 0) & (weight > 0)
    fixed = np.zeros(len(margin))
    while rising.any():
        load = sens @ np.where(rising, weight, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            level_c = np.where(load > 1e-9, (margin - fixed) / load, np.inf)
        k = int(np.argmin(level_c))
        level_cap = np.min(np.where(rising, cap / np.where(rising, weight, 1.0), np.inf))
        level = max(min(level_c[k], level_cap), 0.0)
        if level_cap <= level_c[k]:
            stop = rising & (cap / np.where(rising, weight, 1.0) <= level * (1 + 1e-12) + 1e-12)
            x = np.minimum(level * weight, cap)
        else:
            stop = rising & (sens[k] > 1e-9)
            x = level * weight
        alloc[stop] = x[stop]
        fixed += sens[:, stop] @ alloc[stop]
        rising &= ~stop
    return alloc

"""Branch-flow SOCP market clearing with losses on a radial feeder (Farivar & Low 2013).

The same market as :mod:`engine.lindistflow` (bids, interface import, voltage
and thermal limits, batteries, EVs, ramps), with the DistFlow equations of
Baran & Wu (1989) kept exact up to one convex relaxation: the squared line
current ``l = (P^2 + Q^2) / v`` becomes the second-order cone
``l v >= P^2 + Q^2``. Line losses ``r l`` and ``x l`` then enter the balances,
so DLMPs carry a loss component. The relaxation is exact on radial feeders
under mild conditions (Farivar & Low 2013, Part I); it is checked after every
solve and its gap reported, because it can fail (DESIGN.md section 9 measured
a gap of 0.6 on a 10k-bus synthetic feeder).

HiGHS does not solve cones: this module goes through cvxpy to ECOS (default)
or Clarabel, named explicitly. The recipe is :func:`build` (variables, then
constraints, then objective, all vectorised over line x interval or bus x
interval), :func:`solve`, then :func:`clear` which turns the solution into a
:class:`~engine.results.ClearingResult`.

Variables (flat, interval-major like the LP: bus ``j`` of interval ``t`` is
entry ``t n + j``, line ``k`` is ``t m + k``). Powers and energies are per unit
on the model's own power base ``SocpModel.power_base_kva`` (not the engine's
1 MVA, see ``_power_base_kva``); :func:`clear` converts them back to kW.

- ``bid``       cleared power per bid segment, ``0 <= p_b <= q_b``
- ``line_p/q``  flow entering each line at its sending (parent) end
- ``line_l``    squared current magnitude per line, ``>= 0``
- ``v``         squared voltage magnitude per bus, pu^2 (independent of the power base)
- ``import_p/q`` interface import P0, Q0, positive = from the ISO
- ``shed``      fixed load shed at the value of lost load (optional)
- ``soc``       battery energy at the end of each interval (optional)

Constraints (named after the physics; duals are read back by these names):
``bus_p_balance``, ``bus_q_balance``, ``voltage_drop``, ``branch_current``
(the relaxed cone), ``line_thermal``, ``bus_v_root``, ``bus_v_min``,
``bus_v_max``, ``interface_import``, ``interface_export`` and the resource rows
``resource_eq`` / ``resource_min`` / ``resource_max``.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from dsomarket.engine import lindistflow, results
from dsomarket.engine.bids import BidBook, MarketRules, Resource
from dsomarket.engine.errors import InputError
from dsomarket.engine.network import S_BASE_KVA, Feeder
from dsomarket.engine.solver import CONIC_STATUS, LinearModel

SOLVERS = {"ecos": cp.ECOS, "clarabel": cp.CLARABEL}
EXACT_GAP = results.EXACT_GAP
GAP_FLOOR_MVA2 = 1e-6
"""Smallest ``l v`` (MVA^2, i.e. 1 kVA squared) a gap is measured against: below it a gap is solver noise."""



@dataclass(frozen=True, eq=False)
class SocpModel:
    """A built branch-flow SOCP: the cvxpy problem and its blocks by physical name.

    Attributes
    ----------
    problem
        The cvxpy problem; its objective is the LP's objective divided by ``cost_scale``.
    variables, constraints
        cvxpy variables and constraints by the names listed in the module docstring.
        Constraints absent from the market (no limited line, no battery, ...) are absent here.
    power_base_kva
        Power base of the variables (see ``_power_base_kva``), so that flows and
        squared currents are of order one on large feeders too: ECOS fails with
        ``l`` in the thousands next to ``v`` near one. Powers are in units of this
        base and impedances per unit on it.
    cost_scale
        Currency per hour that one unit of the solver's objective stands for.
    lim_lines
        Topology indices of the lines with a thermal limit, in the order of
        ``line_thermal``'s rows within each interval.
    build_seconds
        Time to assemble the model; cvxpy compiles it at solve time, and
        :func:`clear` adds that compilation to the result's ``build_seconds``.
    """

    problem: cp.Problem
    variables: dict
    constraints: dict
    power_base_kva: float
    cost_scale: float
    lim_lines: np.ndarray
    build_seconds: float


def build(feeder: Feeder, book: BidBook, iso_price: np.ndarray, rules: MarketRules = MarketRules(),
          resources: tuple[Resource, ...] = (), load_p_kw: np.ndarray | None = None,
          load_q_kvar: np.ndarray | None = None) -> SocpModel:
    """Assemble the branch-flow SOCP clearing model.

    Parameters
    ----------
    feeder
        The radial feeder; its root holds ``v0_pu``.
    book
        Validated bids.
    iso_price
        Price at the interface per interval, per MWh, shape (T,).
    rules
        Market rules (interval length, value of lost load).
    resources
        Batteries, EVs and ramp-limited loads linked to bids by ``resource_id``.
    load_p_kw, load_q_kvar
        Fixed withdrawal per bus (topology order) and interval, kW and kvar,
        positive = consumption, shape (n, T); defaults to the feeder's loads.

    Returns
    -------
    SocpModel

    Notes
    -----
    Per interval, with line ``l`` from parent ``i`` to child ``j`` (per unit on
    the model's power base), ``w_j`` the net withdrawal at ``j`` (fixed load
    plus cleared buys minus cleared sells minus shed load) and ``s_b = +1``
    for a buy, ``-1`` for a sell:

    .. math::

        P_l - r_l \\ell_l &= \\sum_{k: i(k) = j} P_k + w_j
            \\quad (\\text{at the root: } P_0 = \\sum_{k: i(k) = 0} P_k + w_0) \\\\
        Q_l - x_l \\ell_l &= \\sum_{k: i(k) = j} Q_k + w^q_j \\\\
        v_j &= v_i - 2 (r_l P_l + x_l Q_l) + (r_l^2 + x_l^2) \\ell_l \\\\
        \\ell_l v_i &\\ge P_l^2 + Q_l^2
            \\iff \\lVert (2 P_l, 2 Q_l, \\ell_l - v_i) \\rVert_2 \\le \\ell_l + v_i \\\\
        P_l^2 + Q_l^2 &\\le S_l^2 \\quad \\text{(limited lines, sending end)} \\\\
        v_0 = V_0^2, \\quad & \\underline{v}_j \\le v_j \\le \\overline{v}_j, \\quad
            -E \\le P_0 \\le I, \\quad 0 \\le p_b \\le q_b

    In matrix form the balance is ``M P - M^+ diag(r) l + e_0 P0 - B p + shed = load``
    with the incidence ``M`` of :attr:`~engine.network.Topology.incidence` and
    ``M^+`` its positive part (the line feeding each bus). The objective
    minimises, per hour,
    ``(sum_sell price p - sum_buy price p + lambda0 P0 + VoLL shed) / cost_scale``:
    the LP's objective, divided so that its largest cost coefficient is one, as
    ECOS and Clarabel need costs of order one (DESIGN.md section 9).

    Farivar & Low prove the relaxation exact on radial networks under
    conditions that include an objective increasing in losses and upper
    voltage limits that do not bind. Both can fail here: with a negative ISO
    price losses earn money, and under export against ``vmax`` the relaxation
    absorbs fictitious reactive losses ``x l`` to hold voltages down (a 3-bus
    case in ``tests/test_socp.py`` shows a gap of 0.9). Hence the gap check.

    References: M. Farivar and S. H. Low, "Branch flow model: relaxations and
    convexification - Part I", IEEE Trans. Power Systems 28(3), 2013,
    pp. 2554-2564; M. E. Baran and F. F. Wu, "Network reconfiguration in
    distribution systems for loss reduction and load balancing", IEEE Trans.
    Power Delivery 4(2), 1989, pp. 1401-1407.
    """
    t0 = time.perf_counter()
    topo = feeder.topology
    n, m, T = topo.n_bus, topo.n_line, book.n_interval
    if load_p_kw is None:
        load_p_kw, load_q_kvar = lindistflow.market_loads(feeder, book)
    base = _power_base_kva(feeder, book, load_p_kw, load_q_kvar)
    load_p = (load_p_kw / base).T.ravel()
    load_q = (load_q_kvar / base).T.ravel()
    eye_t = sp.identity(T, format="csr")
    r = np.tile(topo.r_pu * base / S_BASE_KVA, T)
    x = np.tile(topo.x_pu * base / S_BASE_KVA, T)

    # --- variables -------------------------------------------------------------
    var = {
        "bid": cp.Variable(book.n, name="bid", bounds=[np.zeros(book.n), book.quantity_kw / base]),
        "line_p": cp.Variable(m * T, name="line_p"),
        "line_q": cp.Variable(m * T, name="line_q"),
        "line_l": cp.Variable(m * T, name="line_l", nonneg=True),
        "v": cp.Variable(n * T, name="v"),
        "import_p": cp.Variable(T, name="import_p"),
        "import_q": cp.Variable(T, name="import_q"),
    }
    shed = rules.value_of_lost_load is not None
    if shed:
        var["shed"] = cp.Variable(n * T, name="shed", bounds=[np.zeros(n * T), np.maximum(load_p, 0.0)])
    p, q, l, v = var["line_p"], var["line_q"], var["line_l"], var["v"]

    # --- balances: M P - M+ r l + e0 P0 - B p (+ shed) = load --------------------------
    inc = sp.kron(eye_t, topo.incidence, format="csr")
    feeds = inc.maximum(0)  # the line that feeds each bus: its losses are taken before the bus
    root = sp.csr_matrix((np.ones(T), (np.arange(T) * n, np.arange(T))), shape=(n * T, T))
    bus_row = book.t_idx * n + book.bus_idx
    bid_w = sp.csr_matrix((book.withdraw_sign, (bus_row, np.arange(book.n))), shape=(n * T, book.n))
    bid_wq = sp.csr_matrix((book.withdraw_sign * book.tan_phi, (bus_row, np.arange(book.n))),
                           shape=(n * T, book.n))
    p_net = inc @ p - feeds @ cp.multiply(r, l) + root @ var["import_p"] - bid_w @ var["bid"]
    q_net = inc @ q - feeds @ cp.multiply(x, l) + root @ var["import_q"] - bid_wq @ var["bid"]
    if shed:
        # Shedding keeps each load's power factor, so it relieves kvar in proportion (as in the LP).
        ratio = np.divide(load_q, load_p, out=np.zeros_like(load_q), where=load_p > 0)
        p_net = p_net + var["shed"]
        q_net = q_net + cp.multiply(ratio, var["shed"])
    con = {"bus_p_balance": p_net == load_p, "bus_q_balance": q_net == load_q}

    # --- voltage drop and the relaxed branch current -----------------------------
    lines = np.arange(m)
    parent_of = sp.kron(eye_t, sp.csr_matrix((np.ones(m), (lines, topo.parent[1:])), shape=(m, n)),
                        format="csr")
    child_of = sp.kron(eye_t, sp.csr_matrix((np.ones(m), (lines, lines + 1)), shape=(m, n)), format="csr")
    v_send = parent_of @ v
    con["voltage_drop"] = (child_of @ v - v_send + 2 * cp.multiply(r, p) + 2 * cp.multiply(x, q)
                           - cp.multiply(r ** 2 + x ** 2, l) == 0)
    con["branch_current"] = cp.SOC(l + v_send, cp.vstack([2 * p, 2 * q, l - v_send]), axis=0)

    # --- limits --------------------------------------------------------------------
    lim_lines = np.nonzero(np.isfinite(topo.s_max_kva))[0]
    if len(lim_lines):
        rows = (np.arange(T)[:, None] * m + lim_lines[None, :]).ravel()
        s_lim = np.tile(topo.s_max_kva[lim_lines] / base, T)
        con["line_thermal"] = cp.norm(cp.vstack([p[rows], q[rows]]), 2, axis=0) <= s_lim
    root_rows = np.arange(T) * n
    bus_rows = (np.arange(T)[:, None] * n + np.arange(1, n)[None, :]).ravel()
    con["bus_v_root"] = v[root_rows] == feeder.v0_pu ** 2
    if n > 1:
        con["bus_v_min"] = v[bus_rows] >= np.tile(topo.vmin_pu[1:] ** 2, T)
        con["bus_v_max"] = v[bus_rows] <= np.tile(topo.vmax_pu[1:] ** 2, T)
    if math.isfinite(feeder.import_max_kw):
        con["interface_import"] = var["import_p"] <= feeder.import_max_kw / base
    if math.isfinite(feeder.export_max_kw):
        con["interface_export"] = var["import_p"] >= -feeder.export_max_kw / base
    _add_resources(var, con, book, resources, rules, base / S_BASE_KVA)

    # --- objective: the LP's, scaled to costs of order one ----------------------------
    bid_cost = -book.withdraw_sign * book.price * base / S_BASE_KVA  # currency per hour per unit of base
    iso_cost = iso_price * base / S_BASE_KVA
    voll_cost = (rules.value_of_lost_load or 0.0) * base / S_BASE_KVA
    scale = max(np.abs(bid_cost).max(initial=0.0), np.abs(iso_cost).max(initial=0.0), voll_cost)
    scale = scale if scale > 0 else 1.0
    cost = bid_cost / scale @ var["bid"] + iso_cost / scale @ var["import_p"]
    if shed:
        cost = cost + voll_cost / scale * cp.sum(var["shed"])
    problem = cp.Problem(cp.Minimize(cost), list(con.values()))
    return SocpModel(problem=problem, variables=var, constraints=con, power_base_kva=base, cost_scale=scale,
                     lim_lines=lim_lines, build_seconds=time.perf_counter() - t0)


def _power_base_kva(feeder: Feeder, book: BidBook, load_p_kw: np.ndarray, load_q_kvar: np.ndarray) -> float:
    """Power base of the SOCP's variables, kVA: a power of ten near the typical line flow.

    Each line's flow is bounded by what lies below it: fixed apparent load plus
    bid quantities, in its busiest interval. The squared currents of a feeder
    span the square of that range, so the base is the power of ten nearest the
    geometric mean of the largest and the median bound, which centres them
    around one. On the synthetic feeders of 200 to 3,000 buses (three bids per
    bus) it picks 10 MVA, where ECOS (200 buses) and Clarabel (up to 3,000)
    reached ``optimal``; at 1 or 100 MVA they stopped ``inaccurate``.
    """
    topo = feeder.topology
    if topo.n_line == 0:
        return S_BASE_KVA
    per_bus = np.hypot(load_p_kw, load_q_kvar)
    np.add.at(per_bus, (book.bus_idx, book.t_idx), book.quantity_kw)
    bound = np.abs(topo.downstream_sum(per_bus)).max(axis=1)
    typical = math.sqrt(bound.max() * np.median(bound))
    return 10.0 ** round(math.log10(typical)) if typical > 0 else S_BASE_KVA


def _add_resources(var: dict, con: dict, book: BidBook, resources: tuple[Resource, ...],
                   rules: MarketRules, base_mva: float) -> None:
    """Battery, EV and ramp rows, taken from the LP's own builder so both models share one definition.

    :func:`engine.lindistflow.add_resources` writes them into a :class:`LinearModel`
    whose first block is ``bid``, in MW and MWh; its assembled rows
    ``lo <= A [bid; soc] <= hi`` are homogeneous in power, so dividing the bounds
    by ``base_mva`` puts them on the model's base. They are then split into
    equalities and one-sided inequalities for cvxpy.
    """
    rows = LinearModel()
    rows.add_variables("bid", book.n)
    lindistflow.add_resources(rows, book, resources, rules)
    if rows.n_row == 0:
        return
    _, col_lo, col_hi, a, lo, hi, _ = rows.assemble()
    col_lo, col_hi, lo, hi = (b / base_mva for b in (col_lo, col_hi, lo, hi))
    cols = [var["bid"]]
    if rows.has_var("soc"):
        soc = rows.var("soc").slice
        var["soc"] = cp.Variable(rows.var("soc").size, name="soc", bounds=[col_lo[soc], col_hi[soc]])
        cols.append(var["soc"])
    xr = cp.hstack(cols)
    a = a.tocsr()
    eq = lo == hi
    below, above = np.isfinite(lo) & ~eq, np.isfinite(hi) & ~eq
    if eq.any():
        con["resource_eq"] = a[eq] @ xr == lo[eq]
    if below.any():
        con["resource_min"] = a[below] @ xr >= lo[below]
    if above.any():
        con["resource_max"] = a[above] @ xr <= hi[above]


def solve(model: SocpModel, solver: str = "ecos", time_limit: float | None = None) -> tuple[str, float]:
    """Solve a built model in place; return ``(status, seconds in the solver itself)``.

    ``status`` is ``optimal``, ``infeasible``, ``unbounded``, ``time_limit``,
    ``inaccurate`` (any ``*_inaccurate`` answer: ECOS and Clarabel report these
    on badly scaled problems and their duals are not prices) or ``error``.
    ``time_limit`` (seconds) reaches Clarabel only; ECOS has no time limit and
    stops on its iteration cap. Measured: ECOS stops ``inaccurate`` on synthetic
    feeders of 1,000 buses and more, where Clarabel still solves up to 3,000.
    """
    return run(model.problem, solver, time_limit)


def run(problem: cp.Problem, solver: str, time_limit: float | None = None) -> tuple[str, float]:
    """Solve a cvxpy problem with a named conic solver; the engine's status and the solver's time.

    cvxpy's warning about an inaccurate solution is silenced because that
    outcome is returned as the status ``inaccurate``, which callers treat as a failure.
    """
    if solver not in SOLVERS:
        raise InputError("options", "solver",
                         f"must be one of {sorted(SOLVERS)} for the SOCP (got {solver!r})")
    kwargs = {"time_limit": float(time_limit)} if time_limit is not None and solver == "clarabel" else {}
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            problem.solve(solver=SOLVERS[solver], **kwargs)
    except cp.SolverError:
        return "error", time.perf_counter() - t0
    stats = problem.solver_stats
    # The solver's own time: cvxpy's compilation counts as building (see clear).
    seconds = stats.solve_time if stats is not None and stats.solve_time is not None else \
        time.perf_counter() - t0 - (problem.compilation_time or 0.0)
    return CONIC_STATUS.get(problem.status, "error"), float(seconds)


def relaxation_gap(model: SocpModel, feeder: Feeder) -> tuple[float, int, int]:
    """Largest relative slack of the relaxed cone after a solve, and where.

    Returns ``(gap, interval, line)`` with
    ``gap = max_{t,l} (l v_i - P^2 - Q^2) / max(max_k l_k v_{i(k)}, GAP_FLOOR_MVA2)``,
    the slack of each line measured against the largest ``l v`` (the largest
    squared apparent flow) of its interval. Zero means the relaxation is exact:
    the dispatch satisfies the AC branch-flow equations.
    """
    topo = feeder.topology
    m = topo.n_line
    var = model.variables
    if m == 0:
        return 0.0, 0, 0
    mva = model.power_base_kva / S_BASE_KVA
    p = var["line_p"].value.reshape(-1, m) * mva
    q = var["line_q"].value.reshape(-1, m) * mva
    l = var["line_l"].value.reshape(-1, m) * mva ** 2
    v_send = var["v"].value.reshape(-1, topo.n_bus)[:, topo.parent[1:]]
    lv = l * v_send
    rel = (lv - p ** 2 - q ** 2) / np.maximum(lv.max(axis=1, keepdims=True), GAP_FLOOR_MVA2)
    t, k = np.unravel_index(int(np.argmax(rel)), rel.shape)
    return max(float(rel[t, k]), 0.0), int(t), int(k)


def clear(feeder: Feeder, book: BidBook, iso_price, *, rules: MarketRules = MarketRules(),
          resources: tuple[Resource, ...] = (),
          options: results.ClearingOptions = results.ClearingOptions(formulation="socp"),
          solver: str = "ecos") -> results.ClearingResult:
    """Clear the nodal market with the branch-flow SOCP (losses included).

    Parameters
    ----------
    feeder
        The radial feeder below the T-D interface.
    book
        Validated bids.
    iso_price
        ISO energy price at the interface per MWh, scalar or one per interval.
    rules, resources
        Market rules and intertemporal resources, as for the LP.
    options
        ``ac_check`` runs an AC power flow of the dispatch; ``time_limit`` reaches Clarabel only.
    solver
        ``"ecos"`` (default) or ``"clarabel"``.

    Returns
    -------
    ClearingResult
        ``solver`` names the conic solver and ``relaxation_gap`` is the gap of
        :func:`relaxation_gap`; above ``EXACT_GAP`` a ``diagnosis`` entry flags
        the dispatch as possibly not physical. A failed solve (including an
        inaccurate one) is a result with that status, never an exception.

    Notes
    -----
    ``dlmp`` is the sensitivity of the optimal cost to withdrawal at a bus,
    ``-dual(bus_p_balance) * cost_scale / base_mva`` (cvxpy reports the dual of
    ``lhs == rhs`` with the opposite sign, pinned by a 2-bus test). It splits as
    ``dlmp = energy + congestion + voltage + loss``:

    - ``energy`` = ISO price;
    - ``congestion`` = interface-limit dual plus, summed along the path from
      the root, ``mu_l P_l / S_l`` per line (``mu_l >= 0`` the dual of the
      thermal circle; ``P_l / S_l`` its gradient in ``P_l`` where it binds);
    - ``voltage`` = ``sum_k (nu_k^- - nu_k^+) dv_k/dw_j`` with the lossless
      sensitivities ``dv_k/dw_j = -2 sum r`` over the lines common to the paths
      to ``k`` and ``j`` (the same path sums as the LP in
      :meth:`engine.clearing.NodalMarket.result`);
    - ``loss`` = ``dlmp - energy - congestion - voltage``: the marginal losses
      plus the error of the lossless sensitivities in the two terms above,
      which is of the order of the loss factor times those terms.
    """
    iso = results.iso_prices(iso_price, book.n_interval)
    loads = lindistflow.market_loads(feeder, book)
    model = build(feeder, book, iso, rules, resources, *loads)
    status, seconds = solve(model, solver, options.time_limit)
    compile_seconds = model.problem.compilation_time or 0.0
    market = results.MarketContext(feeder, book, iso, "socp", model.build_seconds + compile_seconds)
    if status != "optimal":
        diag = ({"limit": "unknown", "element": "", "interval": None,
                 "detail": "the SOCP has no feasible dispatch; clear with formulation 'lindistflow' for a "
                           "limit-by-limit diagnosis"},) if status == "infeasible" else ()
        return results._failed(market, status, seconds, diag, solver=solver)
    return _result(model, market, loads, rules, seconds, solver, options.ac_check)


def _result(model: SocpModel, market: results.MarketContext, loads: tuple[np.ndarray, np.ndarray],
            rules: MarketRules, seconds: float, solver: str, ac_check: bool) -> results.ClearingResult:
    feeder, book = market.feeder, market.book
    topo = feeder.topology
    n, m, T = topo.n_bus, topo.n_line, book.n_interval
    var, con = model.variables, model.constraints
    mva = model.power_base_kva / S_BASE_KVA
    per_mwh = model.cost_scale / mva  # a dual of a power row, as currency per MWh
    x = results.pro_rata(book, var["bid"].value * mva)
    line_p = var["line_p"].value.reshape(T, m) * mva
    line_q = var["line_q"].value.reshape(T, m) * mva
    v = var["v"].value.reshape(T, n)
    p0 = var["import_p"].value * mva
    q0 = var["import_q"].value * mva
    y_p = -con["bus_p_balance"].dual_value.reshape(T, n) * per_mwh
    y_q = -con["bus_q_balance"].dual_value.reshape(T, n) * per_mwh

    zeros_t = np.zeros(T)
    interface = (_dual(con, "interface_import", zeros_t) - _dual(con, "interface_export", zeros_t)) * per_mwh
    cong_line = np.zeros((T, m))
    if len(model.lim_lines):
        lim = model.lim_lines
        mu = con["line_thermal"].dual_value.reshape(T, len(lim)) * per_mwh
        cong_line[:, lim] = mu * line_p[:, lim] / (topo.s_max_kva[lim] / S_BASE_KVA)
    # d f*/d(bound) of each bus voltage, then the LP's voltage path sums on it.
    bound_dual = np.zeros((T, n))
    if n > 1:
        zeros_b = np.zeros(T * (n - 1))
        bound_dual[:, 1:] = ((_dual(con, "bus_v_min", zeros_b) - _dual(con, "bus_v_max", zeros_b))
                             .reshape(T, n - 1) * model.cost_scale)
    volt_line = 2 * topo.r_pu[:, None] * topo.downstream_sum(bound_dual.T)
    energy = np.repeat(market.iso_price[:, None], n, axis=1)
    congestion = interface[:, None] + topo.path_sum(cong_line.T).T
    voltage = topo.path_sum(volt_line).T
    loss = y_p - energy - congestion - voltage

    shed = var["shed"].value.reshape(T, n) * model.power_base_kva if "shed" in var else None
    welfare = -model.problem.value * model.cost_scale * rules.hours
    gap, gap_t, gap_line = relaxation_gap(model, feeder)
    ac = results.ac_check(feeder, book, x, line_p, line_q, v, loads, shed) if ac_check else None
    result = results._tables(market, "optimal", x, line_p, line_q, v, p0, q0, y_p, y_q,
                              (energy, congestion, voltage, loss), welfare, seconds, shed=shed, ac=ac,
                              solver=solver, gap=gap)
    if gap > EXACT_GAP:
        iv = book.intervals[gap_t]
        flag = {"limit": "relaxation_gap", "element": str(topo.line_ids[gap_line]),
                "interval": None if iv is None else iv.isoformat(), "violation": gap, "unit": "relative",
                "detail": "the cone l v >= P^2 + Q^2 is not tight: the dispatch may not be physically "
                          "realisable and its DLMPs understate or overstate losses"}
        result = dataclasses.replace(result, diagnosis=(flag,))
    return result


def _dual(con: dict, name: str, absent: np.ndarray) -> np.ndarray:
    """Dual of an optional constraint (zeros where the market has no such limit)."""
    return np.asarray(con[name].dual_value, dtype=float) if name in con else absent

"""First-order optimality (KKT) of a dispatch, from the AC power flow alone.

Independent of the clearing's LP: the gradients of the interface import, the bus
voltages and the line loadings with respect to each bid are central finite
differences of :func:`engine.powerflow.ac_power_flow` (the backward-forward
sweep), the limits active at the dispatch are read off that power flow, and
the multipliers are the non-negative least-squares fit of the stationarity
condition ``grad cost + sum mu_k grad g_k = 0`` (``g_k <= 0`` the active voltage,
loading and bid-bound constraints). Its residual, per MWh per bid, is how far
the dispatch is from a KKT point of the AC OPF.

A horizon (:func:`horizon_kkt`) is the sum of its intervals' problems,
each on its own feeder (a network change gives later intervals other ratings
or limits), linked by batteries: their state of charge is written out here from
:class:`engine.bids.Battery`'s law (``e_t = e_{t-1} + eta_c c_t dt - d_t dt /
eta_d``), not read from the LP, and its active bounds join the limits.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.optimize import nnls

from dsomarket.engine.powerflow import ac_power_flow

STEP_KW = 0.1
"""Finite-difference step: the sweep's 1e-10 pu tolerance keeps the rounding error below 1e-4 per MWh."""
ACTIVE_V_PU = 1e-6
ACTIVE_LOADING = 1e-6
ACTIVE_KW = 1e-4
ACTIVE_KWH = 1e-3


def _state(feeder, w_p: np.ndarray, w_q: np.ndarray) -> np.ndarray:
    """Import (kW), bus voltages (pu) and per line the larger end loading (share of rating), one vector."""
    topo = feeder.topology
    pf = ac_power_flow(feeder, w_p, w_q)
    ends = np.maximum(np.hypot(pf.line_p_kw, pf.line_q_kvar), np.hypot(pf.line_p_recv_kw, pf.line_q_recv_kvar))
    return np.concatenate([[pf.p0_kw], pf.v_pu, ends / topo.s_max_kva])


def _interval(feeder, bus: np.ndarray, sign: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, list[tuple]]:
    """The import's gradient (per kW of each bid) and the AC limits active at ``x``: ``(name, gradient)``."""
    topo = feeder.topology

    def withdrawal(xx: np.ndarray) -> np.ndarray:
        w = topo.load_kw.astype(float).copy()
        np.add.at(w, bus, sign * xx)
        return w

    base = _state(feeder, withdrawal(x), topo.load_kvar)
    grads = []
    for k in range(len(x)):
        up, down = x.copy(), x.copy()
        up[k] += STEP_KW
        down[k] -= STEP_KW
        grads.append((_state(feeder, withdrawal(up), topo.load_kvar)
                      - _state(feeder, withdrawal(down), topo.load_kvar)) / (2 * STEP_KW))
    jac = np.array(grads).T if grads else np.zeros((len(base), 0))   # (state, bid), per kW
    n = topo.n_bus
    cols = []
    v = base[1:1 + n]
    for j in range(1, n):
        if v[j] <= topo.vmin_pu[j] + ACTIVE_V_PU:
            cols.append((f"vmin {topo.bus_ids[j]}", -jac[1 + j]))     # vmin - v <= 0
        if v[j] >= topo.vmax_pu[j] - ACTIVE_V_PU:
            cols.append((f"vmax {topo.bus_ids[j]}", jac[1 + j]))
    load = base[1 + n:]
    for k in np.nonzero(np.isfinite(load) & (load >= 1 - ACTIVE_LOADING))[0]:
        cols.append((f"rating {topo.line_ids[k]}", jac[1 + n + k]))   # loading - 1 <= 0
    return jac[0], cols


def horizon_kkt(feeders: list, bids: pl.DataFrame, cleared_kw: dict, iso_price, batteries=(),
                hours: float = 1.0) -> tuple[float, list[str]]:
    """Largest stationarity residual (per MWh) over the bids of a unity-pf dispatch of several intervals,
    and the network and battery limits active at the dispatch (``"vmin <bus> @<t>"``, ``"rating <line> @<t>"``,
    ``"soc_max @<t>"``, ``"soc_min @<t>"``, ``"charge @<t>"``, ``"discharge @<t>"``; bid bounds not listed).

    ``feeders[t]``: interval t's feeder; ``bids``: the bid table (``bid_id, bus, side, quantity_kw, price``,
    ``t`` the interval index and, with ``batteries``, ``resource_id``); ``cleared_kw``: bid id to kW;
    ``iso_price``: per MWh, one per interval; ``batteries``: :class:`engine.bids.Battery` owning bids by
    ``resource_id``; ``hours`` the interval length.
    """
    ids = bids["bid_id"].to_list()
    t_of = bids["t"].to_numpy() if "t" in bids.columns else np.zeros(len(ids), dtype=np.int64)
    sign = np.where(bids["side"].to_numpy() == "buy", 1.0, -1.0)      # withdrawal per kW cleared
    x = np.array([cleared_kw[b] for b in ids])
    q = bids["quantity_kw"].to_numpy()
    price = np.broadcast_to(np.asarray(iso_price, dtype=float), (len(feeders),))
    # Cost per hour of the dispatch: the ISO bill plus sellers' prices minus buyers' values; per MWh per MW.
    grad = -sign * bids["price"].to_numpy()
    cols, names = [], []
    for t, feeder in enumerate(feeders):
        mine = np.nonzero(t_of == t)[0]
        pos = {str(b): k for k, b in enumerate(feeder.topology.bus_ids)}
        bus = np.array([pos[str(b)] for b in bids["bus"].to_numpy()[mine]], dtype=np.int64)
        d_import, limits = _interval(feeder, bus, sign[mine], x[mine])
        grad[mine] += price[t] * d_import
        for name, g in limits:
            full = np.zeros(len(ids))
            full[mine] = g
            cols.append(full)
            names.append(f"{name} @{t}")
    for name, g in _battery_limits(batteries, bids, t_of, sign, x, len(feeders), hours):
        cols.append(g)
        names.append(name)
    eye = np.eye(len(ids))
    cols += [-eye[k] for k in np.nonzero(x <= ACTIVE_KW)[0]]          # -x <= 0
    cols += [eye[k] for k in np.nonzero(x >= q - ACTIVE_KW)[0]]       # x - q <= 0
    if not cols:
        return float(np.max(np.abs(grad))), names
    g = np.array(cols).T
    # Scale each constraint's gradient to unit length, so NNLS is not ill-conditioned by units.
    g = g / np.maximum(np.linalg.norm(g, axis=0), 1e-12)
    mu, _ = nnls(g, -grad, maxiter=50 * g.shape[1])
    return float(np.max(np.abs(grad + g @ mu))), names


def _battery_limits(batteries, bids: pl.DataFrame, t_of: np.ndarray, sign: np.ndarray, x: np.ndarray, T: int,
                    hours: float) -> list[tuple]:
    """The battery limits active at ``x``: ``(name, gradient per kW of each bid)``, each as ``g <= 0``."""
    out = []
    for b in batteries:
        own = (bids["resource_id"].to_numpy() == b.resource_id).astype(float)
        charge, discharge = own * (sign > 0), own * (sign < 0)
        # kWh stored per kW of each bid in each interval: e_t is the sum over the intervals up to t.
        energy = (b.eta_charge * charge - discharge / b.eta_discharge) * hours
        soc = b.soc_init_kwh
        for t in range(T):
            now = t_of == t
            soc += float(energy[now] @ x[now])
            d_soc = energy * (t_of <= t)
            lo = max(b.soc_min_kwh, b.soc_end_kwh) if t == T - 1 else b.soc_min_kwh
            if soc >= b.energy_kwh - ACTIVE_KWH:
                out.append((f"soc_max @{t}", d_soc))
            if soc <= lo + ACTIVE_KWH:
                out.append((f"soc_min @{t}", -d_soc))
            for name, kind, limit in (("charge", charge, b.charge_kw), ("discharge", discharge, b.discharge_kw)):
                row = kind * now
                if row.any() and row @ x >= limit - ACTIVE_KW:
                    out.append((f"{name} @{t}", row))
    return out


def kkt_residual(feeder, bids: pl.DataFrame, cleared_kw: dict, iso_price: float) -> float:
    """Largest stationarity residual (per MWh) over the bids of a unity-pf, single-interval dispatch.

    ``bids``: the bid table (``bid_id, bus, side, quantity_kw, price``); ``cleared_kw``: bid id to kW.
    """
    return horizon_kkt([feeder], bids, cleared_kw, [iso_price])[0]

"""First-order optimality (KKT) of a single-interval dispatch, from the AC power flow alone.

Independent of the clearing's LP: the gradients of the interface import, the bus
voltages and the line loadings with respect to each bid are central finite
differences of :func:`engine.powerflow.ac_power_flow` (the backward-forward
sweep), the limits active at the dispatch are read off that power flow, and
the multipliers are the non-negative least-squares fit of the stationarity
condition ``grad cost + sum mu_k grad g_k = 0`` (``g_k <= 0`` the active voltage,
loading and bid-bound constraints). Its residual, per MWh per bid, is how far
the dispatch is from a KKT point of the AC OPF.
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


def _state(feeder, w_p: np.ndarray, w_q: np.ndarray) -> np.ndarray:
    """Import (kW), bus voltages (pu) and per line the larger end loading (share of rating), one vector."""
    topo = feeder.topology
    pf = ac_power_flow(feeder, w_p, w_q)
    ends = np.maximum(np.hypot(pf.line_p_kw, pf.line_q_kvar), np.hypot(pf.line_p_recv_kw, pf.line_q_recv_kvar))
    return np.concatenate([[pf.p0_kw], pf.v_pu, ends / topo.s_max_kva])


def kkt_residual(feeder, bids: pl.DataFrame, cleared_kw: dict, iso_price: float) -> float:
    """Largest stationarity residual (per MWh) over the bids of a unity-pf, single-interval dispatch.

    ``bids``: the bid table (``bid_id, bus, side, quantity_kw, price``); ``cleared_kw``: bid id to kW.
    """
    topo = feeder.topology
    pos = {str(b): k for k, b in enumerate(topo.bus_ids)}
    ids = bids["bid_id"].to_list()
    bus = np.array([pos[str(b)] for b in bids["bus"]])
    sign = np.where(bids["side"].to_numpy() == "buy", 1.0, -1.0)      # withdrawal per kW cleared
    x = np.array([cleared_kw[b] for b in ids])
    q = bids["quantity_kw"].to_numpy()

    def withdrawal(xx: np.ndarray) -> np.ndarray:
        w = topo.load_kw.astype(float).copy()
        np.add.at(w, bus, sign * xx)
        return w

    base = _state(feeder, withdrawal(x), topo.load_kvar)
    grads = []
    for k in range(len(ids)):
        up, down = x.copy(), x.copy()
        up[k] += STEP_KW
        down[k] -= STEP_KW
        grads.append((_state(feeder, withdrawal(up), topo.load_kvar)
                      - _state(feeder, withdrawal(down), topo.load_kvar)) / (2 * STEP_KW))
    jac = np.array(grads).T                        # (state, bid), per kW
    n = topo.n_bus
    # Cost per hour of the dispatch: the ISO bill plus sellers' prices minus buyers' values; per MWh per MW.
    grad = iso_price * jac[0] - sign * bids["price"].to_numpy()
    cols = []
    v = base[1:1 + n]
    for j in range(1, n):
        if v[j] <= topo.vmin_pu[j] + ACTIVE_V_PU:
            cols.append(-jac[1 + j])               # vmin - v <= 0
        if v[j] >= topo.vmax_pu[j] - ACTIVE_V_PU:
            cols.append(jac[1 + j])
    load = base[1 + n:]
    for k in np.nonzero(np.isfinite(load) & (load >= 1 - ACTIVE_LOADING))[0]:
        cols.append(jac[1 + n + k])                # loading - 1 <= 0
    eye = np.eye(len(ids))
    cols += [-eye[k] for k in np.nonzero(x <= ACTIVE_KW)[0]]          # -x <= 0
    cols += [eye[k] for k in np.nonzero(x >= q - ACTIVE_KW)[0]]       # x - q <= 0
    if not cols:
        return float(np.max(np.abs(grad)))
    g = np.array(cols).T
    # Scale each constraint's gradient to unit length, so NNLS is not ill-conditioned by units.
    g = g / np.maximum(np.linalg.norm(g, axis=0), 1e-12)
    mu, _ = nnls(g, -grad, maxiter=50 * g.shape[1])
    return float(np.max(np.abs(grad + g @ mu)))

"""AC power flow of a radial feeder by backward-forward sweep, and the linear model's error against it.

This is the verification step of a clearing: the dispatch found with the
linear (LinDistFlow) model is re-run through the full AC equations, and the
worst voltage and flow errors of the linear model are reported.

Conventions
-----------
- Inputs and outputs in kW, kvar, volts per unit and amperes; per-unit (on
  ``S_BASE_KVA`` and the feeder's ``base_kv``) only inside the sweep.
- Per-bus arrays are in topology order (``feeder.topology.bus_ids``), per-line
  arrays in topology line order (``feeder.topology.line_ids``; line ``k`` feeds
  bus ``k + 1``).
- A withdrawal is positive for consumption (negative for injection).
- A line flow is measured at the sending (parent) end, positive away from the
  root (parent -> child), whatever the from/to order of the input table.
- Loads are constant power.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from dsomarket.engine.errors import InputError
from dsomarket.engine.network import S_BASE_KVA, Feeder, Topology


PATH_SWEEP_NNZ = 5000
"""Largest path matrix (entries: the sum of the buses' depths) with which :func:`backward_forward_sweep`
sums flows and voltage drops by products with it rather than triangular solves."""
DENSE_SWEEP_ENTRIES = 40_000
"""Largest path matrix (lines times buses, as a dense array) that :func:`backward_forward_sweep` multiplies
by as a dense array: below some 200 buses a dense product costs less than a sparse one's fixed overhead."""


@dataclass(frozen=True)
class Sweep:
    """Raw per-unit result of :func:`backward_forward_sweep`.

    Attributes
    ----------
    v
        Complex bus voltages, pu, shape (n,), topology order.
    current
        Complex line currents, pu, shape (n-1,), parent -> child.
    s_send
        Complex power entering each line at its parent end, pu, shape (n-1,).
    iterations
        Sweeps performed.
    converged
        Whether the largest voltage update fell below the tolerance.
    """

    v: np.ndarray
    current: np.ndarray
    s_send: np.ndarray
    iterations: int
    converged: bool


def backward_forward_sweep(topology: Topology, r_pu: np.ndarray, x_pu: np.ndarray, v0_pu: float,
                           s_withdraw_pu: np.ndarray, tol: float = 1e-10, max_iter: int = 100,
                           v_start: np.ndarray | None = None) -> Sweep:
    """Backward-forward sweep on per-unit arrays, for callers that vary the impedances.

    Parameters
    ----------
    topology
        Radial structure; only its parent relation is used (through
        ``downstream_sum`` and ``path_sum``), so ``r_pu`` and ``x_pu`` may differ
        from the topology's own.
    r_pu, x_pu
        Line resistance and reactance, pu, shape (n-1,).
    v0_pu
        Root voltage magnitude, pu (root angle 0).
    s_withdraw_pu
        Complex net withdrawal per bus, pu, shape (n,) or (n, k) for k
        operating points swept together (one sparse solve for all); positive
        real part = consumption. The root's entry does not load any line.
    tol
        Convergence tolerance on the largest voltage update, pu.
    max_iter
        Sweeps before giving up (``converged=False``).
    v_start
        Complex bus voltages (pu, the shape of ``s_withdraw_pu``) to start from, e.g. the
        sweep of a nearby operating point; default flat (``v0_pu`` everywhere). The sweep
        converges to the same voltages (to ``tol``) from either, in fewer sweeps from a near one.

    Notes
    -----
    Backward sweep: bus currents ``I_j = conj(S_j / V_j)`` summed downstream
    give the line currents ``J = A I``. Forward sweep: ``V_j = V_0 - sum over
    the path 0 -> j of z_l J_l``. The topology operators work on real arrays,
    so real and imaginary parts travel as two columns of one solve.
    """
    z = np.asarray(r_pu, dtype=float) + 1j * np.asarray(x_pu, dtype=float)
    s = np.asarray(s_withdraw_pu, dtype=complex)
    if s.ndim == 2:
        z = z[:, None]
    v = np.full(s.shape, complex(v0_pu))
    if v_start is not None and np.shape(v_start) == s.shape and np.all(np.isfinite(v_start)):
        v = np.array(v_start, dtype=complex)
    current = np.zeros((topology.n_line,) + s.shape[1:], dtype=complex)
    converged = False
    iterations = 0
    if topology.n_line * topology.n_bus <= DENSE_SWEEP_ENTRIES or int(topology.depth.sum()) <= PATH_SWEEP_NNZ:
        # A small feeder: a dense product has none of the sparse one's fixed cost per call (ieee33: 2 us
        # against 15 us, some 20 products a sweep). A shallow feeder: the path matrix (one entry per bus
        # and line above it) applied to complex arrays directly is ~14x faster per sweep than two sparse
        # triangular solves on ieee33, where those solves' fixed costs dominate; on deep feeders the
        # solves win (1,000 buses: 0.5 against 0.7 ms a sweep).
        path = (topology.path_complex if topology.n_line * topology.n_bus <= DENSE_SWEEP_ENTRIES
                else topology.path_matrix)
        downstream, upstream = path.__matmul__, path.T.__matmul__
    else:
        downstream = functools.partial(_complex_apply, topology.downstream_sum)
        upstream = functools.partial(_complex_apply, topology.path_sum)
    with np.errstate(all="ignore"):  # a diverging sweep shows up as a non-finite step below
        for iterations in range(1, max_iter + 1):
            current = downstream(np.conj(s / v))
            v_new = v0_pu - upstream(z * current)
            step = float(np.max(np.abs(v_new - v)))
            v = v_new
            if not math.isfinite(step):
                break
            if step < tol:
                converged = True
                break
        s_send = v[topology.parent[1:]] * np.conj(current)
    return Sweep(v=v, current=current, s_send=s_send, iterations=iterations, converged=converged)


def _complex_apply(op, a: np.ndarray) -> np.ndarray:
    """Apply a real linear operator on rows to a complex array of shape (n,) or (n, k)."""
    if a.ndim == 1:
        out = op(np.column_stack([a.real, a.imag]))
        return out[:, 0] + 1j * out[:, 1]
    k = a.shape[1]
    out = op(np.hstack([a.real, a.imag]))
    return out[:, :k] + 1j * out[:, k:]


@dataclass(frozen=True)
class PowerFlowResult:
    """AC power flow of one operating point.

    Attributes
    ----------
    bus_ids, line_ids
        Ids in topology order, to label the arrays below.
    v_pu
        Voltage magnitude per bus, pu, shape (n,).
    angle_deg
        Voltage angle per bus relative to the root, degrees, shape (n,).
    line_p_kw, line_q_kvar
        Active and reactive flow at each line's sending (parent) end, kW and
        kvar, positive away from the root, shape (n-1,).
    line_p_recv_kw, line_q_recv_kvar
        Active and reactive flow leaving each line at its receiving (child)
        end towards the child, kW and kvar: the sending-end flow minus the
        line's series losses, shape (n-1,).
    line_current_a
        Current magnitude per line, A, shape (n-1,).
    losses_kw, losses_kvar
        Total series losses, kW and kvar.
    min_v_pu, min_v_bus
        Lowest voltage magnitude, pu, and the bus id where it occurs.
    p0_kw, q0_kvar
        Interface import at the root, kW and kvar (positive = the feeder buys
        from the ISO): total withdrawal plus losses.
    iterations
        Sweeps performed.
    converged
        False when the sweep did not converge (then all figures are the last
        iterate and not a solution).
    """

    bus_ids: np.ndarray
    line_ids: np.ndarray
    v_pu: np.ndarray
    angle_deg: np.ndarray
    line_p_kw: np.ndarray
    line_q_kvar: np.ndarray
    line_p_recv_kw: np.ndarray
    line_q_recv_kvar: np.ndarray
    line_current_a: np.ndarray
    losses_kw: float
    losses_kvar: float
    min_v_pu: float
    min_v_bus: str
    p0_kw: float
    q0_kvar: float
    iterations: int
    converged: bool


def ac_power_flow(feeder: Feeder, p_withdraw_kw: np.ndarray | None = None,
                  q_withdraw_kvar: np.ndarray | None = None, tol: float = 1e-10,
                  max_iter: int = 100) -> PowerFlowResult:
    """AC power flow of a radial feeder with constant-power loads (backward-forward sweep).

    Parameters
    ----------
    feeder
        The feeder; the root is held at ``feeder.v0_pu`` and angle 0.
    p_withdraw_kw, q_withdraw_kvar
        Net withdrawal per bus in kW and kvar, shape (n,), topology order;
        positive = consumption, negative = injection. Default: the feeder's
        fixed loads.
    tol
        Convergence tolerance on the largest voltage update between sweeps, pu.
    max_iter
        Sweeps before giving up.

    Returns
    -------
    PowerFlowResult
        Non-convergence is reported as ``converged=False``, never raised.

    Raises
    ------
    InputError
        For withdrawals of the wrong shape or not finite.

    Notes
    -----
    Solves the branch-flow (DistFlow) equations of Baran & Wu (1989) exactly:
    ``V_j = V_i - z_l J_l``, ``J_l = sum of conj(S_k / V_k)`` over the buses
    ``k`` below line ``l``. See :func:`backward_forward_sweep`.
    """
    topo = feeder.topology
    p = _per_bus(topo, p_withdraw_kw, topo.load_kw, "p_withdraw_kw")
    q = _per_bus(topo, q_withdraw_kvar, topo.load_kvar, "q_withdraw_kvar")
    sweep = backward_forward_sweep(topo, topo.r_pu, topo.x_pu, feeder.v0_pu, (p + 1j * q) / S_BASE_KVA,
                                   tol=tol, max_iter=max_iter)
    v_abs = np.abs(sweep.v)
    i_abs = np.abs(sweep.current)
    loss = (topo.r_pu * i_abs ** 2).sum() + 1j * (topo.x_pu * i_abs ** 2).sum()
    s0 = sweep.s_send[topo.parent[1:] == 0].sum() + (p[0] + 1j * q[0]) / S_BASE_KVA
    # A diverged sweep points at its first non-finite bus rather than at an arbitrary low one.
    k_min = int(np.argmin(np.where(np.isfinite(v_abs), v_abs, -np.inf)))
    i_base_a = S_BASE_KVA / (math.sqrt(3.0) * feeder.base_kv)
    return PowerFlowResult(
        bus_ids=topo.bus_ids, line_ids=topo.line_ids,
        v_pu=v_abs, angle_deg=np.angle(sweep.v, deg=True),
        line_p_kw=sweep.s_send.real * S_BASE_KVA, line_q_kvar=sweep.s_send.imag * S_BASE_KVA,
        line_p_recv_kw=(sweep.s_send.real - topo.r_pu * i_abs ** 2) * S_BASE_KVA,
        line_q_recv_kvar=(sweep.s_send.imag - topo.x_pu * i_abs ** 2) * S_BASE_KVA,
        line_current_a=i_abs * i_base_a,
        losses_kw=float(loss.real * S_BASE_KVA), losses_kvar=float(loss.imag * S_BASE_KVA),
        min_v_pu=float(v_abs[k_min]), min_v_bus=str(topo.bus_ids[k_min]),
        p0_kw=float(s0.real * S_BASE_KVA), q0_kvar=float(s0.imag * S_BASE_KVA),
        iterations=sweep.iterations, converged=sweep.converged,
    )


def _per_bus(topo: Topology, value, default: np.ndarray, name: str) -> np.ndarray:
    if value is None:
        return default.astype(float)
    arr = np.asarray(value, dtype=float)
    if arr.shape != (topo.n_bus,):
        raise InputError("powerflow", name, f"must have shape ({topo.n_bus},), one entry per bus "
                         f"in topology order (got {arr.shape})")
    bad = np.nonzero(~np.isfinite(arr))[0]
    if len(bad):
        raise InputError("powerflow", name, f"must be finite (got {arr[bad[0]]} at bus "
                         f"{topo.bus_ids[bad[0]]!r})", row=int(bad[0]))
    return arr


def linear_model_error(feeder: Feeder, p_withdraw_kw: np.ndarray, q_withdraw_kvar: np.ndarray,
                       v_lin_pu: np.ndarray, line_p_lin_kw: np.ndarray,
                       line_q_lin_kvar: np.ndarray, ac: PowerFlowResult | None = None) -> dict:
    """Worst error of a linear (LinDistFlow) solution against the AC power flow of the same withdrawals.

    Parameters
    ----------
    feeder
        The feeder.
    p_withdraw_kw, q_withdraw_kvar
        Net withdrawal per bus (the cleared dispatch plus fixed load), kW and
        kvar, shape (n,), topology order, positive = consumption.
    v_lin_pu
        The linear model's voltage magnitude per bus, pu, shape (n,) (the square
        root of LinDistFlow's squared voltage).
    line_p_lin_kw, line_q_lin_kvar
        The linear model's line flows, kW and kvar, shape (n-1,), topology line
        order, positive parent -> child.
    ac
        The AC power flow of these withdrawals, when the caller already has it;
        computed otherwise.

    Returns
    -------
    dict
        ``converged`` (of the AC power flow), ``max_v_error_pu`` and
        ``max_v_error_bus``; ``max_flow_error_kw`` and ``max_flow_error_line``
        (active flow at the sending end); ``max_flow_error_kvar`` and
        ``max_flow_error_kvar_line``; and the AC figures ``ac_losses_kw``,
        ``ac_min_v_pu``, ``ac_min_v_bus``, ``ac_p0_kw``. Errors are absolute
        values of linear minus AC.
    """
    topo = feeder.topology
    if ac is None:
        ac = ac_power_flow(feeder, p_withdraw_kw, q_withdraw_kvar)
    v_err = np.abs(_shaped(v_lin_pu, topo.n_bus, "v_lin_pu") - ac.v_pu)
    p_err = np.abs(_shaped(line_p_lin_kw, topo.n_line, "line_p_lin_kw") - ac.line_p_kw)
    q_err = np.abs(_shaped(line_q_lin_kvar, topo.n_line, "line_q_lin_kvar") - ac.line_q_kvar)
    kv, kp, kq = int(np.argmax(v_err)), int(np.argmax(p_err)), int(np.argmax(q_err))
    return {
        "converged": ac.converged,
        "max_v_error_pu": float(v_err[kv]), "max_v_error_bus": str(topo.bus_ids[kv]),
        "max_flow_error_kw": float(p_err[kp]), "max_flow_error_line": str(topo.line_ids[kp]),
        "max_flow_error_kvar": float(q_err[kq]), "max_flow_error_kvar_line": str(topo.line_ids[kq]),
        "ac_losses_kw": ac.losses_kw, "ac_min_v_pu": ac.min_v_pu, "ac_min_v_bus": ac.min_v_bus,
        "ac_p0_kw": ac.p0_kw,
    }


def _shaped(value, n: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.shape != (n,):
        raise InputError("linear_model", name, f"must have shape ({n},) in topology order (got {arr.shape})")
    return arr

"""The feeder's forecast operating point, the limits DER injections may use, and their AC check.

Pre-qualification (:mod:`engine.registry`), operating envelopes
(:mod:`engine.envelopes`) and the hybrid checks (:mod:`engine.hybrid`) all ask
the same question: how much can injections at some buses move before a
distribution limit breaks, given the forecast? This module answers it once.

Constraints
-----------
For the DERs at buses ``j`` moving their net injection by ``e_j`` kW (with
``tan_phi_j`` kvar per kW, same sign), every monitored quantity moves linearly
(LinDistFlow, Baran & Wu 1989, lossless; DESIGN.md section 4). One row per
constraint, named ``line:<id>``, ``bus:<id>`` or ``interface``:

- line ``l``: ``g = dP_l`` per kW, ``-1`` for a DER below ``l`` (its injection
  relieves the root-to-leaf flow), else 0. Limit ``|P_l| <= sqrt(S_max^2 - Q_l^2)``
  with the base reactive flow ``Q_l``;
- bus ``k``: ``g = dv_k = 2 (R_kj + tan_phi_j X_kj) / S_base`` per kW (squared
  voltage, pu), ``R_kj`` (``X_kj``) the resistance (reactance) shared by the
  paths ``0 -> k`` and ``0 -> j``. Limits ``vmin^2 <= v_k <= vmax^2``;
- interface: ``dP0 = -1`` per kW. Limits ``-export_max <= P0 <= import_max``.

Each limit has an *export-type* side (reverse line flow, over-voltage, export
limit) and an *import-type* side (forward flow, under-voltage, import limit),
each with its own margin (constraint x interval, in the constraint's unit: kW
for lines and the interface, pu of squared voltage for buses). With
``tan_phi >= 0`` a DER exporting pushes only export-type sides and importing
only import-type sides, by the same non-negative sensitivity ``S`` (constraint x
DER, per kW moved). A DER absorbing vars while exporting (``tan_phi < 0``) can
have a negative voltage sensitivity where ``|tan_phi| X_kj > R_kj``: exporting
then lowers that bus's voltage and importing raises it. Its magnitude is kept
apart as ``C`` (cross): a DER pushes export-type sides by ``S e + C i`` and
import-type sides by ``S i + C e`` (``e``, ``i`` >= 0 its export and import).

Losses and the voltage's quadratic terms are not in the linear model; the
operating points a caller allocates are therefore run through the AC power flow
of :mod:`engine.powerflow` at the corners (:func:`corners`: each side of each
limit is at its worst with every DER at the end of its range that pushes it;
without cross sensitivities these are two corners, every DER at its export
limit and every DER at its import limit) and each limit the AC model breaks is
tightened by the excess, until the corners pass (:func:`ac_corrected`).

Forecasts
---------
A forecast table ``bus, interval, p_kw, q_kvar`` gives the net withdrawal of the
fixed (non-DER) load per bus and interval, positive = consumption, the same sign
as the feeder's ``load_kw``. Buses or intervals it does not list keep the
feeder's own loads (``Feeder.loads``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl
import scipy.sparse as sp

from dsomarket.engine.errors import InputError
from dsomarket.engine.network import S_BASE_KVA, Feeder, Topology, _normalise
from dsomarket.engine.powerflow import ac_power_flow

_UTC = pl.Datetime("us", "UTC")
FORECAST_SCHEMA = {"bus": pl.Utf8, "interval": _UTC, "p_kw": pl.Float64, "q_kvar": pl.Float64}
SENS_TOL = 1e-9
"""Sensitivity (unit of the constraint per kW) below which a DER counts as not affecting it."""
AC_TOL_KW = 0.01
"""kW (or kVA) by which an AC check may exceed a limit before it counts; voltages use 1e-6 pu."""
_AC_TOL_PU = 1e-6


# -- forecasts --------------------------------------------------------------------------------------

def forecast_loads(feeder: Feeder, forecast: pl.DataFrame | None = None,
                   intervals: list | None = None) -> tuple[list, np.ndarray, np.ndarray]:
    """Fixed net withdrawal per bus and interval from a forecast table, or the feeder's loads.

    Parameters
    ----------
    feeder
        The feeder; its loads (and load profile) fill what the forecast leaves out.
    forecast
        Table ``bus, interval, p_kw[, q_kvar]``: net withdrawal, kW and kvar,
        positive = consumption; ``interval`` a UTC timestamp. None = the feeder's loads.
    intervals
        UTC timestamps (aware datetimes) to return; default the forecast's distinct
        intervals (sorted), or ``[None]`` (one interval) without a forecast.

    Returns
    -------
    intervals, p_kw, q_kvar
        The intervals and two arrays ``(n_bus, n_interval)`` in topology order.

    Raises
    ------
    InputError
        Missing column, unknown bus, NaN, a bus listed twice for one interval.
    """
    if forecast is None or forecast.height == 0:
        ivs = list(intervals) if intervals else [None]
        p, q = feeder.loads(None if ivs == [None] else ivs)
        return ivs, p, q
    t = _normalise(forecast, FORECAST_SCHEMA, "forecast", {"q_kvar": 0.0})
    dup = t.select("bus", "interval").is_duplicated().to_numpy()
    if dup.any():
        raise InputError("forecast", "interval", "a bus has two rows for this interval",
                         row=int(np.nonzero(dup)[0][-1]))
    ivs = list(intervals) if intervals else sorted(set(t["interval"].to_list()))
    p, q = feeder.loads(ivs)
    keys = {iv: k for k, iv in enumerate(ivs)}
    t_idx = np.array([keys.get(iv, -1) for iv in t["interval"].to_list()], dtype=np.int64)
    keep = t_idx >= 0
    bus = feeder.topology.bus_index_of(t["bus"].to_numpy(), table="forecast")
    p[bus[keep], t_idx[keep]] = t["p_kw"].to_numpy()[keep]
    q[bus[keep], t_idx[keep]] = t["q_kvar"].to_numpy()[keep]
    return ivs, p, q


def interval_column(intervals: list, index: np.ndarray) -> pl.Series:
    """The ``interval`` column (UTC, null for a single interval) of rows pointing into ``intervals``."""
    return pl.Series("interval", intervals, dtype=_UTC).gather(np.asarray(index, dtype=np.int64))


# -- the linear operating point and its constraints ----------------------------------------------------

@dataclass(frozen=True, eq=False)
class Constraints:
    """Monitored limits of a feeder around a forecast, for a set of DERs (see the module notes).

    Attributes
    ----------
    names
        ``(c,)`` constraint names: ``line:<id>``, ``bus:<id>``, ``interface``.
    kind
        ``(c,)`` ``line``, ``bus`` or ``interface``.
    element
        ``(c,)`` topology index of the line or bus (0 for the interface).
    sens
        ``(c, d)`` CSR, >= 0: constraint units per kW a DER moves, on the export-type side
        when it exports and on the import-type side when it imports.
    cross
        ``(c, d)`` CSR, >= 0: the same per kW where the direction is reversed (a DER with
        ``tan_phi < 0`` importing pushes the export-type side, exporting the import-type side);
        empty without such DERs.
    margin_export, margin_import
        ``(c, t)``: room left in the forecast before the limit, in the constraint's
        unit; negative where the forecast already breaks it; ``inf`` = no limit.
    """

    names: np.ndarray
    kind: np.ndarray
    element: np.ndarray
    sens: sp.csr_matrix
    cross: sp.csr_matrix
    margin_export: np.ndarray
    margin_import: np.ndarray

    @property
    def n(self) -> int:
        return len(self.names)

    def tightened(self, cut_export: np.ndarray, cut_import: np.ndarray) -> "Constraints":
        """A copy whose margins are smaller by the (non-negative) cuts, shape (c, t)."""
        return Constraints(self.names, self.kind, self.element, self.sens, self.cross,
                           self.margin_export - cut_export, self.margin_import - cut_import)

    def use(self, export_kw: np.ndarray, import_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Worst use of the export-type and import-type sides, ``(c, t)``, when each DER may be anywhere
        in ``[-import_kw, export_kw]`` (``(d, t)``, kW >= 0)."""
        return (self.sens @ export_kw + self.cross @ import_kw, self.sens @ import_kw + self.cross @ export_kw)


def der_sensitivity(topo: Topology, bus_idx: np.ndarray, tan_phi: np.ndarray) -> sp.csr_matrix:
    """Signed sensitivity of every constraint's export-type side to each DER injecting one kW (module notes).

    Rows: the ``n_line`` lines, the ``n_bus - 1`` non-root buses, the interface. Lines and the interface
    are >= 0; a voltage entry is negative where the DER's absorbed vars (``tan_phi < 0``) outweigh its watts.
    """
    d = len(bus_idx)
    lines = topo.path_matrix[:, bus_idx].tocsr()
    on_path = topo.path_matrix[:, bus_idx].toarray()
    shared_r = topo.path_sum(topo.r_pu[:, None] * on_path)[1:]   # (n-1, d), pu
    shared_x = topo.path_sum(topo.x_pu[:, None] * on_path)[1:]
    volt = 2.0 * (shared_r + shared_x * np.asarray(tan_phi, dtype=float)[None, :]) / S_BASE_KVA
    volt = np.where(np.abs(volt) > SENS_TOL, volt, 0.0)
    return sp.vstack([lines, sp.csr_matrix(volt), sp.csr_matrix(np.ones((1, d)))]).tocsr()


def constraints(feeder: Feeder, p_kw: np.ndarray, q_kvar: np.ndarray, bus_idx: np.ndarray,
                tan_phi: np.ndarray | None = None) -> Constraints:
    """The constraints around a forecast for DERs at ``bus_idx`` (topology order).

    Parameters
    ----------
    feeder
        The feeder; its thermal, voltage and interface limits.
    p_kw, q_kvar
        Fixed net withdrawal per bus and interval, ``(n_bus, t)``, positive = consumption.
    bus_idx
        Topology index of each DER's bus, ``(d,)``.
    tan_phi
        kvar per kW each DER moves (same sign), ``(d,)``; default 0.

    Notes
    -----
    Base flows ``P = A w`` and squared voltages ``v = v0^2 - 2 A^T (r P + x Q)``
    (lossless LinDistFlow); margins are ``limit - base`` in each direction.
    """
    topo = feeder.topology
    tan_phi = np.zeros(len(bus_idx)) if tan_phi is None else np.asarray(tan_phi, dtype=float)
    flow_p = np.atleast_2d(topo.downstream_sum(p_kw).reshape(topo.n_line, -1))
    flow_q = np.atleast_2d(topo.downstream_sum(q_kvar).reshape(topo.n_line, -1))
    drop = topo.path_sum(topo.r_pu[:, None] * flow_p + topo.x_pu[:, None] * flow_q) / S_BASE_KVA
    v_sq = feeder.v0_pu ** 2 - 2.0 * drop
    p_lim = np.sqrt(np.maximum(topo.s_max_kva[:, None] ** 2 - flow_q ** 2, 0.0))
    p0 = p_kw.sum(axis=0, keepdims=True)
    margin_export = np.vstack([p_lim + flow_p, topo.vmax_pu[1:, None] ** 2 - v_sq[1:],
                               feeder.export_max_kw + p0])
    margin_import = np.vstack([p_lim - flow_p, v_sq[1:] - topo.vmin_pu[1:, None] ** 2,
                               feeder.import_max_kw - p0])
    names = np.concatenate([np.char.add("line:", topo.line_ids.astype(str)),
                            np.char.add("bus:", topo.bus_ids[1:].astype(str)), ["interface"]]).astype(object)
    kind = np.array(["line"] * topo.n_line + ["bus"] * (topo.n_bus - 1) + ["interface"], dtype=object)
    element = np.concatenate([np.arange(topo.n_line), np.arange(1, topo.n_bus), [0]])
    signed = der_sensitivity(topo, np.asarray(bus_idx), tan_phi)
    sens, cross = signed.maximum(0).tocsr(), (-signed).maximum(0).tocsr()
    return Constraints(names, kind, element, sens, cross, margin_export, margin_import)


# -- AC check of the corners -------------------------------------------------------------------------

def ac_excess(feeder: Feeder, p_kw: np.ndarray, q_kvar: np.ndarray, direction: str) -> np.ndarray:
    """How far the AC power flow of each interval's withdrawals breaks each limit of one direction.

    Parameters
    ----------
    feeder
        The feeder.
    p_kw, q_kvar
        Net withdrawal per bus and interval ``(n_bus, t)``, positive = consumption
        (fixed load minus the DERs' injections at the corner).
    direction
        ``export`` (reverse flows, over-voltage, export limit) or ``import``.

    Returns
    -------
    numpy.ndarray
        ``(c, t)`` in the rows of :func:`constraints`: the excess over the limit in
        the linear constraint's unit, negative where the limit holds. For a line, the
        kVA over its rating at the worse end, times ``S / |P|`` there when over (the kW
        of active flow that removes it); pu of squared voltage for a bus; kW at the
        interface. Where the sweep does not converge, every row of that interval is ``inf``.
    """
    topo = feeder.topology
    t = p_kw.shape[1]
    out = np.empty((topo.n_line + topo.n_bus, t))
    z_base = topo.z_base_ohm
    i_base = S_BASE_KVA / (math.sqrt(3.0) * feeder.base_kv)
    for k in range(t):
        ac = ac_power_flow(feeder, p_kw[:, k], q_kvar[:, k])
        if not ac.converged:
            out[:, k] = np.inf
            continue
        i_pu = ac.line_current_a / i_base
        recv_p = ac.line_p_kw - topo.r_ohm / z_base * i_pu ** 2 * S_BASE_KVA
        recv_q = ac.line_q_kvar - topo.x_ohm / z_base * i_pu ** 2 * S_BASE_KVA
        s_send = np.hypot(ac.line_p_kw, ac.line_q_kvar)
        s_recv = np.hypot(recv_p, recv_q)
        reverse = ac.line_p_kw < 0 if direction == "export" else ac.line_p_kw >= 0
        s_worse = np.maximum(s_send, s_recv)
        p_worse = np.where(s_send >= s_recv, np.abs(ac.line_p_kw), np.abs(recv_p))
        # kVA over the rating -> kW of active flow that removes it (dS/dP = P/S), at most 10x.
        per_kva = np.minimum(s_worse / np.maximum(np.maximum(p_worse, s_worse / 10.0), 1e-9), 10.0)
        line = np.where(reverse, (s_worse - topo.s_max_kva) * np.where(s_worse > topo.s_max_kva, per_kva, 1.0),
                        -np.inf)
        v_sq = ac.v_pu[1:] ** 2
        if direction == "export":
            bus = v_sq - topo.vmax_pu[1:] ** 2
            iface = -ac.p0_kw - feeder.export_max_kw
        else:
            bus = topo.vmin_pu[1:] ** 2 - v_sq
            iface = ac.p0_kw - feeder.import_max_kw
        out[:, k] = np.concatenate([line, bus, [iface]])
    return out


def injection_by_bus(n_bus: int, bus_idx: np.ndarray, kw: np.ndarray) -> np.ndarray:
    """Sum per-DER values ``(d, t)`` into per-bus arrays ``(n_bus, t)`` (topology order)."""
    kw = np.asarray(kw, dtype=float)
    t = kw.shape[1]
    rows = np.repeat(np.asarray(bus_idx), t)
    cols = np.tile(np.arange(t), len(bus_idx))
    return sp.coo_matrix((kw.ravel(), (rows, cols)), shape=(n_bus, t)).toarray()


@dataclass(frozen=True)
class AcCheck:
    """The AC verification of an allocation's corners.

    Attributes
    ----------
    passed
        Whether both corners kept every limit (within :data:`AC_TOL_KW`, 1e-6 pu) that
        the forecast keeps, and made none that it breaks worse.
    rounds
        Allocations computed (1 = the linear one passed at once).
    worst_export, worst_import
        The worst remaining excess at each corner and the constraint's name.
    """

    passed: bool
    rounds: int
    worst_export: tuple[float, str]
    worst_import: tuple[float, str]


Allocate = Callable[[Constraints], tuple[np.ndarray, np.ndarray]]


def corners(cons: Constraints) -> tuple[np.ndarray, np.ndarray]:
    """The dispatches at which each side of each limit is at its worst.

    Returns
    -------
    exports, corner_of
        ``exports`` ``(k, d)`` bool: in corner ``k`` DER ``d`` sits at its export end (True) or
        its import end (False). ``corner_of`` ``(2c,)``: the corner of each export-type side
        (rows ``0..c-1``) and import-type side (rows ``c..2c-1``).

    Notes
    -----
    An export-type side is pushed by exports except through a cross sensitivity, where
    importing pushes it; an import-type side the other way round. Without cross
    sensitivities there are two corners, all at export and all at import.
    """
    cross = cons.cross.toarray() > 0
    d = cross.shape[1]
    # The plain corners (all at export, all at import) are always among them: see ac_corrected.
    sides = np.vstack([~cross, cross, np.ones((1, d), dtype=bool), np.zeros((1, d), dtype=bool)])
    exports, corner_of = np.unique(sides, axis=0, return_inverse=True)
    return exports, corner_of.ravel()[:2 * cons.n]


def ac_corrected(feeder: Feeder, p_kw: np.ndarray, q_kvar: np.ndarray, cons: Constraints,
                 bus_idx: np.ndarray, tan_phi: np.ndarray, allocate: Allocate,
                 max_rounds: int = 8) -> tuple[np.ndarray, np.ndarray, Constraints, AcCheck]:
    """Allocate on the linear constraints, then tighten what the AC power flow breaks, until the corners pass.

    Parameters
    ----------
    feeder, p_kw, q_kvar
        The feeder and the forecast withdrawals ``(n_bus, t)``.
    cons
        Linear constraints from :func:`constraints` for the DERs at ``bus_idx``.
    bus_idx, tan_phi
        Each DER's bus (topology order) and kvar per kW, ``(d,)``.
    allocate
        ``allocate(cons) -> (export_kw, import_kw)``, each ``(d, t)`` and >= 0:
        the allocation rule, run on the (tightened) constraints.
    max_rounds
        Allocations before giving up; the last one is returned with ``passed=False``.

    Returns
    -------
    export_kw, import_kw, constraints, AcCheck
        The final allocation, the tightened constraints it was made on, and the check.

    Notes
    -----
    At each corner (:func:`corners`) each DER injects its export allocation or withdraws its
    import allocation (``tan_phi`` kvar per kW with it), and the sides of the limits that corner
    is worst for are checked, every side also at the plain corner of its direction. A side the AC power flow breaks by ``delta`` in round ``k``, where
    the linear model left a slack ``s``, has its linear margin cut by ``s + k delta`` (plus the
    tolerance), and the allocation is rerun:
    the cut absorbs the losses and the quadratic voltage terms LinDistFlow leaves out.
    A limit the AC power flow of the forecast alone already breaks is held to its
    forecast excess (no new violation), as the flexibility auction does.
    """
    topo = feeder.topology
    cut_e = np.zeros_like(cons.margin_export)
    cut_i = np.zeros_like(cons.margin_import)
    tol = np.where(cons.kind == "bus", _AC_TOL_PU, AC_TOL_KW)[:, None]
    current = cons
    exports, corner_of = corners(cons)
    # A limit the forecast itself breaks (in the AC model) need not be repaired, only not made worse.
    floor_e = np.maximum(ac_excess(feeder, p_kw, q_kvar, "export"), 0.0)
    floor_i = np.maximum(ac_excess(feeder, p_kw, q_kvar, "import"), 0.0)
    for rounds in range(1, max_rounds + 1):
        current = cons.tightened(cut_e, cut_i)
        exp_kw, imp_kw = allocate(current)
        ex_e, ex_i = np.full_like(cut_e, -np.inf), np.full_like(cut_i, -np.inf)
        for k, at_export in enumerate(exports):
            inj = np.where(at_export[:, None], exp_kw, -imp_kw)
            w_p = p_kw - injection_by_bus(topo.n_bus, bus_idx, inj)
            w_q = q_kvar - injection_by_bus(topo.n_bus, bus_idx, inj * tan_phi[:, None])
            # Every side at the plain corner of its direction too: where a cross sensitivity is near zero the
            # AC model's second-order terms (losses, the current in the voltage drop) decide its sign.
            plain = (at_export.all(), not at_export.any())
            for side, (ex, floor) in enumerate(((ex_e, floor_e), (ex_i, floor_i))):
                rows = (corner_of[side * cons.n:(side + 1) * cons.n] == k) | plain[side]
                if rows.any():
                    here = ac_excess(feeder, w_p, w_q, ("export", "import")[side]) - floor
                    ex[rows] = np.maximum(ex[rows], here[rows])
        bad_e, bad_i = ex_e > tol, ex_i > tol
        if not (bad_e.any() or bad_i.any()) or rounds == max_rounds:
            break
        # The linear model's error on a broken limit is the slack it predicted plus the AC excess:
        # the cut makes the limit bind where the AC model says it does. Round k adds k times the
        # excess: where the linear model misses the vars the DERs move with their watts, one excess
        # per round would creep towards the limit.
        use_e, use_i = cons.use(exp_kw, imp_kw)
        slack_e = np.maximum(current.margin_export - use_e, 0.0)
        slack_i = np.maximum(current.margin_import - use_i, 0.0)
        cut_e = cut_e + np.where(bad_e, slack_e + rounds * (np.clip(ex_e, 0.0, 1e12) + tol), 0.0)
        cut_i = cut_i + np.where(bad_i, slack_i + rounds * (np.clip(ex_i, 0.0, 1e12) + tol), 0.0)
    ke, ki = np.unravel_index(np.argmax(ex_e), ex_e.shape), np.unravel_index(np.argmax(ex_i), ex_i.shape)
    check = AcCheck(passed=not (bad_e.any() or bad_i.any()), rounds=rounds,
                    worst_export=(float(ex_e[ke]), str(cons.names[ke[0]])),
                    worst_import=(float(ex_i[ki]), str(cons.names[ki[0]])))
    return exp_kw, imp_kw, current, check


def describe(cons: Constraints, row: int, direction: str, topo: Topology,
             interval: datetime | None = None) -> str:
    """A constraint's limit in words, e.g. ``line L7 reverse flow`` or ``bus 18 voltage above vmax``."""
    kind = cons.kind[row]
    name = str(cons.names[row]).split(":", 1)[-1]
    if kind == "line":
        text = f"line {name} {'reverse' if direction == 'export' else 'forward'} flow"
    elif kind == "bus":
        text = f"bus {name} voltage {'above vmax' if direction == 'export' else 'below vmin'}"
    else:
        text = f"interface {direction} limit"
    return text if interval is None else f"{text} at {interval:%Y-%m-%dT%H:%M:%SZ}"

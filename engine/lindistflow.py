"""LinDistFlow market clearing LP on a radial feeder (Baran & Wu 1989, linearised).

Variables per interval t (blocks, interval-major):

- ``bid``         cleared MW per bid segment, ``0 <= p_b <= q_b``
- ``line_p/q``    flow on each line away from the root, MW / Mvar
- ``v``           squared voltage magnitude per bus, pu^2 (root fixed at ``v0^2``)
- ``import_p/q``  interface import P0, Q0 (MW / Mvar), positive = from the ISO
- ``shed``        MW of fixed load shed at the value of lost load (optional)
- ``soc``         battery energy at the end of each interval, MWh

Constraints (named after the physics; duals are read back by these names):

- ``bus_p_balance``: ``M P + e_0 P0 - sum_b s_b p_b + shed = load_p`` (s_b = +1 buy, -1 sell).
  Its dual is the DLMP: the cost of one more MW withdrawn at the bus.
- ``bus_q_balance``: same for reactive power, bids move ``tan_phi * p_b``.
- ``voltage_drop``: ``v_child - v_parent + 2 (r P + x Q) = 0``.
- ``line_thermal``: inscribed regular polygon of ``POLYGON_SIDES`` sides with
  vertices at ``(+-S, 0)``, as ``POLYGON_SIDES / 2`` two-sided rows per limited line.
- ``battery_soc``, ``battery_charge``, ``battery_discharge``, ``ev_energy``,
  ``ev_charge``, ``ramp``: resource rows.

Objective (minimised; per hour, in currency): ``sum_sell price p - sum_buy price p
+ lambda0_t P0_t (+ VoLL shed)``, the negative of social welfare. Multiplying by
the interval length gives currency per interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from engine.bids import Battery, BidBook, ElectricVehicle, FlexibleLoad, MarketRules, Resource
from engine.errors import InputError
from engine.network import S_BASE_KVA, Feeder
from engine.solver import INF, LinearModel

POLYGON_SIDES = 16


@dataclass(frozen=True)
class PolygonFaces:
    """Outward normals ``(cos phi_k, sin phi_k)`` of the polygon's parallel face pairs and the
    ratio ``cos(pi / N)`` of face distance to vertex radius."""

    cos: np.ndarray
    sin: np.ndarray
    inset: float


def polygon_faces(sides: int = POLYGON_SIDES) -> PolygonFaces:
    """Faces of a regular ``sides``-gon with a vertex at angle 0 (so ``(S, 0)`` is reachable)."""
    if sides < 4 or sides % 2:
        raise InputError("options", "polygon_sides", "must be an even number >= 4")
    half = sides // 2
    phi = (2 * np.arange(half) + 1) * np.pi / sides
    return PolygonFaces(np.cos(phi), np.sin(phi), float(np.cos(np.pi / sides)))


def build(feeder: Feeder, book: BidBook, iso_price: np.ndarray, rules: MarketRules,
          resources: tuple[Resource, ...] = (), load_p_kw: np.ndarray | None = None,
          load_q_kvar: np.ndarray | None = None, polygon_sides: int = POLYGON_SIDES) -> LinearModel:
    """Assemble the LinDistFlow clearing LP.

    Parameters
    ----------
    iso_price
        Price at the interface per interval, per MWh, shape (T,).
    load_p_kw, load_q_kvar
        Fixed withdrawal per bus (topology order) and interval, shape (n, T);
        defaults to the feeder's loads for the book's intervals.
    """
    topo = feeder.topology
    n, m, T = topo.n_bus, topo.n_line, book.n_interval
    if load_p_kw is None:
        load_p_kw, load_q_kvar = market_loads(feeder, book)
    lp_mw = load_p_kw / S_BASE_KVA
    lq_mw = load_q_kvar / S_BASE_KVA
    eye_t = sp.identity(T, format="csr")
    model = LinearModel()

    # --- variables -------------------------------------------------------------
    s_lim = topo.s_max_kva / S_BASE_KVA
    model.add_variables("bid", book.n, 0.0, book.quantity_kw / S_BASE_KVA,
                        cost=book.withdraw_sign * -book.price)
    model.add_variables("line_p", m * T)
    model.add_variables("line_q", m * T)
    vlo = np.tile(topo.vmin_pu ** 2, T)
    vhi = np.tile(topo.vmax_pu ** 2, T)
    vlo[::n] = vhi[::n] = feeder.v0_pu ** 2
    model.add_variables("v", n * T, vlo, vhi)
    model.add_variables("import_p", T, -feeder.export_max_kw / S_BASE_KVA,
                        feeder.import_max_kw / S_BASE_KVA, cost=iso_price)
    model.add_variables("import_q", T)
    shed = rules.value_of_lost_load is not None
    if shed:
        model.add_variables("shed", n * T, 0.0, np.maximum(lp_mw, 0.0).T.ravel(),
                            cost=rules.value_of_lost_load)

    # --- balances: M P + e0 P0 - sum_b s_b p_b (+ shed) = load -----------------------
    inc = topo.incidence
    root = sp.csr_matrix((np.ones(T), (np.arange(T) * n, np.arange(T))), shape=(n * T, T))
    bus_row = book.t_idx * n + book.bus_idx
    bid_w = sp.csr_matrix((book.withdraw_sign, (bus_row, np.arange(book.n))), shape=(n * T, book.n))
    bid_wq = sp.csr_matrix((book.withdraw_sign * book.tan_phi, (bus_row, np.arange(book.n))),
                           shape=(n * T, book.n))
    big_inc = sp.kron(eye_t, inc, format="csr")
    p_terms = {"line_p": big_inc, "import_p": root, "bid": -bid_w}
    q_terms = {"line_q": big_inc, "import_q": root, "bid": -bid_wq}
    if shed:
        # Shedding keeps each load's power factor, so it relieves kvar in proportion.
        ratio = np.divide(lq_mw, lp_mw, out=np.zeros_like(lq_mw), where=lp_mw > 0).T.ravel()
        p_terms["shed"] = sp.identity(n * T, format="csr")
        q_terms["shed"] = sp.diags(ratio, format="csr")
    model.add_constraints("bus_p_balance", p_terms, lp_mw.T.ravel(), lp_mw.T.ravel())
    model.add_constraints("bus_q_balance", q_terms, lq_mw.T.ravel(), lq_mw.T.ravel())

    # --- voltage drop: v_child - v_parent + 2 r P + 2 x Q = 0 ---------------------------
    lines = np.arange(m)
    drop_v = sp.csr_matrix((np.concatenate([np.ones(m), -np.ones(m)]),
                            (np.concatenate([lines, lines]), np.concatenate([lines + 1, topo.parent[1:]]))),
                           shape=(m, n))
    model.add_constraints("voltage_drop", {
        "v": sp.kron(eye_t, drop_v, format="csr"),
        "line_p": sp.kron(eye_t, sp.diags(2 * topo.r_pu), format="csr"),
        "line_q": sp.kron(eye_t, sp.diags(2 * topo.x_pu), format="csr"),
    }, 0.0, 0.0)

    # --- thermal polygon on limited lines -------------------------------------------
    limited = np.nonzero(np.isfinite(s_lim))[0]
    if len(limited):
        faces = polygon_faces(polygon_sides)
        k = len(faces.cos)
        # Row (t, line, face) in that order; column (t, line).
        sel = sp.csr_matrix((np.ones(len(limited)), (np.arange(len(limited)), limited)),
                            shape=(len(limited), m))
        pick = sp.kron(eye_t, sp.kron(sel, np.ones((k, 1))), format="csr")
        cos_rows = np.tile(faces.cos, len(limited) * T)
        sin_rows = np.tile(faces.sin, len(limited) * T)
        bound = np.tile(np.repeat(s_lim[limited] * faces.inset, k), T)
        model.add_constraints("line_thermal", {"line_p": sp.diags(cos_rows) @ pick,
                                               "line_q": sp.diags(sin_rows) @ pick}, -bound, bound)

    add_resources(model, book, resources, rules)
    return model


def market_loads(feeder: Feeder, book: BidBook) -> tuple[np.ndarray, np.ndarray]:
    """Fixed withdrawal per bus (topology order) and interval of the book, kW and kvar, shape (n, T)."""
    p, q = feeder.loads(book.intervals if book.intervals != [None] else None)
    if p.shape[1] != book.n_interval:
        p, q = np.repeat(p, book.n_interval, axis=1), np.repeat(q, book.n_interval, axis=1)
    return p, q


def _bids_of(book: BidBook, rid: str, side: str | None = None) -> np.ndarray:
    res = book.table["resource_id"].to_numpy()
    mask = res == rid
    if side is not None:
        mask &= book.withdraw_sign == (1.0 if side == "buy" else -1.0)
    return np.nonzero(mask)[0]


def _per_interval(book: BidBook, idx: np.ndarray, weights: np.ndarray | float = 1.0) -> sp.csr_matrix:
    """Sparse (T x n_bid) matrix summing ``weights * p_b`` of bids ``idx`` per interval."""
    w = np.broadcast_to(np.asarray(weights, dtype=float), idx.shape)
    return sp.csr_matrix((w, (book.t_idx[idx], idx)), shape=(book.n_interval, book.n))


def add_resources(model: LinearModel, book: BidBook, resources: tuple[Resource, ...],
                  rules: MarketRules) -> None:
    """Intertemporal rows of batteries, EVs and ramp-limited loads, in MW and MWh.

    The one definition of these rows: the SOCP converts the same rows.
    """
    T, dt = book.n_interval, rules.hours
    known = set(book.table["resource_id"].unique().to_list())
    batteries = [r for r in resources if isinstance(r, Battery) and r.resource_id in known]
    evs = [r for r in resources if isinstance(r, ElectricVehicle) and r.resource_id in known]
    ramps = [r for r in resources if isinstance(r, FlexibleLoad) and r.resource_id in known]

    if batteries:
        nb = len(batteries)
        lo = np.repeat([b.soc_min_kwh / S_BASE_KVA for b in batteries], T)
        hi = np.repeat([b.energy_kwh / S_BASE_KVA for b in batteries], T)
        end = np.array([b.soc_end_kwh / S_BASE_KVA for b in batteries])
        lo[T - 1::T] = np.maximum(lo[T - 1::T], end)
        model.add_variables("soc", nb * T, lo, hi)
        # e_t - e_{t-1} - eta_c dt charge_t + dt / eta_d discharge_t = (e_init at t = 0)
        shift = sp.identity(T, format="csr") - sp.eye(T, k=-1, format="csr")
        soc_terms = sp.kron(sp.identity(nb), shift, format="csr")
        flows, ch_rows, dis_rows = [], [], []
        for b in batteries:
            buy, sell = _bids_of(book, b.resource_id, "buy"), _bids_of(book, b.resource_id, "sell")
            flows.append(_per_interval(book, buy, -b.eta_charge * dt)
                         + _per_interval(book, sell, dt / b.eta_discharge))
            ch_rows.append(_per_interval(book, buy))
            dis_rows.append(_per_interval(book, sell))
        rhs = np.zeros(nb * T)
        rhs[::T] = [b.soc_init_kwh / S_BASE_KVA for b in batteries]
        model.add_constraints("battery_soc", {"soc": soc_terms, "bid": sp.vstack(flows, format="csr")}, rhs, rhs)
        model.add_constraints("battery_charge", {"bid": sp.vstack(ch_rows, format="csr")}, -INF,
                              np.repeat([b.charge_kw / S_BASE_KVA for b in batteries], T))
        model.add_constraints("battery_discharge", {"bid": sp.vstack(dis_rows, format="csr")}, -INF,
                              np.repeat([b.discharge_kw / S_BASE_KVA for b in batteries], T))

    if evs:
        energy_rows, charge_rows = [], []
        for ev in evs:
            bids = _bids_of(book, ev.resource_id)
            if np.any(book.withdraw_sign[bids] < 0):
                row = int(bids[book.withdraw_sign[bids] < 0][0])
                raise InputError("bids", "side", f"EV {ev.resource_id!r} can only buy (charge)", row=row)
            starts = [book.intervals[t] for t in book.t_idx[bids]]
            late = [k for k, s in zip(bids, starts) if s is not None and s >= ev.departure]
            if late:
                raise InputError("bids", "interval", f"EV {ev.resource_id!r} departs at {ev.departure}; "
                                 "no bid may start at or after it", row=int(late[0]))
            energy_rows.append(sp.csr_matrix((np.full(len(bids), ev.eta_charge * dt),
                                              (np.zeros(len(bids), dtype=int), bids)), shape=(1, book.n)))
            charge_rows.append(_per_interval(book, bids))
        need = np.array([ev.energy_kwh / S_BASE_KVA for ev in evs])
        model.add_constraints("ev_energy", {"bid": sp.vstack(energy_rows, format="csr")}, need, INF)
        model.add_constraints("ev_charge", {"bid": sp.vstack(charge_rows, format="csr")}, -INF,
                              np.repeat([ev.charge_kw / S_BASE_KVA for ev in evs], T))

    if ramps and T > 1:
        diff = (sp.eye(T - 1, T, k=1) - sp.eye(T - 1, T)).tocsr()
        rows = []
        for r in ramps:
            bids = _bids_of(book, r.resource_id)
            rows.append(diff @ _per_interval(book, bids, book.withdraw_sign[bids]))
        lim = np.repeat([r.ramp_kw / S_BASE_KVA for r in ramps], T - 1)
        model.add_constraints("ramp", {"bid": sp.vstack(rows, format="csr")}, -lim, lim)

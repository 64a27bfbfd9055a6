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

from dsomarket.engine.bids import Battery, BidBook, Commitment, ElectricVehicle, FlexibleLoad, MarketRules, Resource
from dsomarket.engine.errors import InputError
from dsomarket.engine.network import S_BASE_KVA, Feeder, Topology
from dsomarket.engine.solver import INF, LinearModel

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
          load_q_kvar: np.ndarray | None = None, polygon_sides: int = POLYGON_SIDES,
          corrections: dict | None = None, thermal: bool = True) -> LinearModel:
    """Assemble the LinDistFlow clearing LP.

    Parameters
    ----------
    iso_price
        Price at the interface per interval, per MWh, shape (T,).
    load_p_kw, load_q_kvar
        Fixed withdrawal per bus (topology order) and interval, shape (n, T);
        defaults to the feeder's loads for the book's intervals.
    corrections
        ``{row block: {variable block: sparse matrix}}`` added to the lossless
        coefficients of ``bus_p_balance``, ``bus_q_balance`` and
        ``voltage_drop``: the loss-aware linearisation of :mod:`engine.losses`
        enters here, so both models share every other row and every column.
    thermal
        Add the inscribed ``line_thermal`` polygon (the loss-aware model adds
        its own rows at both ends of each line instead).
    """
    topo = feeder.topology
    n, m, T = topo.n_bus, topo.n_line, book.n_interval
    if load_p_kw is None:
        load_p_kw, load_q_kvar = market_loads(feeder, book)
    lp_mw = load_p_kw / S_BASE_KVA
    lq_mw = load_q_kvar / S_BASE_KVA
    model = LinearModel()

    # --- variables -------------------------------------------------------------
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
    sides = polygon_sides if thermal else None
    net = topo.memo(("lindistflow", T, sides), lambda: _network_blocks(topo, T, sides))
    bus_row = book.t_idx * n + book.bus_idx
    bid_w = sp.coo_matrix((-book.withdraw_sign, (bus_row, np.arange(book.n))), shape=(n * T, book.n))
    bid_wq = sp.coo_matrix((-(book.withdraw_sign * book.tan_phi), (bus_row, np.arange(book.n))),
                           shape=(n * T, book.n))
    p_terms = {"line_p": net["incidence"], "import_p": net["root"], "bid": bid_w}
    q_terms = {"line_q": net["incidence"], "import_q": net["root"], "bid": bid_wq}
    if shed:
        # Shedding keeps each load's power factor, so it relieves kvar in proportion.
        ratio = np.divide(lq_mw, lp_mw, out=np.zeros_like(lq_mw), where=lp_mw > 0).T.ravel()
        p_terms["shed"] = sp.identity(n * T, format="csr")
        q_terms["shed"] = sp.diags(ratio, format="csr")
    corrections = corrections or {}
    model.add_constraints("bus_p_balance", _corrected(p_terms, corrections.get("bus_p_balance")),
                          lp_mw.T.ravel(), lp_mw.T.ravel())
    model.add_constraints("bus_q_balance", _corrected(q_terms, corrections.get("bus_q_balance")),
                          lq_mw.T.ravel(), lq_mw.T.ravel())

    # --- voltage drop: v_child - v_parent + 2 r P + 2 x Q = 0 ---------------------------
    model.add_constraints("voltage_drop", _corrected(net["voltage_drop"], corrections.get("voltage_drop")), 0.0, 0.0)

    # --- thermal polygon on limited lines -------------------------------------------
    if "line_thermal" in net:
        bound = net["thermal_bound"]
        model.add_constraints("line_thermal", net["line_thermal"], -bound, bound)

    add_resources(model, book, resources, rules)
    if not (shed or corrections or resources):
        # A plain market's matrix is the bids' two entries a column (balance rows p and q) before the network's
        # columns, which are the same for every book on this network: those are kept from the first market's
        # assembly, and the bids' put before them (the matrix assemble() would make, at half its cost).
        network = topo.memo(("lindistflow columns", T, sides), lambda: model.assemble()[3][:, book.n:])
        model.assemble_as(_with_bid_columns(network, bus_row, n * T, bid_w.data, bid_wq.data))
    return model


def _with_bid_columns(network: sp.csc_matrix, bus_row: np.ndarray, q_rows: int, p: np.ndarray,
                      q: np.ndarray) -> sp.csc_matrix:
    """The matrix of bid columns, each with ``p`` in its bus's active balance row ``bus_row`` and ``q`` in its
    reactive one (``q_rows`` rows below, so after it in the column), before the ``network`` columns."""
    n_bid = len(bus_row)
    indices = np.empty(2 * n_bid, dtype=network.indices.dtype)
    data = np.empty(2 * n_bid)
    indices[0::2], indices[1::2] = bus_row, bus_row + q_rows
    data[0::2], data[1::2] = p, q
    return sp.csc_matrix((np.concatenate([data, network.data]), np.concatenate([indices, network.indices]),
                          np.concatenate([np.arange(0, 2 * n_bid, 2, dtype=network.indptr.dtype),
                                          network.indptr + 2 * n_bid])),
                         shape=(network.shape[0], n_bid + network.shape[1]))


def _network_blocks(topo: Topology, T: int, polygon_sides: int | None) -> dict:
    """The LP's terms that depend on the network alone, for ``T`` intervals (kept per topology: a clearing of
    1,000 buses spent some 0.6 ms rebuilding them).

    Every term is built as sparse triplets of one interval repeated down the diagonal (_per_interval): scipy's
    kron and products cost more than the LP's solve would notice at 1,000 buses, and the triplets are the
    entries those gave (none of a diagonal's zeros). ``incidence`` and ``root`` are the line flows' and the
    interface's terms of a balance row; ``voltage_drop`` the terms of its rows; ``line_thermal`` (when some
    line is limited and ``polygon_sides`` is given) the polygon's terms, rows ``(t, line, face)``, bounded by
    +-``thermal_bound``.
    """
    n, m = topo.n_bus, topo.n_line
    lines = np.arange(m)
    out = {"incidence": _per_interval(np.concatenate([lines + 1, topo.parent[1:]]), np.concatenate([lines, lines]),
                                      np.concatenate([np.ones(m), -np.ones(m)]), (n, m), T),
           "root": sp.coo_matrix((np.ones(T), (np.arange(T) * n, np.arange(T))), shape=(n * T, T)),
           "voltage_drop": {
               "v": _per_interval(np.concatenate([lines, lines]), np.concatenate([lines + 1, topo.parent[1:]]),
                                  np.concatenate([np.ones(m), -np.ones(m)]), (m, n), T),
               "line_p": _per_interval(lines, lines, 2 * topo.r_pu, (m, m), T),
               "line_q": _per_interval(lines, lines, 2 * topo.x_pu, (m, m), T)}}
    s_lim = topo.s_max_kva / S_BASE_KVA
    limited = np.nonzero(np.isfinite(s_lim))[0]
    if polygon_sides is not None and len(limited):
        faces = polygon_faces(polygon_sides)
        k, nl = len(faces.cos), len(limited)
        rows, cols = np.arange(nl * k), np.repeat(limited, k)
        out["thermal_bound"] = np.tile(np.repeat(s_lim[limited] * faces.inset, k), T)
        out["line_thermal"] = {"line_p": _per_interval(rows, cols, np.tile(faces.cos, nl), (nl * k, m), T),
                               "line_q": _per_interval(rows, cols, np.tile(faces.sin, nl), (nl * k, m), T)}
    return out


def _per_interval(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int],
                  T: int) -> sp.coo_matrix:
    """The block-diagonal matrix of ``T`` copies of one interval's block (triplets ``rows, cols, vals`` of
    ``shape``), interval-major as the variables and rows are: ``kron(I_T, block)`` without its cost.

    A diagonal's zeros are dropped (as ``sp.diags`` drops them), so ``r = 0`` or ``x = 0`` lines and a
    polygon face's zero cosine leave no explicit entry.
    """
    nz = vals != 0
    rows, cols, vals = rows[nz], cols[nz], vals[nz]
    off = np.arange(T)
    r, c = shape
    return sp.coo_matrix((np.tile(vals, T), ((rows[None, :] + r * off[:, None]).ravel(),
                                              (cols[None, :] + c * off[:, None]).ravel())), shape=(r * T, c * T))


def _corrected(terms: dict, extra: dict | None) -> dict:
    """The lossless terms of a row block plus any correction terms (same shapes)."""
    if not extra:
        return terms
    out = dict(terms)
    for var, mat in extra.items():
        # As a compressed sum: entries that cancel exactly leave no explicit zero.
        out[var] = out[var].tocsr() + mat if var in out else mat
    return out


def market_loads(feeder: Feeder, book: BidBook) -> tuple[np.ndarray, np.ndarray]:
    """Fixed withdrawal per bus (topology order) and interval of the book, kW and kvar, shape (n, T)."""
    p, q = feeder.loads(book.intervals if book.intervals != [None] else None)
    if p.shape[1] != book.n_interval:
        p, q = np.repeat(p, book.n_interval, axis=1), np.repeat(q, book.n_interval, axis=1)
    return p, q


def _owner(book: BidBook, resources: list) -> tuple[np.ndarray, np.ndarray]:
    """For each bid, the index of its resource in ``resources`` (-1 if none), and the mask of owned bids."""
    pos = {r.resource_id: k for k, r in enumerate(resources)}
    owner = np.fromiter((pos.get(r, -1) for r in book.table["resource_id"].to_list()), dtype=np.int64,
                        count=book.n)
    return owner, owner >= 0


def _per_resource_interval(book: BidBook, owner: np.ndarray, mask: np.ndarray, n_res: int,
                           weights: np.ndarray) -> sp.csr_matrix:
    """Sparse (n_res * T x n_bid) matrix summing ``weights * p_b`` per (resource, interval)."""
    bids = np.nonzero(mask)[0]
    rows = owner[bids] * book.n_interval + book.t_idx[bids]
    return sp.csr_matrix((weights[bids], (rows, bids)), shape=(n_res * book.n_interval, book.n))


def add_resources(model: LinearModel, book: BidBook, resources: tuple[Resource, ...],
                  rules: MarketRules) -> None:
    """Intertemporal rows of batteries, EVs and ramp-limited loads, in MW and MWh.

    The one definition of these rows: the SOCP converts the same rows. Rows are
    (resource x interval), built in one sparse matrix per law.
    """
    if not resources:
        return
    T, dt = book.n_interval, rules.hours
    known = set(book.table["resource_id"].unique().to_list())
    batteries = [r for r in resources if isinstance(r, Battery) and r.resource_id in known]
    evs = [r for r in resources if isinstance(r, ElectricVehicle) and r.resource_id in known]
    ramps = [r for r in resources if isinstance(r, FlexibleLoad) and r.resource_id in known]
    buy = book.withdraw_sign > 0
    ones = np.ones(book.n)

    if batteries:
        nb = len(batteries)

        def attr(name: str) -> np.ndarray:
            return np.array([getattr(b, name) for b in batteries], dtype=float)

        lo = np.repeat(attr("soc_min_kwh") / S_BASE_KVA, T)
        hi = np.repeat(attr("energy_kwh") / S_BASE_KVA, T)
        lo[T - 1::T] = np.maximum(lo[T - 1::T], attr("soc_end_kwh") / S_BASE_KVA)
        model.add_variables("soc", nb * T, lo, hi)
        owner, owned = _owner(book, batteries)
        safe = np.maximum(owner, 0)
        # e_t - e_{t-1} - eta_c dt charge_t + dt / eta_d discharge_t = (e_init at t = 0)
        energy_in = np.where(buy, -attr("eta_charge")[safe] * dt, dt / attr("eta_discharge")[safe])
        shift = sp.identity(T, format="csr") - sp.eye(T, k=-1, format="csr")
        rhs = np.zeros(nb * T)
        rhs[::T] = attr("soc_init_kwh") / S_BASE_KVA
        model.add_constraints("battery_soc", {"soc": sp.kron(sp.identity(nb), shift, format="csr"),
                                              "bid": _per_resource_interval(book, owner, owned, nb, energy_in)},
                              rhs, rhs)
        model.add_constraints("battery_charge", {"bid": _per_resource_interval(book, owner, owned & buy, nb, ones)},
                              -INF, np.repeat(attr("charge_kw") / S_BASE_KVA, T))
        model.add_constraints("battery_discharge",
                              {"bid": _per_resource_interval(book, owner, owned & ~buy, nb, ones)},
                              -INF, np.repeat(attr("discharge_kw") / S_BASE_KVA, T))

    if evs:
        owner, owned = _owner(book, evs)
        selling = np.nonzero(owned & ~buy)[0]
        if len(selling):
            row = int(selling[0])
            raise InputError("bids", "side", f"EV {evs[owner[row]].resource_id!r} can only buy (charge)", row=row)
        departure = [evs[o].departure if o >= 0 else None for o in owner]
        for row in np.nonzero(owned)[0]:
            start = book.intervals[book.t_idx[row]]
            if start is not None and start >= departure[row]:
                raise InputError("bids", "interval", f"EV {evs[owner[row]].resource_id!r} departs at "
                                 f"{departure[row]}; no bid may start at or after it", row=int(row))
        eta = np.array([ev.eta_charge for ev in evs])
        bids = np.nonzero(owned)[0]
        energy = sp.csr_matrix((eta[owner[bids]] * dt, (owner[bids], bids)), shape=(len(evs), book.n))
        model.add_constraints("ev_energy", {"bid": energy},
                              np.array([ev.energy_kwh for ev in evs]) / S_BASE_KVA, INF)
        model.add_constraints("ev_charge", {"bid": _per_resource_interval(book, owner, owned, len(evs), ones)},
                              -INF, np.repeat(np.array([ev.charge_kw for ev in evs]) / S_BASE_KVA, T))

    commitments = [c for c in resources if isinstance(c, Commitment) and c.resource_id in known
                   and c.interval in book.intervals]
    if commitments:
        # Row k limits the bids of commitment k's resource in commitment k's interval.
        key = {(c.resource_id, book.intervals.index(c.interval)): k for k, c in enumerate(commitments)}
        res = book.table["resource_id"].to_list()
        row = np.fromiter((key.get((r, int(t)), -1) for r, t in zip(res, book.t_idx)), dtype=np.int64,
                          count=book.n)
        for name, side, limit in (("commitment_sell", ~buy, "max_sell_kw"), ("commitment_buy", buy, "max_buy_kw")):
            bids = np.nonzero((row >= 0) & side)[0]
            rows = sp.csr_matrix((np.ones(len(bids)), (row[bids], bids)), shape=(len(commitments), book.n))
            model.add_constraints(name, {"bid": rows}, -INF,
                                  np.array([getattr(c, limit) for c in commitments]) / S_BASE_KVA)

    if ramps and T > 1:
        owner, owned = _owner(book, ramps)
        net = _per_resource_interval(book, owner, owned, len(ramps), book.withdraw_sign)
        diff = sp.kron(sp.identity(len(ramps)), sp.eye(T - 1, T, k=1) - sp.eye(T - 1, T), format="csr")
        lim = np.repeat(np.array([r.ramp_kw for r in ramps]) / S_BASE_KVA, T - 1)
        model.add_constraints("ramp", {"bid": diff @ net}, -lim, lim)

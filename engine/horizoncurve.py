"""Exact curves of a coupled horizon, interval by interval, on smaller models.

When storage, EVs or ramps link the intervals, interval t's curve ``Q_t(lambda)``
is traced on the whole horizon with the other intervals' ISO prices held at the
forecast (:func:`engine.interface.trace_intervals`). The whole-horizon LP holds
every interval's network (balances, voltage drops, thermal polygons), so each
basis change of the tracer works on a core T times one interval's, while what
moves with interval t's price is interval t's dispatch and, through the
resources' state, the resources' bids in the other intervals.

Networks that no price of interval t can load
---------------------------------------------
Take another interval s, priced at its forecast ``lambda_s``, and a set of its buses
to keep, *live*, closed downwards (whole subtrees). Summing the lossless balance rows
of the other buses cancels the flows between them (each line leaves one bus and
enters another): ``P0_s + their injections - flows into the live subtrees = their
loads``, and the same for reactive power. The model with s's network replaced by
these two sums, the live buses' balances, the flows into and within the live
subtrees and those lines' thermal limits is a *relaxation* of the horizon LP (its
rows are implied by the horizon's; voltages and the other limits are dropped). It
is exact for every interval t's curve when:

(a) ``P0_s`` (and ``Q0_s``) lie strictly inside their limits whatever the bids of s
    clear (with unlimited interface limits: always). Then in every optimal dual of the
    relaxation the sums' duals are ``lambda_s`` (and ``Q0_s``'s cost, 0), and a bid of s
    at a bus not kept that links to no other row (no resource) has the fixed reduced
    cost ``c_j - lambda_s a_j``: where that is not 0 it sits at the same bound in every
    optimal point, at every price of interval t (complementary slackness);
(b) every point with those bids at those bounds and every other column of s (the
    resources' bids, bids at live buses, bids priced at ``lambda_s``) anywhere within
    its bounds gives voltages and flows on the lines not kept within every limit of s.
    Flows and voltages of a radial feeder follow from its injections through the
    balances and voltage drops: their values at the box's centre are one sparse solve
    (:class:`_Network`); a line's flow moves by at most the sum of the half-widths of
    the box below it, a bus's voltage by at most its parent's plus its line's drop on
    those moves.

Then every optimal point of the relaxation, with s's flows and voltages rebuilt,
is feasible for the horizon LP, whose optimum it is (a relaxation's optimum that
is feasible is optimal): the two LPs have the same optimal cost at every price of
interval t, hence the same curve. The live set starts empty and takes the subtree
below each line whose limit (b) finds within reach, until (b) holds; an interval
where a voltage limit is within reach, (a) fails, or more than half the buses would
be live keeps its whole network. The check is made once per horizon, before any
curve, and interval t's curve is traced (:mod:`engine.tracer`) on the horizon with
every other interval's network so reduced where it can be.

Only the lossless model is reduced: the loss-aware linearisation's balances do
not cancel under a sum. Its curve is made of converged clearings, each of which
re-linearises only the traced interval while the others keep the linearisation
of the horizon's fixed point at the forecast (:class:`engine.runs.LiveInterval`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from dsomarket.engine.solver import HighsSolver, LinearModel

NETWORK_COLS = ("line_p", "line_q", "v")
"""Column blocks of one interval's network, determined by its injections on a radial feeder."""
NETWORK_ROWS = ("bus_p_balance", "bus_q_balance", "voltage_drop", "line_thermal")
BALANCES = ("bus_p_balance", "bus_q_balance")
_MARGIN = 1e-6
"""Room (MW, pu) a rebuilt network keeps from every limit for (b) to count, well above HiGHS's primal
tolerance (1e-7), so that a point the solver leaves within its tolerance still holds."""
_DUAL_TOL = 1e-9
"""Reduced cost (per MWh, relative to the price) below which a bid of s may move (it is priced at lambda_s)."""


@dataclass(frozen=True, eq=False)
class _Network:
    """One interval's network rows and columns, its tree, and how to rebuild its columns from the injections.

    ``cols``/``rows``: the network columns and rows (whole-model indices); ``touch``: the other columns
    with a coefficient in the network's rows (its bids, P0, Q0, shedding), of which ``ports`` are
    P0 and Q0 and ``linked`` those in other rows too (resources' bids). The network columns
    solve ``lu`` (the equality rows but one of each balance, in the columns that are not fixed:
    the root voltage is) with right-hand side ``eq_rhs - eq_touch @ x[touch]``; ``free`` and
    ``fixed`` are positions in ``cols``; ``rows_touch``, ``rows_cols``: the rows' coefficients.
    The tree: per bus its ``p_rows``/``q_rows``, per line its ``line_cols`` (P and Q flow), the bus it
    feeds (``child``) and the one it leaves (``parent``), and per bus its depth-first entry and exit (``tin``, ``tout``: b is below a
    when ``tin[a] <= tin[b] < tout[a]``); ``row_line``: the line of each row of ``rows`` (-1: none);
    ``levels``: the lines by depth, root first; ``drop``: per line, how much its P and Q flows move
    the voltage of the bus it feeds (its voltage-drop row, per unit of that voltage); ``v_cols`` the
    voltage columns per bus; ``touch_abs``: ``|A|`` of the P and of the Q balances on ``touch``.
    """

    interval: int
    cols: np.ndarray
    rows: np.ndarray
    touch: np.ndarray
    ports: np.ndarray
    linked: np.ndarray
    free: np.ndarray
    fixed: np.ndarray
    lu: object
    eq_touch: sp.csr_matrix
    eq_rhs: np.ndarray
    rows_touch: sp.csr_matrix
    rows_cols: sp.csr_matrix
    p_rows: np.ndarray
    q_rows: np.ndarray
    line_cols: np.ndarray
    child: np.ndarray
    parent: np.ndarray
    tin: np.ndarray
    tout: np.ndarray
    row_line: np.ndarray
    levels: list
    drop: np.ndarray
    v_cols: np.ndarray
    touch_abs: tuple


@dataclass(frozen=True)
class _Summed:
    """What of one interval's network the other intervals' reduced models keep: ``rows`` and ``cols``
    dropped, and the balance rows of the buses not kept, ``sums`` (P, Q), each summed into one row."""

    rows: np.ndarray
    cols: np.ndarray
    sums: tuple


class HorizonCurves:
    """Interval curves of one lossless horizon market on reduced models (see the module notes).

    ``market`` is a :class:`~engine.clearing.NodalMarket` over several intervals or an
    :class:`engine.runs.CoupledMarket`, with its ISO prices at the forecast. :attr:`summed`:
    the intervals whose network is summed away in every other interval's curve.
    """

    def __init__(self, market):
        self.market = market
        s = market.solver
        _, _, _, a, _, _, _ = market.model.assemble()
        self.a = a.tocsc()
        self.a_csr = a.tocsr()
        self.cost, self.lo, self.up = s.cost.copy(), s.col_lower.copy(), s.col_upper.copy()
        self.rlo, self.rup = s.row_lower.copy(), s.row_upper.copy()
        self.p0 = market.model.var("import_p").start
        parts = {s: self._summed(net) for s, net in self._networks(market.model).items()}
        self.parts = {s: part for s, part in parts.items() if part is not None}
        self.summed = sorted(self.parts)

    # -- which rows and columns each interval's network has --------------------------------------
    def _networks(self, model: LinearModel) -> dict[int, _Network]:
        """The reducible networks by interval: the connected components of the network rows and
        columns (with P0 and Q0), each holding exactly one P0 column and rebuildable (square, regular)."""
        def indices(names, rows):
            blocks = [b for b in model.blocks(rows=rows) if b.name in names]
            return np.concatenate([np.arange(b.start, b.start + b.size) for b in blocks]) if blocks \
                else np.zeros(0, dtype=np.int64)

        rows = indices(NETWORK_ROWS, True)
        net_cols = indices(NETWORK_COLS, False)
        ports = indices(("import_p", "import_q"), False)
        cols = np.concatenate([net_cols, ports])
        if not len(rows) or not len(net_cols):
            return {}
        sub = self.a_csr[rows][:, cols]
        nr, nc = sub.shape
        graph = sp.bmat([[None, sub], [sub.T, None]], format="csr")
        _, label = connected_components(graph, directed=False)
        row_label, col_label = label[:nr], label[nr:]
        is_net = np.concatenate([np.ones(len(net_cols), dtype=bool), np.zeros(len(ports), dtype=bool)])
        block_of_row = np.empty(model.n_row, dtype=object)
        for b in model.blocks(rows=True):
            block_of_row[b.start:b.start + b.size] = b.name
        block_of_col = np.empty(model.n_col, dtype=object)
        for b in model.blocks():
            block_of_col[b.start:b.start + b.size] = b.name
        out: dict[int, _Network] = {}
        p0_cols = np.arange(self.p0, self.p0 + model.var("import_p").size)
        for comp in np.unique(col_label[~is_net]):
            mine_cols = cols[col_label == comp]
            p0 = np.intersect1d(mine_cols, p0_cols)
            if len(p0) != 1:
                continue
            net = self._network(int(p0[0] - self.p0), rows[row_label == comp],
                                np.intersect1d(mine_cols, net_cols), np.setdiff1d(mine_cols, net_cols),
                                block_of_row, block_of_col)
            if net is not None:
                out[net.interval] = net
        return out

    def _network(self, interval: int, rows: np.ndarray, cols: np.ndarray, ports: np.ndarray,
                 block_of_row: np.ndarray, block_of_col: np.ndarray) -> _Network | None:
        """One interval's :class:`_Network`, or None when its rows cannot be summed away or its
        columns rebuilt (then it stays in every reduced model)."""
        from scipy.sparse.linalg import splu

        a, a_csr = self.a, self.a_csr
        # The network columns must appear in no other row (what is dropped constrains nothing else).
        if np.setdiff1d(a[:, cols].indices, rows).size:
            return None
        balance = []
        dropped = []
        for name in BALANCES:
            r = rows[block_of_row[rows] == name]
            if not len(r) or np.any(self.rlo[r] != self.rup[r]):
                return None
            total = np.asarray(a_csr[r].sum(axis=0)).ravel()
            scale = np.abs(a_csr[r]).sum(axis=0).max()
            if np.abs(total[cols]).max(initial=0.0) > 1e-12 * max(scale, 1.0):
                return None                   # the flows do not cancel (a loss-aware linearisation)
            # The row holding a port (P0, Q0) is the one the sum stands for: the root's.
            port_rows = np.intersect1d(a[:, ports].indices, r)
            if len(port_rows) != 1:
                return None
            balance.append(r)
            dropped.append(port_rows[0])
        p_rows, q_rows = balance
        line_p, line_q = (cols[block_of_col[cols] == name] for name in ("line_p", "line_q"))
        n_bus = len(p_rows)
        if len(q_rows) != n_bus or len(line_p) != len(line_q) or len(line_p) != n_bus - 1:
            return None
        # The tree: each line's two buses (its column in the P balances), oriented from the root.
        ends = a_csr[p_rows][:, line_p].tocsc()
        ends.eliminate_zeros()
        if np.any(np.diff(ends.indptr) != 2):
            return None
        pair = ends.indices.reshape(-1, 2)
        root = int(np.searchsorted(p_rows, dropped[0]))
        oriented = _orient(pair, root, n_bus)
        if oriented is None:
            return None
        child, depth = oriented
        tin, tout = _euler(pair, child, root, n_bus)
        eq = np.setdiff1d(rows[self.rlo[rows] == self.rup[rows]], dropped)
        is_fixed = self.lo[cols] == self.up[cols]
        fixed, free = np.nonzero(is_fixed)[0], np.nonzero(~is_fixed)[0]
        if len(eq) != len(free):
            return None
        a_eq, a_rows = a_csr[eq], a_csr[rows]
        try:
            lu = splu(a_eq[:, cols[free]].tocsc())
        except RuntimeError:          # singular: not a radial network's flows and voltages
            return None
        touch = np.setdiff1d(np.unique(a_rows.indices), cols)
        elsewhere = np.diff(a[:, touch].indptr) > np.diff(a_rows[:, touch].tocsc().indptr)
        line_of_col = np.full(a.shape[1], -1)
        line_of_col[line_p] = line_of_col[line_q] = np.arange(len(line_p))
        # Rows that are no balance (thermal limits, voltage drops) by the line they hold.
        limits = a_rows[:, np.concatenate([line_p, line_q])].tocsr()
        row_line = np.full(len(rows), -1)
        is_limit = np.isin(block_of_row[rows], ("line_thermal",))
        lim_idx = np.nonzero(is_limit)[0]
        if len(lim_idx):
            sub = limits[lim_idx]
            first = sub.indices[sub.indptr[:-1]] if sub.nnz else np.zeros(0, dtype=np.int64)
            row_line[lim_idx] = np.concatenate([line_p, line_q])[first] if len(first) else -1
            row_line[lim_idx] = line_of_col[row_line[lim_idx]]
        # Voltages: bus order is the balances' order; each line's voltage-drop row ties the voltage of
        # the bus it feeds to its parent's through its flows.
        v_cols = cols[block_of_col[cols] == "v"]
        drops = rows[block_of_row[rows] == "voltage_drop"]
        if len(v_cols) != n_bus or len(drops) != len(line_p):
            return None
        d_rows = a_csr[drops]
        dp, dq = d_rows[:, line_p].tocsc(), d_rows[:, line_q].tocsc()
        if np.any(np.diff(dp.indptr) != 1) or np.any(np.diff(dq.indptr) != 1) or np.any(dp.indices != dq.indices):
            return None
        parent = np.where(pair[:, 0] == child, pair[:, 1], pair[:, 0])
        diag = np.arange(len(child))
        line_rows = d_rows[dp.indices]
        kv = np.abs(np.asarray(line_rows[:, v_cols[child]].tocsr()[diag, diag]).ravel())
        kv_parent = np.abs(np.asarray(line_rows[:, v_cols[parent]].tocsr()[diag, diag]).ravel())
        if np.any(kv == 0) or np.any(kv_parent == 0):   # the voltages are not in the balances' bus order
            return None
        drop = np.stack([np.abs(dp.data) / kv, np.abs(dq.data) / kv], axis=1)
        levels = _levels(child, depth)
        touch_abs = (abs(a_csr[p_rows][:, touch]).tocsr(), abs(a_csr[q_rows][:, touch]).tocsr())
        return _Network(interval, cols, rows, touch, ports, touch[elsewhere], free, fixed, lu,
                        a_eq[:, touch].tocsr(), self.rlo[eq] - a_eq[:, cols[fixed]] @ self.lo[cols[fixed]],
                        a_rows[:, touch].tocsr(), a_rows[:, cols].tocsr(), p_rows, q_rows,
                        np.stack([line_p, line_q], axis=1), child, parent, tin, tout, row_line, levels,
                        drop, v_cols, touch_abs)

    def _summed(self, net: _Network) -> _Summed | None:
        """How much of one interval's network the other intervals' curves need (module notes): None
        when all of it (condition (a) fails, or a limit other than a line's thermal polygon, or one
        above more than half the buses, can be reached)."""
        live = np.zeros(len(net.p_rows), dtype=bool)
        while True:
            reached = self._reached(net, live)
            if reached is None:
                return None
            if not len(reached):
                break
            for line in reached:
                b = net.child[line]
                live |= (net.tin >= net.tin[b]) & (net.tin < net.tout[b])
            if live.sum() > len(live) / 2:
                return None
        keep_lines = np.nonzero(live[net.child])[0]
        keep_rows = np.concatenate([net.p_rows[live], net.q_rows[live],
                                    net.rows[np.isin(net.row_line, keep_lines)]])
        keep_cols = net.line_cols[keep_lines].ravel()
        return _Summed(np.setdiff1d(net.rows, keep_rows), np.setdiff1d(net.cols, keep_cols),
                       (net.p_rows[~live], net.q_rows[~live]))

    def _reached(self, net: _Network, live: np.ndarray) -> np.ndarray | None:
        """Lines whose thermal limit some point of the box of condition (b) reaches, with the buses
        ``live`` kept (their bids may move: their prices are not held at ``lambda_s``) and their lines'
        limits kept; None when (a) fails or a voltage limit can be reached."""
        a_csr = self.a_csr
        col_p = np.asarray(a_csr[net.p_rows][:, net.touch].sum(axis=0)).ravel()
        col_q = np.asarray(a_csr[net.q_rows][:, net.touch].sum(axis=0)).ravel()
        lo, up, cost = self.lo[net.touch], self.up[net.touch], self.cost[net.touch]
        port = np.isin(net.touch, net.ports)
        p0 = port & (col_p != 0)
        q0 = port & (col_q != 0)
        ineq = self.rlo[net.rows] < self.rup[net.rows]
        # P0 and Q0 only in the root's balances (their duals are then what (a) says), once each.
        if p0.sum() != 1 or q0.sum() != 1 or np.isin(net.ports, net.linked).any() or \
                net.rows_touch[ineq][:, np.nonzero(port)[0]].nnz:
            return None
        # (a): the ports' ranges over every other column's bounds, strictly inside their limits.
        for mine, col, rows in ((p0, col_p, net.p_rows), (q0, col_q, net.q_rows)):
            rest = ~port
            c = col[mine][0]
            rhs = float(np.sum(self.rlo[rows])) / c
            span = col[rest] / c
            with np.errstate(invalid="ignore"):
                top = rhs - np.sum(np.where(span > 0, span * lo[rest], span * up[rest]))
                bottom = rhs - np.sum(np.where(span > 0, span * up[rest], span * lo[rest]))
                if not (bottom > lo[mine][0] or np.isneginf(lo[mine][0])) or \
                        not (top < up[mine][0] or np.isposinf(up[mine][0])):
                    return None
        y_p, y_q = cost[p0][0] / col_p[p0][0], cost[q0][0] / col_q[q0][0]
        # Held: bids of buses not kept that link to nothing else, at the bound their fixed reduced
        # cost puts them; every other column may move within its bounds.
        d = cost - y_p * col_p - y_q * col_q
        at_live = np.asarray(a_csr[np.concatenate([net.p_rows[live], net.q_rows[live]])][:, net.touch]
                             .astype(bool).sum(axis=0)).ravel() > 0
        linked = np.isin(net.touch, net.linked)
        moves = ~port & (linked | at_live | (np.abs(d) <= _DUAL_TOL * max(1.0, abs(y_p))))
        held = ~port & ~moves
        at = np.where(d > 0, lo, up)
        box_lo, box_up = np.where(held, at, lo), np.where(held, at, up)
        box_lo[port] = box_up[port] = 0.0          # the ports are in the root's balances only
        if not (np.all(np.isfinite(box_lo)) and np.all(np.isfinite(box_up))):
            return None
        # (b): flows and voltages over the box: their values at its centre, and how far they can move
        # from there. A line's flow is what the buses it feeds take, so it moves by at most the sum of
        # the box's half-widths there (times each column's coefficient); a bus's voltage by at most
        # its parent's plus its line's drop on those moves.
        centre, half = (box_lo + box_up) / 2.0, (box_up - box_lo) / 2.0
        v_c = np.empty(len(net.cols))
        v_c[net.fixed] = self.lo[net.cols[net.fixed]]
        v_c[net.free] = net.lu.solve(net.eq_rhs - net.eq_touch @ centre)
        act_c = net.rows_touch @ centre + net.rows_cols @ v_c
        by_tin = np.zeros((len(net.tin) + 1, 2))
        by_tin[net.tin + 1] = np.stack([net.touch_abs[0] @ half, net.touch_abs[1] @ half], axis=1)
        below = np.cumsum(by_tin, axis=0)
        flow = below[net.tout[net.child]] - below[net.tin[net.child]]        # per line: P, Q
        volt = np.zeros(len(net.tin))
        step = (net.drop * flow).sum(axis=1)
        for lines in net.levels:
            volt[net.child[lines]] = volt[net.parent[lines]] + step[lines]
        reach_c = np.zeros(self.a.shape[1])
        reach_c[net.line_cols[:, 0]], reach_c[net.line_cols[:, 1]] = flow[:, 0], flow[:, 1]
        reach_c[net.v_cols] = volt
        reach_v = reach_c[net.cols]
        reach_r = abs(net.rows_cols) @ reach_v + abs(net.rows_touch) @ half
        lo_r, up_r = self.rlo[net.rows], self.rup[net.rows]
        lo_c, up_c = self.lo[net.cols], self.up[net.cols]
        free = lo_c < up_c
        if not (np.all(v_c[free] - reach_v[free] >= lo_c[free] + _MARGIN) and
                np.all(v_c[free] + reach_v[free] <= up_c[free] - _MARGIN)):
            return None
        # Equality rows hold by construction (their rebuilt activity is the right-hand side), the two
        # balances the sums stand for through the sums, and the kept lines' limits in the model.
        kept = np.zeros(len(net.rows), dtype=bool)
        kept[net.row_line >= 0] = live[net.child[net.row_line[net.row_line >= 0]]]
        check = ineq & ~kept
        bad = check & ((act_c - reach_r < lo_r + _MARGIN) | (act_c + reach_r > up_r - _MARGIN))
        if np.any(bad & (net.row_line < 0)):
            return None
        return np.unique(net.row_line[bad])

    # -- the reduced model of one interval's curve ----------------------------------------------
    def reduced(self, keep: set[int]) -> "_ReducedMarket":
        """The horizon with the networks of :attr:`summed` but those of the intervals in ``keep``
        reduced to the part the other intervals' curves need."""
        gone = [self.parts[s] for s in self.summed if s not in keep]
        drop_cols = np.concatenate([g.cols for g in gone]) if gone else np.zeros(0, dtype=np.int64)
        drop_rows = np.concatenate([g.rows for g in gone]) if gone else np.zeros(0, dtype=np.int64)
        col_keep = np.ones(self.a.shape[1], dtype=bool)
        col_keep[drop_cols] = False
        row_keep = np.ones(self.a.shape[0], dtype=bool)
        row_keep[drop_rows] = False
        kept_cols = np.nonzero(col_keep)[0]
        kept_rows = np.nonzero(row_keep)[0]
        summed = [r for g in gone for r in g.sums]
        agg = sp.csr_matrix((np.ones(sum(len(r) for r in summed)),
                             (np.repeat(np.arange(len(summed)), [len(r) for r in summed]),
                              np.concatenate(summed) if summed else np.zeros(0, dtype=np.int64))),
                            shape=(len(summed), self.a.shape[0]))
        a_red = sp.vstack([self.a_csr[kept_rows], agg @ self.a_csr]).tocsc()[:, kept_cols]
        rlo = np.concatenate([self.rlo[kept_rows], agg @ self.rlo])
        rup = np.concatenate([self.rup[kept_rows], agg @ self.rup])
        model = LinearModel()
        for b in self.market.model.blocks():
            cut = kept_cols[(kept_cols >= b.start) & (kept_cols < b.start + b.size)]
            if len(cut):
                model.add_variables(b.name, len(cut), self.lo[cut], self.up[cut], self.cost[cut])
        model.add_constraints("horizon", {b.name: a_red[:, b.start:b.start + b.size]
                                          for b in model.blocks()}, rlo, rup)
        return _ReducedMarket(model)


def _orient(pair: np.ndarray, root: int, n_bus: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The bus each line feeds, from the root outwards, and every bus's depth (lines from the root);
    None when the lines are no tree spanning the buses."""
    from scipy.sparse.csgraph import breadth_first_order

    g = sp.csr_matrix((np.arange(1, len(pair) + 1), (pair[:, 0], pair[:, 1])), shape=(n_bus, n_bus))
    order, pred = breadth_first_order(g, root, directed=False)
    if len(order) != n_bus:
        return None
    # One pass per level: a bus's depth is known once its predecessor's is.
    depth = np.full(n_bus, -1, dtype=np.int64)
    depth[root] = 0
    todo = order[1:]
    while len(todo):
        ready = depth[pred[todo]] >= 0
        depth[todo[ready]] = depth[pred[todo[ready]]] + 1
        todo = todo[~ready]
    return np.where(depth[pair[:, 0]] > depth[pair[:, 1]], pair[:, 0], pair[:, 1]), depth


def _levels(child: np.ndarray, depth: np.ndarray) -> list[np.ndarray]:
    """The lines grouped by the depth of the bus they feed, nearest the root first."""
    line_depth = depth[child]
    return [np.nonzero(line_depth == d)[0] for d in range(1, int(line_depth.max(initial=0)) + 1)]


def _euler(pair: np.ndarray, child: np.ndarray, root: int, n_bus: int) -> tuple[np.ndarray, np.ndarray]:
    """Depth-first entry and exit count of every bus (its subtree is the buses entered in between)."""
    parent = np.full(n_bus, -1)
    parent[child] = np.where(pair[:, 0] == child, pair[:, 1], pair[:, 0])
    kids: list[list[int]] = [[] for _ in range(n_bus)]
    for c in np.sort(child):
        kids[parent[c]].append(int(c))
    tin, tout = np.zeros(n_bus, dtype=np.int64), np.zeros(n_bus, dtype=np.int64)
    clock, stack = 0, [(root, False)]
    while stack:
        b, done = stack.pop()
        if done:
            tout[b] = clock
            continue
        tin[b] = clock
        clock += 1
        stack.append((b, True))
        stack += [(k, False) for k in reversed(kids[b])]
    return tin, tout


class _ReducedMarket:
    """What the tracer reads of a market (:class:`engine.tracer._Probe`), for a reduced horizon model."""

    def __init__(self, model: LinearModel):
        self.model = model
        self.solver = HighsSolver(model)


def trace_reduced(curves: HorizonCurves, t: int, floor: float, cap: float,
                  max_solves: int) -> tuple[list[tuple[float, float, float]], int, int]:
    """Bands ``(price_low, price_high, import_kw)`` of interval ``t`` of the horizon market, exact,
    traced on the horizon with every network of :attr:`HorizonCurves.summed` but ``t``'s summed away
    (see the module notes); returns the bands, HiGHS solves and bound flips."""
    from dsomarket.engine.tracer import _Probe, _trace_interval

    probe = _Probe(curves.reduced({t}), t)
    return _trace_interval(probe, floor, cap, max_solves), probe.solves, probe.flips

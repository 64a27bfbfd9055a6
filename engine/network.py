"""Radial distribution feeders: data model, validation and topology.

Conventions (shared by the whole engine)
----------------------------------------
- Power in kW / kvar at every boundary; per-unit only inside the solvers, on a
  base of ``S_BASE_KVA`` (1 MVA) and the feeder's ``base_kv``.
- Net injection is positive into the feeder; a bus *load* is a withdrawal.
- The root bus is the transmission-distribution (T-D) interface. Interface
  import ``P0 > 0`` means the feeder buys from the ISO.
- Line flow ``P_l > 0`` flows away from the root (parent -> child) inside the
  engine; tables report it in the ``from_bus -> to_bus`` direction of the input.

A feeder is held as polars tables (the form users give it in) plus a derived
:class:`Topology` (numpy arrays in a root-first order) that the formulations use.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl
import scipy.sparse as sp

from dsomarket.engine.errors import InputError

S_BASE_KVA = 1000.0
"""Per-unit power base (1 MVA), so that a per-unit power is a power in MW."""

BUS_COLUMNS = {"bus": pl.Utf8, "vmin_pu": pl.Float64, "vmax_pu": pl.Float64,
               "load_kw": pl.Float64, "load_kvar": pl.Float64}
LINE_COLUMNS = {"line": pl.Utf8, "from_bus": pl.Utf8, "to_bus": pl.Utf8, "r_ohm": pl.Float64,
                "x_ohm": pl.Float64, "s_max_kva": pl.Float64, "in_service": pl.Boolean}
PROFILE_COLUMNS = {"bus": pl.Utf8, "interval": pl.Datetime("us", "UTC"),
                   "load_kw": pl.Float64, "load_kvar": pl.Float64}


@dataclass(frozen=True, eq=False)
class Feeder:
    """One radial feeder below one T-D interface.

    Attributes
    ----------
    name
        Feeder (and interface) name.
    root_bus
        Bus id of the T-D interface (substation secondary).
    base_kv
        Line-to-line base voltage, kV.
    v0_pu
        Voltage magnitude held at the root, per unit.
    buses
        Table ``bus, vmin_pu, vmax_pu, load_kw, load_kvar``: fixed (inflexible)
        withdrawal in kW and kvar, positive = consumption.
    lines
        Table ``line, from_bus, to_bus, r_ohm, x_ohm, s_max_kva, in_service``;
        ``s_max_kva`` is ``inf`` where the line has no thermal limit.
    load_profile
        Optional table ``bus, interval, load_kw, load_kvar`` overriding the
        fixed load of a bus in given intervals (UTC).
    import_max_kw, export_max_kw
        Optional limits on the interface import (kW, from the ISO) and export.
    """

    name: str
    root_bus: str
    base_kv: float
    v0_pu: float
    buses: pl.DataFrame
    lines: pl.DataFrame
    load_profile: pl.DataFrame | None = None
    import_max_kw: float = math.inf
    export_max_kw: float = math.inf

    @staticmethod
    def from_tables(header: dict, buses: pl.DataFrame, lines: pl.DataFrame,
                    load_profile: pl.DataFrame | None = None) -> "Feeder":
        """Build and validate a feeder from a header mapping and two tables.

        ``header`` holds ``name``, ``root_bus``, ``base_kv``, ``v0_pu`` and
        optionally ``import_max_kw`` / ``export_max_kw``. Missing optional
        columns get defaults (vmin 0.95, vmax 1.05, loads 0, s_max inf,
        in_service true). Raises :class:`InputError` naming the table, row and
        field of the first problem found.
        """
        for key in ("name", "root_bus", "base_kv"):
            if key not in header or header[key] in (None, ""):
                raise InputError("feeder", key, "is required")
        base_kv = _positive_number(header["base_kv"], "feeder", "base_kv")
        v0 = _positive_number(header.get("v0_pu", 1.0), "feeder", "v0_pu")
        imp = _limit(header.get("import_max_kw"), "import_max_kw")
        exp = _limit(header.get("export_max_kw"), "export_max_kw")
        buses = _normalise(buses, BUS_COLUMNS, "buses",
                           {"vmin_pu": 0.95, "vmax_pu": 1.05, "load_kw": 0.0, "load_kvar": 0.0})
        lines = _normalise(lines, LINE_COLUMNS, "lines", {"s_max_kva": math.inf, "in_service": True})
        if load_profile is not None:
            load_profile = _normalise(load_profile, PROFILE_COLUMNS, "load_profile", {"load_kvar": 0.0})
        feeder = Feeder(name=str(header["name"]), root_bus=str(header["root_bus"]), base_kv=base_kv,
                        v0_pu=v0, buses=buses, lines=lines, load_profile=load_profile,
                        import_max_kw=imp, export_max_kw=exp)
        feeder.topology  # validates connectivity and radiality eagerly
        return feeder

    def header(self) -> dict:
        """The header mapping as written to ``feeder.json``."""
        out = {"name": self.name, "root_bus": self.root_bus, "base_kv": self.base_kv, "v0_pu": self.v0_pu}
        if math.isfinite(self.import_max_kw):
            out["import_max_kw"] = self.import_max_kw
        if math.isfinite(self.export_max_kw):
            out["export_max_kw"] = self.export_max_kw
        return out

    @cached_property
    def topology(self) -> "Topology":
        return Topology.build(self)

    @cached_property
    def network_digest(self) -> str:
        """SHA-256 (hex) of the header, buses and lines (not the load profile), made once per feeder: what
        in-memory keys of a model built on the feeder read (a kept market's, a kept interval curve's)."""
        h = hashlib.sha256()
        for part in (repr(self.header()), self.buses.write_csv(), self.lines.write_csv()):
            h.update(part.encode("utf-8"))
            h.update(b"\0")
        return h.hexdigest()

    def with_changes(self, **changes) -> "Feeder":
        """A validated copy with some attributes replaced (the feeder itself is never mutated)."""
        fields = {"name": self.name, "root_bus": self.root_bus, "base_kv": self.base_kv,
                  "v0_pu": self.v0_pu, "buses": self.buses, "lines": self.lines,
                  "load_profile": self.load_profile, "import_max_kw": self.import_max_kw,
                  "export_max_kw": self.export_max_kw}
        fields.update(changes)
        header = {k: fields[k] for k in ("name", "root_bus", "base_kv", "v0_pu",
                                         "import_max_kw", "export_max_kw")}
        return Feeder.from_tables(header, fields["buses"], fields["lines"], fields["load_profile"])

    def loads(self, intervals: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Fixed withdrawal per bus and interval, in kW and kvar, in topology order.

        Returns two arrays of shape ``(n_bus, n_interval)`` (one column when
        ``intervals`` is None). A bus without a profile entry for an interval
        keeps its base load from ``buses``.
        """
        topo = self.topology
        base_p = topo.load_kw[:, None]
        base_q = topo.load_kvar[:, None]
        if not intervals:
            return base_p.copy(), base_q.copy()
        t = len(intervals)
        p = np.repeat(base_p, t, axis=1)
        q = np.repeat(base_q, t, axis=1)
        if self.load_profile is not None and self.load_profile.height:
            prof = self.load_profile
            t_index = {iv: k for k, iv in enumerate(intervals)}
            rows = [t_index.get(iv) for iv in prof["interval"].to_list()]
            keep = np.array([r is not None for r in rows], dtype=bool)
            if keep.any():
                bi = topo.bus_index_of(prof["bus"].to_numpy()[keep], table="load_profile")
                ti = np.array([r for r in rows if r is not None], dtype=np.int64)
                p[bi, ti] = prof["load_kw"].to_numpy()[keep]
                q[bi, ti] = prof["load_kvar"].to_numpy()[keep]
        return p, q


@dataclass(frozen=True, eq=False)
class Topology:
    """Arrays of a validated radial feeder, in root-first (breadth-first) order.

    Bus ``k`` (``k >= 1``) is fed by internal line ``k - 1`` from its parent
    ``parent[k]``; bus 0 is the root. Per-unit impedances use ``S_BASE_KVA`` and
    the feeder's ``base_kv``.
    """

    bus_ids: np.ndarray          # (n,) str, topology order
    parent: np.ndarray           # (n,) int, -1 at the root
    depth: np.ndarray            # (n,) int, 0 at the root
    vmin_pu: np.ndarray          # (n,)
    vmax_pu: np.ndarray          # (n,)
    load_kw: np.ndarray          # (n,)
    load_kvar: np.ndarray        # (n,)
    line_ids: np.ndarray         # (n-1,) str; line k feeds bus k+1
    line_sign: np.ndarray        # (n-1,) +1 where the input's from_bus is the parent, else -1
    r_ohm: np.ndarray            # (n-1,)
    x_ohm: np.ndarray            # (n-1,)
    s_max_kva: np.ndarray        # (n-1,), inf = unlimited
    z_base_ohm: float
    _bus_pos: dict = field(repr=False)

    @property
    def n_bus(self) -> int:
        return len(self.bus_ids)

    @property
    def n_line(self) -> int:
        return len(self.line_ids)

    @property
    def r_pu(self) -> np.ndarray:
        return self.r_ohm / self.z_base_ohm

    @property
    def x_pu(self) -> np.ndarray:
        return self.x_ohm / self.z_base_ohm

    def bus_index_of(self, buses, table: str = "bids", field_name: str = "bus") -> np.ndarray:
        """Topology indices of bus ids; raises InputError naming the first unknown one.

        One vectorised lookup for the whole column: a gate closure passes 100,000 bid rows here.
        """
        if isinstance(buses, pl.Series):
            ids = buses.cast(pl.Utf8)
        else:
            arr = np.asarray(buses)
            ids = pl.Series(arr if arr.dtype.kind == "U" else [str(b) for b in arr.ravel()], dtype=pl.Utf8)
        out = ids.cast(self._bus_enum, strict=False)
        if out.null_count():
            k = int(np.nonzero(out.is_null().to_numpy())[0][0])
            b = buses[k]
            raise InputError(table, field_name, f"unknown bus {b.item() if isinstance(b, np.generic) else b!r}",
                             row=k)
        return out.to_physical().to_numpy().astype(np.int64)

    @cached_property
    def _bus_enum(self) -> pl.Enum:
        # The bus ids in topology order as an enum: a cast to it is the vectorised lookup (the physical code of
        # each value is its topology index), some 2x faster than a replace through a mapping; an unknown id
        # casts to null.
        return pl.Enum([str(b) for b in self.bus_ids])

    @cached_property
    def incidence(self) -> sp.csr_matrix:
        """Bus x line incidence ``M`` with ``M P + e_root P0 = w`` (w = net withdrawal).

        ``M[j, l] = +1`` where line l feeds bus j, ``-1`` where line l leaves bus j.
        """
        n = self.n_bus
        lines = np.arange(n - 1)
        rows = np.concatenate([lines + 1, self.parent[1:]])
        cols = np.concatenate([lines, lines])
        vals = np.concatenate([np.ones(n - 1), -np.ones(n - 1)])
        return sp.csr_matrix((vals, (rows, cols)), shape=(n, n - 1))

    def __getstate__(self) -> dict:
        # A topology crosses to another process (a server's curve tracing) without its SuperLU factorisation,
        # which does not pickle, nor its memo (see memo); the process that needs them builds them again.
        return {k: v for k, v in self.__dict__.items() if k not in ("_reduced_lu", "_memo")}

    def memo(self, key, make):
        """``make()``, made once per topology and ``key``: what a formulation derives from the network alone
        and would otherwise rebuild every clearing (the LP's network blocks, :mod:`engine.lindistflow`; the
        result tables' id columns, :class:`engine.results.TableLayout`). The value is shared between callers,
        who must not modify it."""
        memo = self.__dict__.setdefault("_memo", {})
        if key not in memo:
            memo[key] = make()
        return memo[key]

    @cached_property
    def _reduced_lu(self):
        # The non-root rows of the incidence form a unit triangular matrix T
        # (each line feeds exactly one bus), with T P = w: its inverse is the
        # path matrix, applied by sparse solves rather than stored densely.
        t = self.incidence[1:, :].tocsc()
        return sp.linalg.splu(t, permc_spec="NATURAL")

    def downstream_sum(self, w: np.ndarray) -> np.ndarray:
        """Flow on each line for withdrawals ``w`` at buses (lossless): ``P = A w``.

        ``w`` has shape (n,) or (n, k); the root row is ignored.
        """
        return self._reduced_lu.solve(np.asarray(w, dtype=float)[1:])

    def path_sum(self, y: np.ndarray) -> np.ndarray:
        """For each bus, the sum of ``y`` over the lines on its path from the root: ``A^T y``.

        Returns shape (n,) or (n, k) with 0 at the root.
        """
        y = np.asarray(y, dtype=float)
        inner = self._reduced_lu.solve(y, trans="T")
        return np.concatenate([np.zeros((1,) + inner.shape[1:]), inner], axis=0)

    @cached_property
    def path_complex(self) -> np.ndarray:
        """:attr:`path_matrix` as a dense complex array, for the power flow's sweeps on small feeders (built
        once, not per sweep, and complex so that no product converts it again)."""
        return self.path_matrix.toarray().astype(complex)

    @cached_property
    def path_matrix(self) -> sp.csr_matrix:
        """Sparse line x bus matrix, 1 where the line lies on the bus's path from the root.

        Size is n times the mean depth: fine for feeders up to some 10^4 buses.
        """
        n = self.n_bus
        rows, cols = [], []
        anc = np.arange(n)
        # Walk all buses up one level at a time: depth(max) vectorised steps.
        current = anc.copy()
        active = current > 0
        while active.any():
            idx = np.nonzero(active)[0]
            rows.append(current[idx] - 1)
            cols.append(idx)
            current = np.where(active, self.parent[np.maximum(current, 0)], 0)
            active = current > 0
        r = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        c = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        return sp.csr_matrix((np.ones(len(r)), (r, c)), shape=(n - 1, n))

    @staticmethod
    def build(feeder: Feeder) -> "Topology":
        buses = feeder.buses
        ids = buses["bus"].to_list()
        pos = {b: k for k, b in enumerate(ids)}
        if len(pos) != len(ids):
            dup = next(b for k, b in enumerate(ids) if ids.index(b) != k)
            raise InputError("buses", "bus", f"duplicate bus id {dup!r}", row=ids.index(dup, ids.index(dup) + 1))
        if feeder.root_bus not in pos:
            raise InputError("feeder", "root_bus", f"unknown bus {feeder.root_bus!r}")
        vmin = buses["vmin_pu"].to_numpy()
        vmax = buses["vmax_pu"].to_numpy()
        bad = np.nonzero(~(vmin <= vmax))[0]
        if len(bad):
            raise InputError("buses", "vmin_pu", "must not exceed vmax_pu", row=int(bad[0]))

        lines = feeder.lines
        line_ids = lines["line"].to_list()
        if len(set(line_ids)) != len(line_ids):
            seen: set = set()
            for k, lid in enumerate(line_ids):
                if lid in seen:
                    raise InputError("lines", "line", f"duplicate line id {lid!r}", row=k)
                seen.add(lid)
        fb = lines["from_bus"].to_list()
        tb = lines["to_bus"].to_list()
        # Each line's bus positions (-1: unknown) in one pass; the first bad line is reported, its from_bus first.
        f_all = np.array([pos.get(b, -1) for b in fb], dtype=np.int64)
        t_all = np.array([pos.get(b, -1) for b in tb], dtype=np.int64)
        bad = np.nonzero((f_all < 0) | (t_all < 0) | (f_all == t_all))[0]
        if len(bad):
            k = int(bad[0])
            if f_all[k] < 0:
                raise InputError("lines", "from_bus", f"unknown bus {fb[k]!r}", row=k)
            if t_all[k] < 0:
                raise InputError("lines", "to_bus", f"unknown bus {tb[k]!r}", row=k)
            raise InputError("lines", "to_bus", "a line must join two different buses", row=k)
        active = np.nonzero(lines["in_service"].to_numpy())[0]
        n = len(ids)
        if len(active) != n - 1:
            reason = ("the in-service lines form a loop: the feeder is not radial"
                      if len(active) > n - 1 else
                      "the feeder is disconnected: some buses have no path to the root")
            if len(active) > n - 1:
                raise InputError("lines", "in_service", f"{len(active)} lines for {n} buses: {reason}")
        f_idx, t_idx = f_all[active], t_all[active]
        adj = sp.coo_matrix((np.ones(len(active)), (f_idx, t_idx)), shape=(n, n))
        adj = (adj + adj.T).tocsr()
        order, preds = sp.csgraph.breadth_first_order(adj, pos[feeder.root_bus], directed=False,
                                                      return_predecessors=True)
        if len(order) < n:
            reached = np.zeros(n, dtype=bool)
            reached[order] = True
            lost = ids[int(np.nonzero(~reached)[0][0])]
            raise InputError("lines", "to_bus", f"the feeder is disconnected: bus {lost!r} has no "
                             f"in-service path to the root bus {feeder.root_bus!r}")
        if len(active) != n - 1:  # connected with n-1 lines is a tree; more lines is a loop
            raise InputError("lines", "in_service", "the in-service lines form a loop: the feeder is not radial")
        new_of_old = np.empty(n, dtype=np.int64)
        new_of_old[order] = np.arange(n)
        parent_old = preds[order]
        parent = np.where(parent_old < 0, -1, new_of_old[np.maximum(parent_old, 0)])
        parent[0] = -1
        depth_of = [0] * n
        up = parent.tolist()
        for k in range(1, n):  # BFS order: a parent's depth is known before its children's (lists: no numpy scalars)
            depth_of[k] = depth_of[up[k]] + 1
        depth = np.array(depth_of, dtype=np.int64)
        # Map each in-service line to the child bus it feeds.
        child_new = np.where(parent[new_of_old[t_idx]] == new_of_old[f_idx], new_of_old[t_idx], new_of_old[f_idx])
        sign = np.where(parent[new_of_old[t_idx]] == new_of_old[f_idx], 1.0, -1.0)
        line_of_child = np.empty(n - 1, dtype=np.int64)
        line_of_child[child_new - 1] = np.arange(len(active))
        src = active[line_of_child]

        r = lines["r_ohm"].to_numpy()
        x = lines["x_ohm"].to_numpy()
        s = lines["s_max_kva"].to_numpy()
        for col, arr in (("r_ohm", r), ("x_ohm", x)):
            bad = np.nonzero(~(arr > 0))[0]
            if len(bad):
                raise InputError("lines", col, f"must be a positive number of ohms (got {arr[bad[0]]})",
                                 row=int(bad[0]))
        bad = np.nonzero(~(s > 0))[0]
        if len(bad):
            raise InputError("lines", "s_max_kva", f"must be positive or inf (got {s[bad[0]]})", row=int(bad[0]))
        bus_arr = np.array(ids, dtype=object)[order]
        return Topology(
            bus_ids=bus_arr, parent=parent, depth=depth,
            vmin_pu=vmin[order], vmax_pu=vmax[order],
            load_kw=buses["load_kw"].to_numpy()[order], load_kvar=buses["load_kvar"].to_numpy()[order],
            line_ids=np.array(line_ids, dtype=object)[src], line_sign=sign[line_of_child],
            r_ohm=r[src], x_ohm=x[src], s_max_kva=s[src],
            z_base_ohm=feeder.base_kv ** 2 / (S_BASE_KVA / 1000.0),
            _bus_pos={b: k for k, b in enumerate(bus_arr)},
        )


def _positive_number(value, table: str, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InputError(table, name, f"must be a number (got {value!r})") from None
    if not (out > 0 and math.isfinite(out)):
        raise InputError(table, name, f"must be a positive finite number (got {value!r})")
    return out


def _limit(value, name: str) -> float:
    if value is None or value == "":
        return math.inf
    out = float(value)
    if math.isnan(out) or out < 0:
        raise InputError("feeder", name, f"must be a non-negative number or absent (got {value!r})")
    return out


def as_polars(df, table: str) -> pl.DataFrame:
    """An input table as a polars DataFrame: a pandas DataFrame is converted (its index dropped).

    The engine works on polars; converting here, at the edge, lets pandas users
    pass their frames without making pandas a dependency.

    Raises
    ------
    InputError
        ``(table, "table", ...)`` for anything but a polars or pandas DataFrame.
    """
    if isinstance(df, pl.DataFrame):
        return df
    if type(df).__module__.split(".")[0] == "pandas" and type(df).__name__ == "DataFrame":
        try:
            return pl.from_pandas(df)
        except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            raise InputError(table, "table", f"cannot convert the pandas DataFrame: {exc}") from None
    raise InputError(table, "table", f"must be a polars or pandas DataFrame (got {type(df).__name__})")


def _normalise(df: pl.DataFrame, schema: dict, table: str, defaults: dict,
               nullable: tuple = ()) -> pl.DataFrame:
    """Select, default and cast the columns of an input table; reject NaN and missing values.

    Columns named in ``nullable`` may hold nulls; every other null is an error. ``df``
    may be a pandas DataFrame (:func:`as_polars`).
    """
    df = as_polars(df, table)
    out = _as_given(df, schema, defaults)
    if out is None:
        out = _cast(df, schema, table, defaults)
    null_counts = out.null_count().row(0)   # one pass over the table; a column with nulls is searched for the first
    for (col, dtype), n_null in zip(schema.items(), null_counts):
        if col in nullable:
            continue
        if n_null:
            raise InputError(table, col, "is empty", row=int(np.nonzero(out[col].is_null().to_numpy())[0][0]))
        if dtype == pl.Float64:
            nans = np.nonzero(np.isnan(out[col].to_numpy()))[0]
            if len(nans):
                raise InputError(table, col, "is NaN", row=int(nans[0]))
    return out


def _as_given(df: pl.DataFrame, schema: dict, defaults: dict) -> pl.DataFrame | None:
    """:func:`_normalise`'s table where nothing needs a cast or a fill: the given columns, each of its schema's type,
    as they are, and the missing ones their defaults repeated; None where some column needs more (:func:`_cast`).
    A frame of those Series, without a query's planning: half of ``_cast``'s cost at 10,000 bids."""
    if not any(col in df.columns for col in schema):
        return None      # defaults alone: the query's one row
    columns = []
    for col, dtype in schema.items():
        if isinstance(dtype, pl.Datetime) and dtype != pl.Datetime("us", "UTC"):
            return None  # _cast reads every timestamp as UTC microseconds
        if col in df.columns:
            given = df.get_column(col)
            if given.dtype != dtype or (defaults.get(col) is not None and given.null_count()):
                return None
            columns.append(given)
        elif col in defaults and _default_fits(defaults[col], dtype):
            columns.append(pl.Series(col, [defaults[col]], dtype=dtype).new_from_index(0, df.height))
        else:
            return None
    return pl.DataFrame(columns)


def _default_fits(value, dtype) -> bool:
    """Whether a default is already of its column's type (a null is of any), so that no cast changes it."""
    return value is None or any(dtype == kind and type(value) is cls
                                for kind, cls in ((pl.Utf8, str), (pl.Float64, float), (pl.Boolean, bool)))


def _cast(df: pl.DataFrame, schema: dict, table: str, defaults: dict) -> pl.DataFrame:
    """:func:`_normalise`'s columns selected, defaulted and cast by one query; InputError naming the first value
    that cannot be cast."""
    exprs = []
    for col, dtype in schema.items():
        if col in df.columns:
            expr = pl.col(col)
            if defaults.get(col) is not None:
                expr = expr.fill_null(defaults[col])
        elif col in defaults:
            expr = pl.lit(defaults[col], dtype=None if defaults[col] is not None else dtype)
        else:
            raise InputError(table, col, "column is missing")
        if dtype == pl.Utf8:
            expr = expr.cast(pl.Utf8)
        elif isinstance(dtype, pl.Datetime):
            expr = _utc(expr, df.schema.get(col))
        else:
            expr = expr.cast(dtype, strict=True)
        exprs.append(expr.alias(col))
    try:
        return df.select(exprs)
    except pl.exceptions.PolarsError as exc:
        bad = _first_uncastable(df, schema)
        if bad:
            raise InputError(table, bad[0], bad[2], row=bad[1]) from None
        raise InputError(table, "?", str(exc).splitlines()[0]) from None


def _utc(expr: pl.Expr, dtype) -> pl.Expr:
    """Cast a timestamp column (string or datetime) to UTC microseconds."""
    if dtype == pl.Utf8 or dtype == pl.String:
        return expr.str.to_datetime(time_zone="UTC", time_unit="us")
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    return expr.cast(pl.Datetime("us", "UTC"))


def _first_uncastable(df: pl.DataFrame, schema: dict) -> tuple[str, int, str] | None:
    """The first value that cannot be read as its column's type: (column, row, reason)."""
    for col, dtype in schema.items():
        if col not in df.columns or dtype == pl.Utf8:
            continue
        src = df[col]
        if isinstance(dtype, pl.Datetime):
            if src.dtype not in (pl.Utf8, pl.String):
                continue
            casted = src.str.to_datetime(time_zone="UTC", time_unit="us", strict=False)
            what = "an ISO 8601 timestamp"
        else:
            casted = src.cast(dtype, strict=False)
            what = "a number" if dtype != pl.Boolean else "true or false"
        bad = np.nonzero((casted.is_null() & src.is_not_null()).to_numpy())[0]
        if len(bad):
            return col, int(bad[0]), f"{src[int(bad[0])]!r} is not {what}"
    return None

"""Network changes as versioned data: the feeder as it is in each interval.

A change set is a table, one row per change, in version order (a later row
overrides an earlier one where both touch the same element in the same
interval). Each change is in effect on ``[start, end)`` (``end`` null = from
``start`` on). Columns:

- ``change_id``: unique id; errors name it.
- ``kind``: ``outage`` / ``open`` take a line out of service (forced outage,
  switching), ``return`` / ``close`` put one in service; ``rating`` sets a
  line's ``s_max_kva`` (a derate or a dynamic rating; ``inf`` = unlimited);
  ``voltage`` sets a bus's ``vmin_pu`` and/or ``vmax_pu``; ``interface`` sets
  ``import_max_kw`` and/or ``export_max_kw`` at the T-D interface (kW, >= 0,
  ``inf`` = unlimited).
- ``element``: the line or bus id (empty for ``interface``).
- ``start``, ``end``: UTC timestamps.
- ``shed``: true when the change may leave load without supply (the islanded
  load is then declared shed, not served). Without it, a change that islands
  a bus with load is refused, as is any set of changes that closes a loop:
  the feeder stays radial in every interval.
- ``who``, ``why``: free text for the audit trail (not used by the maths).

:func:`network_runs` turns a change set into *runs*: groups of intervals with
the same changes in effect, each with the feeder as it is then (a validated,
radial :class:`Feeder` holding only the energised buses and lines). Every
formulation then clears a run's feeder as it clears any feeder: changes are
applied before a model is built, never inside one (see :mod:`engine.runs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from dsomarket.engine.errors import InputError
from dsomarket.engine.network import Feeder, _normalise

CHANGE_KINDS = ("outage", "return", "open", "close", "rating", "voltage", "interface")
"""Kinds of network change (see the module docstring)."""
_OUT = ("outage", "open")
_IN = ("return", "close")
_UTC = pl.Datetime("us", "UTC")
CHANGE_SCHEMA = {"change_id": pl.Utf8, "kind": pl.Utf8, "element": pl.Utf8, "start": _UTC, "end": _UTC,
                 "s_max_kva": pl.Float64, "vmin_pu": pl.Float64, "vmax_pu": pl.Float64,
                 "import_max_kw": pl.Float64, "export_max_kw": pl.Float64, "shed": pl.Boolean,
                 "who": pl.Utf8, "why": pl.Utf8}
_NULLABLE = ("end", "s_max_kva", "vmin_pu", "vmax_pu", "import_max_kw", "export_max_kw")
_DEFAULTS = {"element": "", "end": None, "s_max_kva": None, "vmin_pu": None, "vmax_pu": None,
             "import_max_kw": None, "export_max_kw": None, "shed": False, "who": "", "why": ""}


def empty_changes() -> pl.DataFrame:
    return pl.DataFrame(schema=CHANGE_SCHEMA)


def validate_changes(changes: pl.DataFrame, feeder: Feeder) -> pl.DataFrame:
    """Check a change table against a feeder; return it with every column typed and defaulted.

    Raises :class:`InputError` (table ``network_changes``) naming the row and
    field of the first problem: unknown kind, unknown line or bus, a value
    missing for the kind or out of range, ``end`` not after ``start``, a
    duplicate ``change_id``. Row order is kept: it is the version order.
    """
    for col in ("change_id", "kind", "start"):
        if col not in changes.columns:
            raise InputError("network_changes", col, "column is missing")
    # NaN is allowed in a nullable column only as "no value": map it to null first.
    floats = [c for c in _NULLABLE if c in changes.columns and changes.schema[c] in (pl.Float32, pl.Float64)]
    changes = changes.with_columns(pl.col(c).fill_nan(None) for c in floats)
    t = _normalise(changes, CHANGE_SCHEMA, "network_changes", _DEFAULTS, nullable=_NULLABLE)
    dup = t["change_id"].is_duplicated().to_numpy()
    if dup.any():
        row = int(np.nonzero(dup)[0][-1])
        raise InputError("network_changes", "change_id", f"duplicate change_id {t['change_id'][row]!r}", row=row)
    lines = set(feeder.lines["line"].to_list())
    buses = set(feeder.buses["bus"].to_list())
    for k, r in enumerate(t.iter_rows(named=True)):
        kind, el = r["kind"], r["element"]
        if kind not in CHANGE_KINDS:
            raise InputError("network_changes", "kind", f"must be one of {', '.join(CHANGE_KINDS)} (got {kind!r})",
                             row=k)
        if r["end"] is not None and not r["end"] > r["start"]:
            raise InputError("network_changes", "end", "must be after start", row=k)
        if kind in _OUT + _IN + ("rating",) and el not in lines:
            raise InputError("network_changes", "element", f"unknown line {el!r}", row=k)
        if kind == "voltage" and el not in buses:
            raise InputError("network_changes", "element", f"unknown bus {el!r}", row=k)
        if kind == "rating" and not (r["s_max_kva"] is not None and r["s_max_kva"] > 0):
            raise InputError("network_changes", "s_max_kva", "a rating needs s_max_kva > 0 (inf = unlimited; "
                             "take the line out with an outage instead of a zero rating)", row=k)
        if kind == "voltage":
            lo, hi = r["vmin_pu"], r["vmax_pu"]
            if lo is None and hi is None:
                raise InputError("network_changes", "vmin_pu", "a voltage change needs vmin_pu or vmax_pu", row=k)
            for name, v in (("vmin_pu", lo), ("vmax_pu", hi)):
                if v is not None and not (0 < v < math.inf):
                    raise InputError("network_changes", name, f"must be a positive number (got {v})", row=k)
            if lo is not None and hi is not None and lo > hi:
                raise InputError("network_changes", "vmin_pu", "must not exceed vmax_pu", row=k)
        if kind == "interface":
            if r["import_max_kw"] is None and r["export_max_kw"] is None:
                raise InputError("network_changes", "import_max_kw",
                                 "an interface change needs import_max_kw or export_max_kw", row=k)
            for name in ("import_max_kw", "export_max_kw"):
                if r[name] is not None and not r[name] >= 0:
                    raise InputError("network_changes", name, f"must be >= 0 (got {r[name]})", row=k)
    return t


@dataclass(frozen=True, eq=False)
class NetworkRun:
    """Intervals that share one network state, and the feeder as it is in them.

    Attributes
    ----------
    indices
        Positions of the run's intervals in the market's interval list, ascending.
    intervals
        The intervals themselves (UTC).
    feeder
        The energised feeder: only buses with a path to the root and the lines
        between them, with the ratings, voltage limits and interface limits in effect.
    change_ids
        The changes in effect, in version order (empty for the feeder as loaded).
    de_energised
        Buses without supply in these intervals (their load is shed as declared).
    out_of_service
        Lines out of service in these intervals.
    """

    indices: tuple
    intervals: list
    feeder: Feeder
    change_ids: tuple
    de_energised: tuple
    out_of_service: tuple


def in_effect(changes: pl.DataFrame, intervals: list) -> np.ndarray:
    """Boolean (change x interval) matrix: change k is in effect in interval t."""
    if not changes.height:
        return np.zeros((0, len(intervals)), dtype=bool)
    if any(iv is None for iv in intervals):
        raise InputError("network_changes", "start", "network changes need a timed market (intervals with a start)")
    ivs = pl.Series("iv", intervals, dtype=_UTC).to_numpy()
    start = changes["start"].to_numpy()
    end = changes["end"].fill_null(pl.datetime(9999, 1, 1, time_zone="UTC")).to_numpy()
    return (start[:, None] <= ivs[None, :]) & (ivs[None, :] < end[:, None])


def network_runs(feeder: Feeder, changes: pl.DataFrame | None, intervals: list) -> tuple[NetworkRun, ...]:
    """The runs of a market's intervals under a change set (validated with :func:`validate_changes`).

    Intervals with the same changes in effect form one run, in the order their
    first interval appears. Without changes in effect anywhere there is one
    run holding the feeder as loaded.
    """
    changes = empty_changes() if changes is None else changes
    active = in_effect(changes, intervals)
    if not active.any():
        return (NetworkRun(tuple(range(len(intervals))), list(intervals), feeder, (), (), ()),)
    groups: dict[bytes, list[int]] = {}
    for t in range(len(intervals)):
        groups.setdefault(active[:, t].tobytes(), []).append(t)
    ids = changes["change_id"].to_list()
    runs = []
    for idx in groups.values():
        rows = np.nonzero(active[:, idx[0]])[0]
        ivs = [intervals[t] for t in idx]
        if not len(rows):
            runs.append(NetworkRun(tuple(idx), ivs, feeder, (), (), ()))
            continue
        runs.append(_run(feeder, changes[rows], tuple(idx), ivs, tuple(ids[r] for r in rows)))
    return tuple(runs)


def _run(feeder: Feeder, ch: pl.DataFrame, idx: tuple, ivs: list, ids: tuple) -> NetworkRun:
    lines = feeder.lines
    line_pos = {lid: k for k, lid in enumerate(lines["line"].to_list())}
    in_service = lines["in_service"].to_numpy().copy()
    s_max = lines["s_max_kva"].to_numpy().copy()
    buses = feeder.buses
    bus_pos = {b: k for k, b in enumerate(buses["bus"].to_list())}
    vmin = buses["vmin_pu"].to_numpy().copy()
    vmax = buses["vmax_pu"].to_numpy().copy()
    imp, exp = feeder.import_max_kw, feeder.export_max_kw
    switched_in, opened_shed = [], []
    for r in ch.iter_rows(named=True):
        kind, el = r["kind"], r["element"]
        if kind in _OUT:
            in_service[line_pos[el]] = False
            if r["shed"]:
                opened_shed.append(r["change_id"])
        elif kind in _IN:
            in_service[line_pos[el]] = True
            switched_in.append(r["change_id"])
        elif kind == "rating":
            s_max[line_pos[el]] = r["s_max_kva"]
        elif kind == "voltage":
            if r["vmin_pu"] is not None:
                vmin[bus_pos[el]] = r["vmin_pu"]
            if r["vmax_pu"] is not None:
                vmax[bus_pos[el]] = r["vmax_pu"]
        else:
            imp = imp if r["import_max_kw"] is None else r["import_max_kw"]
            exp = exp if r["export_max_kw"] is None else r["export_max_kw"]
    culprit = ids[-1]
    n = len(bus_pos)
    fb = np.array([bus_pos[b] for b in lines["from_bus"].to_list()], dtype=np.int64)
    tb = np.array([bus_pos[b] for b in lines["to_bus"].to_list()], dtype=np.int64)
    on = np.nonzero(in_service)[0]
    adj = sp.coo_matrix((np.ones(len(on)), (fb[on], tb[on])), shape=(n, n)).tocsr()
    reached = np.zeros(n, dtype=bool)
    reached[sp.csgraph.breadth_first_order(adj, bus_pos[feeder.root_bus], directed=False,
                                           return_predecessors=False)] = True
    live = on[reached[fb[on]] & reached[tb[on]]]
    if len(live) != int(reached.sum()) - 1:
        who = switched_in[-1] if switched_in else culprit
        raise InputError("network_changes", "element", f"change {who!r} closes a loop from {ivs[0]}: the feeder "
                         "must stay radial (open another line in the same interval)")
    dead = np.nonzero(~reached)[0]
    if len(dead):
        p, q = feeder.loads(ivs)
        topo = feeder.topology
        order = topo.bus_index_of(buses["bus"].to_numpy()[dead], table="buses")
        loaded = (np.abs(p[order]) > 0).any(axis=1) | (np.abs(q[order]) > 0).any(axis=1)
        if loaded.any() and not opened_shed:
            bus = buses["bus"][int(dead[np.nonzero(loaded)[0][0]])]
            raise InputError("network_changes", "shed", f"changes {', '.join(map(repr, ids))} leave bus {bus!r} and its load "
                             f"without supply from {ivs[0]}: declare shed or close a tie")
    keep_bus = buses.filter(pl.Series(reached))
    dead_ids = set(buses["bus"].to_numpy()[dead].tolist())
    new_lines = lines.with_columns(pl.Series("in_service", in_service), pl.Series("s_max_kva", s_max))
    new_lines = new_lines.filter(~pl.col("from_bus").is_in(list(dead_ids)) & ~pl.col("to_bus").is_in(list(dead_ids)))
    keep_bus = keep_bus.with_columns(pl.Series("vmin_pu", vmin[reached]), pl.Series("vmax_pu", vmax[reached]))
    profile = feeder.load_profile
    if profile is not None:
        profile = profile.filter(~pl.col("bus").is_in(list(dead_ids)))
    header = feeder.header() | {"import_max_kw": imp, "export_max_kw": exp}
    try:
        run_feeder = Feeder.from_tables(header, keep_bus, new_lines, profile)
    except InputError as exc:
        raise InputError("network_changes", "element",
                         f"changes {', '.join(map(repr, ids))} from {ivs[0]}: {exc}") from None
    out = tuple(sorted(lines["line"].to_numpy()[~in_service].tolist()))
    return NetworkRun(idx, ivs, run_feeder, ids, tuple(sorted(dead_ids)), out)


def affected_intervals(changes: pl.DataFrame, intervals: list) -> np.ndarray:
    """Indices of the intervals in which any of ``changes`` is in effect (ascending)."""
    return np.nonzero(in_effect(changes, intervals).any(axis=0))[0]

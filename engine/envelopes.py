"""Operating envelopes: per DER and interval, the import/export range it may use without breaking a limit.

The DSO publishes, for each registered DER (and, summed, each aggregation) and
each interval, a range ``-import_max_kw <= p <= export_max_kw`` of net injection
(kW, injection positive) such that *any* combination of DER injections within
everyone's ranges keeps every line, bus voltage and interface limit of the
feeder under the forecast (ESIG's "dynamic import/export limits", DSO Model 3).

Sharing rule (published)
------------------------
Weighted max-min fairness ("water filling"), in each direction and interval:
every DER starts at zero and all rise together, each in proportion to its
weight, until a limit binds; the DERs that affect that limit stop there, the
others keep rising, until every DER has stopped at a limit or at its own
nameplate (its approved limit). Weights:

- ``proportional`` (default): the DER's approved limit, so DERs stopped by the same
  constrained path get the same *fraction* of their nameplate;
- ``equal``: 1 for every DER, so they get the same kW (capped by their nameplates).

A DER "affects" a side of a limit when its sensitivity on it is positive
(:mod:`engine.operating`): below a line for thermal limits, sharing some path
resistance for voltages, every DER for the interface. A DER absorbing vars while
exporting (``tan_phi < 0``) may lower a voltage by exporting and raise it by
importing (a cross sensitivity); exports and imports are then filled together,
one water filling over both directions, each side of each limit counting the
end of every DER's range that pushes it.

Why any dispatch inside the envelopes is feasible: LinDistFlow is linear, so
each side of each limit is at its worst when every DER sits at the end of its
range that pushes it, and the fill keeps that worst case within the margin. With
``tan_phi >= 0`` these worst cases are two corners (all at export maximum, or all
at import maximum); with cross sensitivities there is one corner per distinct
pattern (:func:`engine.operating.corners`). The AC power flow checks every corner
in every interval and the margins are tightened by what it finds
(:func:`engine.operating.ac_corrected`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from dsomarket.engine.errors import InputError
from dsomarket.engine.network import Feeder
from dsomarket.engine.operating import (SENS_TOL, AcCheck, Constraints, ac_corrected, constraints, describe,
                                        forecast_loads, interval_column)
from dsomarket.engine.registry import validate_ders

RULES = ("proportional", "equal")
ROUND_KW = 6
_LEVEL_TOL = 1e-12
_ENTRIES = 4_000_000
"""Sensitivity entries times intervals per water-filling block (a few arrays of this many floats)."""


def water_fill(margin: np.ndarray, sens: sp.spmatrix | np.ndarray, cap: np.ndarray, weight: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted max-min fair allocation of non-negative margins, every interval at once.

    Parameters
    ----------
    margin
        ``(c,)`` or ``(c, t)`` room per limit (and interval), constraint units; negative =
        already broken.
    sens
        ``(c, d)`` non-negative sensitivities, constraint units per kW (sparse or dense).
    cap
        ``(d,)`` the most each DER may get, kW (>= 0).
    weight
        ``(d,)`` relative speed at which each DER's allocation rises (> 0 where cap > 0).

    Returns
    -------
    alloc, binding
        ``(d,)`` or ``(d, t)`` kW, and the limit row that stopped each DER (-1 for its own cap).

    Notes
    -----
    Progressive filling: with a common level ``lam`` for the DERs still rising (set ``U``),
    ``x_d = lam w_d``; limit ``c`` allows ``lam <= L_c = (m_c - sum_{d not in U} S_cd x_d) /
    sum_{d in U} S_cd w_d``. Freezing DERs only raises the ``L`` of the other limits, so a
    limit whose ``L_c`` is no larger than the level at which any of its rising DERs could
    stop (its other limits' ``L`` and its cap ``cap_d / w_d``) binds at exactly ``L_c``;
    likewise a DER whose cap comes before all its limits stops at its cap. Each round
    stops every DER so determined, in every interval at once (one sparse product and two
    segment minima per round), instead of only those of the single lowest limit; the
    result is the same allocation.
    """
    one = np.ndim(margin) == 1
    m = np.asarray(margin, dtype=float).reshape(len(margin), -1)
    s_csr = sp.csr_matrix(sens, dtype=float)
    s_csr.data[s_csr.data <= SENS_TOL] = 0.0
    s_csr.eliminate_zeros()
    cap = np.asarray(cap, dtype=float)
    weight = np.asarray(weight, dtype=float)
    # A limit with room for every DER at its cap never binds (ties go to the caps): leave it out.
    can_bind = m < (s_csr @ cap)[:, None]
    d, n_t = len(cap), m.shape[1]
    alloc, binding = np.zeros((d, n_t)), np.full((d, n_t), -1, dtype=np.int64)
    entries = np.diff(s_csr.indptr)
    block = max(1, _ENTRIES // max(int(entries[can_bind.any(axis=1)].sum()), 1))
    for k in range(0, n_t, block):  # intervals in blocks that keep the per-entry arrays small
        rows = np.nonzero(can_bind[:, k:k + block].any(axis=1))[0]
        a, b = _fill_block(m[rows, k:k + block], s_csr[rows], cap, weight)
        alloc[:, k:k + block] = a
        binding[:, k:k + block] = np.append(rows, -1)[np.where(b >= 0, b, len(rows))]
    return (alloc[:, 0], binding[:, 0]) if one else (alloc, binding)


def _fill_block(m: np.ndarray, s_csr: sp.csr_matrix, cap: np.ndarray, weight: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`water_fill` of margins ``(c, t)`` on sensitivities ``(c, d)`` whose entries are all > 0."""
    s_csc = s_csr.tocsc()
    n_c, d = s_csc.shape
    n_t = m.shape[1]
    alloc = np.zeros((d, n_t))
    binding = np.full((d, n_t), -1, dtype=np.int64)
    rising = np.repeat(((cap > 0) & (weight > 0))[:, None], n_t, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cap_level = np.where(weight > 0, cap / weight, np.inf)[:, None]
    fixed = np.zeros((n_c, n_t))
    row_of = s_csc.indices                                   # the limit of each entry, by DER
    col_starts, col_has = s_csc.indptr[:-1], np.diff(s_csc.indptr) > 0
    der_of = s_csr.indices                                   # the DER of each entry, by limit
    row_starts, row_has = s_csr.indptr[:-1], np.diff(s_csr.indptr) > 0
    while rising.any():
        load = s_csr @ np.where(rising, weight[:, None], 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            level_c = np.where(load > SENS_TOL, np.maximum((m - fixed) / load, 0.0), np.inf)
        # Lowest limit level of each DER, and the level at which it stops if nothing else does first.
        lim_d = np.full((d, n_t), np.inf)
        if len(row_of):
            lim_d[col_has] = np.minimum.reduceat(level_c[row_of], col_starts[col_has], axis=0)
        stop_d = np.where(rising, np.minimum(lim_d, cap_level), np.inf)
        # A limit binds now when none of its rising DERs can stop below its level.
        first_c = np.full((n_c, n_t), np.inf)
        if len(der_of):
            first_c[row_has] = np.minimum.reduceat(stop_d[der_of], row_starts[row_has], axis=0)
        binds = np.isfinite(level_c) & (level_c <= first_c * (1 + 1e-12) + _LEVEL_TOL)
        at_cap = rising & (cap_level <= lim_d)
        on_limit = np.zeros((d, n_t), dtype=bool)
        which = np.full((d, n_t), -1, dtype=np.int64)
        if len(row_of):
            hit = binds[row_of]                              # (entries, t): entry's limit binds
            # The first binding limit of each DER: the largest (n_c - row) among its binding entries.
            key = np.where(hit, n_c - row_of[:, None], 0)
            best = np.zeros((d, n_t), dtype=np.int64)
            best[col_has] = np.maximum.reduceat(key, col_starts[col_has], axis=0)
            on_limit = rising & ~at_cap & (best > 0)
            which = np.where(best > 0, n_c - best, -1)
        stop = at_cap | on_limit
        if not stop.any():  # cannot happen (the lowest level always stops someone); guards the loop
            raise RuntimeError("water filling made no progress")
        x = np.where(at_cap, cap[:, None], np.where(on_limit, stop_d, 0.0) * weight[:, None])
        alloc[stop] = x[stop]
        binding[stop] = np.where(at_cap, -1, which)[stop]
        fixed += s_csr @ np.where(stop, alloc, 0.0)
        rising &= ~stop
    return alloc, binding


@dataclass(frozen=True, eq=False)
class Envelopes:
    """Operating envelopes of one feeder.

    Attributes
    ----------
    ders
        One row per DER and interval: ``der_id, aggregation_id, bus, interval,
        export_max_kw, import_max_kw`` (the DER's net injection may lie anywhere in
        ``[-import_max_kw, export_max_kw]``), ``export_binding, import_binding`` (the
        limit that stopped it, in words, or ``nameplate``).
    aggregations
        One row per aggregation and interval: ``aggregation_id, interval,
        export_max_kw, import_max_kw``, the sums over its members (each member must
        also stay inside its own envelope).
    rule
        The sharing rule used (:data:`RULES`).
    ac_check
        The AC verification of the two corners (:class:`engine.operating.AcCheck`).
    """

    ders: pl.DataFrame
    aggregations: pl.DataFrame
    rule: str
    ac_check: AcCheck


def operating_envelopes(feeder: Feeder, ders: pl.DataFrame, forecast: pl.DataFrame | None = None,
                        intervals: list | None = None, rule: str = "proportional") -> Envelopes:
    """Import/export envelopes for every DER of ``feeder`` in every interval of the forecast.

    Parameters
    ----------
    feeder
        The feeder; DERs of the registry on other feeders are left out.
    ders
        A DER registry table (:mod:`engine.registry`); each DER's approved limits
        (``export_limit_kw``, ``import_limit_kw``, default its nameplate) cap its envelope.
        Refused and retired DERs get none.
    forecast
        Table ``bus, interval, p_kw[, q_kvar]`` of fixed net withdrawal (kW, positive =
        consumption), or None for the feeder's own loads.
    intervals
        UTC timestamps to compute; default the forecast's.
    rule
        ``proportional`` or ``equal`` (see the module notes).

    Returns
    -------
    Envelopes
    """
    if rule not in RULES:
        raise InputError("envelopes", "rule", f"must be one of {', '.join(RULES)} (got {rule!r})")
    t = validate_ders(ders).filter((pl.col("feeder") == feeder.name)
                                   & ~pl.col("status").is_in(("refused", "retired")))
    topo = feeder.topology
    ivs, p_kw, q_kvar = forecast_loads(feeder, forecast, intervals)
    bus_idx = topo.bus_index_of(t["bus"].to_numpy(), table="ders")
    tan_phi = t["tan_phi"].to_numpy()
    d = t.height
    cap = np.concatenate([t["export_limit_kw"].to_numpy(), t["import_limit_kw"].to_numpy()])
    weight = cap if rule == "proportional" else (cap > 0).astype(float)
    cons = constraints(feeder, p_kw, q_kvar, bus_idx, tan_phi)
    # One fill over both directions: rows are the export-type then the import-type sides, columns the
    # exports then the imports; the cross blocks couple them only for DERs with tan_phi < 0.
    fill = sp.bmat([[cons.sens, cons.cross], [cons.cross, cons.sens]]).tocsc()
    n_t = len(ivs)
    bindings: dict = {}

    def allocate(c: Constraints) -> tuple[np.ndarray, np.ndarray]:
        alloc, bind = water_fill(np.vstack([c.margin_export, c.margin_import]), fill, cap, weight)
        bindings["export"], bindings["import"] = bind[:d], bind[d:]
        return alloc[:d], alloc[d:]

    exp_kw, imp_kw, final, check = ac_corrected(feeder, p_kw, q_kvar, cons, bus_idx, tan_phi, allocate)

    def words(bind: np.ndarray) -> np.ndarray:
        rows, back = np.unique(bind.ravel(), return_inverse=True)
        said = [describe(final, b % cons.n, "export" if b < cons.n else "import", topo) if b >= 0 else "nameplate"
                for b in rows]
        return np.array(said, dtype=object)[back.ravel()]

    rows_t = np.tile(np.arange(n_t), d)
    rows_d = np.repeat(np.arange(d), n_t)
    names = {direction: words(bindings[direction]) for direction in ("export", "import")}
    table = pl.DataFrame({
        "der_id": t["der_id"].to_numpy()[rows_d], "aggregation_id": t["aggregation_id"].to_numpy()[rows_d],
        "bus": t["bus"].to_numpy()[rows_d],
    }).with_columns(interval_column(ivs, rows_t),
                    pl.Series("export_max_kw", np.round(exp_kw.ravel(), ROUND_KW) + 0.0),
                    pl.Series("import_max_kw", np.round(imp_kw.ravel(), ROUND_KW) + 0.0),
                    pl.Series("export_binding", names["export"].astype(str)),
                    pl.Series("import_binding", names["import"].astype(str)))
    aggs = table.group_by("aggregation_id", "interval", maintain_order=True).agg(
        pl.col("export_max_kw").sum(), pl.col("import_max_kw").sum())
    return Envelopes(table, aggs, rule, check)

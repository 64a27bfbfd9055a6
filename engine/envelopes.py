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

DERs must have ``tan_phi >= 0`` (vars move with watts): then every sensitivity is
non-negative, which the guarantee below needs; a DER absorbing vars while
exporting (volt-var) would need a reactive envelope too, which is not computed.

A DER "affects" a limit when its sensitivity on it is positive
(:mod:`engine.operating`): below a line for thermal limits, sharing some path
resistance for voltages, every DER for the interface.

Why any dispatch inside the envelopes is feasible: LinDistFlow is linear and the
sensitivities of each direction's limits are non-negative, so every limit is at
its worst when each DER sits at the end of its range that the limit dislikes,
which is one of two corners (all at export maximum, or all at import maximum).
The AC power flow checks both corners in every interval and the margins are
tightened by what it finds (:func:`engine.operating.ac_corrected`).
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


def water_fill(margin: np.ndarray, sens: sp.csc_matrix, cap: np.ndarray, weight: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted max-min fair allocation of non-negative margins.

    Parameters
    ----------
    margin
        ``(c,)`` room per limit (constraint units); negative = already broken.
    sens
        ``(c, d)`` non-negative sensitivities, constraint units per kW: a dense array,
        or a sparse matrix (for feeders too large for a dense one).
    cap
        ``(d,)`` the most each DER may get, kW (>= 0).
    weight
        ``(d,)`` relative speed at which each DER's allocation rises (> 0 where cap > 0).

    Returns
    -------
    alloc, binding
        ``(d,)`` kW, and the limit row that stopped each DER (-1 for its own cap).

    Notes
    -----
    With a common level ``lam`` for the DERs still rising (set ``U``),
    ``x_d = lam w_d``; limit ``c`` allows ``lam <= (m_c - sum_{d not in U} S_cd x_d) /
    sum_{d in U} S_cd w_d``. Each round raises ``lam`` to the smallest of these and of
    the caps ``cap_d / w_d``, and stops the DERs on the limit (or cap) reached: at
    most ``d`` rounds, each one sparse product.
    """
    d = len(cap)
    alloc = np.zeros(d)
    binding = np.full(d, -1, dtype=np.int64)
    rising = (cap > 0) & (weight > 0)
    fixed = np.zeros(sens.shape[0])
    dense = isinstance(sens, np.ndarray)
    sens_csr = sens if dense else sens.tocsr()
    while rising.any():
        w = np.where(rising, weight, 0.0)
        load = sens_csr @ w
        active = load > SENS_TOL
        with np.errstate(divide="ignore", invalid="ignore"):
            level_c = np.where(active, (margin - fixed) / load, np.inf)
        k = int(np.argmin(level_c)) if len(level_c) else -1
        level_limit = level_c[k] if k >= 0 else np.inf
        level_cap = np.min(np.where(rising, cap / np.where(rising, weight, 1.0), np.inf))
        level = max(min(level_limit, level_cap), 0.0)
        if level_cap <= level_limit:
            stop = rising & (cap / np.where(rising, weight, 1.0) <= level * (1 + 1e-12) + _LEVEL_TOL)
            x = np.minimum(level * weight, cap)
            binding_row = -1
        else:
            row = sens_csr[k] if dense else sens_csr[k].toarray().ravel()
            stop = rising & (row > SENS_TOL)
            x = level * weight
            binding_row = k
        alloc[stop] = x[stop]
        binding[stop] = binding_row
        fixed += sens_csr[:, np.nonzero(stop)[0]] @ alloc[stop]
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
    neg = np.nonzero(t["tan_phi"].to_numpy() < 0)[0]
    if len(neg):
        raise InputError("ders", "tan_phi", "must be >= 0 for an envelope: its guarantee needs a DER's vars to "
                         f"move with its watts (got {t['tan_phi'][int(neg[0])]})", row=int(neg[0]))
    topo = feeder.topology
    ivs, p_kw, q_kvar = forecast_loads(feeder, forecast, intervals)
    bus_idx = topo.bus_index_of(t["bus"].to_numpy(), table="ders")
    tan_phi = t["tan_phi"].to_numpy()
    cap = {"export": t["export_limit_kw"].to_numpy(), "import": t["import_limit_kw"].to_numpy()}
    weight = {k: (v if rule == "proportional" else (v > 0).astype(float)) for k, v in cap.items()}
    cons = constraints(feeder, p_kw, q_kvar, bus_idx, tan_phi)
    # Dense products are many times faster than sparse ones while the matrix fits in some 40 MB.
    sens = cons.sens.toarray() if cons.n * t.height <= 5_000_000 else cons.sens.tocsc()
    n_t = len(ivs)
    bindings: dict = {}

    def allocate(c: Constraints) -> tuple[np.ndarray, np.ndarray]:
        out = []
        for direction, margins in (("export", c.margin_export), ("import", c.margin_import)):
            alloc = np.zeros((t.height, n_t))
            bind = np.zeros((t.height, n_t), dtype=np.int64)
            for k in range(n_t):
                alloc[:, k], bind[:, k] = water_fill(margins[:, k], sens, cap[direction], weight[direction])
            bindings[direction] = bind
            out.append(alloc)
        return out[0], out[1]

    exp_kw, imp_kw, final, check = ac_corrected(feeder, p_kw, q_kvar, cons, bus_idx, tan_phi, allocate)
    d = t.height
    rows_t = np.tile(np.arange(n_t), d)
    rows_d = np.repeat(np.arange(d), n_t)
    words = {direction: np.array([describe(final, b, direction, topo) if b >= 0 else "nameplate"
                                  for b in bindings[direction].ravel()], dtype=object)
             for direction in ("export", "import")}
    table = pl.DataFrame({
        "der_id": t["der_id"].to_numpy()[rows_d], "aggregation_id": t["aggregation_id"].to_numpy()[rows_d],
        "bus": t["bus"].to_numpy()[rows_d],
    }).with_columns(interval_column(ivs, rows_t),
                    pl.Series("export_max_kw", np.round(exp_kw.ravel(), ROUND_KW) + 0.0),
                    pl.Series("import_max_kw", np.round(imp_kw.ravel(), ROUND_KW) + 0.0),
                    pl.Series("export_binding", words["export"].astype(str)),
                    pl.Series("import_binding", words["import"].astype(str)))
    aggs = table.group_by("aggregation_id", "interval", maintain_order=True).agg(
        pl.col("export_max_kw").sum(), pl.col("import_max_kw").sum())
    return Envelopes(table, aggs, rule, check)

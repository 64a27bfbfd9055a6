"""Hybrid participation: direct ISO participants below a DSO that keeps the distribution limits.

- :func:`check_deliverability` (DOE M5; IESO hybrid alternative 2 day-ahead, and
  alternative 1 in real time on the ISO's dispatch): the schedules of direct ISO
  participants together with the DSO market's, run on the feeder under the
  forecast; where they break a limit, the curtailment is shared by a published
  rule and each schedule gets its limit.
- :func:`share_curtailment`: the rule itself, for one limit.
- :func:`bid_limits`: direct participants' ISO *bids*, whose dispatch is not yet
  known: the range each may be dispatched in, together with the fixed schedules and
  the DSO market's awards (the operating envelopes of the bidders).
- :func:`net_out_direct`: the DSO's own interface curve without the direct
  participants' scheduled kW (they are the ISO's already), traced on a feeder
  that carries them.
- :func:`check_conflicts` (DOE M10): a kW sold once across DSO energy, DSO
  flexibility and direct ISO services, and energy-limited resources checked across
  intervals through their state of charge.

Schedules (one row per participant, service, bus and interval)

================ ======== =======================================================
participant_id   str      the direct participant or DSO-market resource/aggregation
service          str      ``iso_direct``, ``dso_energy`` or ``dso_flexibility``
bus              str      where the kW is injected (an aggregation spread over buses
                          has one row per bus)
interval         datetime UTC start; empty for a one-interval (real-time) check
p_kw             float    scheduled net injection, kW (positive = injection)
aggregator_id    str      optional, who answers for it
================ ======== =======================================================

Curtailment rule (published)
----------------------------
A limit broken by ``R`` (kW of flow, or pu of squared voltage) in the export
direction is relieved by reducing the injections of the schedules that push it
(positive sensitivity ``s_r`` on it, injecting ``a_r`` kW); in the import direction
by reducing the withdrawals that push it. Whether a schedule is the DSO's or
direct makes no difference. Schedule ``r`` gives up the fraction

- ``sensitivity`` (default): ``f_r = min(1, theta s_r / s_max)``, i.e. kW in
  proportion to its *effective contribution* ``s_r a_r`` (pro rata to effective
  sensitivity on the constraint);
- ``pro_rata``: ``f_r = min(1, theta)``, the same fraction of every contributor's kW;

with ``theta`` such that ``sum_r s_r f_r a_r = R``. On a line every contributor has
``s_r = 1`` and both rules give each the same fraction of its scheduled kW. Several
broken limits: each schedule gives up the largest curtailment any of them asks; the
result is run through the AC power flow, and what it still breaks is shared again
on what remains, until nothing breaks.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from dsomarket.engine.envelopes import operating_envelopes
from dsomarket.engine.errors import InputError
from dsomarket.engine.interface import InterfaceCurve
from dsomarket.engine.network import Feeder, _normalise
from dsomarket.engine.operating import (AC_TOL_KW, SENS_TOL, ac_excess, constraints, describe, forecast_loads,
                                        injection_by_bus)
from dsomarket.engine.flexibility import _check, _with_intervals
from dsomarket.engine.registry import validate_ders

SERVICES = ("iso_direct", "dso_energy", "dso_flexibility")
RULES = ("sensitivity", "pro_rata")
ROUND_KW = 6
_UTC = pl.Datetime("us", "UTC")
SCHEDULE_SCHEMA = {"participant_id": pl.Utf8, "service": pl.Utf8, "bus": pl.Utf8, "interval": _UTC,
                   "p_kw": pl.Float64, "aggregator_id": pl.Utf8}
COMMITMENT_SCHEMA = {"resource_id": pl.Utf8, "service": pl.Utf8, "interval": _UTC, "p_kw": pl.Float64,
                     "minutes": pl.Float64}
_PU_TOL = 1e-6


def validate_schedules(schedules: pl.DataFrame, feeder: Feeder) -> pl.DataFrame:
    """Check a schedules table (see the module notes); add ``bus_index`` (topology order).

    Raises
    ------
    InputError
        Missing column, unknown service or bus, NaN or infinite ``p_kw``, a participant
        with two rows for one service, bus and interval.
    """
    t = _normalise(_with_intervals(schedules, "schedules"), SCHEDULE_SCHEMA, "schedules",
                   {"interval": None, "aggregator_id": ""}, nullable=("interval",))
    svc = t["service"].to_numpy()
    _check(~np.isin(svc, SERVICES), "schedules", "service", svc, f"must be one of {', '.join(SERVICES)}")
    p = t["p_kw"].to_numpy()
    _check(~np.isfinite(p), "schedules", "p_kw", p, "must be finite")
    dup = ~t.select(pl.struct("participant_id", "service", "bus", "interval").is_first_distinct()).to_series()
    dup = dup.to_numpy()
    _check(dup, "schedules", "participant_id", t["participant_id"].to_numpy(),
           "has two rows for one service, bus and interval")
    return t.with_columns(pl.Series("bus_index", feeder.topology.bus_index_of(t["bus"].to_numpy(),
                                                                              table="schedules")))


# -- the rule ------------------------------------------------------------------------------------------------

def share_curtailment(relief: float, sens: np.ndarray, available_kw: np.ndarray,
                      rule: str = "sensitivity") -> np.ndarray:
    """Split the relief one broken limit needs among its contributors (see the module notes).

    Parameters
    ----------
    relief
        ``R``, in the limit's unit (kW of flow, or pu of squared voltage), >= 0.
    sens
        ``(r,)`` each contributor's sensitivity on the limit, unit per kW (>= 0; zero =
        not a contributor).
    available_kw
        ``(r,)`` kW each contributor pushes the limit with (its scheduled injection in the
        export direction, its withdrawal in the import direction), >= 0.
    rule
        ``sensitivity`` or ``pro_rata``.

    Returns
    -------
    numpy.ndarray
        ``(r,)`` kW each contributor gives up, ``0 <= x_r <= available_kw``. When even
        curtailing everyone is not enough, everyone is curtailed in full.

    Notes
    -----
    ``x_r = f_r a_r`` with ``f_r = min(1, theta w_r)``, ``w_r = s_r / s_max``
    (``sensitivity``) or 1 (``pro_rata``) for contributors; the relief
    ``g(theta) = sum_r s_r a_r min(1, theta w_r)`` is piecewise linear and increasing,
    so ``theta`` is found exactly between the sorted breakpoints ``1 / w_r``.
    """
    if rule not in RULES:
        raise InputError("curtailment", "rule", f"must be one of {', '.join(RULES)} (got {rule!r})")
    s = np.asarray(sens, dtype=float)
    a = np.asarray(available_kw, dtype=float)
    on = (s > SENS_TOL) & (a > 0)
    x = np.zeros(len(s))
    if relief <= 0 or not on.any():
        return x
    w = np.where(on, s / s[on].max() if rule == "sensitivity" else 1.0, 0.0)
    contrib = s * a                             # relief when curtailed in full
    if contrib[on].sum() <= relief:
        x[on] = a[on]
        return x
    # Breakpoints theta_k = 1 / w_k in increasing order: before theta_k, contributors k.. are partial.
    idx = np.nonzero(on)[0]
    order = idx[np.argsort(-w[idx], kind="stable")]
    bp = 1.0 / w[order]
    full = np.concatenate([[0.0], np.cumsum(contrib[order])])            # relief of the first k in full
    partial = np.concatenate([np.cumsum((contrib * w)[order][::-1])[::-1], [0.0]])  # slope of the rest
    # On [bp_{k-1}, bp_k] the first k are full: g(theta) = full[k] + theta * partial[k].
    g_at_bp = full[:-1] + bp * partial[:-1]
    k = int(np.searchsorted(g_at_bp, relief))     # the first breakpoint where g reaches R
    theta = (relief - full[k]) / partial[k]
    x[order] = np.minimum(1.0, theta * w[order]) * a[order]
    return x


# -- deliverability -----------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Deliverability:
    """Outcome of a deliverability check.

    Attributes
    ----------
    deliverable
        True when the schedules as submitted keep every limit (linear and AC).
    schedules
        One row per schedule: the input columns, ``limit_kw`` (the most it may deliver:
        ``p_kw`` less its curtailment, same sign), ``curtailed_kw`` (>= 0) and ``binding``
        (the limit that curtailed it most, in words; empty when not curtailed).
    violations
        One row per limit the submitted schedules break: ``interval, constraint,
        direction, excess`` (kW of flow or kVA, or pu of squared voltage), ``model``
        (``ac`` or ``linear``) and ``participants`` (contributors, ``;``-joined).
    curtailment
        Per interval and service: ``interval, service, scheduled_kw, curtailed_kw``.
    rule
        The rule used.
    ac_passed
        Whether the AC power flow with every schedule at its limit keeps every limit
        the forecast alone keeps (and makes none it breaks worse).
    """

    deliverable: bool
    schedules: pl.DataFrame
    violations: pl.DataFrame
    curtailment: pl.DataFrame
    rule: str
    ac_passed: bool


def check_deliverability(feeder: Feeder, schedules: pl.DataFrame, forecast: pl.DataFrame | None = None,
                         rule: str = "sensitivity", max_rounds: int = 8) -> Deliverability:
    """Check schedules (direct ISO and DSO) against the feeder and limit those that break it.

    Parameters
    ----------
    feeder
        The feeder below the interface.
    schedules
        Table as in the module notes.
    forecast
        Fixed net withdrawal ``bus, interval, p_kw[, q_kvar]`` (kW, positive = consumption);
        None = the feeder's loads.
    rule
        Curtailment rule, :data:`RULES`.
    max_rounds
        Rounds of sharing and AC re-checking before giving up (``ac_passed=False``).

    Returns
    -------
    Deliverability
    """
    if rule not in RULES:
        raise InputError("deliverability", "rule", f"must be one of {', '.join(RULES)} (got {rule!r})")
    t = validate_schedules(schedules, feeder)
    topo = feeder.topology
    stamps = t["interval"].unique().sort(nulls_last=True).to_list()
    ivs = [iv for iv in stamps if iv is not None] or [None]
    if None in stamps and len(ivs) > 1 or (None in stamps and ivs != [None]):
        raise InputError("schedules", "interval", "mixes rows with and without an interval")
    found, p_load, q_load = forecast_loads(feeder, forecast, None if ivs == [None] else ivs)
    if len(found) != len(ivs):  # schedules without an interval take a forecast of exactly one
        raise InputError("forecast", "interval", f"gives {len(found)} intervals for schedules without an interval: "
                         "give one")
    t_of = {iv: k for k, iv in enumerate(ivs)}
    row_t = np.array([t_of[iv] for iv in t["interval"].to_list()], dtype=np.int64)
    bus = t["bus_index"].to_numpy()
    p = t["p_kw"].to_numpy()
    n_t = len(ivs)
    cons = constraints(feeder, p_load, q_load, bus, np.zeros(t.height))
    sens = cons.sens.tocsr()
    on_t = np.zeros((t.height, n_t))
    on_t[np.arange(t.height), row_t] = 1.0
    floor = {d: np.maximum(ac_excess(feeder, p_load, q_load, d), 0.0) for d in ("export", "import")}
    tol = np.where(cons.kind == "bus", _PU_TOL, AC_TOL_KW)[:, None]

    def excess(p_now: np.ndarray) -> dict:
        """Per direction: (linear excess, AC excess beyond the forecast's own), each (c, t)."""
        use = sens @ (p_now[:, None] * on_t)          # export-direction use per constraint and interval
        inj = injection_by_bus(topo.n_bus, bus, p_now[:, None] * on_t)
        w = p_load - inj
        return {"export": (use - cons.margin_export, ac_excess(feeder, w, q_load, "export") - floor["export"]),
                "import": (-use - cons.margin_import, ac_excess(feeder, w, q_load, "import") - floor["import"])}

    first = excess(p)
    curtailed = np.zeros(t.height)
    binding = np.full(t.height, -1, dtype=np.int64)
    binding_dir = np.full(t.height, "", dtype=object)
    ac_passed = False
    for _ in range(max_rounds):
        now = p - np.sign(p) * curtailed
        ex = first if not curtailed.any() else excess(now)
        broken = {d: np.maximum(lin, ac) for d, (lin, ac) in ex.items()}
        if not any((broken[d] > tol).any() for d in broken):
            ac_passed = True
            break
        extra = np.zeros(t.height)
        for direction, sign in (("export", 1.0), ("import", -1.0)):
            avail = np.maximum(sign * now, 0.0)
            for c, k in zip(*np.nonzero(broken[direction] > tol), strict=True):
                rows = np.nonzero((row_t == k) & (avail > 0))[0]
                s_row = sens[c].toarray().ravel()[rows]
                x = share_curtailment(float(broken[direction][c, k]), s_row, avail[rows], rule)
                more = x > extra[rows]
                extra[rows[more]] = x[more]
                binding[rows[more]] = c
                binding_dir[rows[more]] = direction
        if not extra.any():
            break
        curtailed = np.minimum(curtailed + extra, np.abs(p))
    limit = p - np.sign(p) * curtailed
    words = np.array([describe(cons, b, d, topo) if b >= 0 else "" for b, d in zip(binding, binding_dir,
                                                                                         strict=True)], dtype=object)
    out = t.drop("bus_index").with_columns(
        pl.Series("limit_kw", np.round(limit, ROUND_KW) + 0.0),
        pl.Series("curtailed_kw", np.round(curtailed, ROUND_KW) + 0.0),
        pl.Series("binding", np.where(curtailed > 0, words, "").astype(str)))
    violations = _violations(cons, first, tol, ivs, t, row_t, sens, topo)
    per_service = out.group_by("interval", "service", maintain_order=True).agg(
        pl.col("p_kw").abs().sum().alias("scheduled_kw"), pl.col("curtailed_kw").sum()).sort("interval", "service")
    return Deliverability(violations.height == 0, out, violations, per_service, rule, ac_passed)


def _violations(cons, ex: dict, tol, ivs, t, row_t, sens, topo) -> pl.DataFrame:
    rows = []
    pid = t["participant_id"].to_numpy()
    p = t["p_kw"].to_numpy()
    for direction, sign in (("export", 1.0), ("import", -1.0)):
        lin, ac = ex[direction]
        for c, k in zip(*np.nonzero(np.maximum(lin, ac) > tol), strict=True):
            who = np.nonzero((row_t == k) & (sign * p > 0))[0]
            who = who[sens[c].toarray().ravel()[who] > SENS_TOL]
            model = "ac" if ac[c, k] >= lin[c, k] else "linear"
            rows.append({"interval": ivs[k], "constraint": describe(cons, c, direction, topo),
                         "direction": direction, "excess": float(max(lin[c, k], ac[c, k])), "model": model,
                         "participants": ";".join(sorted(set(pid[who].tolist())))})
    schema = {"interval": _UTC, "constraint": pl.Utf8, "direction": pl.Utf8, "excess": pl.Float64,
              "model": pl.Utf8, "participants": pl.Utf8}
    return pl.DataFrame(rows, schema=schema)


# -- direct bids ---------------------------------------------------------------------------------------

BID_SCHEMA = {"participant_id": pl.Utf8, "bus": pl.Utf8, "interval": _UTC, "side": pl.Utf8, "quantity_kw": pl.Float64}


def bid_limits(feeder: Feeder, bids: pl.DataFrame, schedules: pl.DataFrame | None = None,
               forecast: pl.DataFrame | None = None) -> pl.DataFrame:
    """What direct participants' ISO bids may be dispatched to, with the schedules (direct and DSO) fixed.

    Parameters
    ----------
    feeder
        The feeder below the interface.
    bids
        ``participant_id, bus, interval, side, quantity_kw[, price]``: bid segments the ISO may
        dispatch, ``side`` ``sell`` (inject) or ``buy`` (withdraw), ``quantity_kw`` > 0. The
        segments of a participant, bus and interval span the range ``[-buy kW, sell kW]``.
    schedules
        Schedules (module notes) already committed in those intervals: direct ISO schedules and
        the DSO market's awards; they are held at their kW. None = none.
    forecast
        Fixed net withdrawal ``bus, interval, p_kw[, q_kvar]`` (kW, positive = consumption);
        None = the feeder's loads.

    Returns
    -------
    polars.DataFrame
        One row per participant, bus and interval: ``offered_export_kw, offered_import_kw``
        (the range) and ``export_limit_kw, import_limit_kw``, the part of it inside which any
        dispatch of every bid together keeps every limit (the operating envelopes of
        :mod:`engine.envelopes`, proportional sharing, AC-checked at the corners), with
        ``export_binding, import_binding`` (``offer`` when the whole range fits).
    """
    t = _normalise(_with_intervals(bids, "bids"), BID_SCHEMA, "bids", {})
    side = t["side"].to_numpy()
    _check(~np.isin(side, ("sell", "buy")), "bids", "side", side, "must be sell or buy")
    q = t["quantity_kw"].to_numpy()
    _check(~(np.isfinite(q) & (q > 0)), "bids", "quantity_kw", q, "must be a positive number")
    _check(t["interval"].is_null().to_numpy(), "bids", "interval", t["interval"].to_numpy(), "is required")
    feeder.topology.bus_index_of(t["bus"].to_numpy(), table="bids")
    ranges = t.group_by("participant_id", "bus", "interval", maintain_order=True).agg(
        pl.col("quantity_kw").filter(pl.col("side") == "sell").sum().alias("offered_export_kw"),
        pl.col("quantity_kw").filter(pl.col("side") == "buy").sum().alias("offered_import_kw"))
    ivs = sorted(set(ranges["interval"].to_list()))
    _, p_kw, q_kvar = forecast_loads(feeder, forecast, ivs)
    if schedules is not None and schedules.height:
        fixed = validate_schedules(schedules, feeder).filter(pl.col("interval").is_in(ivs))
        t_of = {iv: k for k, iv in enumerate(ivs)}
        kw = np.zeros((fixed.height, len(ivs)))
        kw[np.arange(fixed.height), [t_of[iv] for iv in fixed["interval"].to_list()]] = fixed["p_kw"].to_numpy()
        p_kw = p_kw - injection_by_bus(feeder.topology.n_bus, fixed["bus_index"].to_numpy(), kw)
    buses = feeder.topology.bus_ids.astype(str)
    out = []
    for k, iv in enumerate(ivs):  # each interval has its own bidders
        here = ranges.filter(pl.col("interval") == iv).with_row_index("_k")
        ders = here.select(pl.format("b{}", "_k").alias("der_id"), pl.lit("other").alias("kind"),
                           pl.lit(feeder.name).alias("feeder"), "bus", pl.col("participant_id").alias("aggregator_id"),
                           pl.col("offered_export_kw").alias("export_kw"), pl.col("offered_import_kw").alias("import_kw"))
        load = pl.DataFrame({"bus": buses, "interval": pl.Series([iv] * len(buses), dtype=_UTC),
                             "p_kw": p_kw[:, k], "q_kvar": q_kvar[:, k]})
        env = operating_envelopes(feeder, ders, load).ders
        out.append(here.drop("_k").with_columns(
            env["export_max_kw"].alias("export_limit_kw"), env["import_max_kw"].alias("import_limit_kw"),
            env["export_binding"].replace("nameplate", "offer").alias("export_binding"),
            env["import_binding"].replace("nameplate", "offer").alias("import_binding")))
    return pl.concat(out) if out else ranges.with_columns(
        pl.lit(0.0).alias("export_limit_kw"), pl.lit(0.0).alias("import_limit_kw"),
        pl.lit("").alias("export_binding"), pl.lit("").alias("import_binding"))


# -- the DSO's own curve ---------------------------------------------------------------------------------

def direct_withdrawals(feeder: Feeder, schedules: pl.DataFrame, intervals: list,
                       load_p_kw: np.ndarray | None = None,
                       load_q_kvar: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed withdrawals with the direct participants' ISO schedules in them.

    Parameters
    ----------
    feeder
        The feeder.
    schedules
        Schedules table; only ``iso_direct`` rows are used.
    intervals
        The market's intervals (``BidBook.intervals``; ``[None]`` for one interval).
    load_p_kw, load_q_kvar
        Fixed withdrawals ``(n_bus, t)`` to start from; default the feeder's loads.

    Returns
    -------
    load_p_kw, load_q_kvar, direct_kw
        Withdrawals less the direct injections (kW, kvar), and the direct participants'
        total scheduled injection per interval ``(t,)``, kW.
    """
    t = validate_schedules(schedules, feeder).filter(pl.col("service") == "iso_direct")
    if load_p_kw is None:
        load_p_kw, load_q_kvar = feeder.loads(None if list(intervals) == [None] else list(intervals))
    t_of = {iv: k for k, iv in enumerate(intervals)}
    keep = np.array([iv in t_of for iv in t["interval"].to_list()], dtype=bool)
    if t.height and not keep.all():
        row = int(np.nonzero(~keep)[0][0])
        raise InputError("schedules", "interval", f"{t['interval'][row]} is not an interval of the market", row=row)
    k = np.array([t_of[iv] for iv in t["interval"].to_list()], dtype=np.int64)
    kw = np.zeros((t.height, len(intervals)))
    kw[np.arange(t.height), k] = t["p_kw"].to_numpy()
    inj = injection_by_bus(feeder.topology.n_bus, t["bus_index"].to_numpy(), kw)
    return load_p_kw - inj, np.asarray(load_q_kvar, dtype=float), kw.sum(axis=0)


def net_out_direct(curve: InterfaceCurve, intervals: list, direct_kw: np.ndarray) -> InterfaceCurve:
    """The DSO's own curve: a curve traced with the direct schedules in the loads, less them.

    Parameters
    ----------
    curve
        Traced (``trace_curve``) on the withdrawals of :func:`direct_withdrawals`: its
        imports are physical, the direct participants' injections already subtracted.
    intervals
        The curve's intervals, in the order of ``direct_kw``.
    direct_kw
        Direct participants' scheduled injection per interval, kW.

    Returns
    -------
    InterfaceCurve
        ``import_kw`` and ``fixed_kw`` raised by the direct injection of their interval:
        what the DSO's market itself draws. The ISO clears the direct participants on
        their own offers, so their kW appear once, not also as a smaller DSO demand;
        their effect on congestion stays in the curve's steps.
    """
    shift = pl.DataFrame({"interval": pl.Series(intervals, dtype=_UTC), "_shift": np.asarray(direct_kw, float)})

    def add(df: pl.DataFrame, col: str) -> pl.DataFrame:
        joined = df.join(shift, on="interval", how="left", nulls_equal=True, maintain_order="left")
        return joined.with_columns((pl.col(col) + pl.col("_shift").fill_null(0.0)).alias(col)).drop("_shift")

    return dataclasses.replace(curve, bands=add(curve.bands, "import_kw"),
                               fixed_net_load_kw=add(curve.fixed_net_load_kw, "fixed_kw"))


# -- conflicts across services ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Conflicts:
    """Resources sold twice.

    Attributes
    ----------
    conflicts
        One row per resource and problem: ``resource_id, aggregator_id, kind``
        (``export`` / ``import``: the kW committed in one interval across services
        exceed the capability; ``energy_empty`` / ``energy_full``: the state of charge
        leaves ``[soc_min_kwh, energy_kwh]``), ``interval`` (the first interval where it
        happens), ``services`` (``;``-joined services committed up to then),
        ``committed`` (kW, or the state of charge in kWh), ``limit`` (kW or kWh),
        ``excess`` (kW or kWh, > 0) and ``notify`` (``aggregator:<id>;operator``: who must
        hear of it before any of the awards stands).
    soc
        ``resource_id, interval, soc_kwh``: state of charge at the end of each interval
        for the energy-limited resources.
    """

    conflicts: pl.DataFrame
    soc: pl.DataFrame


def check_conflicts(ders: pl.DataFrame, commitments: pl.DataFrame, interval_minutes: float = 60.0) -> Conflicts:
    """A kW sold once, and energy that exists, across DSO energy, DSO flexibility and direct ISO services.

    Parameters
    ----------
    ders
        The DER registry (:mod:`engine.registry`): capabilities are the approved limits
        (``export_limit_kw``, ``import_limit_kw``), energy ``energy_kwh``, ``soc_min_kwh``,
        ``soc_init_kwh``, efficiencies ``eta_charge``, ``eta_discharge``.
    commitments
        ``resource_id, service, interval, p_kw[, minutes]``: kW committed to each service
        (awards, ISO schedules), net injection positive (flexibility ``up`` positive,
        ``down`` negative), over ``minutes`` from the interval's start.
        ``resource_id`` is a DER or an aggregation (its members' limits and energies add
        up; its efficiencies are the members' lowest).
    interval_minutes
        Length of the intervals whose rows give no ``minutes``, for energy.

    Returns
    -------
    Conflicts

    Notes
    -----
    Per resource and interval, ``sum of positive commitments <= export limit`` and
    ``sum of negative <= import limit`` (a kW sold once in each direction). State of
    charge from the net commitment ``p_t`` over the sorted intervals (idle in between):
    ``e_t = e_{t-1} - dt_t (max(p_t, 0) / eta_d + min(p_t, 0) eta_c)`` (``dt_t`` the longest
    commitment starting at ``t``), and
    ``soc_min <= e_t <= energy``.
    """
    if not (interval_minutes > 0 and math.isfinite(interval_minutes)):
        raise InputError("conflicts", "interval_minutes", f"must be a positive number (got {interval_minutes})")
    reg = validate_ders(ders).filter(pl.col("status") != "retired")
    c = _normalise(_with_intervals(commitments, "commitments"), COMMITMENT_SCHEMA, "commitments",
                   {"interval": None, "minutes": float(interval_minutes)}, nullable=("interval",))
    minutes = c["minutes"].to_numpy()
    _check(~(np.isfinite(minutes) & (minutes > 0)), "commitments", "minutes", minutes, "must be a positive number")
    svc = c["service"].to_numpy()
    _check(~np.isin(svc, SERVICES), "commitments", "service", svc, f"must be one of {', '.join(SERVICES)}")
    p = c["p_kw"].to_numpy()
    _check(~np.isfinite(p), "commitments", "p_kw", p, "must be finite")
    members = pl.concat([reg.select(pl.col("der_id").alias("resource_id"), pl.all()),
                         reg.filter(pl.col("aggregation_id") != pl.col("der_id"))
                         .select(pl.col("aggregation_id").alias("resource_id"), pl.all())])
    res = members.group_by("resource_id").agg(
        pl.col("aggregator_id").first(), pl.col("export_limit_kw").sum(), pl.col("import_limit_kw").sum(),
        pl.col("energy_kwh").sum().alias("energy"), pl.col("energy_kwh").is_not_null().any().alias("limited"),
        pl.col("soc_min_kwh").filter(pl.col("energy_kwh").is_not_null()).sum().alias("soc_min"),
        pl.col("soc_init_kwh").sum().alias("soc_init"), pl.col("eta_charge").min(), pl.col("eta_discharge").min())
    known = np.isin(c["resource_id"].to_numpy(), res["resource_id"].to_numpy())
    _check(~known, "commitments", "resource_id", c["resource_id"].to_numpy(), "is not a DER or aggregation of the registry")
    c = c.join(res, on="resource_id", how="left", maintain_order="left")

    per = c.group_by("resource_id", "interval").agg(
        pl.col("aggregator_id").first(), pl.col("p_kw").clip(lower_bound=0).sum().alias("up"),
        (-pl.col("p_kw")).clip(lower_bound=0).sum().alias("down"), pl.col("p_kw").sum().alias("net"),
        pl.col("export_limit_kw").first(), pl.col("import_limit_kw").first(), pl.col("limited").first(),
        pl.col("energy").first(), pl.col("soc_min").first(), pl.col("soc_init").first(),
        pl.col("eta_charge").first(), pl.col("eta_discharge").first(),
        (pl.col("minutes").max() / 60.0).alias("_dt")).sort("resource_id", "interval")
    drawn = pl.col("_dt") * pl.when(pl.col("net") > 0).then(pl.col("net") / pl.col("eta_discharge")).otherwise(
        pl.col("net") * pl.col("eta_charge"))                      # kWh out of the store in each interval
    per = per.with_columns((pl.col("soc_init") - drawn.cum_sum().over("resource_id")).alias("soc_kwh"))
    tol = 1e-6
    checks = [
        ("export", pl.col("up"), pl.col("export_limit_kw"), pl.col("up") - pl.col("export_limit_kw")),
        ("import", pl.col("down"), pl.col("import_limit_kw"), pl.col("down") - pl.col("import_limit_kw")),
        ("energy_empty", pl.col("soc_kwh"), pl.col("soc_min"), pl.col("soc_min") - pl.col("soc_kwh")),
        ("energy_full", pl.col("soc_kwh"), pl.col("energy"), pl.col("soc_kwh") - pl.col("energy")),
    ]
    found = []
    for kind, committed, limit, over in checks:
        rows = per.filter(over > tol)
        if kind.startswith("energy"):  # reported once, at the first interval it happens
            rows = rows.filter(pl.col("limited")).group_by("resource_id", maintain_order=True).first()
        found.append(rows.select("resource_id", "aggregator_id", pl.lit(kind).alias("kind"), "interval",
                                 committed.alias("committed"), limit.alias("limit"), over.alias("excess")))
    found = pl.concat(found)
    # The services involved: those committed in that interval (power), or up to it (energy).
    involved = found.join(c.select("resource_id", pl.col("interval").alias("_at"), "service"), on="resource_id",
                          how="left").filter(
        pl.when(pl.col("kind").str.starts_with("energy")).then(pl.col("_at") <= pl.col("interval"))
        .otherwise(pl.col("_at").eq_missing(pl.col("interval")))).group_by("resource_id", "kind", "interval").agg(
        pl.col("service").unique().sort().str.join(";").alias("services"))
    found = found.join(involved, on=["resource_id", "kind", "interval"], how="left", nulls_equal=True)
    found = found.select("resource_id", "aggregator_id", "kind", "interval", "services", "committed", "limit",
                         "excess", pl.concat_str(pl.lit("aggregator:"), pl.col("aggregator_id"),
                                                 pl.lit(";operator")).alias("notify"))
    conflicts = found.sort("resource_id", "interval", "kind", nulls_last=True)
    soc = per.filter(pl.col("limited")).select("resource_id", "interval", "soc_kwh")
    return Conflicts(conflicts, soc)

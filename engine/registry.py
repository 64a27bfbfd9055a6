"""The DER registry's data and the DSO's review: hosting capacity and pre-qualification.

What is registered (the DOE TSO-DSO-aggregator paper's R1-R5): each DER's type,
connection point (feeder and bus), nameplate and operating parameters, metering
and control capability, owner, aggregator, aggregation and jurisdiction; and,
per aggregation, the services it offers (M1): DSO energy market, DSO
flexibility, direct ISO participation. The life cycle (register, update,
retire, each audited) is the server's; this module is the pure review.

Tables
------
ders (one row per DER)

================ ======== =========================================================
column           type     meaning
================ ======== =========================================================
der_id           str      unique
kind             str      one of :data:`DER_KINDS`
feeder           str      name of the feeder (T-D interface) it is connected below
bus              str      connection point on that feeder
aggregator_id    str      who answers for it
aggregation_id   str      optional; empty = the DER stands alone (its own aggregation)
owner            str      optional
jurisdiction     str      optional (regulator / state)
export_kw        float    >= 0, nameplate maximum injection
import_kw        float    >= 0, nameplate maximum withdrawal (charging, load)
energy_kwh       float    storage capacity; required for ``battery`` and ``ev``
soc_min_kwh      float    optional, default 0
soc_init_kwh     float    optional, default ``energy_kwh`` (full)
eta_charge       float    optional, in (0, 1], default 1
eta_discharge    float    optional, in (0, 1], default 1
tan_phi          float    kvar per kW moved, same sign (default 0: unity power factor)
metering         str      ``none`` (default), ``interval`` or ``telemetry``
control          str      ``none`` (default), ``curtailable`` or ``dispatchable``
status           str      ``pending`` (default, to review), ``approved`` or
                          ``approved_with_limits`` (already connected: its limits
                          use hosting capacity first), ``refused``, ``retired``
export_limit_kw  float    for connected DERs: the approved export (default export_kw)
import_limit_kw  float    for connected DERs: the approved import (default import_kw)
================ ======== =========================================================

participation (one row per aggregation and service): ``aggregation_id, service``
with ``service`` one of :data:`SERVICES`; a DER standing alone is named by its
``der_id``.

Review rule (published)
-----------------------
1. Connected DERs (status approved or approved_with_limits) keep their limits
   and take hosting capacity first; retired and refused rows take none.
2. Pending DERs are reviewed first come, first served, in table order. The
   hosting capacity at a DER's bus is the largest injection (export) and
   withdrawal (import) it can add, on top of the forecast and of every DER
   connected or approved before it at its own limit, in the worst interval,
   without breaking a line's thermal limit, a bus's voltage band or the
   interface's import and export limits (:mod:`engine.operating`).
3. The DER is ``approved`` when both its nameplates fit, ``approved_with_limits``
   (the limits are the hosting capacity) when at least ``min_useful_kw`` of some
   nameplate fits, and ``refused`` otherwise, naming the limit that binds.
   A DER at an unknown feeder or bus is refused as such.
4. The AC power flow checks the result at both corners (every approved DER at its
   export limit, then at its import limit, in every interval); limits it breaks
   are tightened and the review is rerun (:func:`engine.operating.ac_corrected`).
5. An aggregation is refused when its DERs sit below more than one interface
   (feeder); otherwise its limits are the sum of its members'. Per service it is
   refused when a member lacks the service's metering or control
   (:data:`SERVICE_NEEDS`), or, for ``iso_direct``, when its larger limit is below
   ``iso_min_kw`` (100 kW by default, FERC Order 2222's largest allowed minimum).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from dsomarket.engine.errors import InputError
from dsomarket.engine.flexibility import _check
from dsomarket.engine.network import Feeder, _normalise
from dsomarket.engine.operating import (SENS_TOL, AcCheck, Constraints, ac_corrected, constraints, describe,
                                        forecast_loads)

DER_KINDS = ("pv", "wind", "battery", "ev", "flexible_load", "chp", "other")
ENERGY_KINDS = ("battery", "ev")
METERING = ("none", "interval", "telemetry")
CONTROL = ("none", "curtailable", "dispatchable")
SERVICES = ("dso_energy", "dso_flexibility", "iso_direct")
SERVICE_NEEDS = {"dso_energy": ("interval", "none"), "dso_flexibility": ("interval", "curtailable"),
                 "iso_direct": ("telemetry", "dispatchable")}
"""Least metering and control every member of an aggregation needs to offer the service."""
STATUSES = ("pending", "approved", "approved_with_limits", "refused", "retired")
CONNECTED = ("approved", "approved_with_limits")
DECISIONS = ("approved", "approved_with_limits", "refused")

DER_SCHEMA = {"der_id": pl.Utf8, "kind": pl.Utf8, "feeder": pl.Utf8, "bus": pl.Utf8, "aggregator_id": pl.Utf8,
              "aggregation_id": pl.Utf8, "owner": pl.Utf8, "jurisdiction": pl.Utf8, "export_kw": pl.Float64,
              "import_kw": pl.Float64, "energy_kwh": pl.Float64, "soc_min_kwh": pl.Float64,
              "soc_init_kwh": pl.Float64, "eta_charge": pl.Float64, "eta_discharge": pl.Float64,
              "tan_phi": pl.Float64, "metering": pl.Utf8, "control": pl.Utf8, "status": pl.Utf8,
              "export_limit_kw": pl.Float64, "import_limit_kw": pl.Float64}
_DER_DEFAULTS = {"aggregation_id": None, "owner": "", "jurisdiction": "", "energy_kwh": None,
                 "soc_min_kwh": 0.0, "soc_init_kwh": None, "eta_charge": 1.0, "eta_discharge": 1.0,
                 "tan_phi": 0.0, "metering": "none", "control": "none", "status": "pending",
                 "export_limit_kw": None, "import_limit_kw": None}
_NULLABLE = ("aggregation_id", "energy_kwh", "soc_init_kwh", "export_limit_kw", "import_limit_kw")
PARTICIPATION_SCHEMA = {"aggregation_id": pl.Utf8, "service": pl.Utf8}


def _reject(mask: np.ndarray, col: str, values, reason: str, table: str = "ders") -> None:
    _check(mask, table, col, values, reason)


def validate_ders(ders: pl.DataFrame) -> pl.DataFrame:
    """Check a DER table (see the module notes); return it normalised, defaults filled.

    ``aggregation_id`` is filled with ``der_id`` for a DER standing alone; ``soc_init_kwh``
    defaults to ``energy_kwh``; the limits of connected DERs default to their nameplates.

    Raises
    ------
    InputError
        Naming the row and field of the first problem: missing column, duplicate
        ``der_id``, unknown kind, metering, control or status, a negative or NaN
        nameplate, an energy-limited kind without ``energy_kwh``, a state of charge
        outside ``[soc_min_kwh, energy_kwh]``, an efficiency outside (0, 1], one
        aggregation under two aggregators.
    """
    t = _normalise(ders, DER_SCHEMA, "ders", _DER_DEFAULTS, nullable=_NULLABLE)
    ids = t["der_id"].to_numpy()
    _reject(~t["der_id"].is_first_distinct().to_numpy(), "der_id", ids, "duplicate der_id")
    _reject(t["der_id"].str.strip_chars().str.len_chars().to_numpy() == 0, "der_id", ids, "is empty")
    for col, allowed in (("kind", DER_KINDS), ("metering", METERING), ("control", CONTROL), ("status", STATUSES)):
        v = t[col].to_numpy()
        _reject(~np.isin(v, allowed), col, v, f"must be one of {', '.join(allowed)}")
    for col in ("export_kw", "import_kw", "soc_min_kwh"):
        v = t[col].to_numpy()
        _reject(~((v >= 0) & np.isfinite(v)), col, v, "must be a finite number >= 0")
    for col in ("eta_charge", "eta_discharge"):
        v = t[col].to_numpy()
        _reject(~((v > 0) & (v <= 1)), col, v, "must be in (0, 1]")
    tan = t["tan_phi"].to_numpy()
    _reject(~np.isfinite(tan), "tan_phi", tan, "must be finite")
    energy = t["energy_kwh"].fill_null(np.nan).to_numpy()
    kind = t["kind"].to_numpy()
    _reject(np.isin(kind, ENERGY_KINDS) & ~((energy > 0) & np.isfinite(energy)), "energy_kwh", energy,
            "must be a positive number for a battery or an EV")
    _reject(~np.isnan(energy) & ~((energy >= 0) & np.isfinite(energy)), "energy_kwh", energy,
            "must be a finite number >= 0")
    soc = t["soc_init_kwh"].fill_null(pl.Series(energy)).to_numpy()
    has_energy = ~np.isnan(energy)
    lo = t["soc_min_kwh"].to_numpy()
    _reject(has_energy & ~((soc >= lo) & (soc <= energy)), "soc_init_kwh", soc,
            "must lie between soc_min_kwh and energy_kwh")
    _reject(has_energy & (lo > energy), "soc_min_kwh", lo, "must not exceed energy_kwh")
    agg = t["aggregation_id"].fill_null("")
    agg = pl.Series("aggregation_id", np.where(agg.to_numpy() == "", ids, agg.to_numpy()).astype(str))
    t = t.with_columns(agg, pl.Series("soc_init_kwh", np.where(has_energy, soc, np.nan)).fill_nan(None))
    owners = t.group_by("aggregation_id", maintain_order=True).agg(pl.col("aggregator_id").first().alias("_a"))
    joined = t.join(owners, on="aggregation_id", how="left", maintain_order="left")
    _reject((joined["aggregator_id"] != joined["_a"]).to_numpy(), "aggregator_id", t["aggregator_id"].to_numpy(),
            "differs from an earlier DER of the same aggregation: an aggregation has one aggregator")
    for limit, plate in (("export_limit_kw", "export_kw"), ("import_limit_kw", "import_kw")):
        v = t[limit].fill_null(np.nan).to_numpy()
        _reject(~np.isnan(v) & ~((v >= 0) & np.isfinite(v)), limit, v, "must be a finite number >= 0")
        t = t.with_columns(pl.col(limit).fill_null(pl.col(plate)))
    return t


def validate_participation(participation: pl.DataFrame | None, aggregations: np.ndarray) -> pl.DataFrame:
    """Check a participation table against the known aggregations (and lone DERs); drop duplicates."""
    if participation is None:
        return pl.DataFrame(schema=PARTICIPATION_SCHEMA)
    t = _normalise(participation, PARTICIPATION_SCHEMA, "participation", {})
    svc = t["service"].to_numpy()
    _reject(~np.isin(svc, SERVICES), "service", svc, f"must be one of {', '.join(SERVICES)}", "participation")
    agg = t["aggregation_id"].to_numpy()
    _reject(~np.isin(agg, aggregations), "aggregation_id", agg, "is not an aggregation or DER of the registry",
            "participation")
    return t.unique(maintain_order=True)


# -- review ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Prequalification:
    """The DSO's review of a registry.

    Attributes
    ----------
    ders
        The registry table (normalised) with ``status`` (reviewed rows: one of
        :data:`DECISIONS`; other rows keep theirs), ``export_limit_kw, import_limit_kw``
        (what each DER may use) updated, and ``hosting_export_kw, hosting_import_kw``
        (the hosting capacity at its bus when its turn came, kW; null for a DER not on
        a known bus) and ``reason`` (empty when approved in full; for a connected DER,
        a warning when its limits exceed the hosting capacity) added. It is a registry
        table again: :func:`engine.envelopes.operating_envelopes` takes it.
    aggregations
        One row per aggregation: ``aggregation_id, aggregator_id, feeder, members,
        status, export_limit_kw, import_limit_kw, reason``.
    participation
        One row per aggregation and service: ``aggregation_id, service, status``
        (``approved`` or ``refused``), ``reason``.
    ac_checks
        Feeder name -> :class:`engine.operating.AcCheck` of its corners.
    """

    ders: pl.DataFrame
    aggregations: pl.DataFrame
    participation: pl.DataFrame
    ac_checks: dict = field(default_factory=dict)


def prequalify(feeders: Feeder | Sequence[Feeder], ders: pl.DataFrame, participation: pl.DataFrame | None = None,
               forecasts: Mapping[str, pl.DataFrame] | None = None, min_useful_kw: float = 1.0,
               iso_min_kw: float = 100.0) -> Prequalification:
    """Review a registry against its feeders: hosting capacity, limits, aggregations, services.

    Parameters
    ----------
    feeders
        The DSO's feeders (one per T-D interface), matched to ``ders.feeder`` by name.
    ders, participation
        Tables as in the module notes.
    forecasts
        Feeder name -> forecast table ``bus, interval, p_kw[, q_kvar]`` (net withdrawal,
        kW, positive = consumption); a feeder without one uses its own loads.
    min_useful_kw
        Smallest limit worth approving, kW; below it in every direction asked for, a
        DER is refused.
    iso_min_kw
        Smallest aggregation admitted to ``iso_direct``, kW.

    Returns
    -------
    Prequalification

    Notes
    -----
    The published rule is in the module notes. For DER ``i`` at bus ``j``, with ``S``
    and the margins ``m_c`` of :mod:`engine.operating` (worst interval, less what the
    DERs before it use), its hosting capacity is ``min over c with S_ci > 0 of
    m_c / S_ci`` in each direction.
    """
    feeder_list = [feeders] if isinstance(feeders, Feeder) else list(feeders)
    if not (min_useful_kw >= 0 and math.isfinite(min_useful_kw)):
        raise InputError("prequalify", "min_useful_kw", f"must be a finite number >= 0 (got {min_useful_kw})")
    if not (iso_min_kw >= 0 and math.isfinite(iso_min_kw)):
        raise InputError("prequalify", "iso_min_kw", f"must be a finite number >= 0 (got {iso_min_kw})")
    t = validate_ders(ders)
    n = t.height
    status = t["status"].to_numpy().astype(object)
    exp_lim = np.where(np.isin(status, CONNECTED), t["export_limit_kw"].to_numpy(), 0.0)
    imp_lim = np.where(np.isin(status, CONNECTED), t["import_limit_kw"].to_numpy(), 0.0)
    hc_exp = np.full(n, np.nan)
    hc_imp = np.full(n, np.nan)
    reason = np.full(n, "", dtype=object)
    pending = status == "pending"
    by_name = {f.name: f for f in feeder_list}
    feeder_col = t["feeder"].to_numpy()
    unknown = pending & ~np.isin(feeder_col, list(by_name))
    status[unknown] = "refused"
    reason[unknown] = [f"feeder {f!r} is not known to the DSO" for f in feeder_col[unknown]]
    checks = {}
    for name, feeder in by_name.items():
        rows = np.nonzero((feeder_col == name) & np.isin(status, ("pending", *CONNECTED)))[0]
        if not len(rows):
            continue
        known = np.isin(t["bus"].to_numpy()[rows], feeder.topology.bus_ids.astype(str))
        lost = rows[~known & pending[rows]]
        status[lost] = "refused"
        reason[lost] = [f"bus {b!r} is not on feeder {name!r}" for b in t["bus"].to_numpy()[lost]]
        rows = rows[known]
        if len(rows):
            checks[name] = _review_feeder(feeder, t[rows], status, exp_lim, imp_lim, hc_exp, hc_imp, reason, rows,
                                          (forecasts or {}).get(name), min_useful_kw)
    out = t.with_columns(
        pl.Series("status", status.astype(str)), pl.Series("export_limit_kw", np.round(exp_lim, 6) + 0.0),
        pl.Series("import_limit_kw", np.round(imp_lim, 6) + 0.0),
        pl.Series("hosting_export_kw", np.round(hc_exp, 6)).fill_nan(None),
        pl.Series("hosting_import_kw", np.round(hc_imp, 6)).fill_nan(None),
        pl.Series("reason", reason.astype(str)))
    aggs = _aggregations(t, out)
    return Prequalification(out, aggs, _services(t, aggs, validate_participation(
        participation, aggs["aggregation_id"].to_numpy()), iso_min_kw), checks)


def _review_feeder(feeder: Feeder, t: pl.DataFrame, status: np.ndarray, exp_lim: np.ndarray, imp_lim: np.ndarray,
                   hc_exp: np.ndarray, hc_imp: np.ndarray, reason: np.ndarray, rows: np.ndarray,
                   forecast: pl.DataFrame | None, min_useful_kw: float) -> AcCheck:
    """Review the DERs of one feeder (``rows`` of the registry, ``t`` their table); fill the outputs in place."""
    topo = feeder.topology
    intervals, p_kw, q_kvar = forecast_loads(feeder, forecast)
    bus_idx = topo.bus_index_of(t["bus"].to_numpy(), table="ders")
    tan_phi = t["tan_phi"].to_numpy()
    cons = constraints(feeder, p_kw, q_kvar, bus_idx, tan_phi)
    connected = np.isin(status[rows], CONNECTED)
    order = np.concatenate([np.nonzero(connected)[0], np.nonzero(~connected)[0]])
    want_e = np.where(connected, exp_lim[rows], t["export_kw"].to_numpy())
    want_i = np.where(connected, imp_lim[rows], t["import_kw"].to_numpy())
    sens = cons.sens.tocsc()
    found: dict = {}

    def allocate(c: Constraints) -> tuple[np.ndarray, np.ndarray]:
        got = {}
        for direction, margins, want in (("export", c.margin_export, want_e), ("import", c.margin_import, want_i)):
            t_worst = np.argmin(margins, axis=1)
            room = margins[np.arange(c.n), t_worst].copy()
            alloc, hosting, binding = np.zeros(len(rows)), np.zeros(len(rows)), np.full(len(rows), -1)
            for i in order:  # first come, first served: each DER sees what the earlier ones left
                col = sens.getcol(i)
                idx, s = col.indices, col.data
                active = s > SENS_TOL
                ratio = np.maximum(room[idx[active]], 0.0) / s[active]
                k = int(np.argmin(ratio)) if len(ratio) else -1
                hosting[i] = ratio[k] if k >= 0 else np.inf
                binding[i] = idx[active][k] if k >= 0 else -1
                alloc[i] = want[i] if connected[i] else min(want[i], hosting[i])
                room[idx] -= s * alloc[i]
            got[direction] = (alloc, hosting, binding, t_worst)
        found.update(got)
        n_t = c.margin_export.shape[1]
        return np.repeat(got["export"][0][:, None], n_t, 1), np.repeat(got["import"][0][:, None], n_t, 1)

    _, _, final, check = ac_corrected(feeder, p_kw, q_kvar, cons, bus_idx, tan_phi, allocate)
    review = ~connected
    words = {}
    for direction in ("export", "import"):
        alloc, hosting, binding, t_worst = found[direction]
        words[direction] = [describe(final, b, direction, topo, intervals[t_worst[b]]) if b >= 0 else ""
                            for b in binding]
        target = exp_lim if direction == "export" else imp_lim
        target[rows[review]] = alloc[review]
        (hc_exp if direction == "export" else hc_imp)[rows] = np.minimum(hosting, 1e12)
    for k in np.nonzero(connected)[0]:
        over = [f"{d} limit {want[k]:.1f} kW exceeds the hosting capacity of {found[d][1][k]:.1f} kW "
                f"({words[d][k]})" for d, want in (("export", want_e), ("import", want_i))
                if want[k] > found[d][1][k] + 1e-6]
        reason[rows[k]] = ("connected above what the feeder hosts: " + "; ".join(over)) if over else ""
    ask_e, ask_i = t["export_kw"].to_numpy(), t["import_kw"].to_numpy()
    short_e = ask_e - exp_lim[rows] > 1e-6
    short_i = ask_i - imp_lim[rows] > 1e-6
    useful = ((ask_e > 0) & (exp_lim[rows] >= min_useful_kw)) | ((ask_i > 0) & (imp_lim[rows] >= min_useful_kw))
    for k in np.nonzero(review)[0]:
        row = rows[k]
        parts = [f"{d} limited to {lim[row]:.1f} of {ask[k]:.1f} kW by {words[d][k]}"
                 for d, short, lim, ask in (("export", short_e, exp_lim, ask_e), ("import", short_i, imp_lim, ask_i))
                 if short[k]]
        if not parts:
            status[row] = "approved"
        elif useful[k]:
            status[row] = "approved_with_limits"
            reason[row] = "; ".join(parts)
        else:
            status[row] = "refused"
            reason[row] = "no hosting capacity at the bus: " + "; ".join(parts)
            exp_lim[row] = imp_lim[row] = 0.0
    return check


def _aggregations(t: pl.DataFrame, out: pl.DataFrame) -> pl.DataFrame:
    """Aggregation rows: limits summed over members still in service, refused across interfaces."""
    live = out.with_columns(t["aggregator_id"]).filter(pl.col("status").is_in(CONNECTED))
    members = out.with_columns(t["aggregator_id"]).filter(pl.col("status") != "retired")
    agg = members.group_by("aggregation_id", maintain_order=True).agg(
        pl.col("aggregator_id").first(), pl.col("feeder").unique(maintain_order=True).alias("_feeders"),
        pl.col("der_id").alias("members"))
    sums = live.group_by("aggregation_id").agg(pl.col("export_limit_kw").sum(), pl.col("import_limit_kw").sum())
    agg = agg.join(sums, on="aggregation_id", how="left", maintain_order="left").with_columns(
        pl.col("export_limit_kw").fill_null(0.0), pl.col("import_limit_kw").fill_null(0.0))
    spread = agg["_feeders"].list.len().to_numpy() > 1
    empty = (agg["export_limit_kw"] + agg["import_limit_kw"]).to_numpy() <= 0
    feeders = agg["_feeders"].list.join(", ").to_numpy()
    status = np.where(spread | empty, "refused", "approved")
    reason = np.where(spread, np.char.add("its DERs sit below more than one interface: ", feeders.astype(str)),
                      np.where(empty, "no member DER is approved", ""))
    return agg.select("aggregation_id", "aggregator_id", pl.col("_feeders").list.first().alias("feeder"),
                      "members", pl.Series("status", status), "export_limit_kw", "import_limit_kw",
                      pl.Series("reason", reason.astype(str)))


def _services(t: pl.DataFrame, aggs: pl.DataFrame, part: pl.DataFrame, iso_min_kw: float) -> pl.DataFrame:
    """Per aggregation and service offered: approved, or refused with the first reason."""
    level = t.select("aggregation_id",
                     pl.col("metering").replace_strict(METERING, list(range(len(METERING)))).alias("_m"),
                     pl.col("control").replace_strict(CONTROL, list(range(len(CONTROL)))).alias("_c"),
                     pl.col("status")).filter(pl.col("status") != "retired")
    weakest = level.group_by("aggregation_id").agg(pl.col("_m").min(), pl.col("_c").min())
    rows = part.join(aggs.select("aggregation_id", "status", "export_limit_kw", "import_limit_kw"),
                     on="aggregation_id", how="left", maintain_order="left").join(
        weakest, on="aggregation_id", how="left", maintain_order="left")
    svc = rows["service"].to_numpy()
    need_m = np.array([METERING.index(SERVICE_NEEDS[s][0]) for s in svc], dtype=np.int64)
    need_c = np.array([CONTROL.index(SERVICE_NEEDS[s][1]) for s in svc], dtype=np.int64)
    size = np.maximum(rows["export_limit_kw"].to_numpy(), rows["import_limit_kw"].to_numpy())
    reason = np.full(rows.height, "", dtype=object)
    checks = [
        (rows["status"].to_numpy() != "approved", "the aggregation is refused"),
        (rows["_m"].to_numpy() < need_m, "a member's metering is below what the service needs"),
        (rows["_c"].to_numpy() < need_c, "a member's control is below what the service needs"),
        ((svc == "iso_direct") & (size < iso_min_kw), f"smaller than the ISO's minimum of {iso_min_kw:g} kW"),
    ]
    for mask, why in reversed(checks):  # the first failing check is the reason given
        reason[mask] = why
    for k in np.nonzero((rows["_m"].to_numpy() < need_m) | (rows["_c"].to_numpy() < need_c))[0]:
        m, c = SERVICE_NEEDS[svc[k]]
        if reason[k].startswith("a member"):
            reason[k] = f"{reason[k]} (metering {m}, control {c})"
    return rows.select("aggregation_id", "service").with_columns(
        pl.Series("status", np.where(reason == "", "approved", "refused")), pl.Series("reason", reason.astype(str)))

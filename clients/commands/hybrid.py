"""Offline DER registry and hybrid-participation commands.

``dsomarket registry prequalify``
    The DSO's review of a DER registry against its feeders (:mod:`engine.registry`).
``dsomarket envelopes``
    Operating envelopes per DER and interval (:mod:`engine.envelopes`).
``dsomarket hybrid check``
    Deliverability of direct ISO and DSO schedules; per-schedule limits and the
    curtailment split (:func:`engine.hybrid.check_deliverability`).
``dsomarket hybrid conflicts``
    A kW sold once across services, energy through the state of charge
    (:func:`engine.hybrid.check_conflicts`).

They call the engine directly on files (no server); bad input exits with status
2 and one line on stderr naming the field.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from dsomarket.clients.files import read_feeder, read_table, write_csv, write_json
from dsomarket.engine.envelopes import RULES, operating_envelopes
from dsomarket.engine.errors import InputError
from dsomarket.engine.hybrid import RULES as CURTAILMENT_RULES
from dsomarket.engine.hybrid import bid_limits, check_conflicts, check_deliverability
from dsomarket.engine.registry import prequalify

_STAMP = "%Y-%m-%dT%H:%M:%SZ"
_FEEDER_HELP = "ieee33, ieee69, synth:N:SEED or a feeder directory"


def register(subparsers) -> None:
    """Add the ``registry`` group and the ``envelopes`` command to the ``dsomarket`` parser."""
    group = subparsers.add_parser("registry", help="review a DER registry against its feeders")
    actions = group.add_subparsers(dest="registry_command", required=True, metavar="ACTION")
    pq = actions.add_parser(
        "prequalify", help="hosting capacity and pre-qualification of DERs, aggregations and services",
        description="Review pending DERs first come, first served against the hosting capacity at their bus; "
                    "approve, approve with limits or refuse them with the reason; check aggregations and "
                    "the services they offer. Exit status 1 when the AC check of the result fails.")
    pq.add_argument("--feeder", required=True, action="append", help=_FEEDER_HELP + " (repeat for several)")
    pq.add_argument("--ders", required=True, help="DER registry table (.csv or .parquet)")
    pq.add_argument("--participation", help="aggregation_id, service table")
    pq.add_argument("--forecast", help="bus, interval, p_kw[, q_kvar] net withdrawal (one feeder only)")
    pq.add_argument("--min-useful-kw", type=float, default=1.0, help="smallest limit worth approving (default 1)")
    pq.add_argument("--iso-min-kw", type=float, default=100.0, help="smallest ISO-direct aggregation (default 100)")
    pq.add_argument("--out", required=True, help="output directory (created if missing)")
    pq.set_defaults(func=_prequalify)

    env = subparsers.add_parser(
        "envelopes", help="operating envelopes per DER and interval",
        description="Import/export ranges per DER and interval that any combination of DERs may use without "
                    "breaking a distribution limit, shared by weighted max-min fairness. Exit status 1 when "
                    "the AC check of the corners fails.")
    env.add_argument("--feeder", required=True, help=_FEEDER_HELP)
    env.add_argument("--ders", required=True, help="DER registry table (.csv or .parquet)")
    env.add_argument("--forecast", help="bus, interval, p_kw[, q_kvar] net withdrawal")
    env.add_argument("--rule", choices=RULES, default="proportional", help="sharing rule (default proportional)")
    env.add_argument("--out", required=True, help="output directory (created if missing)")
    env.set_defaults(func=_envelopes)

    hybrid = subparsers.add_parser("hybrid", help="direct ISO participants: deliverability and conflicts")
    acts = hybrid.add_subparsers(dest="hybrid_command", required=True, metavar="ACTION")
    chk = acts.add_parser(
        "check", help="deliverability of direct ISO and DSO schedules, with per-schedule limits",
        description="Run the schedules of direct ISO participants and of the DSO market on the feeder under "
                    "the forecast (day-ahead: hybrid alternative 2; one interval of the ISO's dispatch: "
                    "alternative 1); where they break a limit, share the curtailment by the published rule and "
                    "return each schedule's limit. Exit status 1 when the limits still fail the AC check.")
    chk.add_argument("--feeder", required=True, help=_FEEDER_HELP)
    chk.add_argument("--schedules",
                     help="participant_id, service, bus, interval, p_kw[, aggregator_id] (.csv or .parquet)")
    chk.add_argument("--bids", help="direct participants' bid segments: participant_id, bus, interval, side, "
                                    "quantity_kw[, price]; writes bid_limits.csv, each bid's deliverable range "
                                    "with the schedules held at their limits")
    chk.add_argument("--forecast", help="bus, interval, p_kw[, q_kvar] net withdrawal")
    chk.add_argument("--rule", choices=CURTAILMENT_RULES, default="sensitivity",
                     help="curtailment sharing rule (default sensitivity)")
    chk.add_argument("--out", required=True, help="output directory (created if missing)")
    chk.set_defaults(func=_check)
    con = acts.add_parser(
        "conflicts", help="resources sold twice across services, in kW or in energy",
        description="Check commitments across DSO energy, DSO flexibility and direct ISO services against "
                    "each resource's limits per interval and its state of charge across intervals. Exit "
                    "status 1 when a conflict is found (the aggregator and the operator must hear of it).")
    con.add_argument("--ders", required=True, help="DER registry table")
    con.add_argument("--commitments", required=True, help="resource_id, service, interval, p_kw")
    con.add_argument("--interval-minutes", type=float, default=60.0, help="interval length (default 60)")
    con.add_argument("--out", required=True, help="output directory (created if missing)")
    con.set_defaults(func=_conflicts)


def _optional(path: str | None, table: str) -> pl.DataFrame | None:
    return read_table(path, table) if path else None


def _stamped(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.col("interval").dt.to_string(_STAMP)) if "interval" in df.columns else df


def _prequalify(args: argparse.Namespace) -> int:
    feeders = [read_feeder(f) for f in args.feeder]
    forecast = _optional(args.forecast, "forecast")
    if forecast is not None and len(feeders) > 1:
        raise InputError("forecast", "file", "give one --feeder with --forecast")
    result = prequalify(feeders, read_table(args.ders, "ders"), _optional(args.participation, "participation"),
                        {feeders[0].name: forecast} if forecast is not None else None,
                        min_useful_kw=args.min_useful_kw, iso_min_kw=args.iso_min_kw)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(result.ders, out / "ders.csv")
    write_csv(result.aggregations.with_columns(pl.col("members").list.join(";")), out / "aggregations.csv")
    write_csv(result.participation, out / "participation.csv")
    counts = result.ders["status"].value_counts().sort("status")
    summary = {"feeders": [f.name for f in feeders],
               "ders": dict(zip(counts["status"].to_list(), counts["count"].to_list(), strict=True)),
               "aggregations_refused": int((result.aggregations["status"] == "refused").sum()),
               "services_refused": int((result.participation["status"] == "refused").sum()),
               "ac_check": {name: check.__dict__ for name, check in result.ac_checks.items()}}
    write_json(out / "summary.json", summary)
    print(", ".join(f"{n} {s}" for s, n in summary["ders"].items()) + f"; wrote {out}")
    return 0 if all(c.passed for c in result.ac_checks.values()) else 1


def _envelopes(args: argparse.Namespace) -> int:
    feeder = read_feeder(args.feeder)
    result = operating_envelopes(feeder, read_table(args.ders, "ders"), _optional(args.forecast, "forecast"),
                                 rule=args.rule)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(_stamped(result.ders), out / "envelopes.csv")
    write_csv(_stamped(result.aggregations), out / "aggregations.csv")
    summary = {"feeder": feeder.name, "rule": result.rule, "ders": result.ders["der_id"].n_unique(),
               "intervals": result.ders["interval"].n_unique(),
               "export_max_kw_total": float(result.ders["export_max_kw"].sum()),
               "import_max_kw_total": float(result.ders["import_max_kw"].sum()),
               "ac_check": result.ac_check.__dict__}
    write_json(out / "summary.json", summary)
    verdict = "AC check passed" if result.ac_check.passed else "AC check FAILED"
    print(f"{summary['ders']} DERs x {summary['intervals']} intervals; {verdict} after "
          f"{result.ac_check.rounds} round(s); wrote {out}")
    return 0 if result.ac_check.passed else 1


def _check(args: argparse.Namespace) -> int:
    if not (args.schedules or args.bids):
        raise InputError("arguments", "schedules", "give --schedules, --bids or both")
    feeder = read_feeder(args.feeder)
    forecast = _optional(args.forecast, "forecast")
    bids = _optional(args.bids, "bids")
    if not args.schedules:
        return _bid_check(feeder, bids, None, forecast, Path(args.out), {"feeder": feeder.name})
    result = check_deliverability(feeder, read_table(args.schedules, "schedules"), forecast, rule=args.rule)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(_stamped(result.schedules), out / "schedules.csv")
    write_csv(_stamped(result.violations), out / "violations.csv")
    write_csv(_stamped(result.curtailment), out / "curtailment.csv")
    summary = {"feeder": feeder.name, "rule": result.rule, "deliverable": result.deliverable,
               "violations": result.violations.height, "ac_passed": result.ac_passed,
               "curtailed_kw": {s: float(v) for s, v in result.curtailment.group_by("service").agg(
                   pl.col("curtailed_kw").sum()).sort("service").iter_rows()}}
    verdict = "deliverable as scheduled" if result.deliverable else (
        f"{result.violations.height} limit(s) broken; curtailed " +
        ", ".join(f"{s} {v:.1f} kW" for s, v in summary["curtailed_kw"].items()))
    print(verdict)
    if bids is not None:
        held = result.schedules.select("participant_id", "service", "bus", "interval", pl.col("limit_kw").alias("p_kw"))
        return _bid_check(feeder, bids, held, forecast, out, summary) or (0 if result.ac_passed else 1)
    write_json(out / "summary.json", summary)
    print(f"wrote {out}")
    return 0 if result.ac_passed else 1


def _bid_check(feeder, bids: pl.DataFrame, held: pl.DataFrame | None, forecast, out: Path, summary: dict) -> int:
    """bid_limits.csv: each direct bid's deliverable range around the schedules ``held`` at their limits."""
    limits = bid_limits(feeder, bids, held, forecast)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(_stamped(limits), out / "bid_limits.csv")
    short = limits.filter((pl.col("export_limit_kw") < pl.col("offered_export_kw") - 1e-6)
                          | (pl.col("import_limit_kw") < pl.col("offered_import_kw") - 1e-6))
    summary["bids_cut"] = short.height
    write_json(out / "summary.json", summary)
    print(f"{limits.height} bid range(s), {short.height} cut to what the feeder carries; wrote {out}")
    return 0


def _conflicts(args: argparse.Namespace) -> int:
    result = check_conflicts(read_table(args.ders, "ders"), read_table(args.commitments, "commitments"),
                             interval_minutes=args.interval_minutes)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(_stamped(result.conflicts), out / "conflicts.csv")
    write_csv(_stamped(result.soc), out / "soc.csv")
    found = result.conflicts
    print(f"{found.height} conflict(s)" + "".join(
        f"\n  {r['resource_id']} {r['kind']} at {r['interval']}: {r['services']} (excess {r['excess']:.1f}); "
        f"notify {r['notify']}" for r in found.iter_rows(named=True)) + f"\nwrote {out}")
    return 1 if found.height else 0

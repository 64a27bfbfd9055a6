"""Offline feeder commands: ``dsomarket feeder export|synth`` and ``dsomarket powerflow``.

These call the engine directly (no server): they read or build a feeder,
write it as a feeder directory (see :mod:`clients.files`), or run the AC power
flow of its fixed loads.
"""

from __future__ import annotations

import argparse

import numpy as np
import polars as pl

from dsomarket.clients.cli import non_negative_int, positive_int
from dsomarket.clients.files import by_id, json_text, output_dir, read_feeder, write_csv, write_feeder, write_json
from dsomarket.engine.feeders import synthetic
from dsomarket.engine.network import Feeder
from dsomarket.engine.powerflow import PowerFlowResult, ac_power_flow


def register(subparsers) -> None:
    """Add the ``feeder`` group and the ``powerflow`` command to the ``dsomarket`` parser."""
    group = subparsers.add_parser("feeder", help="export built-in feeders, generate synthetic ones")
    actions = group.add_subparsers(dest="feeder_command", required=True, metavar="ACTION")

    export = actions.add_parser("export", help="write a feeder as a feeder directory")
    export.add_argument("name", help="ieee33, ieee69, synth:N:SEED or a feeder directory")
    export.add_argument("dir", help="output directory (created if missing)")
    export.set_defaults(func=_export)

    synth = actions.add_parser("synth", help="generate a seeded synthetic radial feeder")
    synth.add_argument("--buses", type=positive_int, required=True, metavar="N", help="number of buses, root included")
    synth.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="random seed (default 0)")
    synth.add_argument("dir", help="output directory (created if missing)")
    synth.set_defaults(func=_synth)

    pf = subparsers.add_parser("powerflow", help="AC power flow of a feeder's fixed loads",
                               description="AC power flow (backward-forward sweep) of a feeder's fixed "
                                           "loads. Exit status 1 when it does not converge.")
    pf.add_argument("--feeder", required=True, help="ieee33, ieee69, synth:N:SEED or a feeder directory")
    pf.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    pf.add_argument("--out", metavar="DIR", help="also write buses.csv (bus, v_pu, angle_deg), lines.csv "
                                                 "(line, from_bus, to_bus, p_kw, q_kvar, current_a, loading_pct) "
                                                 "and summary.json, in feeder order")
    pf.set_defaults(func=_powerflow)


def _export(args: argparse.Namespace) -> int:
    _write(read_feeder(args.name), args.dir)
    return 0


def _synth(args: argparse.Namespace) -> int:
    _write(synthetic(args.buses, args.seed), args.dir)
    return 0


def _write(feeder: Feeder, directory: str) -> None:
    out = write_feeder(feeder, directory)
    topo = feeder.topology
    print(f"wrote feeder {feeder.name} ({topo.n_bus} buses, {topo.n_line} lines) to {out}")


def _powerflow(args: argparse.Namespace) -> int:
    feeder = read_feeder(args.feeder)
    r = ac_power_flow(feeder)
    summary = {"feeder": feeder.name, "n_bus": feeder.topology.n_bus,
               "losses_kw": r.losses_kw, "losses_kvar": r.losses_kvar,
               "min_v_pu": r.min_v_pu, "min_v_bus": r.min_v_bus,
               "p0_kw": r.p0_kw, "q0_kvar": r.q0_kvar,
               "converged": r.converged, "iterations": r.iterations}
    if args.out:
        with output_dir(args.out) as out:
            buses, lines = powerflow_tables(feeder, r)
            write_csv(buses, out / "buses.csv")
            write_csv(lines, out / "lines.csv")
            write_json(out / "summary.json", summary)
    if args.json:
        print(json_text(summary))
    else:
        text = {**summary, "losses_kw": f"{r.losses_kw:.3f}", "losses_kvar": f"{r.losses_kvar:.3f}",
                "min_v_pu": f"{r.min_v_pu:.5f}", "p0_kw": f"{r.p0_kw:.3f}", "q0_kvar": f"{r.q0_kvar:.3f}",
                "converged": "yes" if r.converged else "NO"}
        print("\n".join(f"{key:<12}{value}" for key, value in text.items()))
        if args.out:
            print(f"{'wrote':<12}{args.out}/: buses.csv, lines.csv, summary.json")
    return 0 if r.converged else 1


def powerflow_tables(feeder: Feeder, r: PowerFlowResult) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-bus voltages and per-line flows of a power flow, in feeder order.

    ``lines``: flows at the sending (parent) end, kW and kvar, positive away from
    the root; ``loading_pct`` = apparent power over the rating (null where unlimited).
    """
    buses = pl.DataFrame({"bus": r.bus_ids.astype(str), "v_pu": r.v_pu, "angle_deg": r.angle_deg})
    rating = feeder.lines.select(pl.col("line").cast(pl.Utf8), "from_bus", "to_bus", "s_max_kva")
    s_kva = np.hypot(r.line_p_kw, r.line_q_kvar)
    lines = (pl.DataFrame({"line": r.line_ids.astype(str), "p_kw": r.line_p_kw, "q_kvar": r.line_q_kvar,
                           "current_a": r.line_current_a, "s_kva": s_kva})
             .join(rating, on="line", how="left")
             .with_columns(pl.when(pl.col("s_max_kva").is_finite())
                           .then(pl.col("s_kva") / pl.col("s_max_kva") * 100.0).alias("loading_pct"))
             .select("line", "from_bus", "to_bus", "p_kw", "q_kvar", "current_a", "loading_pct"))
    return by_id(buses, "bus"), by_id(lines, "line")

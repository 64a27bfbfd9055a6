"""``dsomarket plot``: pictures of the output folders of ``clear``, ``curve`` and ``disaggregate``.

``plot feeder RUN`` draws the feeder as a tree coloured by DLMP, voltage or
line loading; ``plot curve RUN`` the interface curve with the ISO's reduced
segments over it; ``plot heatmap RUN`` the DLMPs per bus and interval;
``plot dispatch RUN`` the net injection per aggregator. The picture is PNG or
SVG by the extension of ``--out``; its size is ``--size`` inches at ``--dpi``
(a PNG of 8 x 5 in at 100 dpi is 800 x 500 pixels). matplotlib is imported only
here, when a picture is drawn.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from dsomarket.clients.cli import positive_float, positive_int
from dsomarket.clients.files import parse_intervals, read_feeder, read_table
from dsomarket.engine.errors import InputError

COLOURS = {"dlmp": ("prices.csv", "dlmp", "DLMP per MWh"), "voltage": ("buses.csv", "v_pu", "voltage, pu"),
           "loading": ("lines.csv", "loading_pct", "line loading, %")}


def register(subparsers) -> None:
    """Add the ``plot`` group to the ``dsomarket`` parser."""
    group = subparsers.add_parser("plot", help="draw a run's feeder, curve, DLMP heat map or dispatch (PNG/SVG)",
                                  description=__doc__.split("\n\n")[1])
    kinds = group.add_subparsers(dest="plot_command", required=True, metavar="KIND")
    f = kinds.add_parser("feeder", help="the feeder as a tree coloured by DLMP, voltage or loading")
    f.add_argument("--color", choices=tuple(COLOURS), default="dlmp",
                   help="dlmp or voltage colour the buses, loading the lines (default dlmp)")
    f.add_argument("--feeder", required=True, help="the run's feeder: ieee33, ieee69, synth:N:SEED or a feeder "
                                                   "directory")
    c = kinds.add_parser("curve", help="the exact interface curve with the ISO's reduced segments over it")
    h = kinds.add_parser("heatmap", help="DLMP per bus and interval")
    d = kinds.add_parser("dispatch", help="net injection per aggregator and interval (kW)")
    for p, needs in ((f, "`dsomarket clear` or `disaggregate`"), (c, "`dsomarket curve`"),
                     (h, "`dsomarket clear` or `disaggregate`"), (d, "`dsomarket clear` or `disaggregate`")):
        p.add_argument("run", type=Path, metavar="RUN", help=f"output folder of {needs}")
        p.add_argument("--out", required=True, type=Path, help="picture file, .png or .svg")
        if p in (f, c):
            p.add_argument("--interval", default=None, help="interval start, ISO 8601 UTC (default: for the "
                                                            "feeder, the interval whose DLMPs differ most; "
                                                            "else the first)")
        p.add_argument("--size", type=positive_float, nargs=2, default=(8.0, 5.0), metavar=("W", "H"),
                       help="inches (default 8 5)")
        p.add_argument("--dpi", type=positive_int, default=100, help="dots per inch (default 100)")
        p.add_argument("--title", default="", help="title (default: what is drawn)")
        p.set_defaults(func=_plot)


def _plot(args: argparse.Namespace) -> int:
    from dsomarket.clients import plots

    if args.out.suffix.lower() not in plots.FORMATS:
        raise InputError("plot", "out", f"{args.out}: use a .png or .svg file name")
    if args.out.is_dir():
        raise InputError("plot", "out", f"{args.out} is a directory; give a .png or .svg file name")
    if not args.run.is_dir():
        raise InputError("plot", "run", f"{args.run}: no such output folder")
    style = {"size": tuple(args.size), "dpi": args.dpi, "title": args.title}
    if args.plot_command == "curve":
        offer = args.run / "iso_offer.csv"
        fig = plots.interface_curve(_table(args.run, "curve.csv"),
                                    read_table(offer, "iso_offer") if offer.is_file() else None,
                                    interval=_interval(args.interval), **style)
    elif args.plot_command == "heatmap":
        fig = plots.dlmp_heatmap(_table(args.run, "prices.csv"), **style)
    elif args.plot_command == "dispatch":
        fig = plots.dispatch_by_aggregator(_table(args.run, "dispatch.csv"), **style)
    else:
        fig = _feeder(args, plots, style)
    path = plots.save(fig, args.out)
    print(f"wrote {path} ({args.size[0]:g} x {args.size[1]:g} in at {args.dpi} dpi)")
    return 0


def _feeder(args, plots, style):
    feeder = read_feeder(args.feeder)
    prices = _table(args.run, "prices.csv")
    interval = _interval(args.interval)
    if args.interval is None:   # where DLMPs differ most, the feeder's limits show
        spread = prices.group_by("interval", maintain_order=True).agg((pl.col("dlmp").max() - pl.col("dlmp").min())
                                                                      .alias("spread"))
        interval = spread.sort("spread", descending=True, maintain_order=True)["interval"][0]
    name, column, label = COLOURS[args.color]
    table = _at(_table(args.run, name), interval)
    when = "" if interval is None else f", {interval:%Y-%m-%d %H:%M} UTC"
    style = style | {"title": style["title"] or f"feeder {feeder.name}: {label}{when}"}
    if args.color == "loading":
        return plots.feeder_tree(feeder, None, line_loading=table.select("line", column), **style)
    return plots.feeder_tree(feeder, table.select("bus", pl.col(column).alias("value")), bus_label=label,
                             line_loading=_at(_table(args.run, "lines.csv"), interval).select("line", "loading_pct"),
                             **style)


def _table(run: Path, name: str) -> pl.DataFrame:
    path = run / name
    if not path.is_file():
        raise InputError("plot", "run", f"{run} has no {name}: not the output of the command this plot reads")
    return read_table(path, name.removesuffix(".csv"))


def _interval(text: str | None):
    if text is None:
        return None
    return parse_intervals(pl.DataFrame({"interval": [text]}), "plot")["interval"][0]


def _at(table: pl.DataFrame, interval) -> pl.DataFrame:
    if "interval" not in table.columns:
        return table
    return table.filter(pl.col("interval").is_null() if interval is None else pl.col("interval") == interval)

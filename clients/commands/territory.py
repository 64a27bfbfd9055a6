"""Offline territory commands: ``dsomarket territory synth | clear``.

A territory directory holds one feeder directory per feeder (see
:mod:`clients.files`) with its bids in ``bids.csv`` (or ``bids.parquet``) and
optionally ``resources.csv``; ``territory.json`` optionally groups feeders into
interfaces::

    {"name": "north",
     "interfaces": [{"interface_id": "sub-1", "feeders": ["feeder-0000", "feeder-0001"],
                     "import_max_kw": 25000, "export_max_kw": 5000},
                    {"interface_id": "feeder-0002", "feeders": ["feeder-0002"]}]}

Feeders behind one substation transformer are one interface whose limits are
the transformer's (:func:`engine.territory.substation`). Without
``territory.json`` every sub-directory holding a ``feeder.json`` is an
interface of its own, named after the directory.

``territory clear`` writes, per interface, ``OUT/<interface_id>/clear/`` (the
files of ``dsomarket clear``) and with ``--curves`` ``OUT/<interface_id>/curve/``
(those of ``dsomarket curve``), plus ``OUT/territory.json`` (status, import and
welfare per interface). One failing interface is reported there and the others
still publish; the exit status is then 1. ``territory.json`` is removed when
the run starts and written last, once every interface's files are on disk: a
run that stopped half way has none.

The work runs in a :mod:`dsomarket.server.runner` (local worker processes, or
Ray with ``--ray``): this module imports the server's runner, not the service.
Each worker reads its interfaces' files and writes their results itself.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dsomarket.clients.commands.market import (_FORMULATION_HELP, FORMULATIONS, read_iso_price, write_curve,
                                               write_result)
from dsomarket.clients.files import (flush, flushed_later, read_feeder, read_table, remove, synced_once,
                                     write_csv, write_feeder, write_json)
from dsomarket.engine.bids import MarketRules, parse_resources
from dsomarket.engine.clearing import ClearingOptions
from dsomarket.engine.errors import InputError
from dsomarket.engine.territory import Interface, substation, synthetic_territory
from dsomarket.server.runner import Cycle, InterfaceOutcome, Job, runner

_DEFAULT = MarketRules()


def register(subparsers) -> None:
    """Add the ``territory`` group to the ``dsomarket`` parser."""
    group = subparsers.add_parser("territory", help="generate and clear a territory of many T-D interfaces")
    actions = group.add_subparsers(dest="territory_command", required=True, metavar="ACTION")

    s = actions.add_parser("synth", help="write a seeded synthetic territory (one folder per feeder plus bids)")
    s.add_argument("--feeders", type=int, required=True, metavar="N", help="number of feeders")
    s.add_argument("--buses", type=int, required=True, metavar="B", help="buses per feeder, root included")
    s.add_argument("--bids", type=int, required=True, metavar="K", help="bids per feeder")
    s.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    s.add_argument("--per-substation", type=int, default=1, metavar="M",
                   help="feeders behind each substation transformer (default 1: every feeder its own interface)")
    s.add_argument("dir", help="output directory (created if missing)")
    s.set_defaults(func=_synth)

    c = actions.add_parser("clear", help="clear every interface of a territory (and trace its curves)")
    c.add_argument("--territory", required=True, metavar="DIR", help="territory directory")
    c.add_argument("--iso-price", required=True,
                   help="ISO price at every interface per MWh: a number, or a CSV with interval, price")
    c.add_argument("--out", required=True, metavar="DIR")
    c.add_argument("--curves", action="store_true", help="also trace each interface's exact curve for the ISO")
    c.add_argument("--max-segments", type=int, default=10, help="segments per ISO bid (default 10)")
    c.add_argument("--forecast-price", type=float, default=None,
                   help="ISO price assumed in the other intervals when storage couples them")
    c.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes (default: one per core); with --ray, actors (default: cluster CPUs)")
    c.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on Ray: auto, ray://HOST:10001 or HOST:6379 (needs dsomarket[ray])")
    c.add_argument("--formulation", choices=FORMULATIONS, default="lossaware",
                   help=_FORMULATION_HELP + "; the same default as clear and curve")
    c.add_argument("--no-ac-check", action="store_true", help="skip the AC power flow of each dispatch")
    c.add_argument("--floor", type=float, default=_DEFAULT.price_floor, help="price floor per MWh")
    c.add_argument("--cap", type=float, default=_DEFAULT.price_cap, help="price cap per MWh")
    c.add_argument("--interval-minutes", type=float, default=_DEFAULT.interval_minutes,
                   help="interval length, every interface (default 60)")
    c.add_argument("--voll", type=float, default=None, help="shed fixed load at this value of lost load")
    c.add_argument("--polygon-sides", type=int, default=ClearingOptions().polygon_sides)
    c.set_defaults(func=_clear)


def _synth(args: argparse.Namespace) -> int:
    if args.per_substation < 1:
        raise InputError("territory", "per_substation", f"must be at least 1 (got {args.per_substation})")
    out = Path(args.dir)
    feeders = synthetic_territory(args.feeders, args.buses, args.bids, args.seed)
    interfaces = []
    for k in range(0, len(feeders), args.per_substation):
        group = feeders[k:k + args.per_substation]
        names = [f.name for f, _ in group]
        spec: dict = {"interface_id": names[0] if len(names) == 1 else f"substation-{k // args.per_substation:04d}",
                      "feeders": names}
        if len(names) > 1:
            # A transformer rated below its feeders' summed peak: 1.2 x their fixed load.
            spec["import_max_kw"] = round(1.2 * sum(float(f.buses["load_kw"].sum()) for f, _ in group), 1)
        interfaces.append(spec)
    with synced_once():   # one flush for the territory's files, not one per file
        for f, bids in feeders:
            d = write_feeder(f, out / f.name)
            write_csv(bids, d / "bids.csv")
    write_json(out / "territory.json", {"name": out.name, "interfaces": interfaces})
    print(f"wrote territory {out.name}: {len(feeders)} feeders ({args.buses} buses, {args.bids} bids each), "
          f"{len(interfaces)} interfaces, to {out}")
    return 0


def load_interface(feeder_dirs: tuple[str, ...], interface_id: str, import_max_kw: float = math.inf,
                   export_max_kw: float = math.inf) -> Interface:
    """Read one interface's feeder directories and bids (runs in a worker)."""
    feeders, bids, resources = [], [], ()
    for d in map(Path, feeder_dirs):
        feeders.append(read_feeder(d))
        bids.append(read_table(_bids_file(d), "bids"))
        if (d / "resources.csv").is_file():
            resources += parse_resources(read_table(d / "resources.csv", "resources"))
    return substation(interface_id, feeders, bids, import_max_kw, export_max_kw, resources)


def _bids_file(d: Path) -> Path:
    for name in ("bids.csv", "bids.parquet"):
        if (d / name).is_file():
            return d / name
    return d / "bids.csv"  # read_table names the missing file


def jobs(territory: Path) -> list[Job]:
    """One :class:`Job` per interface of a territory directory (see the module notes)."""
    if not territory.is_dir():
        raise InputError("territory", "dir", f"{territory}: no such directory")
    spec_path = territory / "territory.json"
    if spec_path.is_file():
        try:
            spec = json.loads(spec_path.read_text(encoding="utf-8"))
            interfaces = spec["interfaces"]
            assert isinstance(interfaces, list)
        except (OSError, ValueError, KeyError, TypeError, AssertionError):
            raise InputError("territory", "interfaces", f"{spec_path}: must be JSON with a list "
                             f"'interfaces'") from None
    else:
        interfaces = [{"interface_id": d.name, "feeders": [d.name]} for d in sorted(territory.iterdir())
                      if (d / "feeder.json").is_file()]
    if not interfaces:
        raise InputError("territory", "interfaces", f"{territory}: no feeder directories and no territory.json")
    out = []
    for k, it in enumerate(interfaces):
        iid = it.get("interface_id") if isinstance(it, dict) else None
        members = it.get("feeders") if isinstance(it, dict) else None
        if not isinstance(iid, str) or not iid or "/" in iid or iid.startswith("."):
            raise InputError("territory", "interface_id", f"interface {k}: must be a non-empty name "
                             f"without '/' (got {iid!r})")
        if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
            raise InputError("territory", "feeders", f"interface {iid!r}: must be a non-empty list of feeder "
                             f"directory names")
        dirs = tuple(str(territory / m) for m in members)
        limits = [_limit(it.get(key), iid, key) for key in ("import_max_kw", "export_max_kw")]
        weight = sum(_size(Path(d) / "buses.csv") + _size(_bids_file(Path(d))) for d in dirs)
        out.append(Job(iid, load_interface, (dirs, iid, *limits), weight))
    return out


def _limit(value, iid: str, key: str) -> float:
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InputError("territory", key, f"interface {iid!r}: must be a non-negative number (got {value!r})")
    return float(value)


def _size(p: Path) -> float:
    try:
        return float(p.stat().st_size)
    except OSError:
        return 0.0


@dataclass
class OutcomeWriter:
    """The runner's sink (runs in a worker): each interface's files under ``out/<interface_id>/``, and its
    territory report.

    Each file is renamed into place whole, but flushed to disk only by :meth:`done`, once for all the
    interfaces of the worker's call (:func:`clients.files.flushed_later`): ``territory.json``, removed
    when the run starts and written after every worker's flush, is what says the run's files are on disk.
    """

    out: Path
    rules: MarketRules
    formulation: str
    max_segments: int
    written: list[Path] = field(default_factory=list)

    def __call__(self, outcome: InterfaceOutcome) -> dict:
        d = self.out / outcome.interface_id
        with flushed_later(self.written):
            if outcome.clearing is not None:
                (d / "clear").mkdir(parents=True, exist_ok=True)
                write_result(outcome.clearing, d / "clear")
            if outcome.curve is not None:
                (d / "curve").mkdir(parents=True, exist_ok=True)
                write_curve(outcome.curve, outcome.offer, outcome.offer_area, self.rules, self.formulation,
                            self.max_segments, d / "curve")
        return outcome.report()

    def done(self) -> None:
        """Flush every file written since the last call (the runner calls it at the end of each call)."""
        flush(self.written)
        self.written.clear()


def _clear(args: argparse.Namespace) -> int:
    rules = MarketRules(price_floor=args.floor, price_cap=args.cap, interval_minutes=args.interval_minutes,
                        value_of_lost_load=args.voll)
    options = ClearingOptions(formulation=args.formulation, polygon_sides=args.polygon_sides,
                              ac_check=not args.no_ac_check)
    if args.max_segments < 1:
        raise InputError("options", "max_segments", "must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise InputError("territory", "workers", f"must be at least 1 (got {args.workers})")
    work = jobs(Path(args.territory))
    cycle = Cycle(read_iso_price(args.iso_price), curves=args.curves, max_segments=args.max_segments,
                  forecast=args.forecast_price)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "territory.json"
    remove(summary)   # before any interface's file changes: no summary = an unfinished run (OutcomeWriter)
    t0 = time.perf_counter()
    with runner(args.workers, args.ray, rules, options) as r:
        r.load(work)
        reports = r.run(cycle, OutcomeWriter(out, rules, args.formulation, args.max_segments))
        where = (f"{r.shards} Ray actor{'s' if r.shards > 1 else ''}" if args.ray
                 else f"{r.shards} worker process{'es' if r.shards > 1 else ''}")
    seconds = time.perf_counter() - t0
    counts = Counter(rep["status"] for rep in reports)
    write_json(summary, {
        "territory": Path(args.territory).resolve().name, "interfaces": reports, "status_counts": dict(counts),
        "iso_price": args.iso_price, "curves": args.curves, "formulation": args.formulation})
    print(f"cleared {len(reports)} interfaces on {where} in {seconds:.2f} s: "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"; results in {out}")
    recovered = [rep["interface_id"] for rep in reports if rep.get("recovered")]
    if recovered:   # said in territory.json too, per interface
        print(f"dsomarket: {len(recovered)} interfaces cleared again on a fresh worker after theirs was lost "
              f"(first: {recovered[0]})", file=sys.stderr)
    failed = [rep for rep in reports if rep["status"] != "optimal"]
    if failed:
        first = failed[0]
        print(f"dsomarket: {len(failed)} of {len(reports)} interfaces did not clear; first: "
              f"{first['interface_id']}: {first['status']}" + (f" ({first['error']})" if first.get("error") else ""),
              file=sys.stderr)
        return 1
    return 0


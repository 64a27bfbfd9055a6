"""The lossless curve tracer of this checkout against the tracer of an earlier commit, interleaved in one process.

Run: ``python benchmarks/bench_tracer_ab.py [--base REV] [--repeats 2]``; ``--first-basis`` times instead
this checkout's first basis of a trace three ways (slack-basis start, cold HiGHS, warm from a clearing);
``--lossaware`` the loss-aware curves of ``bench_physics.py --only curves`` against ``REV``'s
(``engine/losscurve.py`` at ``REV`` loaded too, on its tracer); ``--feeder DIR [DIR ...]`` those of saved feeders
instead (``dsomarket territory synth``'s), and ``--against-clear N`` both sides' curves against ``clear`` and its AC
power flow at N seeded prices.

``engine/interface.py`` at ``--base`` (a git revision of this repository; with ``engine/tracer.py``
at that revision when it has one) is loaded as a module of its own beside the checkout's, and both
trace the same books in turn, ``--repeats`` times; the best CPU seconds of each are compared (CPU,
not wall: on a shared machine the wall time of one run swings by 2x, the CPU time much less).
Cases: 1,000 buses (``synthetic(1000, 1)``) with 10,000 bids priced to the cent and to whole units,
and with 1,000 bids (``bench_curve.py``'s books); and ``gate33``,
the curve work of ``bench_service.py``'s gate closure offline: ieee33, 100,000 bids over 4 hourly
intervals at 20 price levels per side. Each line says whether both tracers gave the same bands
(imports within 1 W, step prices within 1e-7 relative) and whether they are the same to the bit.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from bench_curve import LOSSLESS, make_bids  # noqa: E402
from dsomarket.engine import interface  # noqa: E402
from dsomarket.engine.bids import MarketRules, validate_bids  # noqa: E402
from dsomarket.engine.feeders import ieee33, synthetic  # noqa: E402


def _git_show(root: str, rev: str, path: str) -> str | None:
    out = subprocess.run(["git", "-C", root, "show", f"{rev}:{path}"], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def _load(name: str, text: str, folder: str):
    path = os.path.join(folder, f"{name}.py")
    with open(path, "w") as f:
        f.write(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module     # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def load_base(rev: str):
    """``engine/interface.py`` at ``rev`` as a module named ``interface_base``, with the tracer it had.

    From 4daea88 on the tracer is ``engine/tracer.py``: it is loaded at ``rev`` too (``tracer_base``)
    and the base interface imports it instead of this checkout's, or both sides would trace alike; so are
    its compiled kernels, ``engine/tracerjit.py``, where ``rev`` has them (compiled afresh, a few seconds).
    """
    root = os.path.join(os.path.dirname(__file__), "..")
    folder = tempfile.mkdtemp()
    text = _git_show(root, rev, "engine/interface.py")
    tracer = _git_show(root, rev, "engine/tracer.py")
    kernels = _git_show(root, rev, "engine/tracerjit.py")
    if kernels is not None:      # the base's compiled kernels too (their signatures change with the tracer)
        _load("tracerjit_base", kernels, folder)
        tracer = tracer.replace("from dsomarket.engine import losses, tracerjit",
                                "from dsomarket.engine import losses\nimport tracerjit_base as tracerjit")
    if tracer is not None:
        _load("tracer_base", tracer, folder)
        text = text.replace("from dsomarket.engine.tracer import", "from tracer_base import")
    curve = _git_show(root, rev, "engine/losscurve.py")
    if curve is not None and tracer is not None:   # the loss-aware curve at rev too, on the base's tracer
        if kernels is not None:
            curve = curve.replace("from dsomarket.engine import losses, successive, tracerjit",
                                  "from dsomarket.engine import losses, successive\nimport tracerjit_base as tracerjit")
        _load("losscurve_base", curve.replace("from dsomarket.engine.tracer import", "from tracer_base import"), folder)
        text = text.replace("from dsomarket.engine.losscurve import", "from losscurve_base import")
    return _load("interface_base", text, folder)


def gate_book(rules: MarketRules, n: int = 100_000, seed: int = 1):
    """bench_service.py's market offline: ieee33, 4 hourly intervals, 20 price levels per side."""
    feeder = ieee33()
    rng = np.random.default_rng(seed)
    day = [datetime(2026, 3, 1, tzinfo=timezone.utc) + timedelta(hours=h) for h in range(4)]
    side = rng.choice(["buy", "sell"], n)
    level = rng.integers(0, 20, n)
    bids = pl.DataFrame({"bid_id": [f"s{k}" for k in range(n)], "bus": rng.choice([str(b) for b in range(2, 34)], n),
                         "side": side, "quantity_kw": np.round(rng.uniform(0.5, 5.0, n), 1),
                         "price": np.where(side == "sell", level * 2, 40 + level * 2).astype(float),
                         "interval": pl.Series([day[h] for h in rng.integers(0, 4, n)])})
    return feeder, validate_bids(bids, feeder, rules)


def same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    return a.height == b.height and bool(
        np.allclose(a["import_kw"].to_numpy(), b["import_kw"].to_numpy(), rtol=0.0, atol=1e-3)
        and np.allclose(a["price_high"].to_numpy(), b["price_high"].to_numpy(), rtol=1e-7, atol=1e-7))


def identical(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    """Whether the bands are the same to the bit (every column's values, signs of zeros included)."""
    return a.columns == b.columns and a.height == b.height and all(
        a[c].dtype == b[c].dtype and (a[c].to_numpy().tobytes() == b[c].to_numpy().tobytes() if a[c].dtype.is_numeric()
                                      else a[c].to_list() == b[c].to_list()) for c in a.columns)


def first_basis(repeats: int) -> None:
    """CPU milliseconds of the tracer's first basis at the floor (:meth:`engine.tracer._Probe.start`), best of
    ``repeats``: from no basis (the slack-basis start), as a cold HiGHS solve, and warm from a clearing's basis at
    50 per MWh (how ``trace_curve(market=)`` starts, as the territory calls it)."""
    from dsomarket.engine.clearing import NodalMarket
    from dsomarket.engine.tracer import _Probe

    rules = MarketRules()
    feeder = synthetic(1000, 1)
    for n in (1_000, 10_000):
        book = validate_bids(make_bids(feeder, n, 2, 2), feeder, rules)
        best = {"slack-basis start": np.inf, "cold HiGHS": np.inf, "warm from a clearing": np.inf}
        for _ in range(repeats):
            for mode in best:
                market = NodalMarket(feeder, book, 50.0, rules, options=LOSSLESS)
                if mode == "warm from a clearing":
                    market.solve_raw()
                probe = _Probe(market, 0)
                t0 = time.process_time()
                if mode == "cold HiGHS":
                    probe.solve(rules.price_floor)
                else:
                    probe.start(rules.price_floor)
                best[mode] = min(best[mode], time.process_time() - t0)
        print(f"first basis, 1k buses / {n:,} bids: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in best.items()))


def lossaware(base, repeats: int, feeders: list[str] | None = None, against: int = 0) -> None:
    """The loss-aware curves of ``benchmarks/bench_physics.py --only curves`` (ieee33 / 80 bids, 1k buses / 1k bids),
    or of the saved ``feeders`` (directories with their ``bids.csv``, as ``dsomarket territory synth`` writes them),
    this checkout's and ``rev``'s interleaved (CPU seconds, best of ``repeats``), with the lossless curve's time,
    each side's converged clearings, re-linearisations walked, bands and reported bound, and whether the bands
    are the same (where the method changed they need not be). ``against``: that many seeded prices off both
    curves' breakpoints (a tenth of a cent away), from the floor's side of the bids' prices to the cap's, where both
    curves are compared with ``clear`` (this checkout's) and the AC power flow of its dispatch, as
    ``bench_physics.py`` and ``bench_hidden_physics.py`` compare a curve: the worst of each side, % of the AC import."""
    from bench_physics import LOSSAWARE, synthetic_bids
    from dsomarket.clients.files import read_feeder, read_table
    from dsomarket.engine.clearing import ClearingOptions, clear

    rules = MarketRules()
    if feeders:
        cases = []
        for folder in feeders:
            f = read_feeder(folder)
            cases.append((folder, f, validate_bids(read_table(os.path.join(folder, "bids.csv"), "bids"), f, rules)))
    else:
        cases = []
        for buses, n_bids in ((33, 80), (1000, 1000)):
            f = ieee33() if buses == 33 else synthetic(buses, 5)
            cases.append((f"{buses} buses / {n_bids} bids", f,
                          validate_bids(synthetic_bids(f, n_bids, 5, kw=(5.0, 60.0)), f, rules)))
    for name, f, book in cases:
        best, out = {}, {}
        for _ in range(repeats):
            for label, module, options in (("lossless", interface, LOSSLESS), ("base", base, LOSSAWARE),
                                           ("this", interface, LOSSAWARE)):
                t0 = time.process_time()
                out[label] = module.trace_curve(f, book, rules, options=options)
                best[label] = min(best.get(label, np.inf), time.process_time() - t0)
        print(f"{name}: lossless {best['lossless']:.3f} s")
        for label in ("base", "this"):
            chk = out[label].ac_check
            print(f"  {label}: {best[label]:.3f} s = {best[label] / best['lossless']:.1f}x the lossless "
                  f"({chk['clearings']} clearings, {chk['anchored']} re-linearisations walked, "
                  f"{out[label].bands.height} bands, reported bound {chk['max_error_pct']:.3f} %)")
        print(f"  this/base {best['this'] / best['base']:.2f}; same bands as base: "
              f"{same(out['base'].bands, out['this'].bands)} (to the bit: {identical(out['base'].bands, out['this'].bands)})")
        if against:
            prices = book.table["price"].to_numpy()
            breaks = np.concatenate([out[label].bands["price_high"].to_numpy()[:-1] for label in ("base", "this")])
            sampled = np.random.default_rng(0).uniform(prices.min() - 20.0, prices.max() + 20.0, 4 * against)
            sampled = [p for p in sampled if np.min(np.abs(breaks - p), initial=np.inf) >= 1e-3][:against]
            worst = {"base": (0.0, None), "this": (0.0, None)}
            for p in sampled:
                res = clear(f, book, float(p), rules=rules, options=ClearingOptions(formulation="lossaware"))
                ac = res.ac_check["import_kw"][0]
                for label in worst:
                    q = out[label].import_at(0, float(p))
                    err = max(abs(q - res.interface_import_kw[0]), abs(q - ac)) / max(abs(ac), 1.0) * 100.0
                    worst[label] = max(worst[label], (err, float(p)), key=lambda e: e[0])
            print(f"  against clear and its AC power flow at {len(sampled)} prices off the breakpoints: worst "
                  + ", ".join(f"{label} {e:.4f} % (at {p:.4f})" for label, (e, p) in worst.items() if p is not None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="4daea88", help="git revision of the tracer to compare with")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None,
                        help="cases to run: 10k-cent, 10k-unit, 1k, gate33 (all by default)")
    parser.add_argument("--first-basis", action="store_true",
                        help="instead: time the tracer's first basis three ways (this checkout only)")
    parser.add_argument("--lossaware", action="store_true",
                        help="instead: the loss-aware curves of bench_physics.py --only curves, against --base's")
    parser.add_argument("--feeder", nargs="+", default=None,
                        help="with --lossaware: the curves of these saved feeders (DIR/bids.csv) instead")
    parser.add_argument("--against-clear", type=int, default=0, metavar="N",
                        help="with --lossaware: compare both curves with clear and its AC power flow at N prices")
    args = parser.parse_args(argv)
    if args.first_basis:
        first_basis(max(args.repeats, 5))
        return 0
    base = load_base(args.base)
    if args.lossaware:
        print(f"CPU seconds, best of {args.repeats}; base = {args.base}")
        lossaware(base, args.repeats, args.feeder, args.against_clear)
        return 0
    rules = MarketRules()
    feeder = synthetic(1000, 1)
    cases = {f"1k buses / 10k bids, prices to {10.0 ** -d:g}": (feeder, validate_bids(make_bids(feeder, 10_000, 2, d),
                                                                                        feeder, rules))
             for d in (2, 0)}
    cases["1k buses / 1k bids"] = (feeder, validate_bids(make_bids(feeder, 1_000, 2, 2), feeder, rules))
    cases["gate33 (ieee33, 100k bids, 4 intervals)"] = gate_book(rules)
    if args.only:
        tags = dict(zip(cases, ("10k-cent", "10k-unit", "1k", "gate33")))
        cases = {name: case for name, case in cases.items() if tags[name] in args.only}
    best: dict = {}
    bands: dict = {}
    for _ in range(args.repeats):
        for name, (f, book) in cases.items():
            for label, module in (("base", base), ("this", interface)):
                t0 = time.process_time()
                curve = module.trace_curve(f, book, rules, options=LOSSLESS)
                seconds = time.process_time() - t0
                best[name, label] = min(best.get((name, label), np.inf), seconds)
                bands[name, label] = curve.bands
    print(f"CPU seconds, best of {args.repeats}; base = {args.base}")
    for name in cases:
        b, t = best[name, "base"], best[name, "this"]
        print(f"{name:42s} base {b:7.3f}  this {t:7.3f}  this/base {t / b:5.2f}  "
              f"{bands[name, 'this'].height:5d} bands, same as base: {same(bands[name, 'base'], bands[name, 'this'])}"
              f" (to the bit: {identical(bands[name, 'base'], bands[name, 'this'])})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Physics of the default (loss-aware) clearing: accuracy against AC, speed against the lossless LP and the AC OPF.

Run: ``python benchmarks/bench_physics.py [--quick]``. In one run it prints

1. **DLMP error vs pandapower's AC OPF** (PIPS, ``tests/acopf.py``): the worst absolute DLMP
   difference (per MWh), dispatch difference (kW) and relative cost difference over a seeded set of
   ieee33 / ieee69 cases with a rated line and a voltage floor (unity-pf bids, linear costs), for the
   loss-aware default and for the lossless LP;
2. **interface import error vs the AC power flow** of each clearing's own dispatch (%), both models,
   on the same cases and on synthetic feeders;
3. **clearing time** at 1,000 buses / 10,000 bids: loss-aware default / lossless LP (target <= 3x)
   and pandapower AC OPF / loss-aware default on a 1,000-bus feeder with 100 bids (target >= 50x);
4. **curve time**: loss-aware curve / lossless curve on ieee33 / 80 bids and (without ``--quick``) a
   1,000-bus synthetic feeder / 1,000 bids (target <= 2x), with the loss-aware curve against ``clear`` and
   the AC power flow of its dispatch at seeded prices off the breakpoints;
5. **the hard cases**: the same agreement on the ieee33 cases of ``tests/test_losses.py`` where several
   bids clear part-way because of their losses (seeds 0, 1, 3, 5; 0 and 1 with ``--quick``).

Times are CPU seconds of this process (``time.process_time``), and ratios are taken in the same
run (the clearing times of section 3 interleaved, best of 5): on a shared machine wall-clock times
swing several-fold with other people's load, CPU times much less. HiGHS runs on one thread;
pandapower's OPF may use more (BLAS), which its CPU time counts.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import polars as pl

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.engine.bids import MarketRules, validate_bids  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions, clear  # noqa: E402
from dsomarket.engine.feeders import ieee33, ieee69, synthetic  # noqa: E402
from dsomarket.engine.interface import trace_curve  # noqa: E402

LOSSLESS = ClearingOptions(formulation="lossless", ac_check=False)
LOSSAWARE = ClearingOptions(formulation="lossaware", ac_check=False)


def opf_case(feeder, seed: int, vmin: float, line: str, rating: float, n: int = 24):
    """Every line rated (8 MVA, ``line`` at ``rating``), a voltage floor, ``n`` unity-pf bids (as tests/test_losses.py)."""
    rng = np.random.default_rng(seed)
    lines = feeder.lines.with_columns(pl.when(pl.col("line") == line).then(pl.lit(rating))
                                      .otherwise(pl.lit(8000.0)).alias("s_max_kva"))
    f = feeder.with_changes(lines=lines, buses=feeder.buses.with_columns(pl.lit(vmin).alias("vmin_pu")))
    ids = feeder.buses["bus"].to_list()[1:]
    bids = pl.DataFrame({"bid_id": [f"b{k}" for k in range(n)], "bus": rng.choice(ids, n),
                         "side": np.where(rng.random(n) < 0.75, "sell", "buy"),
                         "quantity_kw": rng.uniform(50, 400, n).round(1), "price": rng.uniform(20, 90, n).round(2)})
    return f, bids


def synthetic_bids(feeder, n: int, seed: int, kw=(1.0, 50.0)) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    buses = feeder.buses["bus"].to_numpy()[1:]
    return pl.DataFrame({"bid_id": [f"b{k}" for k in range(n)], "bus": rng.choice(buses, n),
                         "side": rng.choice(["buy", "sell"], n), "quantity_kw": rng.uniform(*kw, n),
                         "price": np.round(rng.uniform(0, 150, n), 2)})


def import_error_pct(res) -> float:
    """|LP import - AC import of its own dispatch| / AC import, %, worst interval (needs ac_check on)."""
    lp = res.interface_import_kw
    ac = np.asarray(res.ac_check["import_kw"])
    return float(np.max(np.abs(lp - ac) / np.maximum(np.abs(ac), 1.0)) * 100.0)


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.process_time()
        out = fn()
        times.append(time.process_time() - t0)
    return min(times), out


def accuracy(quick: bool) -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from tests.acopf import ac_opf

    cases = [("ieee33", ieee33, s, 0.95, "2", 3000.0) for s in range(3 if quick else 6)]
    cases += [("ieee69", ieee69, s, 0.94, "3", 3000.0) for s in range(2 if quick else 4)]
    print("1-2. accuracy against pandapower AC OPF and the AC power flow of each dispatch")
    print(f"{'case':>12} {'model':>10} {'dlmp err':>10} {'disp err kW':>12} {'cost err %':>11} "
          f"{'import err %':>13} {'iters':>6}")
    worst = {"lossaware": [0.0, 0.0, 0.0, 0.0], "lossless": [0.0, 0.0, 0.0, 0.0]}
    skipped = 0
    for name, make, seed, vmin, line, rating in cases:
        f, bids = opf_case(make(), seed, vmin, line, rating)
        ref = ac_opf(f, bids, 50.0)
        if not ref.converged:
            skipped += 1
            continue
        for model in ("lossaware", "lossless"):
            res = clear(f, bids, 50.0, options=ClearingOptions(formulation=model))
            if not res.ok:
                print(f"{name}/{seed:>3} {model:>10} {res.status}")
                continue
            dlmp = dict(zip(res.prices["bus"], res.prices["dlmp"]))
            cleared = dict(zip(res.dispatch["bid_id"], res.dispatch["cleared_kw"]))
            errs = [max(abs(dlmp[b] - ref.dlmp[b]) for b in dlmp),
                    max(abs(cleared[b] - ref.cleared_kw[b]) for b in cleared),
                    abs(-res.welfare - ref.cost) / abs(ref.cost) * 100.0, import_error_pct(res)]
            worst[model] = [max(a, b) for a, b in zip(worst[model], errs)]
            iters = res.convergence["iterations"] if res.convergence else "-"
            print(f"{name}/{seed:>5} {model:>10} {errs[0]:>10.4f} {errs[1]:>12.3f} {errs[2]:>11.5f} "
                  f"{errs[3]:>13.5f} {iters:>6}")
    for model, w in worst.items():
        print(f"  worst {model:>10}: DLMP {w[0]:.4f} per MWh, dispatch {w[1]:.3f} kW, cost {w[2]:.5f} %, "
              f"import vs AC {w[3]:.5f} %")
    if skipped:
        print(f"  ({skipped} cases where the AC OPF did not converge are left out)")
    print("  interface import error vs the AC power flow of the dispatch, synthetic feeders:")
    for buses, n_bids, seed in ((200, 2000, 1), (1000, 10000, 2))[: 1 if quick else 2]:
        f = synthetic(buses, seed)
        bids = synthetic_bids(f, n_bids, seed)
        for model in ("lossaware", "lossless"):
            res = clear(f, bids, 50.0, options=ClearingOptions(formulation=model))
            print(f"    {buses:>5} buses {n_bids:>6} bids {model:>10}: {import_error_pct(res):.5f} %"
                  + (f" ({res.convergence['iterations']} LP solves, converged "
                     f"{res.convergence['converged']})" if res.convergence else ""))


def speed(quick: bool) -> None:
    print("3. clearing time (CPU seconds, best of repeats)")
    buses, n_bids = (300, 3000) if quick else (1000, 10000)
    rules = MarketRules()
    repeat = 2 if quick else 5
    # Seed 7 converges in plain successive LP; seed 2 has a bid held inside its quantity by the losses.
    for seed in (7, 2):
        f = synthetic(buses, seed)
        book = validate_bids(synthetic_bids(f, n_bids, seed), f, rules)
        # The two in turn, best of each: a load that comes and goes then reaches both alike (timed one after the
        # other, best of 3, seed 7's lossless clearing read 0.082 s in one run and 0.051-0.053 s in others).
        t_lossless = t_aware = np.inf
        for _ in range(repeat):
            t, _ = best(lambda: clear(f, book, 50.0, options=LOSSLESS), 1)
            t_lossless = min(t_lossless, t)
            t, res = best(lambda: clear(f, book, 50.0, options=LOSSAWARE), 1)
            t_aware = min(t_aware, t)
        print(f"  {buses} buses / {n_bids} bids (seed {seed}): lossless {t_lossless:.3f} s, loss-aware "
              f"{t_aware:.3f} s ({res.convergence['iterations']} LP solves, {res.convergence['pinned_bids']} "
              f"pinned): ratio {t_aware / t_lossless:.2f}x (target <= 3x)")
    try:
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
        from tests.acopf import ac_opf
    except ImportError:
        print("  pandapower not installed: AC OPF comparison skipped")
        return
    opf_buses = 300 if quick else 1000
    g = synthetic(opf_buses, 11)
    small = synthetic_bids(g, 100, 11, kw=(10.0, 100.0))
    t_aware, res = best(lambda: clear(g, small, 50.0, options=LOSSAWARE), 2)
    t0 = time.process_time()
    ref = ac_opf(g, small, 50.0)
    t_opf = time.process_time() - t0
    dlmp = dict(zip(res.prices["bus"], res.prices["dlmp"]))
    err = max(abs(dlmp[b] - ref.dlmp[b]) for b in dlmp) if ref.converged else float("nan")
    print(f"  {opf_buses} buses / 100 bids: pandapower AC OPF {t_opf:.2f} s (converged {ref.converged}), "
          f"loss-aware {t_aware:.3f} s: AC OPF / loss-aware {t_opf / t_aware:.0f}x (target >= 50x); "
          f"worst DLMP difference {err:.4f} per MWh")


def curves(quick: bool) -> None:
    print("4. curve time: loss-aware / lossless; the loss-aware curve against clear and the AC power flow")
    for buses, n_bids in ((33, 80),) + (() if quick else ((1000, 1000),)):
        f = ieee33() if buses == 33 else synthetic(buses, 5)
        rules = MarketRules()
        book = validate_bids(synthetic_bids(f, n_bids, 5, kw=(5.0, 60.0)), f, rules)
        t_lossless, lossless = best(lambda: trace_curve(f, book, rules, options=LOSSLESS), 2)
        t_aware, aware = best(lambda: trace_curve(f, book, rules, options=LOSSAWARE), 2)
        chk = aware.ac_check
        print(f"  {buses} buses / {n_bids} bids: lossless {t_lossless:.3f} s ({lossless.bands.height} bands), "
              f"loss-aware {t_aware:.3f} s ({aware.bands.height} bands from {chk['clearings']} converged "
              f"clearings and {chk['anchored']} re-linearisations walked, {chk['unresolved_steps']} unresolved "
              f"steps, reported max error {chk['max_error_pct']:.3f} %): ratio {t_aware / t_lossless:.2f}x "
              f"(target <= 2x)")
        agreement(f, book, rules, aware, np.random.default_rng(0).uniform(-20, 170, 10 if quick or buses > 100 else 40))


def hard(quick: bool) -> None:
    """The hard ieee33 cases of tests/test_losses.py (several bids held part-way by their losses against a
    voltage floor): the loss-aware curve against clear at seeded prices inside the bids' price range and at
    the prices that test names."""
    print("5. the loss-aware curve against clear and the AC power flow on the hard ieee33 cases")
    for seed in (0, 1) if quick else (0, 1, 3, 5):
        f, bids = opf_case(ieee33(), seed, 0.95, "2", 3000.0)
        rules = MarketRules()
        book = validate_bids(bids, f, rules)
        t_aware, aware = best(lambda: trace_curve(f, book, rules, options=LOSSAWARE), 1)
        print(f"  ieee33 hard case seed {seed}: loss-aware curve {t_aware:.3f} s, {aware.bands.height} bands, "
              f"reported max error {aware.ac_check['max_error_pct']:.3f} % ({aware.ac_check['max_error_kw']:.2f} kW), "
              f"{aware.ac_check['unresolved_steps']} unresolved steps, {aware.ac_check['clearings']} clearings")
        agreement(f, book, rules, aware,
                  list(np.random.default_rng(seed).uniform(20, 90, 25)) + [61.3, 68.15, 71.5, 88.5])


def agreement(f, book, rules, curve, prices) -> None:
    """The curve against ``clear`` and the AC power flow of its dispatch at ``prices`` off the breakpoints."""
    breaks = curve.bands["price_high"].to_numpy()[:-1]
    prices = [p for p in prices if np.min(np.abs(breaks - p)) >= 1e-3]
    errs = []
    for p in prices:
        res = clear(f, book, p, rules=rules, options=ClearingOptions(formulation="lossaware"))
        ac = res.ac_check["import_kw"][0]
        ours = curve.import_at(0, p)
        errs.append(max(abs(ours - res.interface_import_kw[0]), abs(ours - ac)) / max(abs(ac), 1.0) * 100.0)
    worst = int(np.argmax(errs))
    print(f"    at {len(prices)} prices off the breakpoints: worst |curve - clear| or |curve - AC| "
          f"{errs[worst]:.3f} % of the AC import at {prices[worst]:.4f} (target <= 0.5 %); "
          f"over 0.5 % at {sum(e > 0.5 for e in errs)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller cases (a smoke run)")
    p.add_argument("--only", choices=("accuracy", "speed", "curves", "hard"), help="run one section")
    args = p.parse_args(argv)
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cpus")
    for name, section in (("accuracy", accuracy), ("speed", speed), ("curves", curves), ("hard", hard)):
        if args.only in (None, name):
            section(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())

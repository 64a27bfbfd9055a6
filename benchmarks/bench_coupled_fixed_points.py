"""Which fixed point a storage horizon's loss-aware clearing keeps at negative prices: each interval's import
against its own ISO price, fresh, warm and on the interval's curve.

Run: ``python benchmarks/bench_coupled_fixed_points.py [--outage] [--interval 1] [--from -42.6] [--to -41.4]
[--step 0.05] [--no-curve]``. The case is ``bench_hidden_physics.make_case("ieee33", 908)`` (bid b8, 815.5 kW
at bus 21, has two fixed points from about -42.1 to -41.8 per MWh: ``bench_fixed_points.py``) every hour of three,
with a 200 kW / 400 kWh battery at bus 21 (``tests/test_coupled_branches.spread``), the other hours at
``FORECAST`` (-42.2, -42.0, -41.9). ``--outage``: line 17 out in the last hour (a ``CoupledMarket`` of two runs;
without it the horizon is one ``NodalMarket``). At each price of ``--interval`` it prints that interval's
import (the AC power flow's, kW) and the welfare (per hour) of a fresh clearing (``clear_runs``) with how many
fixed points it compared, of the same horizon as a ``CoupledMarket`` (fresh), of a kept market moved warm from
price to price upwards, and the interval's loss-aware curve at the forecast (``trace_runs``, ``import_at``);
then the largest rise of each in price (a global optimum's import cannot rise: revealed preference), the largest
gap between fresh and warm, between the curve and the fresh clearings, the curve's own check against ``clear``
and the AC power flow, and the CPU seconds of each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from bench_hidden_physics import make_case  # noqa: E402

from dsomarket.clients.files import read_feeder, read_table  # noqa: E402
from dsomarket.engine.bids import MarketRules  # noqa: E402
from dsomarket.engine.clearing import ClearingOptions, NodalMarket  # noqa: E402
from dsomarket.engine.runs import CoupledMarket, clear_runs, trace_runs  # noqa: E402
from tests.test_coupled_branches import FORECAST, spread  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--outage", action="store_true")
    p.add_argument("--interval", type=int, default=1)
    p.add_argument("--from", dest="low", type=float, default=-42.6)
    p.add_argument("--to", dest="high", type=float, default=-41.4)
    p.add_argument("--step", type=float, default=0.05)
    p.add_argument("--no-curve", dest="curve", action="store_false")
    args = p.parse_args()
    rules, t = MarketRules(), args.interval
    with tempfile.TemporaryDirectory() as tmp:
        case = make_case("ieee33", 908, Path(tmp))
        feeder = read_feeder(str(case.feeder_dir))
        book, runs, resources = spread(feeder, read_table(str(case.bids)), args.outage)
    prices = np.round(np.arange(args.low, args.high + args.step / 2, args.step), 6)

    def iso(price: float) -> np.ndarray:
        out = FORECAST.copy()
        out[t] = price
        return out

    kept = (CoupledMarket(runs, book, iso(prices[0]), rules, resources, ClearingOptions()) if len(runs) > 1 else
            NodalMarket(feeder, book, iso(prices[0]), rules, resources, ClearingOptions()))
    cols: dict[str, list] = {"fresh": [], "horizon": [], "warm": []}
    cpu = dict.fromkeys(cols, 0.0)
    for price in prices:
        for name in cols:
            t0 = time.process_time()
            if name == "fresh":
                res = clear_runs(runs, book, iso(price), rules=rules, resources=resources)
            elif name == "horizon":
                res = CoupledMarket(runs, book, iso(price), rules, resources, ClearingOptions()).solve()
            else:
                kept.set_iso_price(iso(price))
                res = kept.solve()
            cpu[name] += time.process_time() - t0
            cols[name].append((res.ac_check["import_kw"][t], res.welfare, res.convergence["branches"]))
    curve = None
    if args.curve:
        t0 = time.process_time()
        curve = trace_runs(runs, book, rules, resources, forecast=FORECAST, intervals=[t])   # its bands only
        cpu["curve"] = time.process_time() - t0
        cols["curve"] = [(curve.import_at(0, price), np.nan, 0) for price in prices]
    outage = ", line 17 out in the last hour" if args.outage else ""
    print(f"{case.name} x {len(FORECAST)} hours, battery at bus 21{outage}; interval {t}'s import kW / welfare per "
          "hour (fixed points compared)")
    print("price     | " + " | ".join(name.ljust(22) for name in cols))
    for k, price in enumerate(prices):
        print(f"{price:9.3f} | " + " | ".join(f"{v[k][0]:8.1f} {v[k][1]:9.4f} ({v[k][2]})" for v in cols.values()))
    imports = {name: np.array([v[0] for v in col]) for name, col in cols.items()}
    for name, q in imports.items():
        rise = np.diff(q)
        print(f"{name}: largest rise {max(rise.max(), 0.0):.1f} kW (from {prices[rise.argmax()]:g} to "
              f"{prices[rise.argmax() + 1]:g}), CPU {cpu[name]:.1f} s")
    gap = np.abs(imports["fresh"] - imports["warm"])
    print(f"fresh against warm: largest gap {gap.max():.3f} kW at {prices[gap.argmax()]:g}; "
          f"fresh against horizon: {np.abs(imports['fresh'] - imports['horizon']).max():.3f} kW")
    if curve is not None:
        rel = np.abs(imports["curve"] - imports["fresh"]) / np.abs(imports["fresh"])
        print(f"curve against fresh: largest {100 * rel.max():.3f} % at {prices[rel.argmax()]:g}; "
              f"{int((rel > 5e-3).sum())} of {len(prices)} prices over 0.5 %; its check: "
              f"{curve.ac_check['max_error_pct']:.3f} % over {curve.ac_check['clearings']} clearings, "
              f"{curve.bands.height} bands")


if __name__ == "__main__":
    main()

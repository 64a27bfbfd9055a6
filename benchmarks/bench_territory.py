"""A territory cleared by the runner: workers' speed-up, warm real-time re-clears, memory per interface.

Run: ``python benchmarks/bench_territory.py [--feeders 1000] [--buses 1000] [--bids 1000] [--seed 1]
[--workers 1 2] [--ray]``.

Interfaces are ``engine.territory.synthetic_territory`` feeders (``synthetic_member``) (built in the workers, outside the
timings). For each worker count ``w`` it starts a :class:`~dsomarket.server.runner.LocalRunner` of ``w``
processes (``--ray``: also a :class:`RayRunner` on a local Ray of that many CPUs) and times

- ``cold+curves``: the day-ahead cycle: every interface cleared cold at 50 per MWh (model build,
  solve, DLMPs, AC check) and its exact curve traced, with the ISO offer;
- ``cold clear``: a fresh runner's first clearing of every interface (AC check off);
- ``1st warm``: the same runner's next clearing at 55 per MWh, in the processes that kept the models
  built (AC check off), as the first 5-minute real-time re-clear would: the first re-solve of the full
  LP from the basis HiGHS postsolved after the presolved cold solve (with HiGHS's default exact
  steepest-edge weights it cost 58-78 % of the cold clearing; Devex weights, :class:`engine.solver.HighsSolver`,
  make it cost what later re-clears cost);
- ``warm``: the mean of the three re-clears after it (60, 45, 52 per MWh): the steady state of the
  real-time cycles.

It prints the seconds, the speed-up of each worker count against one worker, the warm/cold ratio, the
serial projection to ``--project`` interfaces, and each worker's peak memory per interface it holds
(the growth of its peak RSS from before loading to after the cycles, divided by its interfaces).
Results are checked identical across worker counts (and Ray).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from dsomarket.engine.clearing import ClearingOptions  # noqa: E402
from dsomarket.engine.territory import Interface, substation, synthetic_member  # noqa: E402
from dsomarket.server.runner import Cycle, InterfaceOutcome, Job, LocalRunner, RayRunner  # noqa: E402


def synth_one(k: int, n_feeders: int, buses: int, bids: int, seed: int) -> Interface:
    """Interface k of the synthetic territory, built where it will be cleared."""
    f, b = synthetic_member(k, n_feeders, buses, bids, seed)
    return substation(f.name, [f], [b])


def digest(outcome: InterfaceOutcome) -> dict:
    """What crosses back to the driver: the territory report, the curve's bands and the time."""
    rep = outcome.report()
    if outcome.clearing is not None and outcome.clearing.ok:
        rep["prices_hash"] = hash(outcome.clearing.prices.hash_rows().sum())
    if outcome.curve is not None:
        rep["bands_hash"] = hash(outcome.curve.bands.hash_rows().sum())
    rep["seconds"] = outcome.seconds
    return rep


def timed(r, cycle: Cycle) -> tuple[float, list[dict]]:
    t0 = time.perf_counter()
    reps = r.run(cycle, digest)
    return time.perf_counter() - t0, reps


def measure(make, jobs: list[Job], formulation: str) -> dict:
    out: dict = {}
    with make(ClearingOptions(formulation=formulation)) as r:
        r.load(jobs)
        out["cold+curves"], out["reports"] = timed(r, Cycle(50.0, curves=True))
    with make(ClearingOptions(formulation=formulation, ac_check=False)) as r:
        before = r.peak_rss_kb()
        r.load(jobs)
        out["cold clear"], cold = timed(r, Cycle(50.0))
        out["1st warm"], warm = timed(r, Cycle(55.0))
        steady = [timed(r, Cycle(p)) for p in (60.0, 45.0, 52.0)]
        out["warm"] = sum(t for t, _ in steady) / len(steady)
        after = r.peak_rss_kb()
        out["kb_per_interface"] = [(a - b) / max(1, n) for a, b, n in
                                   zip(after, before, _per_shard(len(jobs), r.shards), strict=True)]
    out["solve_cold"] = sum(x["seconds"] for x in cold)
    out["solve_warm"] = sum(x["seconds"] for x in warm)
    out["solve_steady"] = sum(x["seconds"] for _, reps in steady for x in reps) / len(steady)
    return out


def _per_shard(n: int, shards: int) -> list[int]:
    return [n // shards + (k < n % shards) for k in range(shards)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--feeders", type=int, default=1000)
    p.add_argument("--buses", type=int, default=1000)
    p.add_argument("--bids", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--ray", action="store_true", help="also run on a local Ray instance")
    p.add_argument("--project", type=int, default=1000, help="interfaces to project the figures to")
    p.add_argument("--formulation", default="lossaware", choices=["lossaware", "lossless"],
                   help="clearing model (the engine's default is lossaware; the recorded figures are lossless)")
    a = p.parse_args(argv)
    print(f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{a.feeders} interfaces of {a.buses} buses and {a.bids} bids (seed {a.seed}), {a.formulation}")
    jobs = [Job(f"feeder-{k:04d}", synth_one, (k, a.feeders, a.buses, a.bids, a.seed)) for k in range(a.feeders)]
    runs: dict[str, dict] = {}
    for w in a.workers:
        runs[f"{w} worker{'s' if w > 1 else ''}"] = measure(lambda o, w=w: LocalRunner(w, options=o), jobs,
                                                                   a.formulation)
    if a.ray:
        import ray

        ray.init(num_cpus=max(a.workers), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            runs[f"Ray, {max(a.workers)} actors"] = measure(
                lambda o: RayRunner(shards=max(a.workers), options=o), jobs, a.formulation)
        finally:
            ray.shutdown()
    base_name = next(iter(runs))
    base = runs[base_name]
    reference = [{k: v for k, v in r.items() if k != "seconds"} for r in base["reports"]]
    print(f"\n{'runner':<16}{'cold+curves s':>14}{'speed-up':>10}{'cold clear s':>14}{'1st warm s':>12}"
          f"{'warm s':>9}{'1st/cold':>10}{'warm/cold':>11}{'MiB/interface':>15}  identical")
    for name, m in runs.items():
        same = [{k: v for k, v in r.items() if k != "seconds"} for r in m["reports"]] == reference
        mib = max(m["kb_per_interface"]) / 1024
        print(f"{name:<16}{m['cold+curves']:>14.2f}{base['cold+curves'] / m['cold+curves']:>9.2f}x"
              f"{m['cold clear']:>14.2f}{m['1st warm']:>12.2f}{m['warm']:>9.2f}"
              f"{m['1st warm'] / m['cold clear']:>10.0%}{m['warm'] / m['cold clear']:>11.0%}"
              f"{mib:>15.2f}  {'yes' if same else 'NO'}")
    ok = sum(r["status"] == "optimal" for r in base["reports"])
    bands = sum(r.get("curve_bands", 0) for r in base["reports"])
    per = base["cold+curves"] / a.feeders
    print(f"\n{ok}/{a.feeders} interfaces optimal, {bands} curve bands in all; in-worker time of the clearing "
          f"alone: cold {base['solve_cold']:.2f} s, 1st warm {base['solve_warm']:.2f} s "
          f"({base['solve_warm'] / base['solve_cold']:.0%}), warm {base['solve_steady']:.2f} s "
          f"({base['solve_steady'] / base['solve_cold']:.0%})")
    print(f"projection to {a.project} interfaces from {base_name}: {per * a.project:.0f} s serial; "
          + ", ".join(f"{name}: {m['cold+curves'] / a.feeders * a.project:.0f} s" for name, m in runs.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

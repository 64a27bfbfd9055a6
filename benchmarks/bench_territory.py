"""A territory cleared by the runner: workers' speed-up, warm real-time re-clears, memory per interface.

Run: ``python benchmarks/bench_territory.py [--feeders 1000] [--buses 1000] [--bids 1000] [--seed 1]
[--workers 1 2] [--ray] [--repeat N]``.

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
  real-time cycles;

also as the workers' CPU time of those cycles (their ratios are what a loaded machine does not distort).
``--repeat N`` runs the whole measurement N times, the worker counts in turn (so that each sees the same load),
and reports the best of each time over the runs (memory: the largest growth); the results must be identical in
every run. By default 5 runs up to 50 interfaces (a cold clearing of 20 interfaces of 1,000 buses is ~0.3 s of
work, and one run's warm/cold ratio moved between 34 % and 46 % with the machine's load), else 1.

It prints the seconds, the speed-up of each worker count against one worker, the warm/cold ratio, the
serial projection to ``--project`` interfaces, the workers' CPU time of ``cold+curves`` per interface
and the projection it gives on this machine's otherwise idle cores (what a loaded machine cannot
distort), and each worker's peak memory per interface it holds (in the cold+curves runner and in the
one that keeps the clearings)
(the growth of its peak RSS from before loading to after the cycles, divided by its interfaces).
Results are checked identical across worker counts (and Ray).

``--split`` takes one interface's day-ahead work apart in this process, in CPU seconds per interface
(:func:`split`): what is the tracer's and what is around it. ``--split-realtime`` takes one worker's cold cycle
and warm re-clears apart the same way (:func:`split_realtime`).

``--service`` measures the same through the gRPC TerritoryService instead (a server in this process over a
temporary SQLite file, ``--workers`` worker processes, default 1): the interfaces are loaded as feeders,
an aggregator places the same standing bids (one resource per bid) in three 5-minute real-time sessions in a
row, and each session's ``ClearTerritory`` (clearing at the forecast, exact curve and ISO offer per interface,
recorded) is timed at forecasts 50, 55 and 60 per MWh: the first is cold, the two after it re-clear on the
markets the workers kept. The same three sessions on a server that keeps nothing (``--warm-interfaces 0``)
are the cold reference; the recorded clearing digests must be identical.

``--service --day-ahead`` measures the first real-time session after a day-ahead one: a day-ahead session of
``--da-hours`` hourly intervals of the same standing bids is cleared at 50 per MWh, published and awarded at
its cleared imports; then a 5-minute real-time session at the start of the first hour, which refers to it
and where every resource bids again as it bid day-ahead (nothing is held), is cleared at 55 per MWh (timed).
On the server that keeps markets, each worker takes that interval's curve from the day-ahead clearing's
(``engine.territory.IntervalCurves``); the same day on a server that keeps nothing is the cold reference.
The recorded real-time clearing digests must be identical. Besides the call's and the fan-out's wall times it
prints the call's CPU time, this process's (server, clients) and its worker processes' together: their ratio
is what a loaded machine does not distort.
"""

from __future__ import annotations

import argparse
import contextlib
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
        before = r.peak_rss_kb()
        r.load(jobs)
        cpu = r.cpu_seconds()
        out["cold+curves"], out["reports"] = timed(r, Cycle(50.0, curves=True))
        out["cpu"] = sum(r.cpu_seconds()) - sum(cpu)
        out["kb_curves"] = [(a - b) / max(1, n) for a, b, n in
                            zip(r.peak_rss_kb(), before, _per_shard(len(jobs), r.shards), strict=True)]
    with make(ClearingOptions(formulation=formulation, ac_check=False)) as r:
        before = r.peak_rss_kb()
        r.load(jobs)
        cpu = [sum(r.cpu_seconds())]
        out["cold clear"], cold = timed(r, Cycle(50.0))
        cpu.append(sum(r.cpu_seconds()))
        out["1st warm"], warm = timed(r, Cycle(55.0))
        cpu.append(sum(r.cpu_seconds()))
        steady = [timed(r, Cycle(p)) for p in (60.0, 45.0, 52.0)]
        cpu.append(sum(r.cpu_seconds()))
        out["warm"] = sum(t for t, _ in steady) / len(steady)
        out["cpu cold"], out["cpu 1st warm"], out["cpu warm"] = cpu[1] - cpu[0], cpu[2] - cpu[1], (cpu[3] - cpu[2]) / 3
        after = r.peak_rss_kb()
        out["kb_per_interface"] = [(a - b) / max(1, n) for a, b, n in
                                   zip(after, before, _per_shard(len(jobs), r.shards), strict=True)]
    out["solve_cold"] = sum(x["seconds"] for x in cold)
    out["solve_warm"] = sum(x["seconds"] for x in warm)
    out["solve_steady"] = sum(x["seconds"] for _, reps in steady for x in reps) / len(steady)
    return out


@contextlib.asynccontextmanager
async def _server(path: str, a, keep: int):
    """A server over ``path`` with the synthetic territory ``bench`` loaded and the aggregator's resources (one
    per bid) registered: the operator's, the aggregator's and the ISO's clients, and the feeders with bids."""
    from dsomarket.clients.api import Client, Resource, TerritoryInterface
    from dsomarket.server.app import create_server
    from dsomarket.server.auth import create_tokens

    tokens = create_tokens(path, {"dso": "operator", "agg": "aggregator", "iso": "iso"})
    server, port = await create_server("127.0.0.1:0", path, workers=a.workers[0], warm_interfaces=keep)
    await server.start()
    try:
        async with Client(f"127.0.0.1:{port}", tokens["dso"], timeout=7200.0) as op, \
                Client(f"127.0.0.1:{port}", tokens["agg"], timeout=600.0) as agg, \
                Client(f"127.0.0.1:{port}", tokens["iso"], timeout=600.0) as iso:
            members = [synthetic_member(k, a.feeders, a.buses, a.bids, a.seed) for k in range(a.feeders)]
            for k, (f, _) in enumerate(members):   # the server builds the same feeder from its seed
                await op.create_feeder(f.name, builtin=f"synth:{a.buses}:{_feeder_seed(k, a.seed)}")
            await op.create_territory("bench", [TerritoryInterface("", (f.name,)) for f, _ in members])
            await agg.register_resources([Resource(bid, f.name, bus, "pv" if side == "sell" else "flexible_load", 1000.0)
                                          for f, b in members
                                          for bid, bus, side in b.select("bid_id", "bus", "side").iter_rows()])
            yield op, agg, iso, members
    finally:
        await server.stop(0.5)


def _clearing_digests(path: str) -> dict:
    """Each market's recorded clearing digest."""
    from dsomarket.server import audit, db

    conn = db.connect(path)
    try:
        return audit.clearing_digests(conn)
    finally:
        conn.close()


async def _bid(agg, session, members, suffix: str = "") -> None:
    """Every feeder's bids in every interval of its market in ``session`` (ids with ``suffix`` and the interval)."""
    from decimal import Decimal

    from dsomarket.clients.api import BidSegment

    for si, (f, b) in zip(session.interfaces, members, strict=True):
        await agg.submit_bids(si.market.market_id, [
            BidSegment(f"{bid}{suffix}{t if suffix else ''}", bid, side, kw, Decimal(str(price)), iv)
            for t, iv in enumerate(si.market.intervals)
            for bid, side, kw, price in b.select("bid_id", "side", "quantity_kw", "price").iter_rows()])


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process (the server, its threads and the clients) and by the processes it
    started (the runner's workers), read from /proc (Linux): what other work on a loaded machine does not
    inflate as it inflates wall times. Only processes alive at the reading count: a worker that ends between
    two readings (lost, replaced) takes its CPU with it, so a difference is a lower bound when one did (none
    does in this benchmark's timed calls; the runner logs a replaced worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, used = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()   # from the state on: ppid, ..., utime, stime
        except OSError:   # ended meanwhile
            continue
        parent[int(entry)], used[int(entry)] = int(fields[1]), (int(fields[11]) + int(fields[12])) / tick
    mine = {os.getpid()}
    while True:   # descendants: a forkserver's workers are its children, not this process's
        more = {p for p, pp in parent.items() if pp in mine} - mine
        if not more:
            break
        mine |= more
    return time.process_time() + sum(used[p] for p in mine - {os.getpid()})


async def _service_day(path: str, a, keep: int) -> tuple[float, float, frozenset, dict, float]:
    """``--day-ahead`` on one server: the real-time clearing's call and fan-out wall times, the interfaces it
    cleared warm, each market's recorded clearing digest, and the call's CPU time (:func:`_cpu_seconds`)."""
    from dsomarket.clients.api import IntervalAward
    from dsomarket.clients.demo import delivery_day

    async with _server(path, a, keep) as (op, agg, iso, members):
        start = delivery_day()
        session = await op.open_territory_session("da", territory_id="bench", kind="day_ahead", delivery_start=start,
                                                  interval_count=a.da_hours, formulation=a.formulation)
        await _bid(agg, session, members, "-h")
        await op.close_territory_gate("da")
        t0 = time.perf_counter()
        cleared = await op.clear_territory("da", iso_price_forecast=[50])
        da_seconds = time.perf_counter() - t0
        await op.publish_territory("da")
        for c in cleared.interfaces.values():
            award = await iso.submit_award(c.market.market_id, [IntervalAward(f.interval_start, f.import_kw, 50)
                                                                for f in c.interface])
            assert award.status == "optimal", award.diagnosis
        session = await op.open_territory_session("rt", territory_id="bench", kind="real_time", delivery_start=start,
                                                  interval_count=1, formulation=a.formulation,
                                                  day_ahead_session_id="da")
        await _bid(agg, session, members)
        await op.close_territory_gate("rt")
        t0, cpu0 = time.perf_counter(), _cpu_seconds()
        rt = await op.clear_territory("rt", iso_price_forecast=[55])
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        print(f"  {'kept' if keep else 'cold'} server: day-ahead ({a.da_hours} h) {da_seconds:.2f} s, real-time "
              f"{wall:.2f} s, {cpu:.2f} s CPU ({rt.optimal}/{a.feeders} optimal, {len(rt.warm)} warm)", flush=True)
    return wall, rt.solve_seconds, rt.warm, _clearing_digests(path), cpu


async def _service_sessions(path: str, a, keep: int) -> tuple[list[float], list[float], dict]:
    """The three real-time sessions on one server: per session the call's wall time and the fan-out's, and
    each market's recorded clearing digest."""
    from datetime import timedelta

    from dsomarket.clients.demo import delivery_day

    walls, fans = [], []
    async with _server(path, a, keep) as (op, agg, _, members):
        start = delivery_day()
        for n, forecast in enumerate((50, 55, 60)):
            sid = f"rt{n}"
            session = await op.open_territory_session(sid, territory_id="bench", kind="real_time",
                                                      delivery_start=start + timedelta(minutes=5 * n),
                                                      interval_count=1, formulation=a.formulation)
            await _bid(agg, session, members)
            await op.close_territory_gate(sid)
            t0 = time.perf_counter()
            cleared = await op.clear_territory(sid, iso_price_forecast=[forecast])
            walls.append(time.perf_counter() - t0)
            fans.append(cleared.solve_seconds)
            print(f"  {'kept' if keep else 'cold'} server, session {sid} at {forecast}: {walls[-1]:.2f} s "
                  f"({cleared.optimal}/{a.feeders} optimal, {len(cleared.warm)} warm)", flush=True)
    return walls, fans, _clearing_digests(path)


def _feeder_seed(k: int, seed: int) -> int:
    """The seed ``synthetic_member`` gives feeder k (so the server's ``synth:B:SEED`` builds the same feeder)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, k]).generate_state(2)[0])


def service(a) -> int:
    """``--service``: real-time re-clears through TerritoryService, kept vs cold, in one run."""
    import asyncio
    import tempfile

    if a.day_ahead:
        with tempfile.TemporaryDirectory() as tmp:
            kept = asyncio.run(_service_day(os.path.join(tmp, "kept.sqlite"), a, 64))
            cold = asyncio.run(_service_day(os.path.join(tmp, "cold.sqlite"), a, 0))
        same = kept[3] == cold[3]
        print(f"\nfirst real-time session after the day-ahead one, server that keeps markets / server that keeps "
              f"nothing: call {kept[0]:.2f} s / {cold[0]:.2f} s = {kept[0] / cold[0]:.0%}; fan-out "
              f"{kept[1]:.2f} s / {cold[1]:.2f} s = {kept[1] / cold[1]:.0%}; CPU of the call (server, clients and "
              f"workers) {kept[4]:.2f} s / {cold[4]:.2f} s = {kept[4] / cold[4]:.0%}; {len(kept[2])}/{a.feeders} "
              f"interfaces warm; recorded clearings identical: {'yes' if same else 'NO'}")
        return 0 if same and not cold[2] else 1
    with tempfile.TemporaryDirectory() as tmp:
        kept = asyncio.run(_service_sessions(os.path.join(tmp, "kept.sqlite"), a, 64))
        cold = asyncio.run(_service_sessions(os.path.join(tmp, "cold.sqlite"), a, 0))
    print(f"\n{'server':<22}{'rt0 (cold) s':>14}{'rt1 s':>9}{'rt2 s':>9}{'rt1/cold':>10}{'rt2/cold':>10}"
          f"{'fan-out rt1/cold':>18}")
    for name, (walls, fans, _) in (("keeps markets", kept), ("keeps nothing", cold)):
        print(f"{name:<22}{walls[0]:>14.2f}{walls[1]:>9.2f}{walls[2]:>9.2f}{walls[1] / cold[0][1]:>10.0%}"
              f"{walls[2] / cold[0][2]:>10.0%}{fans[1] / cold[1][1]:>18.0%}")
    same = kept[2] == cold[2]
    print(f"\nwarm re-clear / cold re-clear of the same session (call wall time): "
          f"{(kept[0][1] + kept[0][2]) / (cold[0][1] + cold[0][2]):.0%}; recorded clearings identical: "
          f"{'yes' if same else 'NO'}")
    return 0 if same else 1


def split(a) -> int:
    """``--split``: one interface's day-ahead work taken apart, CPU seconds per interface in this process
    (``time.process_time``, so other engineers' load inflates it less than wall time), over ``--feeders``
    interfaces after one to warm up: the model build, the cold solve, the result tables (AC check included),
    the exact curve traced on the clearing's solved model (what the runner does) and on a model built and
    solved afresh (what it did before: ``trace_curve`` without ``market``), the ISO offer, and the command
    line's files (``territory clear --curves``; also their wall time, which the disk's flushes add to)."""
    import tempfile
    from pathlib import Path

    from dsomarket.clients.commands.territory import OutcomeWriter
    from dsomarket.engine.bids import canonical
    from dsomarket.engine.clearing import NodalMarket
    from dsomarket.engine.interface import trace_curve
    from dsomarket.engine.territory import InterfaceSession

    options = ClearingOptions(formulation=a.formulation)
    parts = dict.fromkeys(("build", "cold solve", "result", "curve on the clearing's model",
                           "curve on a fresh model", "ISO offer", "files"), 0.0)
    same, files_wall = 0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(a.feeders + 1):
            i = synth_one(k, a.feeders + 1, a.buses, a.bids, a.seed)
            s = InterfaceSession(i, options=options)
            t = [time.process_time()]
            market = s._market = NodalMarket(i.feeder, canonical(s.book, i.feeder, s.rules), [50.0], s.rules,
                                             i.resources, options)
            t.append(time.process_time())
            sol = market.converge()
            t.append(time.process_time())
            res = market.result(sol)
            t.append(time.process_time())
            curve = s.curve()
            t.append(time.process_time())
            fresh = trace_curve(i.feeder, s.book, s.rules, i.resources, options)
            t.append(time.process_time())
            offer, area = curve.iso_offer(10)
            t.append(time.process_time())
            wall = time.perf_counter()
            writer = OutcomeWriter(Path(tmp), s.rules, a.formulation, 10)
            writer(InterfaceOutcome(i.interface_id, i.members, res.status, clearing=res, curve=curve,
                                    offer=offer, offer_area=area))
            writer.done()   # one flush per interface here; a worker flushes once per call
            t.append(time.process_time())
            if k:   # the first interface warms up imports and caches
                files_wall += time.perf_counter() - wall
                for name, t0, t1 in zip(parts, t[:-1], t[1:]):
                    parts[name] += t1 - t0
                same += curve.bands.equals(fresh.bands) and curve.solves == fresh.solves
    n = a.feeders
    for name, v in parts.items():
        print(f"  {name:<32}{v / n:>8.4f} s" + (f" ({files_wall / n:.4f} s wall)" if name == "files" else ""))
    now = sum(v for k, v in parts.items() if k != "curve on a fresh model")
    before = now - parts["curve on the clearing's model"] + parts["curve on a fresh model"]
    print(f"one interface's day-ahead work: {now / n:.3f} s CPU ({before / n:.3f} s with the curve on a fresh model, "
          f"{now / before:.0%}); curves identical on {same}/{n}; projection to {a.project} interfaces on "
          f"{os.cpu_count()} idle cores: {now / n * a.project / (os.cpu_count() or 1):.0f} s")
    return 0 if same == n else 1


TIMES = ("cold+curves", "cpu", "cold clear", "1st warm", "warm", "cpu cold", "cpu 1st warm", "cpu warm", "solve_cold",
         "solve_warm", "solve_steady")
"""The keys of :func:`measure`'s times (seconds), of which :func:`best` takes the least."""


def best(runs: list[dict]) -> dict:
    """One :func:`measure` of several runs of it: the least of each time, the largest memory growth, the first
    run's reports (with ``same``: whether every run's reports, timings aside, were those)."""
    out = dict(runs[0])
    out.update({k: min(r[k] for r in runs) for k in TIMES})
    for k in ("kb_curves", "kb_per_interface"):
        out[k] = [max(v) for v in zip(*(r[k] for r in runs))]
    reports = [[{k: v for k, v in rep.items() if k != "seconds"} for rep in r["reports"]] for r in runs]
    out["same"] = all(rep == reports[0] for rep in reports)
    return out


def split_realtime(a) -> int:
    """``--split-realtime``: the clearing cycles of one worker taken apart in this process, CPU ms per interface
    (:func:`bench_clearing.timed_phases`): a :class:`~dsomarket.server.runner.Shard` (what a worker runs) of
    ``--feeders`` interfaces, AC check off, cleared cold at 50 per MWh, then at 55 and re-cleared at 60, 45 and 52
    as :func:`measure` does; the phases of the cold cycle and the mean of the three re-clears, each the best of
    ``--repeat`` shards (default 3). Where a warm re-clear goes: the kept basis checked at the new price, the
    solver's own pivots and the bases they reach factorised afresh, HiGHS's warm runs, the re-clears that ended
    in a tie and were cleared cold from the slack basis (how many), the tables, the bench's digest."""
    sys.path.insert(0, os.path.dirname(__file__))
    from bench_clearing import timed_phases

    from dsomarket.engine import clearing, solver, territory
    from dsomarket.engine.bids import MarketRules
    from dsomarket.server import runner

    hs = solver.HighsSolver
    wrapped = [(runner.Shard, "run", "shard's cycle"), (territory, "canonical", "canonical order"),
               (clearing, "merge_columns", "column merge"), (clearing.lindistflow, "build", "model build"),
               (clearing, "HighsSolver", "HighsSolver set-up"), (hs, "start_from_slack", "slack basis"),
               (hs, "solve_by_basis", "solve_by_basis"), (hs, "_kept_check", "kept basis checked"),
               (hs, "_pivots", "own pivots"), (hs, "_rebase", "pivots' bases factorised"), (hs, "run", "HiGHS run"),
               (hs, "_keep", "HiGHS's optimum factorised"), (hs, "solve_from_slack", "cleared from the slack basis"),
               (hs, "unique_optimum", "tie check"), (clearing.NodalMarket, "result", "result tables"),
               (runner, "_sink", "digest")]
    jobs = [Job(f"feeder-{k:04d}", synth_one, (k, a.feeders, a.buses, a.bids, a.seed)) for k in range(a.feeders)]
    cold: dict[str, float] = {}
    warm: dict[str, float] = {}
    ties = []
    for _ in range(a.repeat or 3):
        shard = runner.Shard(MarketRules(), ClearingOptions(formulation=a.formulation, ac_check=False))
        shard.load(jobs)
        with timed_phases(wrapped) as spent:
            shard.run(Cycle(50.0), digest)
            once = {k: sum(v) for k, v in spent.items()}
            cold = {k: min(v, cold.get(k, v)) for k, v in once.items()}
            shard.run(Cycle(55.0), digest)
            spent.clear()
            for p in (60.0, 45.0, 52.0):
                shard.run(Cycle(p), digest)
            once = {k: sum(v) / 3 for k, v in spent.items()}
            warm = {k: min(v, warm.get(k, v)) for k, v in once.items()}
            ties.append(len(spent.get("cleared from the slack basis", [])))
    n = a.feeders
    for name, parts in (("cold cycle", cold), ("warm re-clear (mean of 3)", warm)):
        print(f"{name}, CPU ms per interface: " + "; ".join(f"{k} {v / n * 1e3:.2f}" for k, v in parts.items()))
    print(f"warm / cold (the shard's cycle): {warm[wrapped[0][2]] / cold[wrapped[0][2]]:.0%}; re-clears tied and "
          f"cleared cold: {ties} of {3 * n} per run")
    return 0


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
    p.add_argument("--repeat", type=int, help="runs of the measurement, best of each time (default 5 up to 50 "
                   "interfaces, else 1)")
    p.add_argument("--formulation", default="lossaware", choices=["lossaware", "lossless"],
                   help="clearing model (the engine's default is lossaware; the recorded figures are lossless)")
    p.add_argument("--service", action="store_true",
                   help="real-time re-clears through the gRPC TerritoryService, kept vs cold (one worker count)")
    p.add_argument("--day-ahead", action="store_true",
                   help="with --service: the first real-time session after an awarded day-ahead one, kept vs cold")
    p.add_argument("--da-hours", type=int, default=2, help="hourly intervals of the --day-ahead session")
    p.add_argument("--split", action="store_true",
                   help="one interface's day-ahead work taken apart, CPU seconds, in this process")
    p.add_argument("--split-realtime", action="store_true",
                   help="one worker's cold cycle and warm re-clears taken apart, CPU ms, in this process")
    a = p.parse_args(argv)
    if a.split:
        print(f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
              f"split of {a.feeders} interfaces of {a.buses} buses and {a.bids} bids (seed {a.seed}), {a.formulation}")
        return split(a)
    if a.split_realtime:
        print(f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
              f"real-time split of {a.feeders} interfaces of {a.buses} buses and {a.bids} bids (seed {a.seed}), "
              f"{a.formulation}, load {os.getloadavg()[0]:.1f}")
        return split_realtime(a)
    if a.service:
        if a.workers == [1, 2]:
            a.workers = [1]
        print(f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
              f"{platform.python_version()}; service, {a.workers[0]} worker(s); {a.feeders} interfaces of "
              f"{a.buses} buses and {a.bids} standing bids (seed {a.seed}), {a.formulation}")
        return service(a)
    print(f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{a.feeders} interfaces of {a.buses} buses and {a.bids} bids (seed {a.seed}), {a.formulation}")
    jobs = [Job(f"feeder-{k:04d}", synth_one, (k, a.feeders, a.buses, a.bids, a.seed)) for k in range(a.feeders)]
    repeat = a.repeat or (5 if a.feeders <= 50 else 1)
    tried: dict[str, list[dict]] = {}
    if a.ray:
        import ray

        ray.init(num_cpus=max(a.workers), include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        for _ in range(repeat):   # the worker counts in turn, so that each sees the same load
            for w in a.workers:
                tried.setdefault(f"{w} worker{'s' if w > 1 else ''}", []).append(
                    measure(lambda o, w=w: LocalRunner(w, options=o), jobs, a.formulation))
            if a.ray:
                tried.setdefault(f"Ray, {max(a.workers)} actors", []).append(
                    measure(lambda o: RayRunner(shards=max(a.workers), options=o), jobs, a.formulation))
    finally:
        if a.ray:
            ray.shutdown()
    runs = {name: best(ms) for name, ms in tried.items()}
    print(f"best of {repeat} run{'s' if repeat > 1 else ''} of each")
    base_name = next(iter(runs))
    base = runs[base_name]
    reference = [{k: v for k, v in r.items() if k != "seconds"} for r in base["reports"]]
    print(f"\n{'runner':<16}{'cold+curves s':>14}{'speed-up':>10}{'cold clear s':>14}{'1st warm s':>12}"
          f"{'warm s':>9}{'1st/cold':>10}{'warm/cold':>11}{'MiB/interface':>15}  identical")
    for name, m in runs.items():
        same = m["same"] and [{k: v for k, v in r.items() if k != "seconds"} for r in m["reports"]] == reference
        mib = f"{max(m['kb_curves']) / 1024:.1f} / {max(m['kb_per_interface']) / 1024:.1f}"
        print(f"{name:<16}{m['cold+curves']:>14.2f}{base['cold+curves'] / m['cold+curves']:>9.2f}x"
              f"{m['cold clear']:>14.2f}{m['1st warm']:>12.2f}{m['warm']:>9.2f}"
              f"{m['1st warm'] / m['cold clear']:>10.0%}{m['warm'] / m['cold clear']:>11.0%}"
              f"{mib:>15}  {'yes' if same else 'NO'}")
    print("(MiB/interface: a worker's peak memory growth per interface it holds, with curves / kept clearings)")
    ok = sum(r["status"] == "optimal" for r in base["reports"])
    bands = sum(r.get("curve_bands", 0) for r in base["reports"])
    per = base["cold+curves"] / a.feeders
    print(f"\n{ok}/{a.feeders} interfaces optimal, {bands} curve bands in all; in-worker time of the clearing "
          f"alone: cold {base['solve_cold']:.2f} s, 1st warm {base['solve_warm']:.2f} s "
          f"({base['solve_warm'] / base['solve_cold']:.0%}), warm {base['solve_steady']:.2f} s "
          f"({base['solve_steady'] / base['solve_cold']:.0%})")
    print("workers' CPU time of the clearing cycles (what a loaded machine does not inflate): "
          + ", ".join(f"{name}: cold {m['cpu cold']:.2f} s, 1st warm {m['cpu 1st warm'] / m['cpu cold']:.0%}, "
                      f"warm {m['cpu warm'] / m['cpu cold']:.0%}" for name, m in runs.items()))
    print(f"projection to {a.project} interfaces from {base_name}: {per * a.project:.0f} s serial; "
          + ", ".join(f"{name}: {m['cold+curves'] / a.feeders * a.project:.0f} s" for name, m in runs.items()))
    cpu = base["cpu"] / a.feeders
    print(f"workers' CPU time of cold+curves: {cpu:.3f} s per interface ({base_name}; "
          + ", ".join(f"{name} {m['cpu'] / a.feeders:.3f} s" for name, m in runs.items())
          + f"); {a.project} interfaces at that CPU time on {os.cpu_count()} otherwise idle cores: "
          f"{cpu * a.project / (os.cpu_count() or 1):.0f} s (the load-independent projection)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

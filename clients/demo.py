"""``dsomarket demo``: one day-ahead day and a few real-time intervals on the IEEE 33-bus feeder.

A server runs on a temporary SQLite file. Simulated participants talk to it
over gRPC through :mod:`clients.api` only: the DSO operator, three
aggregators (PV and a battery; an EV depot fleet; flexible commercial loads)
and an ISO that reads the interface curves from its stream and awards a point
on each. Aggregators follow their dispatch streams. The run ends with
settlement, an audit-chain check and a replay of every clearing from the log.

The scenario is seeded, so two runs bid the same; times are relative to now
(delivery the day after tomorrow, so no gate has closed when the demo starts).
It ends with a table of the day-ahead DLMP of every bus (rows) and hour
(columns), and a row saying where a limit bound each hour. ``dsomarket demo --keep DIR`` keeps the
database in DIR with the CSVs ``prices.csv`` (every market, bus and interval),
``dlmp_by_hour.csv`` (day-ahead DLMP, a row per bus and a column per hour),
``awards.csv``, ``curves.csv`` and ``statements.csv``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl

from dsomarket.clients.api import ApiError, BidSegment, Client, InterfaceCurve, IntervalAward, Resource
from dsomarket.clients.files import by_id, write_csv
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import builtin
from dsomarket.server import db
from dsomarket.server.app import create_server
from dsomarket.server.replay import replay
from dsomarket.server.runner import CurveFanOut, LocalRunner
from dsomarket.server.auth import create_tokens

FEEDER = "ieee33"
SOLAR = np.array([0, 0, 0, 0, 0, .04, .14, .30, .48, .64, .77, .86,
                  .9, .86, .77, .63, .45, .27, .1, .01, 0, 0, 0, 0])
"""Clear-sky PV output per UTC hour, share of peak."""
WHOLESALE = np.array([48, 44, 41, 40, 42, 50, 62, 78, 85, 80, 70, 58,
                      50, 48, 52, 60, 75, 95, 110, 105, 90, 75, 62, 54])
"""The simulated ISO's energy price per hour, per MWh."""
RT_HOUR = 17
"""Real-time markets run in the evening ramp of the day-ahead day."""
RT_MARKETS = 3
DEMO_FORMULATION = "lossaware"
"""The demo's markets clear on the server's default model, loss-aware, named on each market. Its day-ahead
clearing (the clearing and 24 curves, whose batteries and EVs couple the hours) is the demo's longest call: the
server traces the curves on its runner processes (one per core, :class:`server.runner.CurveFanOut`), as the
replay at the end does."""
DAY_AHEAD_DEADLINE = 1200.0
"""Seconds the day-ahead ClearMarket call may take (every other call: :data:`CALL_DEADLINE`): the loss-aware
curves of the day cost some 170 s of CPU (``python benchmarks/bench_formulation.py``), about half that in wall
time on two quiet cores, and 680 s on two cores shared at a load of 12-15 (benchmarks/README.md); the
deadline is there so that a server that hangs fails the demo, not to time a busy machine."""
CALL_DEADLINE = 120.0
AGGREGATORS = ("sunrise-energy", "voltway-ev", "flexco")
PARTICIPANTS = {"dso": "operator", **{a: "aggregator" for a in AGGREGATORS}, "iso": "iso",
                "auditor": "auditor"}


def delivery_day(days: int = 2) -> datetime:
    """Midnight UTC ``days`` from today: far enough that no gate has closed."""
    midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + timedelta(days=days)


def fleet(day: datetime) -> dict[str, list[Resource]]:
    """The DER fleet of each aggregator on the 33-bus feeder; EVs leave between 06:00 and 08:00 of ``day``.

    One battery and no HVAC ramp limits: every storage or ramp couples the 24
    hours, and each coupling multiplies the steps of the exact interface curves
    (three batteries and five ramps took the curve tracing from 9 s to 48 s).
    """
    f = FEEDER
    sunrise = [Resource(f"pv{b}", f, str(b), "pv", kw)
               for b, kw in ((18, 250), (33, 300), (22, 150), (25, 200), (14, 120))]
    sunrise.append(Resource("bat18", f, "18", "battery", 250, energy_kwh=500, charge_kw=250, discharge_kw=250,
                            soc_init_kwh=250, soc_end_kwh=250, soc_min_kwh=50))
    depots = ((7, 100, 300), (8, 60, 180), (24, 150, 400), (25, 50, 150), (29, 80, 240), (30, 60, 200),
              (31, 40, 120), (32, 50, 140))
    ev = [Resource(f"depot{b}", f, str(b), "ev", kw, energy_kwh=e, charge_kw=kw,
                   departure=day + timedelta(hours=6 + k % 3)) for k, (b, kw, e) in enumerate(depots)]
    flex = [Resource(f"hvac{b}", f, str(b), "flexible_load", kw)
            for b, kw in ((12, 150), (15, 100), (20, 120), (28, 180), (31, 90))]
    return {"sunrise-energy": sunrise, "voltway-ev": ev, "flexco": flex}


def day_ahead_bids(resources: dict[str, list[Resource]], day: datetime,
                   rng: np.random.Generator) -> dict[str, list[BidSegment]]:
    """Hourly bids: PV offers its forecast, the battery buys low and sells high, EVs bid to charge before
    they leave, HVAC buys an essential and a flexible block."""
    out: dict[str, list[BidSegment]] = {a: [] for a in resources}
    for h in range(24):
        iv = day + timedelta(hours=h)
        for r in resources["sunrise-energy"]:
            rid = r.resource_id
            if r.kind == "pv" and SOLAR[h] > 0.02:
                out["sunrise-energy"].append(BidSegment(f"{rid}-h{h:02d}", rid, "sell",
                                                        round(r.capacity_kw * SOLAR[h], 1),
                                                        f"{rng.uniform(0, 8):.2f}", iv))
            elif r.kind == "battery":
                charge, discharge = f"{WHOLESALE[h] * 0.8 - 10:.2f}", f"{WHOLESALE[h] * 1.15 + 10:.2f}"
                out["sunrise-energy"] += [
                    BidSegment(f"{rid}-h{h:02d}-c", rid, "buy", r.charge_kw, charge, iv),
                    BidSegment(f"{rid}-h{h:02d}-d", rid, "sell", r.discharge_kw, discharge, iv)]
        for r in resources["voltway-ev"]:
            if iv < r.departure:  # earlier hours are worth more: the car must be full when it leaves
                price = f"{180 - 15 * h + rng.uniform(0, 5):.2f}"
                out["voltway-ev"].append(BidSegment(f"{r.resource_id}-h{h:02d}", r.resource_id, "buy",
                                                    r.charge_kw, price, iv))
        for r in resources["flexco"]:
            rid = r.resource_id
            out["flexco"] += [
                BidSegment(f"{rid}-h{h:02d}-base", rid, "buy", round(r.capacity_kw * .6, 1), "400", iv),
                BidSegment(f"{rid}-h{h:02d}-flex", rid, "buy", round(r.capacity_kw * .4, 1),
                           f"{rng.uniform(55, 95):.2f}", iv)]
    return out


def real_time_bids(day_ahead: dict[str, list[BidSegment]], start: datetime,
                   rng: np.random.Generator) -> dict[str, list[BidSegment]]:
    """Re-bids for the 5-minute interval at ``start``: clouds cut PV, the battery and HVAC re-price.

    Bid ids repeat the day-ahead ones of that hour, so settlement charges only
    the deviation from the day-ahead position.
    """
    cloud = rng.uniform(0.4, 0.8)
    out = {}
    for agg in ("sunrise-energy", "flexco"):
        out[agg] = [BidSegment(b.bid_id, b.resource_id, b.side,
                               round(b.quantity_kw * (cloud if b.resource_id.startswith("pv") else 1.0), 1),
                               Decimal(b.price) * Decimal(f"{rng.uniform(0.9, 1.2):.3f}"), start)
                    for b in day_ahead[agg] if b.interval_start.hour == start.hour]
    return out


def iso_award(curve: InterfaceCurve, price: float) -> IntervalAward:
    """The ISO's dispatch of one interface: the curve's import at the ISO's price."""
    p = Decimal(f"{price:.2f}")
    band = next(b for b in curve.bands if b.price_low <= p <= b.price_high)
    return IntervalAward(curve.interval_start, band.import_kw, p)


async def simulated_iso(client: Client, prices: dict[str, list[float]], results: asyncio.Queue) -> None:
    """Award each market once all its interval curves have arrived on the curve stream."""
    pending: dict[str, list[InterfaceCurve]] = {}
    counts: dict[str, int] = {}
    async for curve in client.curve_stream():
        m = curve.market_id
        if m not in counts:
            counts[m] = (await client.get_market(m)).interval_count
        pending.setdefault(m, []).append(curve)
        if len(pending[m]) == counts[m]:
            curves = sorted(pending.pop(m), key=lambda c: c.interval_start)
            awards = [iso_award(c, p) for c, p in zip(curves, prices[m], strict=True)]
            await results.put((await client.submit_award(m, awards), awards, curves))


async def follow_dispatch(client: Client, counter: Counter) -> None:
    async for event in client.dispatch_stream():
        counter[type(event).__name__.lower()] += 1


class Clock:
    """Wall time of the named steps, for the summary."""

    def __init__(self):
        self.steps: list[tuple[str, float]] = []
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.steps.append((name, now - self._t))
        self._t = now


async def run_demo(workdir: Path, out=print, keep: bool = False, formulation: str = DEMO_FORMULATION) -> int:
    """Run the scenario against a fresh server whose database lives in ``workdir``; 0 when all went well.

    ``keep``: also write the market's tables as CSV files into ``workdir``. ``formulation``: the markets' model
    (a benchmark that only reads the markets back clears them on the quicker ``lossless``).
    """
    clock = Clock()
    path = workdir / "dsomarket.sqlite"
    tokens = create_tokens(path, PARTICIPANTS)
    server, port = await create_server("127.0.0.1:0", path)
    await server.start()
    target = f"127.0.0.1:{port}"
    clients = {name: Client(target, token, timeout=CALL_DEADLINE) for name, token in tokens.items()}
    op, iso = clients["dso"], clients["iso"]
    clearer = Client(target, tokens["dso"], timeout=DAY_AHEAD_DEADLINE)   # the operator's day-ahead ClearMarket
    out(f"dsomarket demo: server on {target}, database {path}")
    out(f"  markets clear {formulation}" + (" (the server's default); the day-ahead curves take a minute or two"
                                             if formulation == "lossaware" else ""))
    rng = np.random.default_rng(2025)
    tasks: list[asyncio.Task] = []
    try:
        day = delivery_day()
        await op.create_feeder(FEEDER, builtin=FEEDER)
        da = await op.create_market("da-" + day.strftime("%Y%m%d"), feeder_id=FEEDER, kind="day_ahead",
                                    delivery_start=day, gate_closure_time=day - timedelta(hours=12),
                                    value_of_lost_load="5000", formulation=formulation)
        resources = fleet(day)
        await asyncio.gather(*(clients[a].register_resources(resources[a]) for a in AGGREGATORS))
        clock.lap("feeder, day-ahead market and resources")

        streams = {a: Counter() for a in AGGREGATORS}
        tasks += [asyncio.create_task(follow_dispatch(clients[a], streams[a])) for a in AGGREGATORS]
        awarded: asyncio.Queue = asyncio.Queue()
        rt_starts = [day + timedelta(hours=RT_HOUR, minutes=5 * k) for k in range(RT_MARKETS)]
        rt_ids = [f"rt-{s:%Y%m%d-%H%M}" for s in rt_starts]
        iso_prices = {da.market_id: [float(p) for p in WHOLESALE],
                      **{m: [float(WHOLESALE[RT_HOUR] * rng.uniform(0.8, 1.4))] for m in rt_ids}}
        tasks.append(asyncio.create_task(simulated_iso(iso, iso_prices, awarded)))

        bids = day_ahead_bids(resources, day, rng)
        await asyncio.gather(*(_submit(clients[a], da.market_id, bids[a]) for a in AGGREGATORS))
        n_bids = sum(len(b) for b in bids.values())
        clock.lap(f"{n_bids} day-ahead bid segments submitted over gRPC")

        await op.close_gate(da.market_id)
        late = await _refused(clients["flexco"].submit_bids(
            da.market_id, [BidSegment("late-1", "hvac12", "buy", 10.0, "50", day)]))
        peek = await _refused(clients["flexco"].list_bids(market_id=da.market_id, aggregator_id="voltway-ev"))
        report = await clearer.clear_market(da.market_id, iso_price_forecast=[str(p) for p in WHOLESALE])
        if report.status != "optimal":
            out(f"day-ahead clearing {report.status}: {'; '.join(report.diagnosis)}")
            return 1
        await op.publish_market(da.market_id)
        clock.lap(f"day-ahead gate closed, cleared and published ({report.curve_segments} curve segments)")
        award, da_awards, da_curves = await asyncio.wait_for(awarded.get(), CALL_DEADLINE)
        clock.lap(f"ISO awarded the day-ahead curves: {award.status}")
        da_settle = await op.settle_market(da.market_id)
        clock.lap("day-ahead settled")

        out(f"\nday-ahead market {da.market_id}: {da.interval_count} hourly intervals on feeder {FEEDER}, "
            f"{n_bids} bid segments from {len(AGGREGATORS)} aggregators")
        out(f"  clearing at the forecast price: {report.status}, welfare {report.welfare} {da.currency}, "
            f"{report.solve_seconds:.2f} s with the exact interface curves")
        prices = await op.list_prices(da.market_id)
        dlmp = [p.dlmp for p in prices]
        voltage = sum(1 for p in prices if p.voltage)
        out(f"  DLMPs after the award: {min(dlmp)} .. {max(dlmp)} per MWh; "
            f"{voltage} of {len(prices)} bus-hours carry a voltage component")
        imports = [a.import_kw for a in da_awards]
        peak = int(np.argmax(WHOLESALE))
        out(f"  ISO award {award.status}: import {min(imports):.0f} .. {max(imports):.0f} kW over the day "
            f"from curves of {sum(len(c.segments) for c in da_curves)} segments; at the {peak}:00 peak "
            f"{da_awards[peak].price} per MWh, {da_awards[peak].import_kw:.0f} kW "
            f"(fixed net load {da_curves[peak].fixed_net_load_kw:.0f} kW)")
        out(f"  a late bid after gate closure: {late}")
        out(f"  flexco asking for voltway-ev's bids: {peek}")
        out("  settlement: " + ", ".join(f"{k} {v}" for k, v in sorted(da_settle.totals.items())))

        out(f"real-time markets (5 minutes each at {RT_HOUR}:00, deviations from day-ahead):")
        for market_id, start in zip(rt_ids, rt_starts, strict=True):
            await op.create_market(market_id, feeder_id=FEEDER, kind="real_time", delivery_start=start,
                                   interval_count=1, gate_lead=timedelta(minutes=5),
                                   value_of_lost_load="5000", day_ahead_market_id=da.market_id,
                                   formulation=formulation)
            rt = real_time_bids(bids, start, rng)
            await asyncio.gather(*(_submit(clients[a], market_id, rt[a]) for a in rt))
            await op.close_gate(market_id)
            rep = await op.clear_market(market_id, iso_price_forecast=[f"{iso_prices[market_id][0]:.2f}"])
            await op.publish_market(market_id)
            rt_award, (a,), _ = await asyncio.wait_for(awarded.get(), CALL_DEADLINE)
            settle = await op.settle_market(market_id)
            out(f"  {market_id}: {sum(len(v) for v in rt.values())} re-bids, clearing {rep.status}; "
                f"ISO price {a.price}, import {a.import_kw:.0f} kW, award {rt_award.status}; "
                f"{settle.statement_count} statement lines")
        clock.lap(f"{RT_MARKETS} real-time markets bid, cleared, awarded and settled")

        out("aggregators (day-ahead energy; net of all statements; events on their dispatch stream):")
        for name in AGGREGATORS:
            c = clients[name]
            awards, instructions = await c.list_awards(), await c.list_instructions()
            await _until_counted(streams[name], len(awards) + len(instructions))
            day_ahead = [x for x in awards if x.market_id == da.market_id]
            sold = sum(x.cleared_kw for x in day_ahead if x.side == "sell")
            bought = sum(x.cleared_kw for x in day_ahead if x.side == "buy")
            net = sum(s.amount for s in await c.list_statements())
            out(f"  {name:<15} sold {sold:7.0f} kWh, bought {bought:7.0f} kWh, net {net:>9} {da.currency}; "
                f"stream {streams[name]['award']} awards, {streams[name]['instruction']} instructions")

        chain = await clients["auditor"].verify_audit_chain()
        checks = await asyncio.get_running_loop().run_in_executor(None, _replay, path)
        clock.lap("audit chain verified and every clearing replayed from the log")
        differ = sum(not c.identical for c in checks)
        out(f"audit: chain {'intact' if chain.ok else f'BROKEN at record {chain.first_bad_sequence}'} "
            f"({chain.records} records); {len(checks)} clearing, award and settlement steps replayed from "
            f"the log: {'all identical' if not differ else f'{differ} DIFFER'}")
        prices = pl.DataFrame([_row(p) for p in await op.list_prices(da.market_id)])
        if keep:
            written = await _keep(op, clients, [da.market_id, *rt_ids], prices, workdir)
            out(f"kept in {workdir}: dsomarket.sqlite, {', '.join(written)}")
        out("\nsteps (wall time):")
        for name, seconds in clock.steps:
            out(f"  {seconds:6.2f} s  {name}")
        out(f"  {sum(s for _, s in clock.steps):6.2f} s  in all")
        out("")
        for line in dlmp_table(prices, [float(p) for p in WHOLESALE]):
            out(line)
        return 0 if chain.ok and not differ else 1
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in (*clients.values(), clearer):
            await client.close()
        await server.stop(1)


def _row(record) -> dict:
    """A client dataclass as a table row: Decimal prices as floats (for tables and plots, not money)."""
    return {k: float(v) if isinstance(v, Decimal) else v for k, v in dataclasses.asdict(record).items()}


def binding_elements(prices: pl.DataFrame, feeder_name: str = FEEDER) -> pl.DataFrame:
    """Where a limit bound in each interval, read from the DLMP components of one market.

    On a radial feeder a bus's congestion part is the sum of the thermal duals of
    the lines above it (DESIGN.md section 4), so a line bound where the part changes
    across it; a non-zero part at the root is the interface limit. Returns
    ``interval_start, congested`` (line ids, or ``interface``) and ``voltage``
    (the bus with the largest voltage part, where any).
    """
    topo = builtin(feeder_name).topology
    rows = []
    for (iv,), grp in prices.sort("interval_start").group_by("interval_start", maintain_order=True):
        cong = dict(zip(grp["bus"], grp["congestion"]))
        parent = {str(b): str(topo.bus_ids[p]) for b, p in zip(topo.bus_ids[1:], topo.parent[1:])}
        lines = [str(topo.line_ids[k]) for k, b in enumerate(topo.bus_ids[1:])
                 if abs(cong.get(str(b), 0.0) - cong.get(parent[str(b)], 0.0)) > 1e-6]
        if abs(cong.get(str(topo.bus_ids[0]), 0.0)) > 1e-6:
            lines.insert(0, "interface")
        volt = grp.filter(pl.col("voltage").abs() > 1e-6).sort(pl.col("voltage").abs(), descending=True)
        rows.append({"interval_start": iv, "congested": " ".join(lines),
                     "voltage": volt["bus"][0] if volt.height else ""})
    return pl.DataFrame(rows)


def dlmp_table(prices: pl.DataFrame, iso_prices: list[float]) -> list[str]:
    """The day-ahead DLMP of every bus (rows, feeder order) and hour (columns), per MWh rounded to a
    whole number, under the ISO's price; a last row says where a limit bound that hour."""
    matrix = by_id(prices.select("bus", pl.col("interval_start").dt.strftime("%H").alias("hour"), "dlmp"),
                   "bus").pivot(on="hour", index="bus", values="dlmp")
    hours = matrix.columns[1:]
    bound = binding_elements(prices)
    lines = ["day-ahead DLMP per bus and hour (per MWh, rounded; --keep writes them to 0.0001 in dlmp_by_hour.csv):",
             "  hour " + "".join(f"{h:>4}" for h in hours),
             "  ISO  " + "".join(f"{p:4.0f}" for p in iso_prices),
             "  bus"]
    lines += [f"  {row[0]:<5}" + "".join(f"{v:4.0f}" for v in row[1:]) for row in matrix.iter_rows()]
    codes = []
    for b in bound.iter_rows(named=True):
        parts = b["congested"].split()
        code = ("I" if "interface" in parts else "") + ("V" if b["voltage"] else "")
        lines_bound = [p for p in parts if p != "interface"]
        code += ("L" + lines_bound[0] if len(lines_bound) == 1 else "L*" if lines_bound else "")
        codes.append(code or "-")
    lines.append("  bound" + "".join(f"{c:>4}" for c in codes))
    volt = bound.filter(pl.col("voltage") != "")
    lines.append("  bound: V = a voltage limit" + (f" (largest price part at bus {volt['voltage'].mode()[0]})"
                                                  if volt.height else "")
                 + ", L<id> = that line at its rating, L* = several lines, I = the interface limit, - = none")
    return lines


async def _keep(op: Client, clients: dict[str, Client], markets: list[str], da_prices: pl.DataFrame,
                workdir: Path) -> list[str]:
    """Write the market's tables as CSV files into ``workdir``; the names written."""
    prices, curves = [], []
    for m in markets:
        prices += [_row(p) | {"market_id": m} for p in await op.list_prices(m)]
    for c in await clients["iso"].list_curves():
        curves += [{"market_id": c.market_id, "interval_start": c.interval_start, **_row(s),
                    "fixed_net_load_kw": c.fixed_net_load_kw, "conditional": c.conditional} for s in c.segments]
    awards = [_row(a) for name in AGGREGATORS for a in await clients[name].list_awards()]
    statements = [_row(s) for name in AGGREGATORS for s in await clients[name].list_statements()]
    matrix = (by_id(da_prices.select("bus", pl.col("interval_start").dt.strftime("%H:%M").alias("hour"), "dlmp"),
                    "bus").pivot(on="hour", index="bus", values="dlmp"))
    tables = {"prices.csv": pl.DataFrame(prices).select("market_id", pl.exclude("market_id")),
              "dlmp_by_hour.csv": matrix, "awards.csv": pl.DataFrame(awards), "curves.csv": pl.DataFrame(curves),
              "statements.csv": pl.DataFrame(statements)}
    for name, table in tables.items():
        write_csv(table, workdir / name)
    return list(tables)


async def _submit(client: Client, market_id: str, bids: list, batch: int = 200) -> None:
    for k in range(0, len(bids), batch):
        await client.submit_bids(market_id, bids[k:k + batch])


async def _refused(call) -> str:
    try:
        await call
    except ApiError as exc:
        return f"{exc.code.name}: {exc.details}"
    return "accepted (unexpected)"


async def _until_counted(counter: Counter, events: int, seconds: float = 10.0) -> None:
    """Until a stream has counted ``events``, at most ``seconds``: it delivers what is already committed."""
    deadline = time.monotonic() + seconds
    while sum(counter.values()) < events and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


def _replay(path: Path):
    """Every clearing again from the log, a many-interval market's curves on processes as the server traces them."""
    conn = db.connect(path)
    try:
        with LocalRunner() as pool:
            return replay(conn, trace=CurveFanOut(lambda: pool))
    finally:
        conn.close()


def main(keep: str | Path | None = None) -> int:
    """Run the demo; with ``keep``, in that directory (created if missing; it must not hold a database)."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="dsomarket-demo-") as tmp:
            return asyncio.run(run_demo(Path(tmp)))
    workdir = Path(keep)
    if workdir.exists() and not workdir.is_dir():
        raise InputError("demo", "keep", f"{workdir} is a file; give a directory")
    if (workdir / "dsomarket.sqlite").exists():
        raise InputError("demo", "keep", f"{workdir} already holds a demo database; give a new directory")
    workdir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run_demo(workdir, keep=True))

"""Overrides and ISO emergency instructions over gRPC: network-checked, re-dispatched, reported, settled."""

from __future__ import annotations

import asyncio
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

import numpy as np

from dsomarket.clients.api import FailedPrecondition, NetworkChange
from dsomarket.engine.feeders import ieee33
from dsomarket.engine.powerflow import ac_power_flow
from tests.harness import publish_and_award, running, simple_bids, small_market


async def awarded_with_a_tight_line(env, formulation: str):
    """ieee33 with line 17 (the only feed of bus 18, where both PVs are) rated 200 kVA from the start;
    both aggregators sell PV there; awarded at the curves' import at 50 per MWh. What one PV gives up the
    other adds, so the line's flow and the import are unchanged on both models: solved by hand without
    losses, and checked against an AC power flow of the dispatch on the loss-aware model."""
    op = env.clients["dso"]
    market = await small_market(env, formulation=formulation)
    await op.submit_network_changes("ieee33", [NetworkChange("rating-17", "rating", "17", market.intervals[0],
                                                             "summer rating", s_max_kva=200.0)])
    await env.clients["agg-a"].submit_bids(market.market_id, simple_bids(market, "a"))
    await env.clients["agg-b"].submit_bids(market.market_id, simple_bids(market, "b", pv_price="12"))
    await op.close_gate(market.market_id)
    await publish_and_award(env, market.market_id)
    return market


def ac_flow(instructions, interval):
    """AC power flow of ieee33's fixed loads less every resource's latest instruction of the interval
    (unity power factor: pv at bus 18, load at bus 25, as tests.harness.small_market registers them)."""
    f = ieee33()
    topo = f.topology
    p = topo.load_kw.astype(float).copy()
    bus = {"pv": "18", "load": "25"}
    latest = {(i.aggregator_id, i.resource_id): i for i in sorted(instructions, key=lambda i: i.sequence)
              if i.interval_start == interval}
    for i in latest.values():
        p[topo.bus_index_of([bus[i.resource_id]])[0]] -= i.kw
    return ac_power_flow(f, p, topo.load_kvar.astype(float))


def pv(instructions, aggregator):
    return {i.interval_start: i.kw for i in instructions if i.aggregator_id == aggregator and i.resource_id == "pv"}


@pytest.mark.parametrize("formulation", ["lossless", "lossaware"])
def test_an_override_that_breaks_a_limit_is_redispatched_reported_and_settled(tmp_path, formulation):
    async def body():
        async with running(tmp_path) as env:
            op, iso, a, b = (env.clients[n] for n in ("dso", "iso", "agg-a", "agg-b"))
            market = await awarded_with_a_tight_line(env, formulation)
            t0 = market.intervals[0]
            award_a = pv(await a.list_instructions(market_id=market.market_id), "agg-a")[t0]
            award_b = pv(await b.list_instructions(market_id=market.market_id), "agg-b")[t0]
            # Line 17 is full: the 300 kW of PV offered at bus 18 (load 90 kW, 40 kvar) is cut to what its
            # 200 kVA rating (an inscribed polygon) carries.
            assert award_a + award_b < 290.0
            schedules = []

            async def follow():
                async for s in iso.schedule_stream(market_id=market.market_id):
                    schedules.append(s)
                    return

            task = asyncio.create_task(follow())
            # Forcing agg-a's PV to 250 kW cannot be held (line 17): agg-b's PV is re-dispatched down.
            instr, mode, import_kw, moved = await op.override_report(
                market.market_id, aggregator_id="agg-a", resource_id="pv", interval_start=t0, kw=250.0,
                reason="voltage support test")
            assert (instr.kw, instr.source, mode, moved) == (250.0, "override", "redispatched", 1)
            after_b = pv(await b.list_instructions(market_id=market.market_id), "agg-b")[t0]
            assert after_b == pytest.approx(award_a + award_b - 250.0, abs=1e-3)  # the line stays full
            await asyncio.wait_for(task, 30)
            (s,) = schedules
            assert (s.source, s.mode, s.interval_start) == ("override", "redispatched", t0)
            # agg-b gives up what agg-a adds: the line stays at its rating and the import is unchanged.
            assert s.import_kw == pytest.approx(import_kw) == pytest.approx(s.awarded_import_kw, abs=1e-3)
            if formulation == "lossaware":
                # The revised schedule is what the AC power flow of the new dispatch imports, and line 17
                # is full at its worse end (the polygon's face is tangent at the converged flow).
                ac = ac_flow(await op.list_instructions(market_id=market.market_id), t0)
                k = list(ac.line_ids).index("17")
                ends = (np.hypot(ac.line_p_kw[k], ac.line_q_kvar[k]), np.hypot(ac.line_p_recv_kw[k],
                                                                              ac.line_q_recv_kvar[k]))
                assert s.import_kw == pytest.approx(ac.p0_kw, abs=0.05)
                assert max(ends) == pytest.approx(200.0, abs=0.05)
            # 300 kW out of bus 18 (load 90 kW, 40 kvar) would overload line 17 whatever the others do:
            # bus 18 is a leaf, so the line's bus-18 end carries its net injection, hypot(210, 40) = 213.8
            # kVA > 200 (more at the other end with losses). Voltages do not bind: refused naming line 17.
            with pytest.raises(FailedPrecondition, match="line_thermal at 17") as refused:
                await op.override_dispatch(market.market_id, aggregator_id="agg-a", resource_id="pv",
                                           interval_start=t0, kw=300.0, reason="too much")
            assert "bus_v" not in str(refused.value)
            # The ISO sheds 50 kW of import in the second interval: the flexible load buys less.
            sched, changed = await iso.submit_emergency_instruction(
                market.market_id, interval_start=market.intervals[1], shed_kw=50.0, reason="system emergency")
            assert sched.source == "emergency" and changed >= 1
            assert sched.import_kw <= sched.awarded_import_kw - 50.0 + 1e-6

            # agg-a's PV (offered at 10 per MWh) cut to nothing in the third interval: held (less flow).
            t2 = market.intervals[2]
            award_a2 = pv(await a.list_instructions(market_id=market.market_id), "agg-a")[t2]
            _, mode, _, _ = await op.override_report(market.market_id, aggregator_id="agg-a", resource_id="pv",
                                                     interval_start=t2, kw=0.0, reason="protection work")
            assert mode == "held"

            report = await op.settle_market(market.market_id)
            mine = await a.list_statements(market_id=market.market_id)
            energy = next(x for x in mine if x.kind == "override" and x.interval_start == t2)
            curtail = next(x for x in mine if x.kind == "curtailment" and x.interval_start == t2)
            assert energy.kw == pytest.approx(-award_a2, abs=1e-6)
            # Independent arithmetic: the deviation at the award's DLMP, and the lost margin of its marginal
            # bid (10 per MWh) at that DLMP, for one hour, to the cent.
            dlmp = energy.price
            cents = Decimal("0.01")
            assert energy.amount == (Decimal(str(energy.kw)) * dlmp / 1000).quantize(cents, ROUND_HALF_EVEN)
            assert curtail.price == dlmp - 10 > 0
            assert curtail.amount == (Decimal(str(award_a2)) * curtail.price / 1000).quantize(cents, ROUND_HALF_EVEN)
            # agg-a pushed up at t0 is paid the DLMP for it, above its price: no lost margin there.
            up = next(x for x in mine if x.kind == "curtailment" and x.interval_start == t0)
            assert up.amount == 0
            assert Decimal(report.totals["curtailment_payments"]) >= curtail.amount

    asyncio.run(body())

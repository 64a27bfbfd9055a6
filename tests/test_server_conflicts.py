"""The registry behind the market's resources, and conflicts across services blocking commitments, over gRPC.

ieee33: bus 25 hangs below line 22 (bus 3 -> 23) and line 24 (bus 24 -> 25); an injection at bus 25 relieves
the forward flow of line 22.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import grpc
import pytest

from dsomarket.clients.api import (BidSegment, FailedPrecondition, FlexNeed, FlexOffer, IntervalAward, InvalidArgument,
                                   Resource)
from dsomarket.clients.demo import delivery_day
from dsomarket.v1 import hybrid_pb2 as pb
from tests.harness import running
from tests.test_server_hybrid import _code, _stubs


def _battery(**kw) -> pb.Der:
    """The issue's 4-hour battery: 600 kW, 2,400 kWh, full; offered to all three services."""
    return pb.Der(der_id="bess-25", kind="battery", feeder_id="ieee33", bus="25", export_kw=600.0, import_kw=600.0,
                  energy_kwh=2400.0, soc_init_kwh=2400.0, soc_min_kwh=0.0, metering="telemetry",
                  control="dispatchable", services=["dso_energy", "dso_flexibility", "iso_direct"], **kw)


def test_a_battery_sold_to_the_iso_then_to_the_dso_flexibility_is_refused_before_either_stands(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, agg = env.clients["dso"], env.clients["agg-a"]
            await op.create_feeder("ieee33", builtin="ieee33")
            ch_a, reg_a, hyb_a, meta_a = _stubs(env, "agg-a")
            ch_o, reg_o, hyb_o, meta_o = _stubs(env, "dso")
            ch_i, _, hyb_i, meta_i = _stubs(env, "iso")
            try:
                pv = pb.Der(der_id="pv-18", kind="pv", feeder_id="ieee33", bus="18", export_kw=100.0,
                            metering="interval", control="curtailable", services=["dso_flexibility", "iso_direct"])
                await reg_a.RegisterDers(pb.RegisterDersRequest(ders=[_battery(), pv]), metadata=meta_a)
                fleet = Resource("bess-25", "ieee33", "25", "battery", 500.0, energy_kwh=2400.0, charge_kw=500.0,
                                 discharge_kw=500.0, soc_init_kwh=2400.0, soc_end_kwh=2400.0)
                # The market's resource is the registered DER: not before the DSO has approved it.
                with pytest.raises(FailedPrecondition, match="bess-25.*pending"):
                    await agg.register_resources([fleet])
                review = await reg_o.PrequalifyDers(pb.PrequalifyDersRequest(feeder_id="ieee33"), metadata=meta_o)
                der = {d.der_id: d for d in review.ders}
                bess = der["bess-25"]
                assert bess.status in (pb.DER_STATUS_APPROVED, pb.DER_STATUS_APPROVED_WITH_LIMITS)
                assert list(bess.approved_services) == ["dso_energy", "dso_flexibility", "iso_direct"]
                # Interval metering and curtailable control do not qualify for the ISO directly.
                assert list(der["pv-18"].approved_services) == ["dso_flexibility"]
                assert "iso_direct refused" in der["pv-18"].reason
                limit = min(bess.export_limit_kw, bess.import_limit_kw)
                assert limit >= 550.0
                with pytest.raises(InvalidArgument, match="capacity_kw.*approved limit"):
                    await agg.register_resources([Resource("bess-25", "ieee33", "25", "battery", limit + 1.0,
                                                           energy_kwh=2400.0, charge_kw=500.0, discharge_kw=500.0)])
                with pytest.raises(InvalidArgument, match="bus"):
                    await agg.register_resources([Resource("bess-25", "ieee33", "24", "battery", 500.0,
                                                           energy_kwh=2400.0, charge_kw=500.0, discharge_kw=500.0)])
                # The feeder keeps a registry: a resource that is not one of its DERs is not taken.
                with pytest.raises(FailedPrecondition, match="takes its resources from the DER registry"):
                    await agg.register_resources([Resource("loose-pv", "ieee33", "18", "pv", 50.0)])
                await agg.register_resources([fleet])

                day = delivery_day()
                # A DER not approved for iso_direct may not be scheduled by the ISO.
                _, code, details = await _code(hyb_i.SubmitDirectSchedules, pb.SubmitDirectSchedulesRequest(
                    feeder_id="ieee33", schedules=[pb.DirectSchedule(participant_id="pv-18", bus="18", p_kw=50.0,
                                                                     interval_start=_ts(day + timedelta(hours=12)))]),
                                               meta_i)
                assert code == grpc.StatusCode.FAILED_PRECONDITION and "not approved for iso_direct" in details
                # The ISO dispatches the battery 12:00-16:00 at 550 kW: 2,200 of its 2,400 kWh.
                iso_hours = [pb.DirectSchedule(participant_id="bess-25", bus="25", p_kw=550.0,
                                               interval_start=_ts(day + timedelta(hours=h))) for h in range(12, 16)]
                out = await hyb_i.SubmitDirectSchedules(pb.SubmitDirectSchedulesRequest(
                    feeder_id="ieee33", schedules=iso_hours), metadata=meta_i)
                assert out.stored == 4

                # The DSO's deferral need at 16:00; the battery's offer is the only one that relieves it.
                market = await op.create_market("flex-day", feeder_id="ieee33", kind="day_ahead", delivery_start=day,
                                                interval_count=24)
                at16 = market.intervals[16]
                # Envelopes on the market's forecast: each approved DER in each of its 24 intervals.
                env_a = await reg_a.GetOperatingEnvelopes(pb.GetOperatingEnvelopesRequest(
                    feeder_id="ieee33", market_id="flex-day"), metadata=meta_a)
                assert env_a.ac_check_passed and len(env_a.envelopes) == 2 * 24
                assert {e.der_id for e in env_a.envelopes} == {"bess-25", "pv-18"}
                await op.post_needs(market.market_id, [FlexNeed("deferral", "line", at16, "500", element="22",
                                                                required_kw=300.0)])
                # A flexibility offer beyond what the DSO approved is refused at the door.
                with pytest.raises(InvalidArgument, match="quantity_kw.*approved span limit"):
                    await agg.submit_flex_offers(market.market_id, [FlexOffer("too-big", "bess-25", "up", 5000.0, "100",
                                                                              at16)])
                await agg.submit_flex_offers(market.market_id, [FlexOffer("bess-up", "bess-25", "up", 300.0, "100",
                                                                          at16)])
                await op.close_gate(market.market_id)

                async def first_alert(token_of: str):
                    channel, _, hybrid, meta = _stubs(env, token_of)
                    try:
                        stream = hybrid.ReceiveConflictAlertStream(pb.ReceiveConflictAlertStreamRequest(),
                                                                   metadata=meta)
                        async for alert in stream:
                            return alert
                    finally:
                        await channel.close()

                listening = [asyncio.create_task(first_alert(n)) for n in ("agg-a", "dso")]
                await asyncio.sleep(0.5)
                with pytest.raises(FailedPrecondition) as err:
                    await op.clear_flexibility(market.market_id)
                text = str(err.value)
                assert "'bess-25'" in text and "energy_empty" in text and f"{at16:%Y-%m-%dT%H:%M:%S}" in text
                assert "dso_flexibility, iso_direct" in text
                # Nothing of the clearing stands: no awards, and the auction may be cleared again.
                assert await op.list_flex_awards(market_id=market.market_id) == []
                # The aggregator and the operator both hear of it (M10), on the stream and in the list.
                for alert in await asyncio.wait_for(asyncio.gather(*listening), 30):
                    assert (alert.resource_id, alert.kind, alert.refused) == ("bess-25", "energy_empty", "flexibility")
                    assert list(alert.services) == ["dso_flexibility", "iso_direct"]
                    assert alert.interval_start.ToDatetime().hour == 16 and alert.market_id == "flex-day"
                    # 2,400 - 4 x 550 - 300 = -100 kWh: empty before the hour is out.
                    assert alert.committed == pytest.approx(-100.0) and alert.limit == 0.0
                mine = await hyb_a.ListConflictAlerts(pb.ListConflictAlertsRequest(), metadata=meta_a)
                assert [a.resource_id for a in mine.alerts] == ["bess-25"]
                _, _, hyb_b, meta_b = _stubs(env, "agg-b")
                assert not (await hyb_b.ListConflictAlerts(pb.ListConflictAlertsRequest(), metadata=meta_b)).alerts
                actions = [r.action for r in await env.clients["auditor"].list_audit_records(action_prefix="conflict.")]
                assert actions == ["conflict.alert"]

                # The ISO moves its dispatch to 12:00-15:00: now the deferral fits and the clearing stands.
                await hyb_i.SubmitDirectSchedules(pb.SubmitDirectSchedulesRequest(feeder_id="ieee33", schedules=[
                    pb.DirectSchedule(participant_id="bess-25", bus="25", p_kw=0.0, interval_start=iso_hours[3].interval_start)]),
                    metadata=meta_i)
                report = await op.clear_flexibility(market.market_id)
                assert report.status == "optimal" and report.accepted_kw == pytest.approx(300.0)
                # A kW sold once: the ISO may not now schedule the battery's 600 kW at 16:00 on top of the 300 kW.
                _, code, details = await _code(hyb_i.SubmitDirectSchedules, pb.SubmitDirectSchedulesRequest(
                    feeder_id="ieee33", schedules=[pb.DirectSchedule(participant_id="bess-25", bus="25", p_kw=bess.export_limit_kw,
                                                                     interval_start=_ts(at16))]), meta_i)
                assert code == grpc.StatusCode.FAILED_PRECONDITION
                assert "'bess-25'" in details and "(export)" in details and "dso_flexibility, iso_direct" in details
                # 100 kW more fits, in kW and in energy; the DSO's check of the direct schedules then counts the DSO
                # market's own flexibility award in that interval.
                await hyb_i.SubmitDirectSchedules(pb.SubmitDirectSchedulesRequest(feeder_id="ieee33", schedules=[
                    pb.DirectSchedule(participant_id="bess-25", bus="25", p_kw=100.0, interval_start=_ts(at16))]),
                    metadata=meta_i)
                check = await hyb_o.CheckDeliverability(pb.CheckDeliverabilityRequest(feeder_id="ieee33"),
                                                        metadata=meta_o)
                assert check.dso_award_count == 1
                assert {(s.service, s.schedule.participant_id) for s in check.limits} >= {
                    ("dso_flexibility", "agg-a/bess-25"), ("iso_direct", "bess-25")}
                # A retired DER's services are no longer offered: a later review leaves it out.
                await reg_a.RetireDer(pb.RetireDerRequest(der_id="pv-18", reason="sold"), metadata=meta_a)
                await reg_a.RegisterDers(pb.RegisterDersRequest(ders=[pb.Der(
                    der_id="pv-19", kind="pv", feeder_id="ieee33", bus="19", export_kw=50.0, metering="interval",
                    control="curtailable", services=["dso_flexibility"])]), metadata=meta_a)
                (late,) = (await reg_o.PrequalifyDers(pb.PrequalifyDersRequest(feeder_id="ieee33"),
                                                      metadata=meta_o)).ders
                assert late.der_id == "pv-19" and list(late.approved_services) == ["dso_flexibility"]
            finally:
                for ch in (ch_a, ch_o, ch_i):
                    await ch.close()

    asyncio.run(body())


def test_an_energy_award_on_top_of_a_direct_schedule_is_refused_and_the_market_stays_published(tmp_path):
    """A kW sold twice across DSO energy and direct ISO: the ISO schedules 200 of pv-18's 300 kW at 00:00, then
    awards the DSO's market, whose disaggregation dispatches pv-18's 150 kW offer there too."""
    async def body():
        async with running(tmp_path) as env:
            op, agg, iso = env.clients["dso"], env.clients["agg-a"], env.clients["iso"]
            await op.create_feeder("ieee33", builtin="ieee33")
            ch_a, reg_a, hyb_a, meta_a = _stubs(env, "agg-a")
            ch_o, reg_o, _, meta_o = _stubs(env, "dso")
            ch_i, _, hyb_i, meta_i = _stubs(env, "iso")
            try:
                pv = pb.Der(der_id="pv-18", kind="pv", feeder_id="ieee33", bus="18", export_kw=300.0,
                            metering="telemetry", control="dispatchable", services=["dso_energy", "iso_direct"])
                await reg_a.RegisterDers(pb.RegisterDersRequest(ders=[pv]), metadata=meta_a)
                (der,) = (await reg_o.PrequalifyDers(pb.PrequalifyDersRequest(feeder_id="ieee33"), metadata=meta_o)).ders
                assert der.status == pb.DER_STATUS_APPROVED and der.export_limit_kw == 300.0
                await agg.register_resources([Resource("pv-18", "ieee33", "18", "pv", 300.0)])
                market = await op.create_market("da", feeder_id="ieee33", kind="day_ahead",
                                                delivery_start=delivery_day(), interval_count=2)
                t0 = market.intervals[0]
                # A bid beyond the approved limit is refused at the door.
                with pytest.raises(InvalidArgument, match="bids.quantity_kw.*approved export limit"):
                    await agg.submit_bids("da", [BidSegment("big", "pv-18", "sell", 300.5, Decimal("10"), t0)])
                await agg.submit_bids("da", [BidSegment(f"pv-{k}", "pv-18", "sell", 150.0, Decimal("10"), iv)
                                             for k, iv in enumerate(market.intervals)])
                await op.close_gate("da")
                await op.clear_market("da", iso_price_forecast=["50"])
                await op.publish_market("da")
                await hyb_i.SubmitDirectSchedules(pb.SubmitDirectSchedulesRequest(feeder_id="ieee33", schedules=[
                    pb.DirectSchedule(participant_id="pv-18", bus="18", p_kw=200.0, interval_start=_ts(t0))]),
                    metadata=meta_i)
                curves = await iso.list_curves(market_id="da")
                awards = [IntervalAward(c.interval_start, next(b.import_kw for b in c.bands
                                                               if b.price_high >= Decimal("50")), "50") for c in curves]
                with pytest.raises(FailedPrecondition) as err:
                    await iso.submit_award("da", awards)
                text = str(err.value)
                assert "'pv-18'" in text and "(export)" in text and f"{t0:%Y-%m-%dT%H:%M:%S}" in text
                assert "dso_energy, iso_direct" in text and "350.000 kW against a limit of 300.000" in text
                # Before either stands: the market is still published, with no instruction issued.
                assert (await op.get_market("da")).state == "published"
                assert await agg.list_instructions(market_id="da") == []
                (alert,) = (await hyb_a.ListConflictAlerts(pb.ListConflictAlertsRequest(), metadata=meta_a)).alerts
                assert (alert.kind, alert.refused, alert.market_id, alert.excess) == ("export", "award", "da",
                                                                                      pytest.approx(50.0))
                # The ISO takes its schedule down to what is left; the same award now stands.
                await hyb_i.SubmitDirectSchedules(pb.SubmitDirectSchedulesRequest(feeder_id="ieee33", schedules=[
                    pb.DirectSchedule(participant_id="pv-18", bus="18", p_kw=150.0, interval_start=_ts(t0))]),
                    metadata=meta_i)
                assert (await iso.submit_award("da", awards)).status == "optimal"
                assert (await op.get_market("da")).state == "awarded"
            finally:
                for ch in (ch_a, ch_o, ch_i):
                    await ch.close()

    asyncio.run(body())


def test_a_real_time_interval_award_that_sells_a_der_twice_is_refused_and_the_next_interval_proceeds(tmp_path):
    """The rolling real-time award (SubmitIntervalAward) goes through the same guard, interval by interval."""
    async def body():
        async with running(tmp_path) as env:
            op, agg, iso = env.clients["dso"], env.clients["agg-a"], env.clients["iso"]
            await op.create_feeder("ieee33", builtin="ieee33")
            ch_a, reg_a, hyb_a, meta_a = _stubs(env, "agg-a")
            ch_o, reg_o, _, meta_o = _stubs(env, "dso")
            ch_i, _, hyb_i, meta_i = _stubs(env, "iso")
            try:
                await reg_a.RegisterDers(pb.RegisterDersRequest(ders=[pb.Der(
                    der_id="pv-18", kind="pv", feeder_id="ieee33", bus="18", export_kw=300.0, metering="telemetry",
                    control="dispatchable", services=["dso_energy", "iso_direct"])]), metadata=meta_a)
                await reg_o.PrequalifyDers(pb.PrequalifyDersRequest(feeder_id="ieee33"), metadata=meta_o)
                await agg.register_resources([Resource("pv-18", "ieee33", "18", "pv", 300.0)])
                market = await op.create_market("rt", feeder_id="ieee33", kind="real_time", interval_count=12,
                                                delivery_start=delivery_day() + timedelta(hours=9))
                await agg.submit_bids("rt", [BidSegment(f"pv-{k}", "pv-18", "sell", 150.0, Decimal("10"), iv)
                                             for k, iv in enumerate(market.intervals)])
                await op.close_gate("rt")
                await op.clear_market("rt", iso_price_forecast=["50"])
                await op.publish_market("rt")
                t0 = market.intervals[0]
                await hyb_i.SubmitDirectSchedules(pb.SubmitDirectSchedulesRequest(
                    feeder_id="ieee33", interval_minutes=5, schedules=[
                        pb.DirectSchedule(participant_id="pv-18", bus="18", p_kw=200.0, interval_start=_ts(t0))]),
                    metadata=meta_i)
                curves = await iso.list_curves(market_id="rt")
                awards = [IntervalAward(c.interval_start, next(b.import_kw for b in c.bands
                                                               if b.price_high >= Decimal("50")), "50") for c in curves]
                with pytest.raises(FailedPrecondition, match=r"'pv-18' of agg-a \(export\)"):
                    await iso.submit_interval_award("rt", awards[:1])
                assert await agg.list_instructions(market_id="rt") == []
                (alert,) = (await hyb_a.ListConflictAlerts(pb.ListConflictAlertsRequest(), metadata=meta_a)).alerts
                assert (alert.refused, alert.market_id, alert.interval_start.ToDatetime().minute) == ("award", "rt", 0)
                # The next five minutes carry no direct schedule: their award stands.
                result, remaining = await iso.submit_interval_award("rt", awards[1:2])
                assert result.status == "optimal" and remaining == 11
                assert {i.interval_start for i in await agg.list_instructions(market_id="rt")} == {market.intervals[1]}
            finally:
                for ch in (ch_a, ch_o, ch_i):
                    await ch.close()

    asyncio.run(body())


def _ts(when):
    from google.protobuf.timestamp_pb2 import Timestamp

    t = Timestamp()
    t.FromDatetime(when)
    return t

"""DER registry and direct ISO schedules over gRPC: life cycle, review, roles, deliverability."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from dsomarket.server import audit, db
from dsomarket.v1 import hybrid_pb2 as pb
from dsomarket.v1 import hybrid_pb2_grpc
from tests import harness
from tests.harness import running


def _stubs(env, who: str):
    channel = grpc.aio.insecure_channel(env.target)
    meta = (("authorization", f"Bearer {env.tokens[who]}"),)
    return channel, hybrid_pb2_grpc.DerRegistryServiceStub(channel), hybrid_pb2_grpc.HybridServiceStub(channel), meta


async def _code(call, request, meta):
    try:
        return await call(request, metadata=meta), grpc.StatusCode.OK, ""
    except grpc.aio.AioRpcError as exc:
        return None, exc.code(), exc.details()


def _der(der_id: str, bus: str, export_kw: float, **kw) -> pb.Der:
    return pb.Der(der_id=der_id, kind=kw.pop("kind", "pv"), feeder_id="rated", bus=bus, export_kw=export_kw,
                  metering="telemetry", control="dispatchable", **kw)


def _stamp(hour: int) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(datetime(2026, 7, 1, hour, tzinfo=timezone.utc))
    return t


def test_register_review_retire_and_deliverability(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            await env.clients["dso"].create_feeder("rated", builtin="ieee33")
            ch_a, reg_a, _, meta_a = _stubs(env, "agg-a")
            ch_b, reg_b, _, meta_b = _stubs(env, "agg-b")
            ch_o, reg_o, hyb_o, meta_o = _stubs(env, "dso")
            ch_i, _, hyb_i, meta_i = _stubs(env, "iso")
            try:
                ders = [_der("pv-18", "18", 300.0), _der("bess-33", "33", 500.0, kind="battery", import_kw=500.0,
                                                           energy_kwh=2000.0), _der("pv-99", "99", 10.0)]
                out, code, _ = await _code(reg_a.RegisterDers, pb.RegisterDersRequest(ders=ders), meta_a)
                assert code == grpc.StatusCode.OK
                assert [d.status for d in out.ders] == [pb.DER_STATUS_PENDING] * 3
                # Bad rows name the field; another aggregator may not take a der_id; roles are checked.
                _, code, details = await _code(reg_a.RegisterDers, pb.RegisterDersRequest(
                    ders=[_der("x", "2", -1.0)]), meta_a)
                assert code == grpc.StatusCode.INVALID_ARGUMENT and "ders[0].export_kw" in details
                _, code, _ = await _code(reg_b.RegisterDers, pb.RegisterDersRequest(ders=[_der("pv-18", "2", 1.0)]),
                                         meta_b)
                assert code == grpc.StatusCode.PERMISSION_DENIED
                _, code, _ = await _code(reg_a.PrequalifyDers, pb.PrequalifyDersRequest(feeder_id="rated"), meta_a)
                assert code == grpc.StatusCode.PERMISSION_DENIED
                listed, _, _ = await _code(reg_b.ListDers, pb.ListDersRequest(), meta_b)
                assert not listed.ders                                     # agg-b sees only its own
                # The DSO's review: ieee33's base case is below vmin at its far ends, so export is what fits.
                review, code, details = await _code(reg_o.PrequalifyDers, pb.PrequalifyDersRequest(feeder_id="rated"),
                                                    meta_o)
                assert code == grpc.StatusCode.OK, details
                status = {d.der_id: d for d in review.ders}
                assert status["pv-18"].status == pb.DER_STATUS_APPROVED
                assert status["pv-99"].status == pb.DER_STATUS_REFUSED and "bus '99'" in status["pv-99"].reason
                assert status["bess-33"].status in (pb.DER_STATUS_APPROVED, pb.DER_STATUS_APPROVED_WITH_LIMITS)
                assert review.ac_check_passed
                retired, code, _ = await _code(reg_a.RetireDer, pb.RetireDerRequest(der_id="pv-18", reason="sold"),
                                               meta_a)
                assert retired.der.status == pb.DER_STATUS_RETIRED
                _, code, _ = await _code(reg_b.RetireDer, pb.RetireDerRequest(der_id="bess-33", reason="x"), meta_b)
                assert code == grpc.StatusCode.NOT_FOUND

                # Direct ISO schedules: 3,000 kW at bus 18 breaks the voltage band; each gets its limit.
                sched = [pb.DirectSchedule(participant_id="big", bus="18", interval_start=_stamp(12), p_kw=3000.0),
                         pb.DirectSchedule(participant_id="small", bus="17", interval_start=_stamp(12), p_kw=1000.0)]
                _, code, _ = await _code(hyb_o.SubmitDirectSchedules, pb.SubmitDirectSchedulesRequest(
                    feeder_id="rated", schedules=sched), meta_o)
                assert code == grpc.StatusCode.PERMISSION_DENIED
                stored, code, _ = await _code(hyb_i.SubmitDirectSchedules, pb.SubmitDirectSchedulesRequest(
                    feeder_id="rated", schedules=sched), meta_i)
                assert stored.stored == 2
                _, code, details = await _code(hyb_i.SubmitDirectSchedules, pb.SubmitDirectSchedulesRequest(
                    feeder_id="rated", schedules=[pb.DirectSchedule(participant_id="p", bus="nope",
                                                                    interval_start=_stamp(12), p_kw=1.0)]), meta_i)
                assert code == grpc.StatusCode.INVALID_ARGUMENT and "schedules[0].bus" in details
                check, code, details = await _code(hyb_o.CheckDeliverability, pb.CheckDeliverabilityRequest(
                    feeder_id="rated"), meta_o)
                assert code == grpc.StatusCode.OK, details
                assert not check.deliverable and check.ac_check_passed
                assert any("voltage above vmax" in v.constraint for v in check.violations)
                limits = {lim.schedule.participant_id: lim for lim in check.limits}
                assert 0 < limits["big"].limit_kw < 3000.0 and limits["big"].curtailed_kw > 0
            finally:
                for ch in (ch_a, ch_b, ch_o, ch_i):
                    await ch.close()
            if harness.BACKEND == "sqlite":
                conn = db.connect(env.db_path)
                actions = [r["action"] for r in audit.records(conn, "registry.")] + \
                          [r["action"] for r in audit.records(conn, "hybrid.")]
                conn.close()
                assert actions == ["registry.register", "registry.review", "registry.retire", "hybrid.schedules"]

    asyncio.run(body())


@pytest.mark.parametrize("field", ["kind", "metering"])
def test_unknown_enumerated_text_is_refused(tmp_path, field):
    async def body():
        async with running(tmp_path) as env:
            await env.clients["dso"].create_feeder("rated", builtin="ieee33")
            ch, reg, _, meta = _stubs(env, "agg-a")
            try:
                der = _der("x", "2", 1.0)
                setattr(der, field, "bogus")
                _, code, details = await _code(reg.RegisterDers, pb.RegisterDersRequest(ders=[der]), meta)
                assert code == grpc.StatusCode.INVALID_ARGUMENT and f"ders[0].{field}" in details
            finally:
                await ch.close()

    asyncio.run(body())

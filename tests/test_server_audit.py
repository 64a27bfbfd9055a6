"""The audit log: hash chain, tamper detection, append-only, and replay of every clearing."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

import dsomarket.clients.cli as cli
from dsomarket.clients.api import BidSegment, IntervalAward
from dsomarket.server import audit, db
from dsomarket.server.replay import replay
from tests.harness import running, simple_bids, small_market


async def _award_on_curve(env, market_id, price="55"):
    """Every interval awarded the import its curve offers at ``price`` (the band containing it)."""
    curves = await env.clients["iso"].list_curves(market_id=market_id)
    return await env.clients["iso"].submit_award(
        market_id, [IntervalAward(c.interval_start, next(b.import_kw for b in c.bands if b.price_high >= Decimal(price)),
                                  price) for c in curves])


async def day_ahead_and_real_time(env, formulation="lossaware"):
    """A day-ahead market settled, then a real-time market in its second hour settled against it, both
    awarded on their curves at 55 per MWh. The real-time curve is traced with the day-ahead positions it
    holds (those of every resource that does not bid again), so that the ISO's award is on the feeder's
    curve: then the real-time deviations are revenue adequate, the surplus >= 0 (engine/settlement.py).
    One position deviates: one line, and on the loss-aware model a second with its DLMP's loss part."""
    op, a, b = env.clients["dso"], env.clients["agg-a"], env.clients["agg-b"]
    da = await small_market(env, intervals=2, formulation=formulation)
    await a.submit_bids(da.market_id, simple_bids(da, "a"))
    await b.submit_bids(da.market_id, simple_bids(da, "b", load_price="60"))
    await op.close_gate(da.market_id)
    await op.clear_market(da.market_id, iso_price_forecast=["55"])
    await op.publish_market(da.market_id)
    assert (await _award_on_curve(env, da.market_id)).status == "optimal"
    assert Decimal((await op.settle_market(da.market_id)).totals["merchandising_surplus"]) >= 0

    start = da.intervals[1]
    rt = await op.create_market("rt-1", feeder_id="ieee33", kind="real_time", delivery_start=start,
                                interval_count=1, day_ahead_market_id=da.market_id, formulation=formulation)
    # Same bid id as the day-ahead segment: settled as a deviation from its day-ahead position.
    await a.submit_bids(rt.market_id, [BidSegment("a-pv-1", "pv", "sell", 60.0, "8", start)])
    await op.close_gate(rt.market_id)
    await op.clear_market(rt.market_id, iso_price_forecast=["70"])
    await op.publish_market(rt.market_id)
    assert (await _award_on_curve(env, rt.market_id)).status == "optimal"
    settled = await op.settle_market(rt.market_id)
    statements = await a.list_statements(market_id=rt.market_id)
    assert settled.statement_count == len(statements) == (1 if formulation == "lossless" else 2)
    assert [s.settlement for s in statements] == ["real_time"] * len(statements)
    assert Decimal(settled.totals["merchandising_surplus"]) >= 0
    return da, rt


def test_a_loss_aware_real_time_market_settled_against_its_day_ahead_market_is_revenue_adequate(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            await day_ahead_and_real_time(env, "lossaware")

    asyncio.run(body())


def test_every_clearing_replays_identically_from_the_log(tmp_path):
    """On the lossless model: the loss-aware curves are about 90x slower to trace (issue 9), and replay traces
    them again; the real-time clearing's day-ahead positions are replayed the same way on both models."""
    async def body():
        async with running(tmp_path) as env:
            da, rt = await day_ahead_and_real_time(env, "lossless")
            records = await env.clients["auditor"].list_audit_records(action_prefix="bids.")
            assert {r.action for r in records} == {"bids.submit"}
            assert {r.actor for r in records} == {"agg-a", "agg-b"}
            path = env.db_path
        conn = db.connect(path)
        checks = replay(conn)
        steps = [(m, s) for m in (da.market_id, rt.market_id) for s in ("clear", "award", "settle")]
        assert [(c.market_id, c.stage) for c in checks] == steps
        assert all(c.identical for c in checks)
        only_rt = replay(conn, "rt-1")  # with the day-ahead market it refers to
        assert [c.stage for c in only_rt] == ["clear", "award",
                                              "settle"] * 2 and all(c.identical for c in only_rt)
        conn.close()

    asyncio.run(body())


def _flow_db(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)
            await env.clients["agg-a"].submit_bids(market.market_id, simple_bids(market, "a"))
            await env.clients["dso"].close_gate(market.market_id)
            return env.db_path

    return asyncio.run(body())


def _cli(monkeypatch, capsys, *argv):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("service",))
    code = cli.main([str(a) for a in argv])
    return code, *capsys.readouterr()


def test_tampering_is_detected(tmp_path, monkeypatch, capsys):
    path = _flow_db(tmp_path)
    conn = db.connect(path)
    report = audit.verify(conn)
    assert report.ok and report.records >= 8
    code, out, _ = _cli(monkeypatch, capsys, "audit", "verify", "--db", path)
    assert code == 0 and f"{report.records} records" in out

    for sql in ("UPDATE audit SET actor = 'mallory' WHERE seq = 3", "DELETE FROM audit WHERE seq = 3"):
        with pytest.raises(Exception, match="append-only"):
            conn.execute(sql)
    if db.is_postgres(path):
        with pytest.raises(Exception, match="append-only"):
            conn.execute("TRUNCATE audit")

    # Behind the triggers' back: change one bid's price inside a payload.
    on_table = " ON audit" if db.is_postgres(path) else ""   # PostgreSQL's triggers are named per table
    conn.execute("DROP TRIGGER audit_no_update" + on_table)
    row = conn.execute("SELECT seq, payload FROM audit WHERE action = 'bids.submit'").fetchone()
    payload = json.loads(row["payload"])
    payload["bids"]["price"][0] = "0.01"
    conn.execute("UPDATE audit SET payload = ? WHERE seq = ?", (audit.canonical(payload), row["seq"]))
    broken = audit.verify(conn)
    assert not broken.ok and broken.first_bad == row["seq"] and "hash" in broken.reason
    code, out, _ = _cli(monkeypatch, capsys, "audit", "verify", "--db", path)
    assert code == 1 and f"BROKEN at record {row['seq']}" in out

    # Recomputing that record's hash moves the break to the next record's link.
    h = audit.record_hash(row["seq"],
                          *conn.execute("SELECT recorded_us, actor, role, action, payload, prev_hash "
                                                    "FROM audit WHERE seq = ?", (row["seq"],)).fetchone())
    conn.execute("UPDATE audit SET hash = ? WHERE seq = ?", (h, row["seq"]))
    assert audit.verify(conn).first_bad == row["seq"] + 1

    conn.execute("DROP TRIGGER audit_no_delete" + on_table)
    conn.execute("DELETE FROM audit WHERE seq = 2")
    gap = audit.verify(conn)
    assert not gap.ok and gap.first_bad == 2 and "missing" in gap.reason
    conn.close()


def test_cli_replay_and_missing_database(tmp_path, monkeypatch, capsys):
    async def body():
        async with running(tmp_path) as env:
            await day_ahead_and_real_time(env, "lossless")
            return env.db_path

    path = asyncio.run(body())
    code, out, _ = _cli(monkeypatch, capsys, "audit", "replay", "--db", path, "--market", "da-test")
    assert code == 0 and "3 steps replayed, 0 differ" in out
    code, _, err = _cli(monkeypatch, capsys, "audit", "verify", "--db", tmp_path / "nope.sqlite")
    assert code == 2 and "no such file" in err

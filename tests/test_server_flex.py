"""The flexibility auction over gRPC: needs, offers, clearing, results, and who may see and do what.

The 33-bus feeder's line ``5`` runs from bus 5 to bus 6; bus 18 lies below it (an injection there
relieves it), bus 4 above it and bus 25 on another branch (neither does).
"""

from __future__ import annotations

import asyncio
import io
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import SimpleNamespace

import grpc
import polars as pl
import pytest

from dsomarket.clients.api import (AlreadyExists, BidSegment, Client, FailedPrecondition, FlexNeed, FlexOffer, IntervalAward, InvalidArgument,
                         NotFound, PermissionDenied, Resource, flex_offer_columns)
from dsomarket.server import db
from dsomarket.v1 import flexibility_pb2 as pb
from dsomarket.server.replay import replay
from tests.harness import PARTICIPANTS, ThreadedServer, create_tokens, database, old_database, running, simple_bids, small_market


def run(coro):
    return asyncio.run(coro)


def line_need(start: datetime, need_id: str = "n-line", **kw) -> FlexNeed:
    """100 kW off line 5 (bus 5 -> 6), worth up to 200 per MWh, all or nothing."""
    return FlexNeed(need_id, "line", start, "200", element="5", required_kw=100.0, **kw)


async def flex_market(env, market_id: str = "flex", **options):
    """A two-interval day-ahead market on ieee33, and agg-b's flexible load ``near`` at bus 4 (upstream)."""
    market = await small_market(env, market_id, intervals=2, **options)
    if not any(r.resource_id == "near" for r in await env.clients["agg-b"].list_resources()):
        await env.clients["agg-b"].register_resources([Resource("near", "ieee33", "4", "flexible_load", 300.0)])
    return market


async def _raw(client, method: str, request):
    """A FlexibilityService call with a hand-made request, bypassing the client's own checks."""
    try:
        await getattr(client._flex, method)(request, metadata=client._metadata)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_needs_offers_clearing_and_each_aggregator_sees_only_its_own_awards(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a, b, aud = (env.clients[n] for n in ("dso", "agg-a", "agg-b", "auditor"))
            market = await flex_market(env)
            m, (t0, t1) = market.market_id, market.intervals
            ack = await op.post_needs(m, [line_need(t0)])
            assert ack.count == 1
            # Aggregators see where relief is needed, not what the DSO would pay for it.
            (seen,) = await a.list_needs(market_id=m)
            assert (seen.need_id, seen.kind, seen.element, seen.direction, seen.interval_start) == \
                ("n-line", "line", "5", "forward", t0)
            assert seen.max_price is None and seen.required_kw == 100.0
            assert (await op.list_needs(market_id=m))[0].max_price == Decimal("200")

            # The same offer id for both aggregators: ids are scoped per aggregator.
            await a.submit_flex_offers(m, [FlexOffer("o1", "pv", "up", 80.0, "50", t0),
                                           FlexOffer("a-load", "load", "up", 50.0, "1", t0)])
            await b.submit_flex_offers(m, [FlexOffer("o1", "pv", "up", 100.0, "90", t0),
                                           FlexOffer("b-near", "near", "up", 200.0, "5", t0),
                                           FlexOffer("b-later", "pv", "up", 100.0, "1", t1)])
            assert {o.offer_id for o in await b.list_flex_offers(market_id=m)} == {"o1", "b-near", "b-later"}
            assert {o.bus for o in await b.list_flex_offers(market_id=m)} == {"18", "4"}
            assert len(await op.list_flex_offers(market_id=m)) == 5

            with pytest.raises(FailedPrecondition, match="needs the gate closed"):
                await op.clear_flexibility(m)
            await op.close_gate(m)
            report = await op.clear_flexibility(m)
            assert (report.status, report.pricing, report.currency) == ("optimal", "pay_as_bid", "EUR")
            # 80 kW at 50 and 20 kW at 90 for one hour: 4.00 + 1.80.
            assert report.total_cost == Decimal("5.8") and report.shortfall_cost == Decimal("0")
            assert (report.need_count, report.needs_met, report.offer_count, report.offers_accepted) == (1, 1, 5, 2)
            assert report.accepted_kw == pytest.approx(100.0)

            mine = {w.offer_id: w for w in await a.list_flex_awards(market_id=m)}
            assert set(mine) == {"o1", "a-load"} and {w.aggregator_id for w in mine.values()} == {"agg-a"}
            assert (mine["o1"].accepted_kw, mine["o1"].reason, mine["o1"].price, mine["o1"].payment) == \
                (pytest.approx(80.0), "accepted", Decimal("50"), Decimal("4"))
            assert mine["o1"].need_ids == ("n-line",) and mine["o1"].currency == "EUR"
            # Bus 25 is on another branch: no effect on line 5, so not bought however cheap.
            assert (mine["a-load"].accepted_kw, mine["a-load"].reason, mine["a-load"].price) == (0.0, "location", None)
            theirs = {w.offer_id: w for w in await b.list_flex_awards(market_id=m)}
            assert set(theirs) == {"o1", "b-near", "b-later"}
            assert (theirs["o1"].accepted_kw, theirs["o1"].reason) == (pytest.approx(20.0), "accepted")
            assert theirs["o1"].payment == Decimal("1.8")
            # Upstream of the congested line, the cheapest offer of all only adds to its flow.
            assert (theirs["b-near"].accepted_kw, theirs["b-near"].reason, theirs["b-near"].need_ids) == \
                (0.0, "location", ())
            assert theirs["b-later"].reason == "location"  # no need in its interval
            with pytest.raises(PermissionDenied):
                await a.list_flex_awards(aggregator_id="agg-b")
            assert len(await op.list_flex_awards(market_id=m)) == 5
            assert len(await aud.list_flex_awards(aggregator_id="agg-a")) == 2

            (result,) = await aud.list_flex_need_results(market_id=m)
            assert (result.need_id, result.met, result.shortfall, result.cost, result.marginal_price) == \
                ("n-line", True, 0.0, Decimal("5.8"), Decimal("90"))
            assert result.interval_start == t0 and result.kind == "line" and result.element == "5"

            # Final: no second clearing, no more needs.
            with pytest.raises(FailedPrecondition, match="is cleared"):
                await op.clear_flexibility(m)
            with pytest.raises(FailedPrecondition, match="is cleared"):
                await op.post_needs(m, [line_need(t1, "late")])

            # Uniform pricing on a second market: both accepted offers are paid the marginal 90.
            m2 = (await flex_market(env, "flex-uniform")).market_id
            await op.post_needs(m2, [line_need(t0)])
            await a.submit_flex_offers(m2, [FlexOffer("o1", "pv", "up", 80.0, "50", t0)])
            await b.submit_flex_offers(m2, [FlexOffer("o1", "pv", "up", 100.0, "90", t0)])
            await op.close_gate(m2)
            uniform = await op.clear_flexibility(m2, pricing="uniform")
            assert (uniform.pricing, uniform.total_cost) == ("uniform", Decimal("9"))
            assert [(w.price, w.payment) for w in await a.list_flex_awards(market_id=m2)] == \
                [(Decimal("90"), Decimal("7.2"))]

            actions = [r.action for r in await aud.list_audit_records(action_prefix="flex.")]
            assert actions.count("flex.clear") == 2 and actions.count("flex.offers.submit") == 4
            assert actions.count("flex.needs.post") == 2
            assert (await aud.verify_audit_chain()).ok
        # The log alone recomputes both auctions.
        conn = db.connect(env.db_path)
        try:
            checks = [c for c in replay(conn) if c.stage == "flex"]
        finally:
            conn.close()
        assert len(checks) == 2 and all(c.identical for c in checks)

    run(body())


def test_bad_offers_and_needs_reject_the_whole_batch(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a, b = (env.clients[n] for n in ("dso", "agg-a", "agg-b"))
            market = await flex_market(env)
            m, (t0, t1) = market.market_id, market.intervals

            def offers(**change):
                rows = [FlexOffer(f"x{k}", "pv" if k % 2 else "load", "up", 40.0, "10", t0 if k < 2 else t1)
                        for k in range(4)]
                k, fields = change.popitem() if change else (None, None)
                if k is not None:
                    rows[int(k[1:])] = FlexOffer(**{**vars(rows[int(k[1:])]), **fields})
                return rows

            bad = [
                (offers(k3={"quantity_kw": -1.0}), InvalidArgument, r"offers\.quantity_kw\[3\]: must be between 0.001 and"),
                (offers(k1={"price": "-5"}), InvalidArgument, r"offers\.price\[1\]: must not be negative"),
                (offers(k2={"price": "12.1234567"}), InvalidArgument, r"offers\.price\[2\]: must be a decimal"),
                (offers(k0={"availability_price": "5000"}), InvalidArgument,
                 r"offers\.availability_price\[0\]: 5000 is above the market's price cap"),
                (offers(k2={"min_kw": 41.0}), InvalidArgument, r"offers\.min_kw\[2\]: must be between 0 and"),
                (offers(k3={"offer_id": "x0"}), InvalidArgument, r"offers\.offer_id\[3\]: 'x0' repeats"),
                (offers(k1={"offer_id": "a/b"}), InvalidArgument, r"offers\.offer_id\[1\]: must be 1 to 64"),
                (offers(k1={"quantity_kw": 301.0}), InvalidArgument, r"offers\.quantity_kw\[1\]: 301.0 kW exceeds"),
                (offers(k2={"resource_id": "nope"}), NotFound, r"offers\.resource_id\[2\]: you have no resource"),
                # Another aggregator's resource looks like one nobody registered.
                (offers(k2={"resource_id": "near"}), NotFound, r"offers\.resource_id\[2\]: you have no resource"),
                (offers(k0={"interval_start": t0 + timedelta(minutes=30)}), InvalidArgument,
                 r"offers\.interval_starts\[\d\]: .* is not an interval start"),
            ]
            for batch, error, match in bad:
                with pytest.raises(error, match=match):
                    await a.submit_flex_offers(m, batch)
            cols = flex_offer_columns(offers())
            cols.direction[2] = pb.FLEX_DIRECTION_UNSPECIFIED
            code, details = await _raw(a, "SubmitFlexOffers", pb.SubmitFlexOffersRequest(market_id=m, offers=cols))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("offers.direction[2]")
            cols = flex_offer_columns(offers())
            cols.divisible.append(False)
            code, details = await _raw(a, "SubmitFlexOffers", pb.SubmitFlexOffersRequest(market_id=m, offers=cols))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("offers.divisible: has 1 entries")
            with pytest.raises(NotFound, match="market_id: no market 'nope'"):
                await a.submit_flex_offers("nope", offers())
            assert await a.list_flex_offers(include_withdrawn=True) == []

            # The corrected batch goes through whole; a used id is ALREADY_EXISTS and changes nothing.
            assert (await a.submit_flex_offers(m, offers())).count == 4
            with pytest.raises(AlreadyExists, match=r"offers\.offer_id\[1\]: 'x2' already exists"):
                await a.submit_flex_offers(m, [FlexOffer("fresh", "pv", "up", 1.0, "1", t0),
                                               FlexOffer("x2", "pv", "up", 1.0, "1", t0)])
            assert len(await a.list_flex_offers()) == 4
            # Another aggregator's offer id is NOT_FOUND, word for word like an unknown one.
            with pytest.raises(NotFound) as theirs:
                await b.withdraw_flex_offers(m, ["x1"])
            with pytest.raises(NotFound) as unknown:
                await b.withdraw_flex_offers(m, ["zz"])
            assert str(theirs.value).replace("x1", "?") == str(unknown.value).replace("zz", "?")
            assert (await a.withdraw_flex_offers(m, ["x1"])).count == 1
            with pytest.raises(NotFound, match=r"offer_ids\[0\]: you have no active offer 'x1'"):
                await a.withdraw_flex_offers(m, ["x1"])
            listed = {o.offer_id: o.status for o in await a.list_flex_offers(include_withdrawn=True)}
            assert listed == {"x0": "active", "x1": "withdrawn", "x2": "active", "x3": "active"}

            # Needs: the first bad field is named, and nothing of the batch is stored.
            good = [line_need(t0, "n0"), FlexNeed("n1", "import", t1, "80", required_kw=50.0, partial_ok=True)]
            bad_needs = [
                ([good[0], FlexNeed("n1", "line", t0, "80", element="no-such-line", required_kw=5.0)],
                 r"needs\[1\]\.element: unknown or out-of-service line"),
                ([FlexNeed("v", "voltage", t0, "80", element="1", required_pu=0.01), good[1]],
                 r"needs\[0\]\.element: is the root bus"),
                ([good[0], FlexNeed("n1", "line", t0, "80", element="5", required_pu=0.01)],
                 r"needs\[1\]\.required_pu: must be 0 for a line need"),
                ([good[0], FlexNeed("n1", "voltage", t0, "80", element="18", direction="forward", required_pu=0.01)],
                 r"needs\[1\]\.direction: a voltage need is raise or lower"),
                ([good[0], FlexNeed("n1", "import", t0, "-1", required_kw=5.0)],
                 r"needs\[1\]\.max_price: must not be negative"),
                ([good[0], FlexNeed("n1", "import", t0, "1", element="5", required_kw=5.0)],
                 r"needs\[1\]\.element: must be empty for an import need"),
                ([good[0], line_need(t0 + timedelta(hours=5), "n1")], r"needs\[1\]\.interval_start: .* is not an"),
                ([good[0], line_need(t0, "n0")], r"needs\[1\]\.need_id: 'n0' repeats needs\[0\]"),
            ]
            for batch, match in bad_needs:
                with pytest.raises(InvalidArgument, match=match):
                    await op.post_needs(m, batch)
            code, details = await _raw(op, "PostNeeds", pb.PostNeedsRequest(
                market_id=m, needs=[good[0].to_pb(), pb.FlexNeed(need_id="k", required_kw=1.0, max_price="1")]))
            assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("needs[1].kind")
            assert await op.list_needs() == []
            assert (await op.post_needs(m, good)).count == 2
            with pytest.raises(AlreadyExists, match=r"needs\[0\]\.need_id: 'n1' already exists"):
                await op.post_needs(m, [good[1]])
            assert [n.need_id for n in await op.list_needs(market_id=m)] == ["n0", "n1"]

    run(body())


def test_gate_closure_and_market_state(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a = env.clients["dso"], env.clients["agg-a"]
            now = datetime.now(timezone.utc)
            late = await flex_market(env, "flex-late", gate_closure_time=now - timedelta(seconds=1))
            with pytest.raises(FailedPrecondition, match=r"offers\.interval_starts\[0\]: the gate of the interval"):
                await a.submit_flex_offers(late.market_id, [FlexOffer("o", "pv", "up", 10.0, "1", late.intervals[1])])
            # The operator may still post needs; existing offers could meet them.
            await op.post_needs(late.market_id, [line_need(late.intervals[0])])

            market = await flex_market(env)
            m, t0 = market.market_id, market.intervals[0]
            await a.submit_flex_offers(m, [FlexOffer("o", "pv", "up", 10.0, "1", t0)])
            await op.close_gate(m)
            with pytest.raises(FailedPrecondition, match="is closed: submitting flexibility offers needs it open"):
                await a.submit_flex_offers(m, [FlexOffer("o2", "pv", "up", 10.0, "1", t0)])
            with pytest.raises(FailedPrecondition, match="is closed"):
                await a.withdraw_flex_offers(m, ["o"])
            with pytest.raises(FailedPrecondition, match="has no flexibility needs"):
                await op.clear_flexibility(m)
            assert [o.status for o in await a.list_flex_offers(market_id=m)] == ["active"]

    run(body())


def test_roles_and_scopes(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a, b, iso, aud = (env.clients[n] for n in ("dso", "agg-a", "agg-b", "iso", "auditor"))
            market = await flex_market(env)
            m, t0 = market.market_id, market.intervals[0]
            await a.submit_flex_offers(m, [FlexOffer("o", "pv", "up", 10.0, "1", t0)])
            refused = [
                a.post_needs(m, [line_need(t0)]), aud.post_needs(m, [line_need(t0)]),
                op.submit_flex_offers(m, [FlexOffer("o", "pv", "up", 10.0, "1", t0)]),
                aud.withdraw_flex_offers(m, ["o"]), a.clear_flexibility(m), iso.clear_flexibility(m),
                iso.list_needs(), iso.list_flex_offers(), iso.list_flex_awards(), a.list_flex_need_results(),
                iso.list_flex_need_results(),
            ]
            for call in refused:
                with pytest.raises(PermissionDenied, match="is not open to the"):
                    await call
            for call in (b.list_flex_offers(aggregator_id="agg-a"), b.list_flex_awards(aggregator_id="nobody")):
                with pytest.raises(PermissionDenied, match="only its own data"):
                    await call
            assert await b.list_flex_offers() == []
            assert [o.aggregator_id for o in await aud.list_flex_offers()] == ["agg-a"]
            assert await op.list_flex_need_results() == [] and await aud.list_needs() == []

    run(body())


def test_a_database_from_before_the_flexibility_tables_opens_and_gains_them(tmp_path):
    old = ";\n".join(stmt for stmt in db.SCHEMA.split(";\n") if "flex_" not in stmt)
    path = old_database(tmp_path, "old.sqlite", old)

    async def body():
        async with running(tmp_path, db_name="old.sqlite") as env:
            market = await flex_market(env)
            assert (await env.clients["dso"].post_needs(market.market_id, [line_need(market.intervals[0])])).count == 1

    run(body())
    conn = db.connect(path)
    try:
        for table in ("flex_needs", "flex_offers", "flex_clearings", "flex_awards", "flex_need_results"):
            assert db.columns(conn, table)
    finally:
        conn.close()


def test_flex_commands_against_a_server(tmp_path, run):
    path = database(tmp_path)
    tokens = create_tokens(path, PARTICIPANTS)
    server = ThreadedServer(path)
    try:
        async def with_clients(work):
            env = SimpleNamespace(clients={n: Client(server.target, t) for n, t in tokens.items()})
            try:
                return await work(env)
            finally:
                for c in env.clients.values():
                    await c.close()

        async def setup(env):
            market = await flex_market(env)
            await env.clients["dso"].post_needs(market.market_id, [line_need(market.intervals[0])])
            return market

        market = asyncio.run(with_clients(setup))
        m, conn = market.market_id, ["--server", server.target]
        stamp = market.intervals[0].strftime("%Y-%m-%dT%H:%M:%SZ")
        offers = tmp_path / "offers.csv"
        pl.DataFrame({"offer_id": ["c1", "c2"], "resource_id": ["pv", "load"], "direction": ["up", "up"],
                      "quantity_kw": [120.0, 30.0], "price": ["40.5", "1"], "interval": [stamp, stamp],
                      "divisible": [True, False]}).write_csv(offers)
        code, out, _ = run("flex", "submit", *conn, "--token", tokens["agg-a"], "--market", m, "--file", offers)
        assert code == 0 and out.startswith("2 offers acknowledged")
        code, out, err = run("flex", "submit", *conn, "--token", tokens["agg-a"], "--market", m, "--file", offers)
        assert code == 1 and "ALREADY_EXISTS: offers.offer_id[0]" in err
        code, out, _ = run("flex", "needs", *conn, "--token", tokens["agg-a"], "--market", m, "--format", "csv")
        needs = pl.read_csv(io.StringIO(out), schema_overrides={"max_price": pl.Utf8})
        assert code == 0 and needs["need_id"].to_list() == ["n-line"] and needs["max_price"].fill_null("").to_list() == [""]

        async def clear(env):
            await env.clients["dso"].close_gate(m)
            return await env.clients["dso"].clear_flexibility(m)

        assert asyncio.run(with_clients(clear)).status == "optimal"
        code, out, _ = run("flex", "awards", *conn, "--token", tokens["agg-a"], "--market", m, "--format", "csv")
        awards = pl.read_csv(io.StringIO(out), schema_overrides={"price": pl.Utf8, "payment": pl.Utf8}).sort("offer_id")
        assert code == 0 and awards["reason"].to_list() == ["accepted", "location"]
        assert awards["accepted_kw"].to_list() == [100.0, 0.0] and awards["payment"].to_list() == ["4.05", "0"]
        code, _, err = run("flex", "awards", *conn, "--token", tokens["agg-a"], "--aggregator", "agg-b")
        assert code == 1 and "PERMISSION_DENIED" in err
    finally:
        server.stop()


# -- the flexibility auction and the energy market of one market -------------------------------------

def _stored_summary(path, table: str, market_id: str, stage: str | None = None) -> dict:
    conn = db.connect(path)
    try:
        sql = f"SELECT summary FROM {table} WHERE market_id = ?" + (" AND stage = ?" if stage else "")
        (text,) = conn.execute(sql, (market_id, stage) if stage else (market_id,)).fetchone()
    finally:
        conn.close()
    return json.loads(text)


def _replayed(path) -> list:
    conn = db.connect(path)
    try:
        return replay(conn)
    finally:
        conn.close()


async def _award_at(env, market_id: str, price: str = "50"):
    """The ISO awards each interval's curve import at ``price``: deliverable by construction."""
    curves = await env.clients["iso"].list_curves(market_id=market_id)
    awards = [IntervalAward(c.interval_start, next(b.import_kw for b in c.bands if b.price_high >= Decimal(price)),
                            price) for c in curves]
    return await env.clients["iso"].submit_award(market_id, awards)


def test_activations_cleared_first_shape_the_energy_market_curves_and_award(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a, b = (env.clients[n] for n in ("dso", "agg-a", "agg-b"))
            # Lossless markets: an activation moves the import by exactly its kW (a loss-aware one adds the
            # change in losses, 12.4 kW here).
            with_flex = await flex_market(env, "with-flex", formulation="lossless")
            plain = await small_market(env, "plain", intervals=2, formulation="lossless")
            m, (t0, _) = with_flex.market_id, with_flex.intervals
            for market in (with_flex, plain):
                await a.submit_bids(market.market_id, simple_bids(market, "a"))
            await op.post_needs(m, [line_need(t0)])
            # 100 kW up at bus 18 (less load there): the energy market's fixed net load drops by as much.
            await b.submit_flex_offers(m, [FlexOffer("up", "pv", "up", 100.0, "50", t0, tan_phi=0.2)])
            for market in (with_flex, plain):
                await op.close_gate(market.market_id)
            assert (await op.clear_flexibility(m)).accepted_kw == pytest.approx(100.0)

            cleared = {mk.market_id: await op.clear_market(mk.market_id, iso_price_forecast=["50"])
                       for mk in (with_flex, plain)}
            assert all(r.status == "optimal" for r in cleared.values())
            flows = {k: [f.import_kw for f in r.interface] for k, r in cleared.items()}
            assert flows["plain"][0] - flows["with-flex"][0] == pytest.approx(100.0, abs=1e-6)
            assert flows["with-flex"][1] == pytest.approx(flows["plain"][1], abs=1e-6)  # no activation then
            assert _stored_summary(env.db_path, "clearings", m, "clear")["flex_activations_kw"] == 100.0
            assert "flex_activations_kw" not in _stored_summary(env.db_path, "clearings", "plain", "clear")

            # Between the energy clearing and the award the auction may not clear: the ISO holds the curves.
            await op.post_needs("plain", [line_need(t0)])
            with pytest.raises(FailedPrecondition, match="not in between"):
                await op.clear_flexibility("plain")

            for market in (with_flex, plain):
                await op.publish_market(market.market_id)
            curves = {k: await env.clients["iso"].list_curves(market_id=k) for k in cleared}
            assert curves["plain"][0].fixed_net_load_kw - curves["with-flex"][0].fixed_net_load_kw == pytest.approx(100.0, abs=1e-6)
            assert curves["plain"][1].fixed_net_load_kw == pytest.approx(curves["with-flex"][1].fixed_net_load_kw, abs=1e-9)
            # Each award is disaggregated on the net load its curve was traced on: at the same price the
            # bids clear alike, although the ISO awards 100 kW less import to the market with the activation.
            for market in (with_flex, plain):
                assert (await _award_at(env, market.market_id)).status == "optimal"
            awarded = {k: sorted((w.bid_id, round(w.cleared_kw, 6)) for w in await a.list_awards(market_id=k))
                       for k in cleared}
            assert awarded["with-flex"] == awarded["plain"] and len(awarded["plain"]) == 4
            assert (await op.settle_market(m)).market.state == "settled"

        checks = _replayed(env.db_path)
        assert [c.stage for c in checks if c.market_id == m] == ["flex", "clear", "award", "settle"]
        assert checks and all(c.identical for c in checks)

    run(body())


def test_energy_awarded_first_uses_up_capability_in_the_auction(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a, b, aud = (env.clients[n] for n in ("dso", "agg-a", "agg-b", "auditor"))
            market = await flex_market(env, "energy-first")
            m, (t0, _) = market.market_id, market.intervals
            await a.submit_bids(m, simple_bids(market, "a"))  # pv sells 150 kW at 10
            # The pv (300 kW) offers 250 kW up in two parts; agg-b's pv is the dear fallback.
            await a.submit_flex_offers(m, [FlexOffer("cheap", "pv", "up", 200.0, "20", t0),
                                           FlexOffer("more", "pv", "up", 50.0, "30", t0)])
            await b.submit_flex_offers(m, [FlexOffer("dear", "pv", "up", 200.0, "90", t0)])
            await op.close_gate(m)
            await op.clear_market(m, iso_price_forecast=["50"])
            await op.publish_market(m)
            assert (await _award_at(env, m)).status == "optimal"
            (sold,) = [i.kw for i in await a.list_instructions(market_id=m)
                       if i.resource_id == "pv" and i.interval_start == t0]
            assert sold == pytest.approx(150.0)

            await op.post_needs(m, [FlexNeed("n-line", "line", t0, "200", element="5", required_kw=200.0)])
            report = await op.clear_flexibility(m)
            assert report.status == "optimal" and report.accepted_kw == pytest.approx(200.0)
            # 300 kW of capacity less the 150 kW sold in the energy market leaves 150 kW to move up.
            mine = {w.offer_id: w for w in await a.list_flex_awards(market_id=m)}
            assert (mine["cheap"].accepted_kw, mine["cheap"].reason, mine["cheap"].conflict) == \
                (pytest.approx(300.0 - sold), "accepted", True)
            assert (mine["more"].accepted_kw, mine["more"].reason, mine["more"].conflict) == (0.0, "capability", True)
            everyone = {(w.aggregator_id, w.offer_id): w for w in await op.list_flex_awards(market_id=m)}
            assert everyone[("agg-a", "more")].reason == "capability" and everyone[("agg-a", "more")].conflict
            assert everyone[("agg-b", "dear")].accepted_kw == pytest.approx(200.0 - (300.0 - sold))
            assert not everyone[("agg-b", "dear")].conflict
            assert (await aud.list_flex_awards(aggregator_id="agg-a"))[1].reason == "capability"
            summary = _stored_summary(env.db_path, "flex_clearings", m)
            assert summary["committed_kw"] == pytest.approx(sold) and summary["conflicts"] == 2

        checks = _replayed(env.db_path)
        assert [c.stage for c in checks] == ["clear", "award", "flex"] and all(c.identical for c in checks)

    run(body())


def test_a_kw_sold_as_flexibility_first_is_not_sold_again_in_the_energy_market(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a = env.clients["dso"], env.clients["agg-a"]
            market = await flex_market(env, "sold-once")
            m, (t0, t1) = market.market_id, market.intervals
            # agg-a's pv (300 kW) offers its full capacity in energy at a low price in both intervals.
            await a.submit_bids(m, [BidSegment(f"pv-{k}", "pv", "sell", 300.0, Decimal("5"), iv)
                                    for k, iv in enumerate(market.intervals)])
            await op.post_needs(m, [FlexNeed("n-line", "line", t0, "200", element="5", required_kw=200.0)])
            await a.submit_flex_offers(m, [FlexOffer("up", "pv", "up", 200.0, "20", t0)])
            await op.close_gate(m)
            assert (await op.clear_flexibility(m)).accepted_kw == pytest.approx(200.0)
            assert (await op.clear_market(m, iso_price_forecast=["50"])).status == "optimal"
            await op.publish_market(m)
            assert (await _award_at(env, m)).status == "optimal"
            # 200 of its 300 kW went up as flexibility at t0: only 100 kW may still be sold there.
            sold = {w.interval_start: w.cleared_kw for w in await a.list_awards(market_id=m) if w.resource_id == "pv"}
            assert sold[t0] == pytest.approx(100.0, abs=1e-6)
            assert sold[t1] == pytest.approx(300.0, abs=1e-6)

        checks = _replayed(env.db_path)
        assert [c.stage for c in checks] == ["flex", "clear", "award"] and all(c.identical for c in checks)

    run(body())

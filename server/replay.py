"""Replay every clearing, award, settlement and flexibility auction from the audit log alone, and compare.

The log holds the full inputs of each state change (feeder tables, market
rules, resources, every bid submitted, replaced or withdrawn, the forecast
and the ISO's award, flexibility needs and offers). :func:`replay` rebuilds
the market inputs as they stood at each ``market.clear`` (``interval.clear``: one interval of a rolling
market; ``market.reclear``, ``interval.reclear``: again on a new network version), ``award.submit``
(``award.interval``), ``dispatch.network`` (the re-dispatch of awarded intervals after a network change),
``market.settle`` and ``flex.clear`` record, recomputes through the same
:mod:`server.markets_engine` calls the server made, and compares the digest
of the outcome with the one recorded. A clearing that hit the solver time
limit depends on the machine, not on the log, and is not replayed.

The two markets of one market id feed each other in log order, as they did
in the server: a ``market.clear`` whose record names a flexibility clearing
(``flex``) is rebuilt on the activations of the replayed ``flex.clear`` before
it, and so are the award and settlement after it; a ``flex.clear`` whose
record lists ``committed`` positions counts the replayed award's instructions.
Both are recomputed here, not read from the record, so an input the server got
wrong shows up as a differing digest.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass

import polars as pl

from dsomarket.server import audit, markets_engine, timeline
from dsomarket.server.store import (ACTIVATION_SCHEMA, BID_COLUMNS, BID_SCHEMA, COMMITMENT_SCHEMA, FLEX_NEED_COLUMNS,
                          FLEX_NEED_SCHEMA, FLEX_OFFER_COLUMNS, FLEX_OFFER_SCHEMA, RESOURCE_COLUMNS, RESOURCE_SCHEMA)


@dataclass(frozen=True)
class ReplayCheck:
    """One recomputed step: ``stage`` is clear, award, redispatch, settle or flex."""

    sequence: int
    market_id: str
    stage: str
    recorded: str
    replayed: str

    @property
    def identical(self) -> bool:
        return self.recorded == self.replayed


class _State:
    """Feeders, markets, resources and active bids, as the log has built them so far."""

    def __init__(self):
        self.feeders: dict = {}
        self.markets: dict = {}
        self.resources: dict = {}
        self.bids: dict = {}
        self.disaggregations: dict = {}
        self.flex_needs: dict = {}
        self.flex_offers: dict = {}
        self.flex_activations: dict = {}    # market -> activations of its replayed optimal flex clearing
        self.energy_activations: dict = {}  # market -> the activations its energy clearing was built on
        self.commitments: dict = {}         # market -> its replayed award's instructions
        self.network: dict = {}             # feeder -> its change rows, each with its version
        self.network_version: dict = {}     # market -> the network version its last clearing used
        self.interval_awards: dict = {}     # market -> the interval awards applied so far
        self.clear_forecast: dict = {}      # market -> the forecast ISO prices of its last optimal clearing
        self.forecasts: dict = {}           # market -> {(bus, interval_idx): (p_kw, q_kvar)}
        self.history: dict = {}             # feeder -> {(interval_us, bus): (p_kw, q_kvar)}

    def apply(self, action: str, p: dict) -> None:
        if action == "feeder.create":
            self.feeders[p["feeder_id"]] = p["tables"]
        elif action == "market.create":
            self.markets[p["market_id"]] = p
            self.bids[p["market_id"]] = {}
        elif action == "resources.register":
            owner = p["aggregator_id"]
            for r in p["resources"]:
                self.resources[(owner, r["resource_id"])] = {**r, "aggregator_id": owner}
        elif action in ("bids.submit", "bids.replace"):
            cols = p["bids"]
            book = self.bids[p["market_id"]]
            for k, bid_id in enumerate(cols["bid_id"]):
                book[(p["aggregator_id"], bid_id)] = {"aggregator_id": p["aggregator_id"],
                                                      **{c: cols[c][k] for c in BID_COLUMNS[1:]}}
        elif action == "bids.withdraw":
            for bid_id in p["bid_ids"]:
                del self.bids[p["market_id"]][(p["aggregator_id"], bid_id)]
        elif action == "forecast.submit":
            rows = self.forecasts.setdefault(p["market_id"], {})
            for t in {r[1] for r in p["rows"]}:
                for key in [k for k in rows if k[1] == t]:
                    del rows[key]
            rows.update({(r[0], r[1]): (r[2], r[3]) for r in p["rows"]})
        elif action == "history.submit":
            self.history.setdefault(p["feeder_id"], {}).update({(r[1], r[0]): (r[2], r[3]) for r in p["rows"]})
        elif action == "network.changes":
            self.network.setdefault(p["feeder_id"], []).extend({**r, "version": p["version"]} for r in p["changes"])
        elif action in ("market.clear", "market.reclear", "interval.clear", "interval.reclear") and \
                p.get("status") == "optimal":
            self.network_version[p["market_id"]] = p.get("network_version", 0)
            if "forecast" in p:
                self.clear_forecast[p["market_id"]] = p["forecast"]
        elif action == "flex.needs.post":
            self.flex_needs.setdefault(p["market_id"], []).extend(p["needs"])
        elif action == "flex.offers.submit":
            cols, owner = p["offers"], p["aggregator_id"]
            book = self.flex_offers.setdefault(p["market_id"], {})
            for k, offer_id in enumerate(cols["offer_id"]):
                book[(owner, offer_id)] = {"aggregator_id": owner,
                                           **{c: cols[c][k] for c in FLEX_OFFER_COLUMNS[1:]}}
        elif action == "flex.offers.withdraw":
            for offer_id in p["offer_ids"]:
                del self.flex_offers[p["market_id"]][(p["aggregator_id"], offer_id)]

    def inputs(self, market_id: str, version: int | None = None) -> markets_engine.MarketInputs:
        """Inputs of a market on network ``version`` (None: the version of its last optimal clearing)."""
        market = self.markets[market_id]
        if version is None:
            version = self.network_version.get(market_id, 0)
        rows = list(self.bids[market_id].values())
        bids = pl.DataFrame([[r[c] for c in BID_COLUMNS] for r in rows], schema=BID_SCHEMA, orient="row")
        used = {(r["aggregator_id"], r["resource_id"]) for r in rows}
        resources = pl.DataFrame([[self.resources[k][c] for c in RESOURCE_COLUMNS] for k in sorted(used)],
                                 schema=RESOURCE_SCHEMA, orient="row")
        feeder = markets_engine.feeder_from_tables(self.feeders[market["feeder_id"]])
        return markets_engine.market_inputs(feeder, market, bids, resources, self.energy_activations.get(market_id),
                                            self.network_of(market, version), self.forecast_of(market))

    def forecast_of(self, market: dict) -> dict:
        """The market's forecast inputs as :func:`server.store.market_forecast` reads them."""
        operator = [(b, t, *v) for (b, t), v in sorted(self.forecasts.get(market["market_id"], {}).items(),
                                                       key=lambda kv: (kv[0][1], kv[0][0]))]
        first = int(market["delivery_start_us"])
        low = first - timeline.HISTORY_DAYS * 86_400_000_000
        history = [(b, us, *v) for (us, b), v in sorted(self.history.get(market["feeder_id"], {}).items())
                   if low <= us < first]
        return {"operator": operator, "history": history}

    def network_of(self, market: dict, version: int) -> tuple[int, list]:
        """``(version, change rows up to it)`` of the market's feeder."""
        return version, [r for r in self.network.get(market["feeder_id"], []) if r["version"] <= version]

    def flex_outcome(self, market_id: str, pricing: str, committed: bool) -> markets_engine.FlexOutcome:
        market = self.markets[market_id]
        needs = pl.DataFrame([[r[c] for c in FLEX_NEED_COLUMNS] for r in self.flex_needs.get(market_id, [])],
                             schema=FLEX_NEED_SCHEMA, orient="row")
        offers = [[*(r[c] for c in FLEX_OFFER_COLUMNS),
                   self.resources[(r["aggregator_id"], r["resource_id"])]["capacity_kw"]]
                  for r in self.flex_offers.get(market_id, {}).values()]
        feeder = markets_engine.feeder_from_tables(self.feeders[market["feeder_id"]])
        positions = self.commitments.get(market_id) if committed else None
        if committed and positions is None:  # the record counts an award the log does not hold
            positions = pl.DataFrame(schema=COMMITMENT_SCHEMA)
        return markets_engine.clear_flex(feeder, market, needs,
                                         pl.DataFrame(offers, schema=FLEX_OFFER_SCHEMA, orient="row"), pricing,
                                         committed=positions)


def _redispatch(state: _State, m: str, p: dict, reference) -> markets_engine.NetworkRedispatch:
    """A ``dispatch.network`` record's re-dispatch, on the bids of the log and the networks it names."""
    return markets_engine.redispatch_after_change(
        state.inputs(m, p["before_version"]), state.inputs(m, p["network_version"]),
        [tuple(a) for a in p["awards"]], p["by_interval"], [iv["interval_idx"] for iv in p["intervals"]],
        p["forecast"], dict(p["scheduled"]), reference, overrides=dict(p["overrides"]))


def replay(conn: sqlite3.Connection, market_id: str | None = None, trace=None) -> list[ReplayCheck]:
    """Recompute the clearings of one market (and the day-ahead market it refers to) or of all; ``trace`` traces
    a many-interval market's curves as the server's does (:class:`server.runner.CurveFanOut`: the same curves)."""
    wanted = None
    if market_id is not None:
        created = [json.loads(r["payload"]) for r in audit.records(conn, "market.create")]
        wanted = {market_id} | {p["day_ahead_market_id"] for p in created if p["market_id"] == market_id}
    state = _State()
    checks = []

    def reference_of(m: str):
        return state.disaggregations.get(state.markets[m]["day_ahead_market_id"])

    for row in audit.records(conn):
        seq, action, p = row["seq"], row["action"], json.loads(row["payload"])
        state.apply(action, p)
        m = p.get("market_id")
        if action not in ("market.clear", "market.reclear", "interval.clear", "interval.reclear", "award.submit",
                          "award.interval", "market.settle", "flex.clear", "dispatch.network", "interval.settle"):
            continue
        if wanted is not None and m not in wanted:
            continue
        if action == "interval.settle":  # one awarded interval of a rolled market, once its meter window passed
            # The import it settled at (a network re-dispatch may have cut it); older records: the award.
            award = tuple(p["award"]) if "award" in p else next((q, pr) for k, q, pr in state.interval_awards[m]
                                                               if k == p["interval_idx"])
            outcome = markets_engine.settle_interval(state.inputs(m, p["network_version"]), p["interval_idx"],
                                                     award, reference_of(m), [], p.get("prices"))
            checks.append(ReplayCheck(seq, m, "settle", p["digest"], outcome.digest))
            continue
        if action == "market.settle" and p.get("by_interval"):  # the sum of its intervals' settlements
            continue
        if action == "dispatch.network":
            if "digest" in p:  # older records hold only the outcome
                again = _redispatch(state, m, p, reference_of(m))
                checks.append(ReplayCheck(seq, m, "redispatch", p["digest"], again.digest))
                if "prices_digest" in p:  # the re-dispatch's prices, in force for a rolled market's intervals
                    checks.append(ReplayCheck(seq, m, "redispatch", p["prices_digest"], again.prices_digest))
            continue
        if action == "flex.clear":
            if p["status"] != "time_limit":
                flex = state.flex_outcome(m, p["pricing"], "committed" in p)
                if flex.status == "optimal":
                    state.flex_activations[m] = flex.activations
                checks.append(ReplayCheck(seq, m, "flex", p["digest"], flex.digest))
            continue
        if action == "market.clear":
            # Built on the flexibility activations when the record says the server built it on them.
            state.energy_activations[m] = (state.flex_activations.get(m, pl.DataFrame(schema=ACTIVATION_SCHEMA))
                                           if "flex" in p else None)
        # A clearing ran on the network version its record names (a failed one records it too).
        clearing = action in ("market.clear", "market.reclear", "interval.clear", "interval.reclear")
        # So did an open rolling market's interval award (older records name none: the last clearing's).
        inputs = state.inputs(m, p.get("network_version", 0) if clearing else p.get("network_version"))
        reference = reference_of(m)
        if clearing:
            # A real-time market clears on the positions of its day-ahead market once that is awarded,
            # which is where the log has it by now (as the server reads it).
            if reference is not None:
                inputs = dataclasses.replace(inputs, day_ahead=markets_engine.day_ahead_positions(
                    state.markets[m]["day_ahead_market_id"], reference))
        if action in ("market.clear", "market.reclear"):
            digest = markets_engine.clear_market(inputs, p["forecast"], trace=trace).digest
            checks.append(ReplayCheck(seq, m, "clear", p["digest"], digest))
        elif action in ("interval.clear", "interval.reclear"):  # intervals of a rolling market: gate, network
            digest = markets_engine.clear_intervals(inputs, p["interval_indices"], p["forecast"]).digest
            checks.append(ReplayCheck(seq, m, "clear", p["digest"], digest))
        elif action == "award.submit":
            outcome = markets_engine.disaggregate_award(inputs, [tuple(a) for a in p["awards"]], reference)
            if outcome.status == "optimal":
                state.disaggregations[m] = outcome.disaggregation
                state.commitments[m] = outcome.instructions
            checks.append(ReplayCheck(seq, m, "award", p["digest"], outcome.digest))
        elif action == "award.interval":
            awards = [tuple(a) for a in p["awards"]]
            before = state.interval_awards.get(m, [])
            forecast = state.clear_forecast.get(m, [])
            outcome = markets_engine.interval_award(inputs, before, awards, forecast, reference)
            checks.append(ReplayCheck(seq, m, "award", p["digest"], outcome.digest))
            if outcome.status == "optimal":
                done = before + awards
                state.interval_awards[m] = done
                if len(done) == len(inputs.intervals):  # the market is awarded: as the server recomputes it
                    whole = markets_engine.whole_award(state.inputs(m), sorted(done), True, forecast, reference)
                    state.disaggregations[m] = whole.disaggregation
                    state.commitments[m] = whole.instructions
        else:
            outcome = markets_engine.settle_market(inputs, state.disaggregations[m], reference)
            checks.append(ReplayCheck(seq, m, "settle", p["digest"], outcome.digest))
    return checks

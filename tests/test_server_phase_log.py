"""The server logs each clearing's phases and their times."""

from __future__ import annotations

import logging
import re

from dsomarket.engine.bids import MarketRules
from dsomarket.engine.feeders import ieee33
from dsomarket.server.markets_engine import MarketInputs, clear_market
from tests.test_interface import random_bids


def test_a_clearing_logs_its_phases_with_times(caplog):
    f = ieee33()
    inputs = MarketInputs(feeder=f, rules=MarketRules(price_floor=-200.0, price_cap=500.0), intervals=[None],
                          bids=random_bids(f, 12, 3), resources=())
    with caplog.at_level(logging.INFO, logger="dsomarket.server.markets_engine"):
        outcome = clear_market(inputs, ["50"])
    assert outcome.status == "optimal"
    lines = [r.getMessage() for r in caplog.records if r.name == "dsomarket.server.markets_engine"]
    assert any("12 bid segments" in m and " clear " in m and "(optimal)" in m for m in lines), lines
    curve = next(m for m in lines if "curves" in m)
    assert re.search(r"curves \d+\.\d{3} s \(\d+ bands, \d+ solves, \d+ bound flips\).* total \d+\.\d{3} s", curve)

"""pandas frames are taken wherever polars ones are, converted where they enter the engine."""

from __future__ import annotations

import polars as pl
import pytest

from dsomarket.engine.bids import parse_resources, validate_bids
from dsomarket.engine.clearing import ClearingOptions, clear
from dsomarket.engine.disaggregation import disaggregate
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import ieee33
from dsomarket.engine.network import Feeder
from tests.test_interface import random_bids

pd = pytest.importorskip("pandas")


def pandas(df: pl.DataFrame):
    return pd.DataFrame({c: df[c].to_list() for c in df.columns})


def test_clear_accepts_pandas_frames_as_polars_ones():
    feeder = ieee33()
    bids = random_bids(feeder, 30, 4)
    frame = pandas(bids)
    frame["bus"] = frame["bus"].astype(int)   # as a spreadsheet export would give them
    options = ClearingOptions(ac_check=False)
    a = clear(feeder, bids, 60.0, options=options)
    b = clear(feeder, frame, 60.0, options=options)
    assert a.ok and b.ok
    assert a.dispatch.equals(b.dispatch) and a.prices.equals(b.prices)


def test_a_feeder_resources_and_an_award_from_pandas():
    base = ieee33()
    feeder = Feeder.from_tables(base.header(), pandas(base.buses), pandas(base.lines))
    assert feeder.buses.equals(base.buses) and feeder.lines.equals(base.lines)
    resources = pd.DataFrame({"resource_id": ["b1"], "kind": ["battery"], "energy_kwh": [100.0],
                              "charge_kw": [50.0], "discharge_kw": [50.0], "soc_init_kwh": [50.0]})
    assert [r.resource_id for r in parse_resources(resources)] == ["b1"]
    bids = random_bids(feeder, 20, 9)
    book = validate_bids(pandas(bids), feeder)
    a = disaggregate(feeder, book, pl.DataFrame({"import_kw": [3500.0]}))
    b = disaggregate(feeder, book, pd.DataFrame({"import_kw": [3500.0]}))
    assert a.clearing.ok and a.clearing.dispatch.equals(b.clearing.dispatch)


def test_the_library_refuses_what_is_not_a_table():
    with pytest.raises(InputError, match="bids, field table: must be a polars or pandas DataFrame"):
        clear(ieee33(), [{"bid_id": "a"}], 50.0)

"""An input table taken as given (network._as_given, no cast or fill needed) is the table the casting query
(network._cast) makes of it: the same columns, types and values, nulls and signed zeros included."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest

from dsomarket.engine.bids import BID_SCHEMA, COMMITMENT_SCHEMA
from dsomarket.engine.network import LINE_COLUMNS, _as_given, _cast, _normalise

BID_DEFAULTS = {"interval": None, "aggregator_id": "", "resource_id": "", "tan_phi": 0.0}
T0 = datetime(2026, 12, 2, 10, tzinfo=timezone.utc)


def _bids(n: int = 6) -> pl.DataFrame:
    return pl.DataFrame({"bid_id": [f"b{k}" for k in range(n)], "bus": ["2"] * n, "side": ["buy", "sell"] * (n // 2),
                         "quantity_kw": np.linspace(1.0, 5.0, n), "price": [-0.0, 0.0, 12.5, 3e3, -1e3, 7.0][:n]})


CASES = {
    "bids, optional columns missing": (_bids(), BID_SCHEMA, BID_DEFAULTS, ("interval",), True),
    "bids, none": (_bids().head(0), BID_SCHEMA, BID_DEFAULTS, ("interval",), True),
    "bids, every column given": (_bids().with_columns(
        interval=pl.Series([T0] * 6, dtype=pl.Datetime("us", "UTC")), aggregator_id=pl.lit("a"),
        resource_id=pl.Series(["r1", "", "r2", "", "", "r1"]), tan_phi=pl.Series([0.1, -0.0, 0.0, 0.2, 0.3, 0.4])),
        BID_SCHEMA, BID_DEFAULTS, ("interval",), True),
    "bids, a default to fill": (_bids().with_columns(tan_phi=pl.Series([0.1, None, 0.0, None, 0.3, 0.4])),
                                BID_SCHEMA, BID_DEFAULTS, ("interval",), False),
    "bids, integer quantities": (_bids().with_columns(quantity_kw=pl.Series(range(1, 7))), BID_SCHEMA, BID_DEFAULTS,
                                 ("interval",), False),
    "bids, timestamps without a zone": (_bids().with_columns(interval=pl.Series([T0.replace(tzinfo=None)] * 6)),
                                        BID_SCHEMA, BID_DEFAULTS, ("interval",), False),
    "commitments, infinite limits by default": (pl.DataFrame({"resource_id": ["r1", "r2"]}), COMMITMENT_SCHEMA,
                                                {"interval": None, "max_sell_kw": math.inf, "max_buy_kw": math.inf},
                                                ("interval",), True),
    "lines, rating and service by default": (pl.DataFrame({"line": ["l1"], "from_bus": ["1"], "to_bus": ["2"],
                                                           "r_ohm": [0.1], "x_ohm": [0.2]}),
                                             LINE_COLUMNS,
                                             {"s_max_kva": math.inf, "in_service": True}, (), True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_table_taken_as_given_is_the_cast_query_s(name):
    df, schema, defaults, nullable, as_given = CASES[name]
    assert (_as_given(df, schema, defaults) is not None) == as_given
    out, cast = _normalise(df, schema, "t", defaults, nullable=nullable), _cast(df, schema, "t", defaults)
    assert out.schema == cast.schema
    assert out.equals(cast, null_equal=True)
    for col, dtype in schema.items():
        if dtype == pl.Float64:   # equals() takes -0.0 for 0.0: the bits too
            assert np.array_equal(out[col].to_numpy().view(np.int64), cast[col].to_numpy().view(np.int64))

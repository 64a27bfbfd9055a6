"""Market timeline: interval lengths, interval starts, gate closures and the state order.

Times are integer microseconds since the epoch (UTC), as stored. A market
row is the ``markets`` table row as a mapping.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

MINUTES = {"day_ahead": 60, "hour_ahead": 15, "real_time": 5}
"""Interval length of each market kind."""
DEFAULT_COUNT = {"day_ahead": 24, "hour_ahead": 4, "real_time": 12}
MAX_COUNT = {"day_ahead": 48, "hour_ahead": 96, "real_time": 288}
HISTORY_DAYS = 7
"""Previous days of metered load history the built-in forecaster averages (``engine.forecast.same_interval_mean``)."""
ROLLING = ("hour_ahead", "real_time")
"""Kinds whose ISO award may come interval by interval (see ``server.realtime_service``)."""

STATES = ("open", "closed", "cleared", "published", "awarded", "settled")
"""Market states in the only order they may take."""

_MINUTE_US = 60_000_000


def interval_us(market) -> int:
    return int(market["interval_minutes"]) * _MINUTE_US


def interval_start(market, k: int) -> int:
    return int(market["delivery_start_us"]) + k * interval_us(market)


def gate_closure(market, k: int) -> int:
    """When bids for interval k stop: the earliest of its start, the market's gate closure time and
    the start minus the gate lead."""
    start = interval_start(market, k)
    out = start
    if market["gate_closure_us"] is not None:
        out = min(out, int(market["gate_closure_us"]))
    if market["gate_lead_us"] is not None:
        out = min(out, start - int(market["gate_lead_us"]))
    return out


def interval_index(market, start_us: int) -> int | None:
    """Index of the interval starting at ``start_us``, or None when no interval starts then."""
    k, rest = divmod(start_us - int(market["delivery_start_us"]), interval_us(market))
    return k if rest == 0 and 0 <= k < int(market["interval_count"]) else None


def aligned(kind: str, start_us: int) -> bool:
    """True when a delivery start falls on a whole interval of the kind (hour, 5 minutes)."""
    return start_us % (MINUTES[kind] * _MINUTE_US) == 0


def at_least(state: str, floor: str) -> bool:
    """True when ``state`` is ``floor`` or later."""
    return STATES.index(state) >= STATES.index(floor)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def iso(us: int) -> str:
    """An ISO 8601 UTC text of a time, for messages; exact (integer arithmetic, no float seconds) from
    year 1 to 9999, and microseconds since the epoch outside that range."""
    try:
        return (_EPOCH + timedelta(microseconds=int(us))).isoformat().replace("+00:00", "Z")
    except OverflowError:
        return f"{int(us)} microseconds after 1970-01-01T00:00:00Z"

"""Physical ranges every number must lie in before it is stored, so that anything stored can be cleared.

One table, :data:`RANGES`, names each kind of quantity with its unit and its
closed range; :func:`in_range` checks a value against it and raises
:class:`~server.errors.InvalidArgument` naming the field. The ranges are wide
enough for any distribution feeder (a 100 MW segment is larger than a
primary substation) and narrow enough that the LinDistFlow model stays well
scaled: the clearing's coefficients then span at most about twelve orders of
magnitude, which HiGHS solves reliably. docs/api.md repeats the table.

Decimal strings (prices) use an ASCII grammar: Python's ``\\d`` also matches
other scripts' digits (``"١٢"``), which ``Decimal`` then reads but the engine's
float conversion and the store's text comparisons do not.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from dsomarket.server.errors import InvalidArgument

DECIMAL_PATTERN = re.compile(r"[+-]?[0-9]{1,12}(?:\.[0-9]{1,6})?", re.ASCII)
"""A decimal price: ASCII digits only, at most 12 before and 6 after the point."""

MAX_PRICE = Decimal(100_000)
"""Largest price magnitude per MWh anywhere (market floor and cap, ISO prices, value of lost load)."""

RANGES: dict[str, tuple[float, float, str]] = {
    "kw": (0.001, 100_000.0, "kW"),                 # a bid segment, offer, need or resource capacity
    "kw_signed": (-1_000_000.0, 1_000_000.0, "kW"),  # an interface import or an override, either sign
    "kw_limit": (0.0, 10_000_000.0, "kW"),           # a feeder's import/export limit (0 = none)
    "kwh": (0.0, 1_000_000.0, "kWh"),                # stored energy
    "kw_rate": (0.0, 100_000.0, "kW"),               # charge, discharge and ramp rates
    "efficiency": (0.01, 1.0, ""),
    "tan_phi": (-5.0, 5.0, ""),                      # power factor down to 0.196, either sign
    "base_kv": (0.1, 500.0, "kV"),
    "v_pu": (0.5, 1.5, "p.u."),                      # voltage limits and the root's voltage
    "dv_pu": (0.000001, 0.5, "p.u."),                # a voltage need
    "ohm": (0.0, 1_000.0, "ohm"),                    # line resistance and reactance
    "kva": (0.001, 10_000_000.0, "kVA"),             # a line's thermal limit (0 or infinity = none)
    "load_kw": (-100_000.0, 100_000.0, "kW"),        # a bus's fixed load (negative = generation)
}


def in_range(value: float, field: str, kind: str) -> float:
    """``value`` as a float when finite and within ``RANGES[kind]``; InvalidArgument naming ``field``."""
    low, high, unit = RANGES[kind]
    if not math.isfinite(value):
        raise InvalidArgument(field, f"must be a finite number (got {value})")
    if not low <= value <= high:
        raise InvalidArgument(field, f"must be between {low:g} and {high:g}{' ' + unit if unit else ''} "
                                     f"(got {value:g})")
    return float(value)


def decimal_text(value: str, field: str) -> str:
    """A decimal string, stripped, in the ASCII grammar and within +-:data:`MAX_PRICE`."""
    text = (value or "").strip()
    if not DECIMAL_PATTERN.fullmatch(text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InvalidArgument(field, f"must be a decimal number like '42.5' (ASCII digits, at most 6 decimals) "
                                     f"(got {shown!r})")
    if abs(Decimal(text)) > MAX_PRICE:
        raise InvalidArgument(field, f"must be between -{MAX_PRICE} and {MAX_PRICE} (got {text})")
    return text


def price_between(value: str, field: str, floor: str, cap: str) -> str:
    """A decimal price within a market's ``floor`` and ``cap`` (decimal strings)."""
    text = decimal_text(value, field)
    if not Decimal(floor) <= Decimal(text) <= Decimal(cap):
        raise InvalidArgument(field, f"{text} is outside the market's floor {floor} and cap {cap}")
    return text

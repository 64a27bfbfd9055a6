"""Protobuf in and out: every request field is validated here or in :mod:`server.store`.

In: messages become plain values (ids, decimal strings, kW floats, UTC
microseconds) or raise :class:`~server.errors.InvalidArgument` naming the
field (``bids.price[3]``) and the reason. Checks that need stored state
(market state, gate closure, ownership, duplicates) are the store's.

Out: stored rows (``sqlite3.Row`` or dicts) become messages.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from dsomarket.server import limits, pagetoken, timeline
from dsomarket.v1 import aggregator_pb2 as agg_pb
from dsomarket.v1 import audit_pb2, common_pb2, iso_pb2, market_pb2, operator_pb2
from dsomarket.v1 import flexibility_pb2 as flex_pb
from dsomarket.server.errors import InvalidArgument, ResourceExhausted

ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
CURRENCY_PATTERN = re.compile(r"[A-Z]{3}")

MAX_BATCH = 100_000
"""Most bid segments in one Submit/Replace/Withdraw request."""
MAX_RESOURCES = 10_000
"""Most resources in one RegisterResources request."""
MAX_FLEX_BATCH = 10_000
"""Most needs in one PostNeeds, and most offers or offer ids in one SubmitFlexOffers or WithdrawFlexOffers."""
MAX_FEEDER_BUSES = 100_000
DEFAULT_PAGE, MAX_PAGE = 1_000, 10_000
MAX_REASON = 500

_TS_MIN, _TS_MAX = -62_135_596_800, 253_402_300_799  # 0001-01-01 .. 9999-12-31, as Timestamp allows
_MAX_LEAD_US = 7 * 24 * 3600 * 1_000_000

SIDE = {common_pb2.SIDE_BUY: "buy", common_pb2.SIDE_SELL: "sell"}
MARKET_KIND = {common_pb2.MARKET_KIND_DAY_AHEAD: "day_ahead", common_pb2.MARKET_KIND_REAL_TIME: "real_time",
               common_pb2.MARKET_KIND_HOUR_AHEAD: "hour_ahead"}
RESOURCE_KIND = {common_pb2.RESOURCE_KIND_PV: "pv", common_pb2.RESOURCE_KIND_BATTERY: "battery",
                 common_pb2.RESOURCE_KIND_EV: "ev", common_pb2.RESOURCE_KIND_FLEXIBLE_LOAD: "flexible_load"}
STATE = {"open": common_pb2.MARKET_STATE_OPEN, "closed": common_pb2.MARKET_STATE_CLOSED,
         "cleared": common_pb2.MARKET_STATE_CLEARED, "published": common_pb2.MARKET_STATE_PUBLISHED,
         "awarded": common_pb2.MARKET_STATE_AWARDED, "settled": common_pb2.MARKET_STATE_SETTLED}
ROLE = {"operator": common_pb2.ROLE_OPERATOR, "aggregator": common_pb2.ROLE_AGGREGATOR,
        "iso": common_pb2.ROLE_ISO, "auditor": common_pb2.ROLE_AUDITOR}
CLEARING_STATUS = {"optimal": common_pb2.CLEARING_STATUS_OPTIMAL,
                   "infeasible": common_pb2.CLEARING_STATUS_INFEASIBLE,
                   "unbounded": common_pb2.CLEARING_STATUS_UNBOUNDED,
                   "time_limit": common_pb2.CLEARING_STATUS_TIME_LIMIT,
                   "error": common_pb2.CLEARING_STATUS_ERROR}
CURVE_KIND = {"fixed_demand": iso_pb2.CURVE_SEGMENT_KIND_FIXED_DEMAND,
              "demand": iso_pb2.CURVE_SEGMENT_KIND_DEMAND,
              "supply": iso_pb2.CURVE_SEGMENT_KIND_SUPPLY,
              "fixed_supply": iso_pb2.CURVE_SEGMENT_KIND_FIXED_SUPPLY}
FORMULATION = {"": "lossaware", "lossaware": "lossaware", "lossless": "lossless", "lindistflow": "lossless",
               "socp": "socp"}
"""CreateMarketRequest.formulation -> the market's stored clearing model (engine.results.FORMULATIONS; empty is
the default, ``lindistflow`` is the lossless model's older name)."""
SOURCE = {"award": agg_pb.INSTRUCTION_SOURCE_AWARD, "override": agg_pb.INSTRUCTION_SOURCE_OVERRIDE,
          "network": agg_pb.INSTRUCTION_SOURCE_NETWORK_CHANGE}
FLEX_NEED_KIND = {flex_pb.FLEX_NEED_KIND_LINE: "line", flex_pb.FLEX_NEED_KIND_VOLTAGE: "voltage",
                  flex_pb.FLEX_NEED_KIND_IMPORT: "import"}
FLEX_NEED_DIRECTION = {flex_pb.FLEX_NEED_DIRECTION_FORWARD: "forward",
                       flex_pb.FLEX_NEED_DIRECTION_REVERSE: "reverse",
                       flex_pb.FLEX_NEED_DIRECTION_RAISE: "raise", flex_pb.FLEX_NEED_DIRECTION_LOWER: "lower"}
FLEX_DIRECTION = {flex_pb.FLEX_DIRECTION_UP: "up", flex_pb.FLEX_DIRECTION_DOWN: "down"}
FLEX_PRICING = {flex_pb.FLEX_PRICING_UNSPECIFIED: "pay_as_bid", flex_pb.FLEX_PRICING_PAY_AS_BID: "pay_as_bid",
                flex_pb.FLEX_PRICING_UNIFORM: "uniform"}
FLEX_REASON = {"accepted": flex_pb.FLEX_AWARD_REASON_ACCEPTED, "price": flex_pb.FLEX_AWARD_REASON_PRICE,
               "location": flex_pb.FLEX_AWARD_REASON_LOCATION,
               "capability": flex_pb.FLEX_AWARD_REASON_CAPABILITY,
               "not_needed": flex_pb.FLEX_AWARD_REASON_NOT_NEEDED, "min_kw": flex_pb.FLEX_AWARD_REASON_MIN_KW}
_NEED_DIRECTIONS = {"line": ("forward", "reverse"), "import": ("forward", "reverse"),
                    "voltage": ("raise", "lower")}
_INVERSE = {name: {v: k for k, v in table.items()} for name, table in
            (("side", SIDE), ("kind", MARKET_KIND), ("resource", RESOURCE_KIND), ("need", FLEX_NEED_KIND),
             ("need_direction", FLEX_NEED_DIRECTION), ("flex_direction", FLEX_DIRECTION))}
_INVERSE["pricing"] = {"pay_as_bid": flex_pb.FLEX_PRICING_PAY_AS_BID, "uniform": flex_pb.FLEX_PRICING_UNIFORM}


# -- scalar checks ------------------------------------------------------------------

def check_id(value: str, field: str) -> str:
    if not ID_PATTERN.fullmatch(value or ""):
        shown = value if len(value or "") <= 80 else value[:80] + "..."
        raise InvalidArgument(field, f"must be 1 to 64 characters from A-Z a-z 0-9 . _ : - (got {shown!r})")
    return value


def optional_id(value: str, field: str) -> str:
    return check_id(value, field) if value else ""


def check_decimal(value: str, field: str) -> str:
    """A decimal string, stripped: ASCII digits, at most 6 decimals, within +-``limits.MAX_PRICE``."""
    return limits.decimal_text(value, field)


def us_of(ts: Timestamp, field: str) -> int:
    """A Timestamp as integer microseconds; the sub-microsecond part is refused rather than dropped."""
    if not _TS_MIN <= ts.seconds <= _TS_MAX or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(field, "is not a valid timestamp")
    if ts.nanos % 1000:
        raise InvalidArgument(field, "must be a whole number of microseconds")
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def required_us(msg, name: str, field: str) -> int:
    if not msg.HasField(name):
        raise InvalidArgument(field, "is required")
    return us_of(getattr(msg, name), field)


def ts(us: int | None) -> Timestamp | None:
    if us is None:
        return None
    seconds, micros = divmod(int(us), 1_000_000)
    return Timestamp(seconds=seconds, nanos=micros * 1000)


def enum_value(table: dict, value: int, field: str, what: str) -> str:
    if value not in table:
        raise InvalidArgument(field, f"must be a known {what} (got {value})")
    return table[value]


def reason(value: str) -> str:
    """An audited reason: required, stripped, at most :data:`MAX_REASON` characters."""
    text = value.strip()
    if not 0 < len(text) <= MAX_REASON:
        raise InvalidArgument("reason", f"is required, up to {MAX_REASON} characters")
    return text


def request_id(value: str) -> str:
    return optional_id(value, "request_id")


def request_digest(request) -> str:
    """Digest identifying a request's content for idempotent retries."""
    return hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()


# -- pagination -----------------------------------------------------------------------

def page(params, scope: str) -> tuple[int, list | None]:
    """``(limit, after_key)`` of a PaginationParams; the token must be one this server signed for ``scope``
    (the call and its filter), see :mod:`server.pagetoken`."""
    limit = params.page_size or DEFAULT_PAGE
    if limit > MAX_PAGE:
        raise InvalidArgument("pagination.page_size", f"must be at most {MAX_PAGE} (got {limit})")
    if not params.page_token:
        return limit, None
    return limit, pagetoken.current().open(params.page_token, scope)


def next_page(rows: list, limit: int, scope: str, key) -> tuple[list, common_pb2.PaginationInfo]:
    """The page's rows (the store fetched ``limit + 1``) and the signed token of the next page."""
    if len(rows) <= limit:
        return rows, common_pb2.PaginationInfo()
    rows = rows[:limit]
    token = pagetoken.current().issue(scope, list(key(rows[-1])))
    return rows, common_pb2.PaginationInfo(next_page_token=token)


MAX_SEQUENCE = 2**63 - 1


def sequence(value: int, field: str) -> int:
    """A stream's ``after_sequence``: 0 (from the start) up to the largest stored sequence number."""
    if not 0 <= value <= MAX_SEQUENCE:
        raise InvalidArgument(field, f"must be between 0 and {MAX_SEQUENCE} (got {value})")
    return value


# -- feeders and markets -----------------------------------------------------------------

def feeder_source(req: operator_pb2.CreateFeederRequest) -> tuple[str, str | dict]:
    """``("builtin", name)`` or ``("tables", tables)`` in :mod:`server.markets_engine`'s stored form."""
    which = req.WhichOneof("source")
    if which == "builtin_name":
        name = req.builtin_name.strip()
        size = re.fullmatch(r"synth:(\d+):\d+", name)
        if size and int(size.group(1)) > MAX_FEEDER_BUSES:
            raise ResourceExhausted(f"builtin_name: a feeder may have at most {MAX_FEEDER_BUSES} buses")
        return "builtin", name
    if which != "tables":
        raise InvalidArgument("source", "give builtin_name or tables")
    t = req.tables
    if not t.name.strip():
        raise InvalidArgument("tables.name", "is required")
    if not t.root_bus:
        raise InvalidArgument("tables.root_bus", "is required")
    header = {"name": t.name.strip(), "root_bus": t.root_bus,
              "base_kv": limits.in_range(t.base_kv, "tables.base_kv", "base_kv"),
              "v0_pu": limits.in_range(t.v0_pu, "tables.v0_pu", "v_pu") if t.v0_pu else 1.0}
    for name in ("import_max_kw", "export_max_kw"):
        value = limits.in_range(getattr(t, name), f"tables.{name}", "kw_limit")
        if value > 0:
            header[name] = value
    n_bus = len(t.buses.bus)
    if not 2 <= n_bus <= MAX_FEEDER_BUSES:
        err = ResourceExhausted if n_bus > MAX_FEEDER_BUSES else InvalidArgument
        raise err("tables.buses.bus", f"a feeder needs 2 to {MAX_FEEDER_BUSES} buses (got {n_bus})")
    buses = {"bus": list(t.buses.bus)}
    buses.update(_columns(t.buses, (("vmin_pu", "v_pu"), ("vmax_pu", "v_pu"), ("load_kw", "load_kw"),
                                    ("load_kvar", "load_kw")), n_bus, "tables.buses"))
    n_line = len(t.lines.line)
    lines = {"line": list(t.lines.line), "from_bus": list(t.lines.from_bus), "to_bus": list(t.lines.to_bus)}
    for name in ("from_bus", "to_bus"):
        if len(lines[name]) != n_line:
            raise InvalidArgument(f"tables.lines.{name}",
                                  f"has {len(lines[name])} entries, line has {n_line}")
    lines.update(_columns(t.lines, (("r_ohm", "ohm"), ("x_ohm", "ohm")), n_line, "tables.lines", required=True))
    s_max = list(t.lines.s_max_kva)
    if s_max:
        if len(s_max) != n_line:
            raise InvalidArgument("tables.lines.s_max_kva", f"has {len(s_max)} entries, expected {n_line}")
        # 0 or +infinity: no thermal limit.
        lines["s_max_kva"] = [None if v == 0 or v == math.inf else
                              limits.in_range(v, f"tables.lines.s_max_kva[{k}]", "kva") for k, v in enumerate(s_max)]
    if len(t.lines.in_service):
        if len(t.lines.in_service) != n_line:
            raise InvalidArgument("tables.lines.in_service", f"has {len(t.lines.in_service)} entries, "
                                                             f"line has {n_line}")
        lines["in_service"] = list(t.lines.in_service)
    return "tables", {"header": header, "buses": buses, "lines": lines}


def _columns(msg, names, n: int, prefix: str, required: bool = False) -> dict:
    """Columns ``(name, range kind)`` of ``msg``, each of length ``n`` with every value in its range."""
    out = {}
    for name, kind in names:
        values = list(getattr(msg, name))
        if not values and not required:
            continue
        if len(values) != n:
            raise InvalidArgument(f"{prefix}.{name}", f"has {len(values)} entries, expected {n}")
        out[name] = [limits.in_range(v, f"{prefix}.{name}[{k}]", kind) for k, v in enumerate(values)]
    return out


def market_spec(req: operator_pb2.CreateMarketRequest) -> dict:
    """A market row (without state and times) from a CreateMarketRequest."""
    kind = enum_value(MARKET_KIND, req.kind, "kind", "market kind")
    start = required_us(req, "delivery_start", "delivery_start")
    if not timeline.aligned(kind, start):
        raise InvalidArgument("delivery_start",
                              f"must fall on a whole {timeline.MINUTES[kind]}-minute interval")
    count = req.interval_count or timeline.DEFAULT_COUNT[kind]
    if count > timeline.MAX_COUNT[kind]:
        raise InvalidArgument("interval_count",
                              f"at most {timeline.MAX_COUNT[kind]} for this kind (got {count})")
    if start + count * timeline.MINUTES[kind] * 60_000_000 > _TS_MAX * 1_000_000:
        raise InvalidArgument("delivery_start", "the delivery period must end by 9999-12-31T23:59:59Z, the last "
                                                "time a protobuf Timestamp can hold")
    lead = None
    if req.HasField("gate_lead"):
        lead = req.gate_lead.seconds * 1_000_000 + req.gate_lead.nanos // 1000
        if not 0 <= lead <= _MAX_LEAD_US:
            raise InvalidArgument("gate_lead", "must be between 0 and 7 days")
    floor = check_decimal(req.price_floor or "-1000", "price_floor")
    cap = check_decimal(req.price_cap or "3000", "price_cap")
    if Decimal(floor) >= Decimal(cap):
        raise InvalidArgument("price_floor", f"must be below price_cap ({floor} >= {cap})")
    currency = req.currency or "EUR"
    if not CURRENCY_PATTERN.fullmatch(currency):
        raise InvalidArgument("currency", f"must be an ISO 4217 code like 'EUR' (got {currency[:20]!r})")
    voll = check_decimal(req.value_of_lost_load, "value_of_lost_load") if req.value_of_lost_load else None
    if voll is not None and not Decimal(voll) > 0:
        raise InvalidArgument("value_of_lost_load", "must be positive")
    da = optional_id(req.day_ahead_market_id, "day_ahead_market_id")
    if da and kind == "day_ahead":
        raise InvalidArgument("day_ahead_market_id", "only a real-time or hour-ahead market refers to a day-ahead "
                                                     "market")
    gate = (required_us(req, "gate_closure_time", "gate_closure_time") if req.HasField("gate_closure_time")
            else None)
    formulation = FORMULATION.get(req.formulation)
    if formulation is None:
        raise InvalidArgument("formulation", f"must be lossaware, lossless, lindistflow or socp "
                                             f"(got {req.formulation[:20]!r})")
    return {"market_id": check_id(req.market_id, "market_id"),
            "feeder_id": check_id(req.feeder_id, "feeder_id"), "kind": kind, "delivery_start_us": start,
            "interval_count": count, "interval_minutes": timeline.MINUTES[kind], "gate_closure_us": gate,
            "gate_lead_us": lead, "price_floor": floor, "price_cap": cap, "currency": currency,
            "value_of_lost_load": voll, "day_ahead_market_id": da or None, "formulation": formulation}


def forecast(values, market: dict) -> list[str]:
    """ISO price forecasts of a ClearMarket request, each within the market's floor and cap."""
    count = market["interval_count"]
    out = [limits.price_between(v, f"iso_price_forecast[{k}]", market["price_floor"], market["price_cap"])
           for k, v in enumerate(values)]
    if len(out) not in (0, 1, count):
        raise InvalidArgument("iso_price_forecast", f"give one price or one per interval ({count}), "
                                                    f"not {len(out)}")
    return out


def iso_awards(req: iso_pb2.SubmitAwardRequest) -> list[tuple[int, float, str]]:
    """``(interval_start_us, import_kw, price)`` per award; price '' = the interface's own price."""
    if not req.awards:
        raise InvalidArgument("awards", "one award per interval is required")
    return [(required_us(a, "interval_start", f"awards[{k}].interval_start"),
             limits.in_range(a.import_kw, f"awards[{k}].import_kw", "kw_signed"),
             check_decimal(a.price, f"awards[{k}].price") if a.price else "")
            for k, a in enumerate(req.awards)]


# -- resources and bids ------------------------------------------------------------------

_RESOURCE_NUMBERS = ("capacity_kw", "energy_kwh", "charge_kw", "discharge_kw", "eta_charge", "eta_discharge",
                     "soc_init_kwh", "soc_end_kwh", "soc_min_kwh", "ramp_kw")
_RESOURCE_RANGES = {"capacity_kw": "kw_rate", "energy_kwh": "kwh", "charge_kw": "kw_rate", "discharge_kw": "kw_rate",
                    "eta_charge": "efficiency", "eta_discharge": "efficiency", "soc_init_kwh": "kwh",
                    "soc_end_kwh": "kwh", "soc_min_kwh": "kwh", "ramp_kw": "kw_rate"}
"""Range of each resource number; 0 stands for "not given" (an efficiency then defaults to 0.95)."""
_REQUIRED = {"pv": (), "battery": ("energy_kwh", "charge_kw", "discharge_kw"),
             "ev": ("energy_kwh", "charge_kw"), "flexible_load": ()}


def resources(req: agg_pb.RegisterResourcesRequest) -> list[dict]:
    """Resource rows (``resources`` table columns except owner and time) of a registration."""
    n = len(req.resources)
    if n == 0:
        raise InvalidArgument("resources", "at least one resource is required")
    if n > MAX_RESOURCES:
        raise ResourceExhausted(f"resources: at most {MAX_RESOURCES} per request (got {n})")
    rows, seen = [], {}
    for k, r in enumerate(req.resources):
        f = f"resources[{k}]"
        rid = check_id(r.resource_id, f"{f}.resource_id")
        if rid in seen:
            raise InvalidArgument(f"{f}.resource_id", f"{rid!r} repeats resources[{seen[rid]}]")
        seen[rid] = k
        kind = enum_value(RESOURCE_KIND, r.kind, f"{f}.kind", "resource kind")
        if not 0 < len(r.bus) <= 64:
            raise InvalidArgument(f"{f}.bus", "must be a bus id of 1 to 64 characters")
        row = {"resource_id": rid, "feeder_id": check_id(r.feeder_id, f"{f}.feeder_id"), "bus": r.bus,
               "kind": kind}
        for name in _RESOURCE_NUMBERS:
            value = getattr(r, name)
            row[name] = limits.in_range(value, f"{f}.{name}", _RESOURCE_RANGES[name]) if value != 0 else 0.0
        if not row["capacity_kw"] > 0:
            raise InvalidArgument(f"{f}.capacity_kw", "must be positive")
        for name in _REQUIRED[kind]:
            if not row[name] > 0:
                raise InvalidArgument(f"{f}.{name}", f"must be positive for a {kind.replace('_', ' ')}")
        for name in ("eta_charge", "eta_discharge"):
            row[name] = row[name] or 0.95
        if kind == "battery" and not (row["soc_min_kwh"] <= row["soc_init_kwh"] <= row["energy_kwh"]
                                      and row["soc_min_kwh"] <= row["soc_end_kwh"] <= row["energy_kwh"]):
            raise InvalidArgument(f"{f}.soc_init_kwh", "soc_init_kwh and soc_end_kwh must lie between "
                                                       "soc_min_kwh and energy_kwh")
        row["departure_us"] = None
        if kind == "ev":
            row["departure_us"] = required_us(r, "departure", f"{f}.departure")
        rows.append(row)
    return rows


@dataclass(frozen=True)
class BidBatch:
    """Validated bid columns; ``interval_starts`` holds the distinct starts (UTC microseconds)."""

    bid_id: list
    resource_id: list
    side: list
    quantity_kw: list
    price: list
    interval_starts: list
    interval_index: list
    tan_phi: list

    def __len__(self) -> int:
        return len(self.bid_id)


def bid_batch(cols: agg_pb.BidColumns) -> BidBatch:
    """Validate the columns of a Submit/Replace request; the first bad entry names its column and index."""
    n = len(cols.bid_id)
    if n == 0:
        raise InvalidArgument("bids.bid_id", "at least one bid segment is required")
    if n > MAX_BATCH:
        raise ResourceExhausted(f"bids: at most {MAX_BATCH} segments per request (got {n})")
    for name in ("resource_id", "side", "quantity_kw", "price", "interval_index"):
        if len(getattr(cols, name)) != n:
            raise InvalidArgument(f"bids.{name}", f"has {len(getattr(cols, name))} entries, bid_id has {n}")
    if len(cols.tan_phi) not in (0, n):
        raise InvalidArgument("bids.tan_phi",
                              f"has {len(cols.tan_phi)} entries: give none or one per bid ({n})")
    starts = [us_of(t, f"bids.interval_starts[{k}]") for k, t in enumerate(cols.interval_starts)]
    if not starts:
        raise InvalidArgument("bids.interval_starts", "at least one interval start is required")
    if len(set(starts)) != len(starts):
        raise InvalidArgument("bids.interval_starts", "must not repeat a start")
    bid_ids = list(cols.bid_id)
    seen: dict = {}
    for k, b in enumerate(bid_ids):
        check_id(b, f"bids.bid_id[{k}]")
        if b in seen:
            raise InvalidArgument(f"bids.bid_id[{k}]", f"{b!r} repeats bids.bid_id[{seen[b]}]")
        seen[b] = k
    resource_ids = list(cols.resource_id)
    for k, r in enumerate(resource_ids):
        check_id(r, f"bids.resource_id[{k}]")
    sides = [SIDE.get(s) for s in cols.side]
    for k, s in enumerate(sides):
        if s is None:
            raise InvalidArgument(f"bids.side[{k}]", f"must be SIDE_BUY or SIDE_SELL (got {cols.side[k]})")
    quantity = [limits.in_range(q, f"bids.quantity_kw[{k}]", "kw") for k, q in enumerate(cols.quantity_kw)]
    prices = [check_decimal(p, f"bids.price[{k}]") for k, p in enumerate(cols.price)]
    index = list(cols.interval_index)
    for k, i in enumerate(index):
        if i >= len(starts):
            raise InvalidArgument(f"bids.interval_index[{k}]", f"{i} is not an index of interval_starts "
                                                                f"({len(starts)} entries)")
    tan_phi = [limits.in_range(t, f"bids.tan_phi[{k}]", "tan_phi") for k, t in enumerate(cols.tan_phi)] or [0.0] * n
    return BidBatch(bid_ids, resource_ids, sides, quantity, prices, starts, index, tan_phi)


def bid_ids(values) -> list[str]:
    n = len(values)
    if n == 0:
        raise InvalidArgument("bid_ids", "at least one bid id is required")
    if n > MAX_BATCH:
        raise ResourceExhausted(f"bid_ids: at most {MAX_BATCH} per request (got {n})")
    seen: dict = {}
    for k, b in enumerate(values):
        check_id(b, f"bid_ids[{k}]")
        if b in seen:
            raise InvalidArgument(f"bid_ids[{k}]", f"{b!r} repeats bid_ids[{seen[b]}]")
        seen[b] = k
    return list(values)


# -- flexibility auction ------------------------------------------------------------------

def _non_negative_decimal(value: str, field: str) -> str:
    text = check_decimal(value, field)
    if Decimal(text) < 0:
        raise InvalidArgument(field, f"must not be negative (got {text})")
    return text




def flex_needs(req: flex_pb.PostNeedsRequest) -> list[dict]:
    """Need rows (``flex_needs`` columns but market, interval index and time, with ``start_us``) of a
    PostNeeds request; the element is checked against the feeder by :mod:`server.markets_engine`."""
    n = len(req.needs)
    if n == 0:
        raise InvalidArgument("needs", "at least one need is required")
    if n > MAX_FLEX_BATCH:
        raise ResourceExhausted(f"needs: at most {MAX_FLEX_BATCH} per request (got {n})")
    rows, seen = [], {}
    for k, nd in enumerate(req.needs):
        f = f"needs[{k}]"
        need_id = check_id(nd.need_id, f"{f}.need_id")
        if need_id in seen:
            raise InvalidArgument(f"{f}.need_id", f"{need_id!r} repeats needs[{seen[need_id]}]")
        seen[need_id] = k
        kind = enum_value(FLEX_NEED_KIND, nd.kind, f"{f}.kind", "need kind")
        allowed = _NEED_DIRECTIONS[kind]
        direction = (allowed[0] if nd.direction == flex_pb.FLEX_NEED_DIRECTION_UNSPECIFIED else
                     enum_value(FLEX_NEED_DIRECTION, nd.direction, f"{f}.direction", "need direction"))
        if direction not in allowed:
            raise InvalidArgument(f"{f}.direction", f"a {kind} need is {' or '.join(allowed)} (got {direction})")
        if kind == "import":
            if nd.element:
                raise InvalidArgument(f"{f}.element", "must be empty for an import need")
        elif not 0 < len(nd.element) <= 64:
            raise InvalidArgument(f"{f}.element", f"a {kind} need names its {'line' if kind == 'line' else 'bus'} "
                                                  "(1 to 64 characters)")
        start = required_us(nd, "interval_start", f"{f}.interval_start")
        wanted, other = ("required_pu", "required_kw") if kind == "voltage" else ("required_kw", "required_pu")
        if getattr(nd, other) != 0:
            raise InvalidArgument(f"{f}.{other}", f"must be 0 for a {kind} need (it takes {wanted})")
        amount = limits.in_range(getattr(nd, wanted), f"{f}.{wanted}", "dv_pu" if kind == "voltage" else "kw")
        rows.append({"need_id": need_id, "kind": kind, "element": nd.element, "direction": direction,
                     "start_us": start, "required_kw": amount if wanted == "required_kw" else None,
                     "required_pu": amount if wanted == "required_pu" else None,
                     "max_price": _non_negative_decimal(nd.max_price, f"{f}.max_price"),
                     "partial_ok": bool(nd.partial_ok)})
    return rows


@dataclass(frozen=True)
class FlexOfferBatch:
    """Validated offer columns; optional columns filled with their defaults."""

    offer_id: list
    resource_id: list
    direction: list
    quantity_kw: list
    price: list
    interval_starts: list
    interval_index: list
    availability_price: list
    divisible: list
    min_kw: list
    tan_phi: list

    def __len__(self) -> int:
        return len(self.offer_id)


def _ids(values, field: str, what: str) -> list[str]:
    """Ids named ``field[k]``, each valid and none repeated."""
    seen: dict = {}
    for k, v in enumerate(values):
        check_id(v, f"{field}[{k}]")
        if v in seen:
            raise InvalidArgument(f"{field}[{k}]", f"{v!r} repeats {field}[{seen[v]}]")
        seen[v] = k
    if not seen:
        raise InvalidArgument(field, f"at least one {what} is required")
    return list(values)


def flex_offer_batch(cols: flex_pb.FlexOfferColumns) -> FlexOfferBatch:
    """Validate the columns of a SubmitFlexOffers request; the first bad entry names its column and index."""
    n = len(cols.offer_id)
    if n > MAX_FLEX_BATCH:
        raise ResourceExhausted(f"offers: at most {MAX_FLEX_BATCH} per request (got {n})")
    offer_ids = _ids(cols.offer_id, "offers.offer_id", "offer")
    for name in ("resource_id", "direction", "quantity_kw", "price", "interval_index"):
        if len(getattr(cols, name)) != n:
            raise InvalidArgument(f"offers.{name}", f"has {len(getattr(cols, name))} entries, offer_id has {n}")
    for name in ("availability_price", "divisible", "min_kw", "tan_phi"):
        if len(getattr(cols, name)) not in (0, n):
            raise InvalidArgument(f"offers.{name}", f"has {len(getattr(cols, name))} entries: give none or one "
                                                    f"per offer ({n})")
    starts = [us_of(t, f"offers.interval_starts[{k}]") for k, t in enumerate(cols.interval_starts)]
    if not starts:
        raise InvalidArgument("offers.interval_starts", "at least one interval start is required")
    if len(set(starts)) != len(starts):
        raise InvalidArgument("offers.interval_starts", "must not repeat a start")
    resource_ids = [check_id(r, f"offers.resource_id[{k}]") for k, r in enumerate(cols.resource_id)]
    directions = [enum_value(FLEX_DIRECTION, d, f"offers.direction[{k}]", "direction (FLEX_DIRECTION_UP or "
                             "FLEX_DIRECTION_DOWN)") for k, d in enumerate(cols.direction)]
    quantity = [limits.in_range(q, f"offers.quantity_kw[{k}]", "kw") for k, q in enumerate(cols.quantity_kw)]
    prices = [_non_negative_decimal(p, f"offers.price[{k}]") for k, p in enumerate(cols.price)]
    index = list(cols.interval_index)
    for k, i in enumerate(index):
        if i >= len(starts):
            raise InvalidArgument(f"offers.interval_index[{k}]", f"{i} is not an index of interval_starts "
                                                                 f"({len(starts)} entries)")
    availability = [_non_negative_decimal(p, f"offers.availability_price[{k}]")
                    for k, p in enumerate(cols.availability_price)] or ["0"] * n
    divisible = list(cols.divisible) or [True] * n
    min_kw = list(cols.min_kw) or [0.0] * n
    for k, m in enumerate(min_kw):
        if not (math.isfinite(m) and 0 <= m <= quantity[k]):
            raise InvalidArgument(f"offers.min_kw[{k}]", f"must be between 0 and quantity_kw ({quantity[k]}) "
                                                         f"(got {m})")
    tan_phi = [limits.in_range(t, f"offers.tan_phi[{k}]", "tan_phi") for k, t in enumerate(cols.tan_phi)] or [0.0] * n
    return FlexOfferBatch(offer_ids, resource_ids, directions, quantity, prices, starts, index, availability,
                          divisible, min_kw, tan_phi)


def offer_ids(values) -> list[str]:
    if len(values) > MAX_FLEX_BATCH:
        raise ResourceExhausted(f"offer_ids: at most {MAX_FLEX_BATCH} per request (got {len(values)})")
    return _ids(values, "offer_ids", "offer id")


def flex_pricing(value: int) -> str:
    return enum_value(FLEX_PRICING, value, "pricing", "pricing")


def flex_pricing_value(pricing: str) -> int:
    return _INVERSE["pricing"][pricing]


# -- out --------------------------------------------------------------------------------

def market(row) -> market_pb2.Market:
    m = market_pb2.Market(
        market_id=row["market_id"], feeder_id=row["feeder_id"], kind=_INVERSE["kind"][row["kind"]],
        state=STATE[row["state"]], delivery_start=ts(row["delivery_start_us"]),
        interval_count=row["interval_count"], interval_length=Duration(seconds=row["interval_minutes"] * 60),
        price_floor=row["price_floor"], price_cap=row["price_cap"], currency=row["currency"],
        value_of_lost_load=row["value_of_lost_load"] or "",
        day_ahead_market_id=row["day_ahead_market_id"] or "",
        clearing_status=CLEARING_STATUS.get(row["clearing_status"], common_pb2.CLEARING_STATUS_UNSPECIFIED),
        diagnosis=json.loads(row["diagnosis"]), created_at=ts(row["created_us"]),
        updated_at=ts(row["updated_us"]), formulation=row["formulation"])
    if row["gate_closure_us"] is not None:
        m.gate_closure_time.CopyFrom(ts(row["gate_closure_us"]))
    if row["gate_lead_us"] is not None:
        m.gate_lead.FromMicroseconds(row["gate_lead_us"])
    return m


def clear_response(row: dict, outcome) -> operator_pb2.ClearMarketResponse:
    """ClearMarket's answer from the market row after the clearing and its
    :class:`server.markets_engine.ClearOutcome`."""
    flows = [operator_pb2.InterfaceFlow(interval_start=ts(timeline.interval_start(row, t)), import_kw=q,
                                        iso_price=p) for t, q, p in outcome.interface.iter_rows()]
    return operator_pb2.ClearMarketResponse(
        market=market(row), status=CLEARING_STATUS[outcome.status], diagnosis=list(outcome.diagnosis),
        welfare=outcome.welfare, interface=flows, curve_segments=sum(len(c["segments"]) for c in outcome.curves),
        solve_seconds=outcome.seconds, network_version=outcome.network_version)


def interval(row, k: int, now: int, rolled: frozenset = frozenset()) -> market_pb2.MarketInterval:
    """Interval ``k`` of market ``row``; ``rolled`` are the intervals whose own gate the scheduler closed."""
    start = timeline.interval_start(row, k)
    gate = timeline.gate_closure(row, k)
    return market_pb2.MarketInterval(market_id=row["market_id"], index=k, start=ts(start),
                                     end=ts(start + timeline.interval_us(row)), gate_closure=ts(gate),
                                     gate_open=row["state"] == "open" and now < gate and k not in rolled)


def feeder(row) -> operator_pb2.Feeder:
    return operator_pb2.Feeder(feeder_id=row["feeder_id"], name=row["name"], root_bus=row["root_bus"],
                               base_kv=row["base_kv"], bus_count=row["bus_count"],
                               line_count=row["line_count"], created_at=ts(row["created_us"]))


def resource(row) -> agg_pb.Resource:
    r = agg_pb.Resource(resource_id=row["resource_id"], aggregator_id=row["aggregator_id"],
                        feeder_id=row["feeder_id"], bus=row["bus"], kind=_INVERSE["resource"][row["kind"]],
                        **{name: row[name] or 0.0 for name in _RESOURCE_NUMBERS})
    if row["departure_us"] is not None:
        r.departure.CopyFrom(ts(row["departure_us"]))
    return r


def _start(row, market_row) -> Timestamp:
    return ts(timeline.interval_start(market_row, row["interval_idx"]))


def bid(row, market_row) -> agg_pb.Bid:
    status = agg_pb.BID_STATUS_ACTIVE if row["status"] == "active" else agg_pb.BID_STATUS_WITHDRAWN
    return agg_pb.Bid(market_id=row["market_id"], aggregator_id=row["aggregator_id"], bid_id=row["bid_id"],
                      resource_id=row["resource_id"], bus=row["bus"], side=_INVERSE["side"][row["side"]],
                      quantity_kw=row["quantity_kw"], price=row["price"],
                      interval_start=_start(row, market_row), tan_phi=row["tan_phi"], status=status,
                      updated_at=ts(row["updated_us"]))


def dispatch_event(row, market_row) -> agg_pb.DispatchEvent:
    common = {"sequence": row["seq"], "market_id": row["market_id"], "aggregator_id": row["aggregator_id"],
              "resource_id": row["resource_id"], "interval_start": _start(row, market_row)}
    if row["kind"] == "award":
        award = agg_pb.Award(bid_id=row["bid_id"], side=_INVERSE["side"][row["side"]], cleared_kw=row["kw"],
                             price=row["price"], **common)
        return agg_pb.DispatchEvent(sequence=row["seq"], award=award)
    instruction = agg_pb.Instruction(kw=row["kw"], source=SOURCE[row["source"]], reason=row["reason"],
                                     issued_at=ts(row["issued_us"]), **common)
    return agg_pb.DispatchEvent(sequence=row["seq"], instruction=instruction)


STATEMENT_KIND = {name.removeprefix("STATEMENT_KIND_").lower(): v for name, v in agg_pb.StatementKind.items() if v}
"""Stored statement kind (``energy``, ``loss``, ``override``, ...) -> proto ``StatementKind``."""


def statement(row, market_row) -> agg_pb.Statement:
    return agg_pb.Statement(market_id=row["market_id"], aggregator_id=row["aggregator_id"],
                            bid_id=row["bid_id"], resource_id=row["resource_id"],
                            interval_start=_start(row, market_row),
                            settlement=_INVERSE["kind"][row["settlement"]], kw=row["kw"], kvar=row["kvar"],
                            price=row["price"], reactive_price=row["price_q"], amount=row["amount"],
                            currency=market_row["currency"], kind=STATEMENT_KIND[row["kind"]])


PRICE_SOURCE = {"clear": market_pb2.PRICE_SOURCE_CLEARING, "award": market_pb2.PRICE_SOURCE_AWARD}


def bus_price(row, market_row) -> market_pb2.BusPrice:
    return market_pb2.BusPrice(bus=row["bus"], interval_start=_start(row, market_row), dlmp=row["dlmp"],
                               energy=row["energy"], congestion=row["congestion"], voltage=row["voltage"],
                               loss=row["loss"], source=PRICE_SOURCE[row["stage"]], revision=row["revision"],
                               superseded=bool(row["superseded"]))


def curve(row, market_row) -> iso_pb2.InterfaceCurve:
    start = timeline.interval_start(market_row, row["interval_idx"])
    segments = [iso_pb2.CurveSegment(kind=CURVE_KIND[k], index=i, price=p, quantity_kw=q)
                for k, i, p, q in json.loads(row["segments"])]
    bands = [iso_pb2.CurveBand(price_low=lo, price_high=hi, import_kw=q)
             for lo, hi, q in json.loads(row["bands"])]
    return iso_pb2.InterfaceCurve(
        sequence=row["seq"], market_id=row["market_id"], feeder_id=market_row["feeder_id"],
        kind=_INVERSE["kind"][market_row["kind"]], interval_start=ts(start),
        interval_end=ts(start + timeline.interval_us(market_row)), fixed_net_load_kw=row["fixed_kw"],
        conditional=bool(row["conditional"]), segments=segments, bands=bands, reduction_area=row["area"],
        published_at=ts(row["published_us"]), revision=row["revision"], network_version=row["network_version"])


def audit_record(row) -> audit_pb2.AuditRecord:
    return audit_pb2.AuditRecord(sequence=row["seq"], recorded_at=ts(row["recorded_us"]), actor=row["actor"],
                                 role=ROLE.get(row["role"], common_pb2.ROLE_UNSPECIFIED),
                                 action=row["action"], payload_json=row["payload"],
                                 prev_hash=row["prev_hash"], hash=row["hash"])


def flex_need(row, market_row, *, with_price: bool) -> flex_pb.FlexNeed:
    """A stored need; ``with_price=False`` leaves out max_price (the aggregators' view)."""
    return flex_pb.FlexNeed(need_id=row["need_id"], kind=_INVERSE["need"][row["kind"]], element=row["element"],
                            direction=_INVERSE["need_direction"][row["direction"]],
                            interval_start=_start(row, market_row), required_kw=row["required_kw"] or 0.0,
                            required_pu=row["required_pu"] or 0.0,
                            max_price=row["max_price"] if with_price else "", partial_ok=bool(row["partial_ok"]),
                            market_id=row["market_id"], posted_at=ts(row["posted_us"]))


def flex_offer(row, market_row) -> flex_pb.FlexOffer:
    status = (flex_pb.FLEX_OFFER_STATUS_ACTIVE if row["status"] == "active"
              else flex_pb.FLEX_OFFER_STATUS_WITHDRAWN)
    return flex_pb.FlexOffer(market_id=row["market_id"], aggregator_id=row["aggregator_id"],
                             offer_id=row["offer_id"], resource_id=row["resource_id"], bus=row["bus"],
                             interval_start=_start(row, market_row),
                             direction=_INVERSE["flex_direction"][row["direction"]],
                             quantity_kw=row["quantity_kw"], price=row["price"],
                             availability_price=row["availability_price"], divisible=bool(row["divisible"]),
                             min_kw=row["min_kw"], tan_phi=row["tan_phi"], status=status,
                             updated_at=ts(row["updated_us"]))


def flex_award(row, market_row) -> flex_pb.FlexAward:
    return flex_pb.FlexAward(market_id=row["market_id"], aggregator_id=row["aggregator_id"],
                             offer_id=row["offer_id"], resource_id=row["resource_id"], bus=row["bus"],
                             interval_start=_start(row, market_row),
                             direction=_INVERSE["flex_direction"][row["direction"]],
                             quantity_kw=row["quantity_kw"], accepted_kw=row["accepted_kw"], price=row["price"],
                             payment=row["payment"], currency=market_row["currency"],
                             reason=FLEX_REASON.get(row["reason"], flex_pb.FLEX_AWARD_REASON_UNSPECIFIED),
                             conflict=bool(row["conflict"]), need_ids=json.loads(row["need_ids"]))


def flex_need_result(row, market_row) -> flex_pb.FlexNeedResult:
    return flex_pb.FlexNeedResult(market_id=row["market_id"], need_id=row["need_id"],
                                  kind=_INVERSE["need"][row["kind"]], element=row["element"],
                                  interval_start=_start(row, market_row), met=bool(row["met"]),
                                  shortfall=row["shortfall"], shortfall_kw=row["shortfall_kw"], cost=row["cost"],
                                  marginal_price=row["marginal_price"], currency=market_row["currency"])

"""The DER registry as the market's source of truth, and conflicts across services (DOE M1, M10).

A market resource whose ``resource_id`` is a DER its aggregator registered is *linked* to that DER:
registering it, bidding with it and offering its flexibility are checked against the registry (the
DSO's review approved it, for the service it is used in, within its approved limits). A feeder with any
DER registered below it takes new resources only from its registry; on a feeder without a registry the
market's own resources table stands alone, as before the registry existed.

Every commitment of a registered DER or aggregation, whatever the service (the energy market's award,
an accepted flexibility offer, a direct ISO schedule), is checked with all the others on its feeder
by :func:`dsomarket.engine.hybrid.check_conflicts` (a kW sold once; a store's state of charge across
intervals) *inside the writer's transaction that would store it*. A conflict raises
:class:`ConflictFound` (FAILED_PRECONDITION naming the resource, interval and services), so nothing of
that commitment is stored; the RPC wrapper (:mod:`server.rpc`) then records the alerts in their own
transaction (``conflict_alerts``, audited as ``conflict.alert``) and wakes the alert streams of the
aggregator and the operator.
"""

from __future__ import annotations

import json

import polars as pl

from dsomarket.engine.hybrid import check_conflicts
from dsomarket.server import audit, timeline
from dsomarket.server.auth import Principal
from dsomarket.server.db import now_us
from dsomarket.server.errors import FailedPrecondition, InvalidArgument

CONNECTED = ("approved", "approved_with_limits")
RECORD_FIELDS = ("kind", "bus", "aggregation_id", "owner", "jurisdiction", "export_kw", "import_kw", "energy_kwh",
                 "soc_min_kwh", "soc_init_kwh", "tan_phi", "metering", "control")
"""A DER's registered fields, kept as one JSON record in ``ders.record`` (with its requested ``services``)."""
OPTIONAL_FIELDS = ("energy_kwh", "soc_min_kwh", "soc_init_kwh")
ALERTS = "conflicts:*"
"""Notifier topic of every conflict alert; :func:`alert_topic` is one aggregator's."""


def alert_topic(aggregator_id: str | None) -> str:
    return f"conflicts:{aggregator_id or '*'}"


def registry_table(records: list[dict], aggregator: str | list[str], extra: dict | None = None) -> pl.DataFrame:
    """A registry table (engine form, :mod:`engine.registry`) of registered records; ``feeder`` is the feeder id."""
    aggs = aggregator if isinstance(aggregator, list) else [aggregator] * len(records)
    cols = {"der_id": [r["der_id"] for r in records], "feeder": [r["feeder_id"] for r in records],
            "aggregator_id": aggs}
    for name in RECORD_FIELDS:
        cols[name] = [r[name] if name != "aggregation_id" else (r[name] or None) for r in records]
    schema = {name: (pl.Float64 if name in ("export_kw", "import_kw", "tan_phi", *OPTIONAL_FIELDS) else pl.Utf8)
              for name in cols}
    return pl.DataFrame({**cols, **(extra or {})}, schema={**schema, **{k: None for k in (extra or {})}},
                        strict=False)


def stored_table(rows: list) -> pl.DataFrame:
    """The registry table of stored ``ders`` rows, with their status and approved limits."""
    records = [{**json.loads(r["record"]), "der_id": r["der_id"], "feeder_id": r["feeder_id"]} for r in rows]
    return registry_table(records, [r["aggregator_id"] for r in rows], {
        "status": [r["status"] for r in rows],
        "export_limit_kw": [r["export_limit_kw"] if r["status"] in CONNECTED else 0.0 for r in rows],
        "import_limit_kw": [r["import_limit_kw"] if r["status"] in CONNECTED else 0.0 for r in rows]})


# -- the registry behind the market's resources ------------------------------------------------------------

def linked_ders(conn, aggregator: str, resource_ids) -> dict:
    """The caller's registered DERs among ``resource_ids``: der_id -> row."""
    ids = sorted(set(resource_ids))
    out = {}
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        for row in conn.execute(f"SELECT * FROM ders WHERE aggregator_id = ? AND der_id IN "
                                f"({', '.join('?' * len(part))})", (aggregator, *part)):
            out[row["der_id"]] = row
    return out


def approved_services(row) -> list[str]:
    return [s for s in row["approved_services"].split(";") if s]


def require_service(row, service: str, field: str) -> None:
    """FAILED_PRECONDITION unless the DER is approved, and approved for ``service``."""
    if row["status"] not in CONNECTED:
        raise FailedPrecondition(f"{field}: DER {row['der_id']!r} is {row['status'].replace('_', ' ')} in the "
                                 "registry, not approved")
    if service not in approved_services(row):
        raise FailedPrecondition(f"{field}: DER {row['der_id']!r} is not approved for {service} (approved: "
                                 f"{', '.join(approved_services(row)) or 'none'})")


def check_resources(conn, aggregator: str, rows: list[dict]) -> None:
    """Resources being registered that name one of the caller's DERs must match what the DSO approved; on a
    feeder that keeps a DER registry (any DER registered below it), every new resource must be such a DER."""
    ders = linked_ders(conn, aggregator, [r["resource_id"] for r in rows])
    kept = {f for f in {r["feeder_id"] for r in rows}
            if conn.execute("SELECT 1 FROM ders WHERE feeder_id = ? LIMIT 1", (f,)).fetchone()}
    for k, r in enumerate(rows):
        der = ders.get(r["resource_id"])
        field = f"resources[{k}]"
        if der is None:
            if r["feeder_id"] in kept:
                raise FailedPrecondition(f"{field}.resource_id: feeder {r['feeder_id']!r} takes its resources from "
                                         f"the DER registry: register {r['resource_id']!r} as a DER and have the "
                                         "DSO approve it first")
            continue
        if der["status"] not in CONNECTED:
            require_service(der, "dso_energy", f"{field}.resource_id")
        if not {"dso_energy", "dso_flexibility"} & set(approved_services(der)):
            raise FailedPrecondition(f"{field}.resource_id: DER {der['der_id']!r} is approved for no DSO service")
        bus = json.loads(der["record"])["bus"]
        if (r["feeder_id"], r["bus"]) != (der["feeder_id"], bus):
            raise InvalidArgument(f"{field}.bus", f"DER {der['der_id']!r} is registered at bus {bus!r} of feeder "
                                                  f"{der['feeder_id']!r}")
        limit = max(der["export_limit_kw"], der["import_limit_kw"])
        if r["capacity_kw"] > limit + 1e-9:
            raise InvalidArgument(f"{field}.capacity_kw", f"{r['capacity_kw']} kW exceeds DER {der['der_id']!r}'s "
                                                          f"approved limit of {limit} kW")


def check_use(conn, aggregator: str, resource_ids: list[str], service: str, table: str, kw: list[float],
              sides: list[str]) -> None:
    """Bids (``dso_energy``) or flexibility offers (``dso_flexibility``) of DERs: approved for the service, each
    segment within the approved limit of its side: ``export`` (a sell), ``import`` (a buy) or ``span`` (a
    flexibility offer, which may move the DER anywhere between its import and export limits)."""
    ders = linked_ders(conn, aggregator, resource_ids)
    for k, rid in enumerate(resource_ids):
        der = ders.get(rid)
        if der is None:
            continue
        require_service(der, service, f"{table}.resource_id[{k}]")
        limit = {"export": der["export_limit_kw"], "import": der["import_limit_kw"],
                 "span": der["export_limit_kw"] + der["import_limit_kw"]}[sides[k]]
        if kw[k] > limit + 1e-9:
            raise InvalidArgument(f"{table}.quantity_kw[{k}]", f"{kw[k]} kW exceeds DER {rid!r}'s approved "
                                                               f"{sides[k]} limit of {limit} kW")


# -- conflicts across services -------------------------------------------------------------------------------

class ConflictFound(FailedPrecondition):
    """A commitment that would sell a registered DER twice; ``alerts`` are the conflict rows to report."""

    def __init__(self, message: str, feeder_id: str, alerts: list[dict]):
        super().__init__(message)
        self.feeder_id = feeder_id
        self.alerts = alerts

    async def report(self, app, who: Principal) -> None:
        """Record the alerts (their own transaction: the refused commitment was rolled back) and wake streams."""
        await app.writer.call(record_alerts, who, self.alerts)
        app.notifier.notify(ALERTS, *{alert_topic(a["aggregator_id"]) for a in self.alerts})


_STARTS = "m.delivery_start_us + {idx} * m.interval_minutes * 60000000"


def _commitments(conn, feeder_id: str, skip_direct: set) -> pl.DataFrame:
    """Every stored commitment on the feeder: ``aggregator_id, resource_id, service, interval_us, p_kw, minutes``.

    Energy awards are the award's instructions (a later override is the DSO's own reliability action, not
    a sale); an award and a flexibility clearing are stored once per market interval, so what is being
    stored is never among them.
    """
    energy = conn.execute(
        f"SELECT d.aggregator_id, d.resource_id, 'dso_energy', {_STARTS.format(idx='d.interval_idx')}, d.kw, "
        "m.interval_minutes FROM dispatch d JOIN markets m ON m.market_id = d.market_id WHERE m.feeder_id = ? "
        "AND d.kind = 'instruction' AND d.source = 'award'", (feeder_id,)).fetchall()
    flex = conn.execute(
        f"SELECT a.aggregator_id, a.resource_id, 'dso_flexibility', {_STARTS.format(idx='a.interval_idx')}, "
        "CASE WHEN a.direction = 'up' THEN a.accepted_kw ELSE -a.accepted_kw END, m.interval_minutes "
        "FROM flex_awards a JOIN markets m ON m.market_id = a.market_id WHERE m.feeder_id = ? AND a.accepted_kw > 0",
        (feeder_id,)).fetchall()
    direct = [r for r in conn.execute(
        "SELECT '', participant_id, 'iso_direct', interval_us, p_kw, minutes FROM direct_schedules "
        "WHERE feeder_id = ?", (feeder_id,)).fetchall() if r[3] not in skip_direct]
    return _frame([tuple(r) for r in (*energy, *flex, *direct)])


def _frame(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "service": pl.Utf8,
                                      "interval_us": pl.Int64, "p_kw": pl.Float64, "minutes": pl.Float64},
                        orient="row")


def guard(conn, feeder_id: str, new: list[tuple], refused: str, market_id: str = "",
          skip_direct: set | None = None) -> None:
    """Raise :class:`ConflictFound` when ``new`` commitments conflict with the stored ones on the feeder.

    Parameters
    ----------
    new
        ``(aggregator_id, resource_id, service, interval_us, p_kw, minutes)``; ``aggregator_id`` empty for a
        direct ISO participant (the registry says who answers for it).
    refused
        What is being stored: ``award``, ``flexibility`` or ``direct_schedules``.
    market_id
        The market whose award or flexibility clearing ``new`` is, for the alert.
    skip_direct
        Interval starts (UTC µs) whose direct schedules ``new`` replaces.
    """
    rows = conn.execute("SELECT * FROM ders WHERE feeder_id = ? AND status != 'retired'", (feeder_id,)).fetchall()
    if not rows or not new:
        return
    reg = stored_table(rows)
    owner = dict(zip(reg["der_id"], reg["aggregator_id"], strict=True))
    owner.update({a: g for a, g in zip(reg["aggregation_id"].fill_null(reg["der_id"]), reg["aggregator_id"],
                                        strict=True)})
    def registered(rows: pl.DataFrame) -> pl.DataFrame:
        """A DSO-market resource is a registered DER or aggregation only when its own aggregator registered it."""
        return rows.filter(pl.Series([owner.get(r) is not None and (a == "" or owner[r] == a) for a, r in
                                      zip(rows["aggregator_id"], rows["resource_id"], strict=True)], dtype=pl.Boolean))

    mine = set(registered(_frame(new))["resource_id"])
    if not mine:
        return
    every = registered(pl.concat([_commitments(conn, feeder_id, skip_direct or set()), _frame(new)]))
    every = every.filter(pl.col("resource_id").is_in(sorted(mine)))
    commitments = every.select("resource_id", "service", pl.from_epoch("interval_us", "us").dt.replace_time_zone(
        "UTC").alias("interval"), "p_kw", "minutes")
    found = check_conflicts(reg, commitments).conflicts.with_columns(pl.col("interval").dt.epoch("us"))
    if found.height == 0:
        return
    alerts = [{"feeder_id": feeder_id, "resource_id": c["resource_id"], "aggregator_id": c["aggregator_id"],
               "kind": c["kind"], "interval_us": c["interval"],
               "services": c["services"] or "", "committed": c["committed"], "limit_value": c["limit"],
               "excess": c["excess"], "refused": refused, "market_id": market_id}
              for c in found.iter_rows(named=True)]
    raise ConflictFound(f"conflict: nothing of this {refused.replace('_', ' ')} was stored, because it would sell "
                        f"a registered resource twice: {'; '.join(map(_said, alerts))}; the aggregator and the "
                        "operator are alerted", feeder_id, alerts)


def _said(alert: dict) -> str:
    when = timeline.iso(alert["interval_us"]) if alert["interval_us"] is not None else "the interval"
    unit = "kWh of state of charge" if alert["kind"].startswith("energy") else "kW"
    return (f"{alert['resource_id']!r} of {alert['aggregator_id']} ({alert['kind']}) at {when} across "
            f"{alert['services'].replace(';', ', ')}: {alert['committed']:.3f} {unit} against a limit of "
            f"{alert['limit_value']:.3f}")


def record_alerts(conn, who: Principal, alerts: list[dict]) -> int:
    """Store conflict alerts and their audit record (writer thread)."""
    now = now_us()
    cols = ("feeder_id", "resource_id", "aggregator_id", "kind", "interval_us", "services", "committed",
            "limit_value", "excess", "refused", "market_id")
    conn.executemany(f"INSERT INTO conflict_alerts ({', '.join(cols)}, raised_us) VALUES "
                     f"({', '.join('?' * (len(cols) + 1))})", [(*(a[c] for c in cols), now) for a in alerts])
    audit.append(conn, who.name, who.role, "conflict.alert", {"alerts": alerts}, now)
    return len(alerts)


def list_alerts(conn, aggregator: str | None, feeder_id: str, after: int, limit: int) -> list:
    sql, args = "SELECT * FROM conflict_alerts WHERE seq > ?", [after]
    if aggregator:
        sql, args = sql + " AND aggregator_id = ?", [*args, aggregator]
    if feeder_id:
        sql, args = sql + " AND feeder_id = ?", [*args, feeder_id]
    return conn.execute(sql + " ORDER BY seq LIMIT ?", (*args, limit)).fetchall()

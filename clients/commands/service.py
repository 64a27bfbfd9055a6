"""Service commands: run the server, manage tokens and the audit log, and talk to a server.

Offline (on the database file): ``serve``, ``token create|revoke|list``, ``audit verify``,
``audit replay``, ``demo``. Over gRPC, through :mod:`clients.api` only:
``bids submit|list``, ``awards follow``, ``curves fetch``, ``award submit``, and
the flexibility auction's ``flex needs|submit|awards`` (next to the offline
``flex clear``);
they take ``--server`` and ``--token`` (or ``DSOMARKET_SERVER`` and
``DSOMARKET_TOKEN``). Bad input exits with status 2, a refused or failed
call with status 1, each with one line on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from dsomarket.clients.api import ApiError, BidSegment, Client, ClientTls, FlexOffer, InvalidArgument, IntervalAward
from dsomarket.clients.cli import non_negative_int, positive_float, positive_int
from dsomarket.clients.files import numbers, read_table, write_csv
from dsomarket.engine.errors import InputError

_BID_TEXT_COLUMNS = ("bid_id", "resource_id", "side", "price", "interval")
_OFFER_TEXT_COLUMNS = ("offer_id", "resource_id", "direction", "price", "interval", "availability_price")


def register(subparsers) -> None:
    """Add ``serve``, ``token``, ``audit``, ``demo``, ``bids``, ``awards``, ``curves`` and ``award``."""
    s = subparsers.add_parser("serve", help="run the gRPC server on a SQLite database",
                              description="Run the dsomarket gRPC server until SIGTERM or SIGINT.")
    s.add_argument("--db", default="dsomarket.sqlite",
                   help="SQLite file, created if missing (default %(default)s)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    s.add_argument("--port", type=non_negative_int, default=50051, help="port; 0 picks a free one (default %(default)s)")
    s.add_argument("--tls-cert", type=Path, help="server certificate (PEM); with --tls-key, serve TLS")
    s.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    s.add_argument("--client-ca", type=Path, help="CA (PEM) client certificates must chain to: mutual TLS")
    s.add_argument("--solve-time-limit", type=positive_float, default=None, metavar="SECONDS",
                   help="fail a clearing with DEADLINE_EXCEEDED past this (default: no limit)")
    s.set_defaults(func=_serve)

    t = subparsers.add_parser("token", help="create, revoke and list participant tokens").add_subparsers(
        dest="token_command", required=True, metavar="ACTION")
    tc = t.add_parser("create", help="create a token and print it (once; only its hash is stored)")
    tc.add_argument("--role", required=True, choices=("operator", "aggregator", "iso", "auditor"))
    tc.add_argument("--name", required=True, help="participant name (an aggregator's aggregator_id)")
    tc.add_argument("--db", required=True, help="the server's SQLite file (created if missing)")
    tc.set_defaults(func=_token_create)
    tr = t.add_parser("revoke", help="revoke every active token of a participant (a running server refuses "
                                     "them within a few seconds)")
    tr.add_argument("--name", required=True, help="participant name")
    tr.add_argument("--db", required=True, help="the server's SQLite file")
    tr.set_defaults(func=_token_revoke)
    tl = t.add_parser("list", help="list tokens: name, role, created, revoked (never the token or its hash)")
    tl.add_argument("--db", required=True, help="the server's SQLite file")
    tl.set_defaults(func=_token_list)

    a = subparsers.add_parser("audit", help="check the audit log").add_subparsers(
        dest="audit_command", required=True, metavar="ACTION")
    av = a.add_parser("verify", help="recompute the hash chain; exit 1 at the first break")
    av.add_argument("--db", required=True)
    av.set_defaults(func=_audit_verify)
    ar = a.add_parser("replay", help="recompute clearings, awards and settlements from the log; exit 1 on a "
                                     "difference")
    ar.add_argument("--db", required=True)
    ar.add_argument("--market", default=None, help="only this market (and its day-ahead market)")
    ar.set_defaults(func=_audit_replay)

    d = subparsers.add_parser("demo", help="run a whole market day against a temporary server")
    d.set_defaults(func=_demo)

    b = subparsers.add_parser("bids", help="submit and list your bids").add_subparsers(
        dest="bids_command", required=True, metavar="ACTION")
    bs = b.add_parser("submit", help="submit a bids file, all segments or none",
                      description="Columns: bid_id, resource_id, side (buy|sell), quantity_kw, "
                                  "price (per MWh), interval (ISO 8601 UTC start)[, tan_phi]; "
                                  "CSV or Parquet.")
    _connection(bs)
    bs.add_argument("--market", required=True)
    bs.add_argument("--file", required=True, type=Path)
    bs.add_argument("--batch", type=positive_int, default=20_000, help="segments per request (default %(default)s)")
    bs.set_defaults(func=_bids_submit)
    bl = b.add_parser("list", help="list bids as CSV on stdout")
    _connection(bl)
    bl.add_argument("--market", default="")
    bl.add_argument("--aggregator", default="", help="operator and auditor: whose bids (default all)")
    bl.add_argument("--include-withdrawn", action="store_true")
    bl.set_defaults(func=_bids_list)

    aw = subparsers.add_parser("awards", help="awards and dispatch instructions").add_subparsers(
        dest="awards_command", required=True, metavar="ACTION")
    af = aw.add_parser("follow", help="print awards and instructions as JSON lines as they happen")
    _connection(af)
    af.add_argument("--market", default="")
    af.add_argument("--after", type=non_negative_int, default=0, help="resume after this sequence")
    af.add_argument("--count", type=non_negative_int, default=0, help="stop after this many events (default: never)")
    af.set_defaults(func=_awards_follow)

    c = subparsers.add_parser("curves", help="interface curves (ISO)").add_subparsers(
        dest="curves_command", required=True, metavar="ACTION")
    cf = c.add_parser("fetch", help="write published curve segments as CSV")
    _connection(cf)
    cf.add_argument("--market", default="")
    cf.add_argument("--out", type=Path, default=None, help="CSV file (default: stdout)")
    cf.set_defaults(func=_curves_fetch)

    w = subparsers.add_parser("award", help="the ISO's award").add_subparsers(
        dest="award_command", required=True, metavar="ACTION")
    ws = w.add_parser("submit", help="submit an award file: interval, import_kw[, price]")
    _connection(ws)
    ws.add_argument("--market", required=True)
    ws.add_argument("--file", required=True, type=Path)
    ws.set_defaults(func=_award_submit)


def register_flex(actions) -> None:
    """``flex needs|submit|awards`` against a server, added by :mod:`clients.commands.flex` to its group."""
    fn = actions.add_parser("needs", help="list the needs posted on a server as CSV on stdout",
                            description="Aggregators see every need but not its max_price.")
    _connection(fn)
    fn.add_argument("--market", default="")
    fn.set_defaults(func=_flex_needs)
    fs = actions.add_parser("submit", help="submit a flexibility offers file to a server, all offers or none",
                            description="Columns: offer_id, resource_id, direction (up|down), quantity_kw, "
                                        "price (per MWh), interval (ISO 8601 UTC start)[, availability_price, "
                                        "divisible, min_kw, tan_phi]; CSV or Parquet.")
    _connection(fs)
    fs.add_argument("--market", required=True)
    fs.add_argument("--file", required=True, type=Path)
    fs.set_defaults(func=_flex_submit)
    fa = actions.add_parser("awards", help="list flexibility awards (yours, as an aggregator) as CSV on stdout")
    _connection(fa)
    fa.add_argument("--market", default="")
    fa.add_argument("--aggregator", default="", help="operator and auditor: whose awards (default all)")
    fa.set_defaults(func=_flex_awards)


def _connection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", default=os.environ.get("DSOMARKET_SERVER", "127.0.0.1:50051"),
                   help="host:port (default $DSOMARKET_SERVER or 127.0.0.1:50051)")
    p.add_argument("--token", default=os.environ.get("DSOMARKET_TOKEN", ""),
                   help="participant token (default $DSOMARKET_TOKEN)")
    p.add_argument("--ca", type=Path, help="CA of the server certificate (PEM): use TLS")
    p.add_argument("--cert", type=Path, help="client certificate (PEM) for mutual TLS")
    p.add_argument("--key", type=Path, help="client key (PEM) for mutual TLS")
    p.add_argument("--timeout", type=positive_float, default=60.0, help="seconds per call (default %(default)s)")


def _client(args) -> Client:
    if not args.token:
        raise InputError("connection", "token", "give --token or set DSOMARKET_TOKEN")
    tls = ClientTls(args.ca, args.cert, args.key) if args.ca else None
    return Client(args.server, args.token, tls=tls, timeout=args.timeout)


def _talk(args, work) -> int:
    """Run ``work(client)``; a refused call prints one line (status 2 for bad input, else 1)."""
    async def main():
        async with _client(args) as client:
            return await work(client)

    try:
        return asyncio.run(main()) or 0
    except ApiError as exc:
        print(f"dsomarket: error: {exc.code.name}: {exc.details}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidArgument) else 1
    except ValueError as exc:  # a value the client library rejects before sending
        print(f"dsomarket: error: {exc}", file=sys.stderr)
        return 2


# -- offline ------------------------------------------------------------------------------

def _serve(args) -> int:
    from dsomarket.server.app import TlsFiles, serve

    if bool(args.tls_cert) != bool(args.tls_key):
        raise InputError("serve", "tls-key", "--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        raise InputError("serve", "client-ca", "mutual TLS needs --tls-cert and --tls-key")
    tls = TlsFiles(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def ready(port: int) -> None:
        print(f"dsomarket: serving on {args.host}:{port} (database {args.db})", flush=True)

    asyncio.run(serve(f"{args.host}:{args.port}", args.db, tls=tls, solve_time_limit=args.solve_time_limit,
                      ready=ready))
    return 0


def _token_create(args) -> int:
    from dsomarket.server import auth, db
    from dsomarket.server.errors import ServiceError

    db.initialise(args.db)
    conn = db.connect(args.db)
    try:
        token = db.transaction(conn, auth.create_token, args.name, args.role)
    except ServiceError as exc:
        print(f"dsomarket: error: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(token)
    print(f"dsomarket: token for {args.role} {args.name!r}; it is not stored and cannot be shown again",
          file=sys.stderr)
    return 0


def _token_revoke(args) -> int:
    from dsomarket.server import auth, db
    from dsomarket.server.errors import ServiceError

    if not Path(args.db).is_file():
        raise InputError("token", "db", f"{args.db}: no such file")
    db.initialise(args.db)  # adds the revoked_us column to a database made before it
    conn = db.connect(args.db)
    try:
        count = db.transaction(conn, auth.revoke_tokens, args.name)
    except ServiceError as exc:
        print(f"dsomarket: error: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(f"dsomarket: revoked {count} token(s) of {args.name!r}; a running server refuses them within "
          f"{auth.TOKEN_RECHECK_SECONDS:g} s", file=sys.stderr)
    return 0


def _token_list(args) -> int:
    from dsomarket.server import auth, db

    if not Path(args.db).is_file():
        raise InputError("token", "db", f"{args.db}: no such file")
    db.initialise(args.db)
    conn = db.connect(args.db)
    try:
        rows = auth.list_tokens(conn)
    finally:
        conn.close()
    print("name,role,created,revoked")
    for name, role, created_us, revoked_us in rows:
        print(f"{name},{role},{_iso_us(created_us)},{_iso_us(revoked_us) if revoked_us is not None else ''}")
    return 0


def _iso_us(us: int) -> str:
    stamp = datetime.fromtimestamp(us // 1_000_000, tz=timezone.utc).replace(microsecond=us % 1_000_000)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _open_existing(path: str):
    from dsomarket.server import db

    if not Path(path).is_file():
        raise InputError("audit", "db", f"{path}: no such file")
    return db.connect(path)


def _audit_verify(args) -> int:
    from dsomarket.server import audit

    conn = _open_existing(args.db)
    try:
        report = audit.verify(conn)
    finally:
        conn.close()
    if report.ok:
        print(f"audit chain intact: {report.records} records")
        return 0
    print(f"audit chain BROKEN at record {report.first_bad}: {report.reason} "
          f"({report.records} records before it check out)")
    return 1


def _audit_replay(args) -> int:
    from dsomarket.server.replay import replay

    conn = _open_existing(args.db)
    try:
        if args.market is not None and conn.execute("SELECT 1 FROM markets WHERE market_id = ?",
                                                    (args.market,)).fetchone() is None:
            raise InputError("audit", "market", f"no market {args.market!r} in {args.db}")
        checks = replay(conn, args.market)
    finally:
        conn.close()
    for c in checks:
        verdict = "identical" if c.identical else "DIFFERS"
        print(f"record {c.sequence:>6}  {c.market_id:<24} {c.stage:<7} {verdict}")
    differ = sum(not c.identical for c in checks)
    print(f"{len(checks)} steps replayed, {differ} differ")
    return 1 if differ else 0


def _demo(args) -> int:
    from dsomarket.clients.demo import main

    return main()


# -- over gRPC -------------------------------------------------------------------------------

def _read(path: Path, table: str, text_columns: tuple, required: tuple) -> pl.DataFrame:
    """A CSV or Parquet file, with ``text_columns`` read as text (decimal prices stay as written),
    ``interval`` as UTC timestamps, every ``required`` column present and no interval empty."""
    df = read_table(path, table, text=text_columns)
    for col in required:
        if col not in df.columns:
            raise InputError(table, col, "column is missing")
    if df["interval"].null_count():
        raise InputError(table, "interval", "is empty: give the interval start (ISO 8601 UTC)",
                         row=int(df["interval"].is_null().arg_max()))
    return df


def read_bids(path: Path) -> list[BidSegment]:
    """Bid segments of a CSV or Parquet file; prices are kept as written (decimal text)."""
    df = _read(path, "bids", _BID_TEXT_COLUMNS,
               ("bid_id", "resource_id", "side", "quantity_kw", "price", "interval"))
    df = numbers(df, "bids", ("quantity_kw", "tan_phi"))
    tan_phi = pl.col("tan_phi").fill_null(0.0) if "tan_phi" in df.columns else pl.lit(0.0)
    df = df.with_columns(pl.col("price").cast(pl.Utf8), tan_phi.alias("tan_phi"))
    return [BidSegment(r["bid_id"], r["resource_id"], r["side"], r["quantity_kw"], r["price"], r["interval"],
                       r["tan_phi"]) for r in df.iter_rows(named=True)]


def _bids_submit(args) -> int:
    bids = read_bids(args.file)
    if args.batch < 1:
        raise InputError("bids", "batch", "must be at least 1")

    async def work(client: Client) -> int:
        total = 0
        for k in range(0, len(bids), args.batch):
            ack = await client.submit_bids(args.market, bids[k:k + args.batch])
            total += ack.count
            print(f"{total} of {len(bids)} segments acknowledged at {ack.acknowledged_at.isoformat()}")
        return 0

    return _talk(args, work)


def _bids_list(args) -> int:
    async def work(client: Client) -> int:
        bids = await client.list_bids(market_id=args.market, aggregator_id=args.aggregator,
                                      include_withdrawn=args.include_withdrawn)
        rows = [{"market_id": b.market_id, "aggregator_id": b.aggregator_id, "bid_id": b.bid_id,
                 "resource_id": b.resource_id, "bus": b.bus, "side": b.side, "quantity_kw": b.quantity_kw,
                 "price": str(b.price), "interval": b.interval_start.isoformat(), "tan_phi": b.tan_phi,
                 "status": b.status} for b in bids]
        sys.stdout.write(pl.DataFrame(rows, schema=list(_LIST_COLUMNS), orient="row").write_csv() if rows
                         else ",".join(_LIST_COLUMNS) + "\n")
        return 0

    return _talk(args, work)


_LIST_COLUMNS = ("market_id", "aggregator_id", "bid_id", "resource_id", "bus", "side", "quantity_kw", "price",
                 "interval", "tan_phi", "status")


def _awards_follow(args) -> int:
    async def work(client: Client) -> int:
        seen = 0
        async for event in client.dispatch_stream(market_id=args.market, after_sequence=args.after):
            record = {"type": type(event).__name__.lower()}
            record.update((k, _json_value(v)) for k, v in vars(event).items())
            print(json.dumps(record), flush=True)
            seen += 1
            if args.count and seen >= args.count:
                break
        return 0

    return _talk(args, work)


def _json_value(v):
    if isinstance(v, datetime):
        return v.isoformat()
    return v if isinstance(v, (int, float, str)) else str(v)


def _curves_fetch(args) -> int:
    if args.out is not None and args.out.is_dir():
        raise InputError("curves", "out", f"{args.out} is a directory; give the name of a CSV file")

    async def work(client: Client) -> int:
        curves = await client.list_curves(market_id=args.market)
        rows = [(c.market_id, c.feeder_id, c.interval_start.isoformat(), s.kind, s.index,
                 "" if s.price is None else str(s.price), s.quantity_kw, c.fixed_net_load_kw, c.conditional)
                for c in curves for s in c.segments]
        df = pl.DataFrame(rows, schema=["market_id", "feeder_id", "interval", "kind", "segment", "price",
                                        "quantity_kw", "fixed_net_load_kw", "conditional"], orient="row")
        if args.out:
            write_csv(df, args.out)
            print(f"wrote {df.height} segments of {len(curves)} curves to {args.out}")
        else:
            sys.stdout.write(df.write_csv())
        return 0

    return _talk(args, work)


def _award_submit(args) -> int:
    df = numbers(_read(args.file, "award", ("price",), ("interval", "import_kw")), "award", ("import_kw",))
    awards = [IntervalAward(r["interval"], float(r["import_kw"]), r.get("price") or None)
              for r in df.iter_rows(named=True)]

    async def work(client: Client) -> int:
        result = await client.submit_award(args.market, awards)
        print(f"award {result.status}; market {result.market.market_id} is {result.market.state}")
        for line in result.diagnosis:
            print(f"  {line}")
        return 0 if result.status == "optimal" else 1

    return _talk(args, work)


# -- flexibility auction ---------------------------------------------------------------------

def read_flex_offers(path: Path) -> list[FlexOffer]:
    """Flexibility offers of a CSV or Parquet file; prices are kept as written (decimal text)."""
    df = _read(path, "offers", _OFFER_TEXT_COLUMNS,
               ("offer_id", "resource_id", "direction", "quantity_kw", "price", "interval"))
    df = numbers(df, "offers", ("quantity_kw", "min_kw", "tan_phi"))
    optional = {"availability_price": (pl.Utf8, "0"), "divisible": (pl.Boolean, True), "min_kw": (pl.Float64, 0.0),
                "tan_phi": (pl.Float64, 0.0)}
    df = df.with_columns(pl.col("price").cast(pl.Utf8),
                         *((pl.col(c).cast(t).fill_null(d) if c in df.columns else pl.lit(d, dtype=t)).alias(c)
                           for c, (t, d) in optional.items()))
    return [FlexOffer(r["offer_id"], r["resource_id"], r["direction"], r["quantity_kw"], r["price"], r["interval"],
                      r["availability_price"], r["divisible"], r["min_kw"], r["tan_phi"])
            for r in df.iter_rows(named=True)]


def _csv(rows: list[dict], columns: tuple) -> None:
    sys.stdout.write(pl.DataFrame(rows, schema=list(columns), orient="row").write_csv() if rows
                     else ",".join(columns) + "\n")


_NEED_COLUMNS = ("market_id", "need_id", "kind", "element", "direction", "interval", "required_kw", "required_pu",
                 "max_price", "partial_ok")
_FLEX_AWARD_COLUMNS = ("market_id", "aggregator_id", "offer_id", "resource_id", "bus", "interval", "direction",
                       "quantity_kw", "accepted_kw", "price", "payment", "currency", "reason", "conflict",
                       "need_ids")


def _flex_needs(args) -> int:
    async def work(client: Client) -> int:
        needs = await client.list_needs(market_id=args.market)
        _csv([{"market_id": n.market_id, "need_id": n.need_id, "kind": n.kind, "element": n.element,
               "direction": n.direction, "interval": n.interval_start.isoformat(), "required_kw": n.required_kw,
               "required_pu": n.required_pu, "max_price": "" if n.max_price is None else str(n.max_price),
               "partial_ok": n.partial_ok} for n in needs], _NEED_COLUMNS)
        return 0

    return _talk(args, work)


def _flex_submit(args) -> int:
    offers = read_flex_offers(args.file)

    async def work(client: Client) -> int:
        ack = await client.submit_flex_offers(args.market, offers)
        print(f"{ack.count} offers acknowledged at {ack.acknowledged_at.isoformat()}")
        return 0

    return _talk(args, work)


def _flex_awards(args) -> int:
    async def work(client: Client) -> int:
        awards = await client.list_flex_awards(market_id=args.market, aggregator_id=args.aggregator)
        _csv([{"market_id": w.market_id, "aggregator_id": w.aggregator_id, "offer_id": w.offer_id,
               "resource_id": w.resource_id, "bus": w.bus, "interval": w.interval_start.isoformat(),
               "direction": w.direction, "quantity_kw": w.quantity_kw, "accepted_kw": w.accepted_kw,
               "price": "" if w.price is None else str(w.price), "payment": str(w.payment), "currency": w.currency,
               "reason": w.reason, "conflict": w.conflict, "need_ids": ";".join(w.need_ids)} for w in awards],
             _FLEX_AWARD_COLUMNS)
        return 0

    return _talk(args, work)

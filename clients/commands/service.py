"""Service commands: run the server, manage tokens, check the audit log.

On the database file (no server needed): ``serve``, ``token create|revoke|list``,
``audit verify --db``, ``audit replay``, ``demo``. Over gRPC with an auditor's
(or operator's) token: ``audit records`` and ``audit verify`` without ``--db``.
The participants' commands against a server live in :mod:`.operator`,
:mod:`.aggregator`, :mod:`.iso` and :mod:`.auction`. Bad input exits with
status 2, a refused or failed call with status 1, each with one line on stderr.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path

from dsomarket.clients.api import AuditRecord, Client
from dsomarket.clients.cli import non_negative_float, non_negative_int, positive_float, positive_int
from dsomarket.clients.commands.remote import add_connection, show, talk
from dsomarket.clients.output import add_format_options
from dsomarket.engine.errors import InputError


def register(subparsers) -> None:
    """Add ``serve``, ``token``, ``audit`` and ``demo``."""
    s = subparsers.add_parser("serve", help="run the gRPC server on a SQLite or PostgreSQL database",
                              description="Run the dsomarket gRPC server until SIGTERM or SIGINT.")
    s.add_argument("--db", default="dsomarket.sqlite",
                   help="SQLite file, created if missing (default %(default)s), or a postgresql://USER@HOST/DB "
                        "URL (several servers may share one PostgreSQL database)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    s.add_argument("--port", type=non_negative_int, default=50051, help="port; 0 picks a free one (default %(default)s)")
    s.add_argument("--tls-cert", type=Path, help="server certificate (PEM); with --tls-key, serve TLS")
    s.add_argument("--tls-key", type=Path, help="server private key (PEM)")
    s.add_argument("--client-ca", type=Path, help="CA (PEM) client certificates must chain to: mutual TLS")
    s.add_argument("--solve-time-limit", type=positive_float, default=None, metavar="SECONDS",
                   help="fail a clearing with DEADLINE_EXCEEDED past this (default: no limit)")
    s.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="text lines, or one JSON object per line for log collectors (default %(default)s); "
                        "one line per request at info level (-q hides them)")
    s.add_argument("--scheduler", action="store_true",
                   help="run the timeline: close gates (interval by interval in real-time and hour-ahead markets), "
                        "clear, publish and settle each market on its schedule")
    s.add_argument("--clock-start", default=None, metavar="TIME",
                   help="with --scheduler: the timeline's clock starts at this UTC time (ISO 8601), not now")
    s.add_argument("--clock-speed", type=float, default=1.0, metavar="X",
                   help="with --scheduler: the timeline's clock runs X times faster than the wall clock")
    s.add_argument("--meter-window", type=non_negative_float, default=60.0, metavar="MINUTES",
                   help="with --scheduler: settle a market this long after its last interval ends, when its meter "
                        "data is in (default %(default)s)")
    s.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="worker processes a territory session clears on (default: one per core); with --ray, "
                        "Ray actors (default: the cluster's CPUs)")
    s.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="clear territory sessions on Ray: auto, ray://HOST:10001 or HOST:6379 (needs dsomarket[ray])")
    s.add_argument("--warm-interfaces", type=non_negative_int, default=None, metavar="N",
                   help="interfaces whose built market each territory worker keeps between clearings, so that a "
                        "real-time session of the same feeders and bids re-clears warm; the least recently "
                        "cleared are dropped first (default 64, about 1 GiB per worker at 1,000 buses and 1,000 "
                        "bids an interface; 0: every clearing is cold)")
    s.set_defaults(func=_serve, quiet_highs=True)

    t = subparsers.add_parser("token", help="create, revoke and list participant tokens").add_subparsers(
        dest="token_command", required=True, metavar="ACTION")
    tc = t.add_parser("create", help="create a token and print it (once; only its hash is stored)")
    tc.add_argument("--role", required=True, choices=("operator", "aggregator", "iso", "auditor"))
    tc.add_argument("--name", required=True, help="participant name (an aggregator's aggregator_id)")
    tc.add_argument("--db", required=True, help="the server's SQLite file (created if missing) or postgresql:// URL")
    tc.set_defaults(func=_token_create)
    tr = t.add_parser("revoke", help="revoke every active token of a participant (a running server refuses "
                                     "them within a few seconds)")
    tr.add_argument("--name", required=True, help="participant name")
    tr.add_argument("--db", required=True, help="the server's SQLite file or postgresql:// URL")
    tr.set_defaults(func=_token_revoke)
    tl = t.add_parser("list", help="list tokens: name, role, created, revoked (never the token or its hash)")
    tl.add_argument("--db", required=True, help="the server's SQLite file or postgresql:// URL")
    tl.set_defaults(func=_token_list)

    a = subparsers.add_parser("audit", help="check the audit log").add_subparsers(
        dest="audit_command", required=True, metavar="ACTION")
    av = a.add_parser("verify", help="recompute the hash chain; exit 1 at the first break",
                      description="With --db, on the database file; without, the server checks its own chain "
                                  "(auditor or operator token).")
    av.add_argument("--db", help="the server's SQLite file (default: ask the server)")
    add_connection(av)
    av.set_defaults(func=_audit_verify)
    ak = a.add_parser("records", help="audit records from a server: who did what, when, and the hash chain")
    ak.add_argument("--action", default="", metavar="PREFIX", help="only actions starting with PREFIX "
                                                                   "(e.g. market. or bids.)")
    add_connection(ak)
    add_format_options(ak)
    ak.set_defaults(func=_audit_records)
    ar = a.add_parser("replay", help="recompute clearings, awards and settlements from the log; exit 1 on a "
                                     "difference")
    ar.add_argument("--db", required=True)
    ar.add_argument("--market", default=None, help="only this market (and its day-ahead market)")
    ar.set_defaults(func=_audit_replay)

    d = subparsers.add_parser("demo", help="run a whole market day against a temporary server")
    d.add_argument("--keep", metavar="DIR", default=None,
                   help="run in DIR and keep the database and the market's CSV files there")
    d.set_defaults(func=_demo, quiet_highs=True)


# -- offline ------------------------------------------------------------------------------

def _serve(args) -> int:
    from dsomarket.server.app import StartupError, TlsFiles, serve

    if bool(args.tls_cert) != bool(args.tls_key):
        raise InputError("serve", "tls-key", "--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        raise InputError("serve", "client-ca", "mutual TLS needs --tls-cert and --tls-key")
    from dsomarket.server.requestlog import configured

    tls = TlsFiles(args.tls_cert, args.tls_key, args.client_ca) if args.tls_cert else None
    db_path = Path(args.db).resolve()
    state = "existing" if db_path.exists() else "new"
    security = "plaintext" if tls is None else "mutual TLS" if args.client_ca else "TLS"

    def ready(port: int) -> None:
        print(f"dsomarket: serving on {args.host}:{port} ({security}), {state} database {db_path}", flush=True)

    try:
        # The server speaks at INFO (a line per request) unless -q; -v adds DEBUG.
        with configured(logging.INFO - 10 * getattr(args, "verbosity", 0), args.log_format):
            asyncio.run(serve(f"{args.host}:{args.port}", args.db, tls=tls, solve_time_limit=args.solve_time_limit,
                              ready=ready, timeline_clock=_timeline_clock(args), workers=args.workers,
                              ray_address=args.ray, meter_window=args.meter_window * 60.0,
                              **({} if args.warm_interfaces is None else {"warm_interfaces": args.warm_interfaces})))
    except StartupError as exc:
        print(f"dsomarket: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _timeline_clock(args):
    """The scheduler's clock of ``serve``, or None without --scheduler."""
    from dsomarket.server.scheduler import ScaledClock, WallClock

    if not args.scheduler:
        if args.clock_start or args.clock_speed != 1.0:
            raise InputError("serve", "scheduler", "--clock-start and --clock-speed need --scheduler")
        return None
    if not args.clock_speed > 0:
        raise InputError("serve", "clock-speed", "must be positive")
    if args.clock_start is None:
        return WallClock() if args.clock_speed == 1.0 else ScaledClock(_now_us(), args.clock_speed)
    try:
        start = datetime.fromisoformat(args.clock_start.replace("Z", "+00:00"))
    except ValueError:
        raise InputError("serve", "clock-start", f"{args.clock_start!r} is not an ISO 8601 time") from None
    if start.tzinfo is None:
        raise InputError("serve", "clock-start", "give a UTC time, e.g. 2026-12-01T00:00:00Z")
    return ScaledClock(int(start.timestamp() * 1_000_000), args.clock_speed)


def _now_us() -> int:
    return int(datetime.now(timezone.utc).timestamp() * 1_000_000)


def _audit_records(args) -> int:
    return show(args, lambda c: c.list_audit_records(action_prefix=args.action), AuditRecord)


def _audit_verify_remote(args) -> int:
    async def work(client: Client) -> int:
        r = await client.verify_audit_chain()
        if r.ok:
            print(f"audit chain intact: {r.records} records (checked by the server)")
            return 0
        print(f"audit chain BROKEN at record {r.first_bad_sequence}: {r.reason}")
        return 1

    return talk(args, work)


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

    if not db.is_postgres(args.db) and not Path(args.db).is_file():
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

    if not db.is_postgres(args.db) and not Path(args.db).is_file():
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

    if not db.is_postgres(path) and not Path(path).is_file():
        raise InputError("audit", "db", f"{path}: no such file")
    return db.connect(path)


def _audit_verify(args) -> int:
    from dsomarket.server import audit

    if args.db is None:
        return _audit_verify_remote(args)
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

    return main(args.keep)

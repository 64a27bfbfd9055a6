"""The participants' commands one by one: bad input (exit 2, one line), the output formats, the connection
settings and their precedence, shell completion, ``--version``.

The whole market day through these commands is in tests/test_cli_market_day.py.
"""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import polars as pl
import pytest

from dsomarket import __version__
from dsomarket.clients import cli, output
from dsomarket.clients.cli import build_parser
from dsomarket.clients.commands.shell import bash_script
from dsomarket.clients.config import resolve
from dsomarket.engine.errors import InputError
from tests.harness import PARTICIPANTS, ThreadedServer, create_tokens

NOWHERE = ["--server", "127.0.0.1:1", "--token", "t"]   # never contacted: the input fails first


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No DSOMARKET_* variables and no config file from the machine running the tests."""
    for name in ("SERVER", "TOKEN", "TOKEN_FILE", "CA", "CERT", "KEY", "TIMEOUT", "CONFIG", "PROFILE"):
        monkeypatch.delenv(f"DSOMARKET_{name}", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def files(tmp_path):
    """Input files, each wrong in one way."""
    t = "2030-06-03T10:00:00Z"
    (tmp_path / "resources.csv").write_text("resource_id,feeder_id,bus,kind,capacity_kw\npv,f,2,pv,300\n"
                                            "pv2,f,3,pv,lots\n")
    (tmp_path / "bids_bad_time.csv").write_text(f"bid_id,resource_id,side,quantity_kw,price,interval\n"
                                                f"b1,pv,sell,10,5,{t}\nb2,pv,sell,10,5,tomorrow\n")
    (tmp_path / "bids_no_price.csv").write_text(f"bid_id,resource_id,side,quantity_kw,interval\nb1,pv,sell,10,{t}\n")
    (tmp_path / "award.csv").write_text(f"interval,import_kw\n{t},abc\n")
    (tmp_path / "needs.csv").write_text(f"need_id,kind,interval,required_kw\nn1,line,{t},100\n")
    (tmp_path / "offers.csv").write_text(f"offer_id,resource_id,direction,quantity_kw,price,interval,divisible\n"
                                         f"o1,pv,up,10,5,{t},maybe\n")
    (tmp_path / "changes.csv").write_text("change_id,kind,element,start,reason\nc1,outage,5,soon,storm\n")
    (tmp_path / "readings.csv").write_text(f"resource_id,interval,kw\npv,{t},3\nload,{t},\n")
    (tmp_path / "history.csv").write_text("resource_id,kw\nload,-3\n")
    (tmp_path / "unknown_key.toml").write_text('server = "h:1"\ntokn = "x"\n')
    (tmp_path / "broken.toml").write_text('server = "h:1\n')
    return tmp_path


# (argv, a fragment of the one line on stderr); every new command appears at least once.
BAD = [
    (["feeders", "create", "f", "--dir", "{d}/none", *NOWHERE], "no such directory"),
    (["feeders", "list", "--server", "h:1"], "give --token"),
    (["markets", "create", "m", "--feeder", "f", "--start", "yesterday", *NOWHERE], "not an ISO 8601 time"),
    (["markets", "create", "m", "--feeder", "f", "--start", "2030-01-01", "--gate-lead", "-5", *NOWHERE],
     "gate-lead: must be >= 0"),
    (["markets", "list", "--timeout", "-1", "--token", "t"], "--timeout: '-1': must be greater than 0"),
    (["markets", "show", "m", "--config", "{d}/missing.toml"], "missing.toml: no such file"),
    (["markets", "intervals", "m", "--config", "{d}/unknown_key.toml"], "field tokn: unknown key"),
    (["markets", "prices", "m", "--ca", "{d}/ca.pem", "--token", "t"], "ca.pem: no such file"),
    (["markets", "gate", "m", "--cert", "{d}/c.pem", "--token", "t"], "--cert and --key go together"),
    (["markets", "clear", "m", "--iso-price", "fifty", *NOWHERE], "price 'fifty' is not a decimal number"),
    (["markets", "publish", "m", "--config", "{d}/broken.toml"], "not TOML"),
    (["markets", "settle", "m", "--config", "{d}/unknown_key.toml", "--profile", "dso"], "no [profiles.dso]"),
    (["markets", "override", "m", "--aggregator", "a", "--resource", "r", "--interval", "noon", "--kw", "0",
      "--reason", "x", *NOWHERE], "interval: 'noon' is not an ISO 8601 time"),
    (["markets", "reopen", "m", *NOWHERE], "required: --reason"),
    (["network", "submit", "--feeder", "f", "--file", "{d}/changes.csv", *NOWHERE],
     "field start: 'soon' is not an ISO 8601"),
    (["network", "list", *NOWHERE], "required: --feeder"),
    (["resources", "register", "--file", "{d}/resources.csv", *NOWHERE],
     "field capacity_kw: 'lots' is not a number"),
    (["resources", "list", "--token-file", "{d}/missing.token"], "missing.token: no such file"),
    (["bids", "submit", "--market", "m", "--file", "{d}/bids_bad_time.csv", *NOWHERE],
     "field interval: 'tomorrow' is not an ISO 8601"),
    (["bids", "replace", "--market", "m", "--file", "{d}/bids_no_price.csv", *NOWHERE],
     "field price: column is missing"),
    (["bids", "withdraw", "--market", "m", "--file", "{d}/none.csv", *NOWHERE], "no such file"),
    (["bids", "list", "--key", "{d}/k.pem", "--token", "t"], "--cert and --key go together"),
    (["awards", "list", "--server", "h:1"], "give --token"),
    (["awards", "follow", "--format", "table", *NOWHERE], "invalid choice: 'table'"),
    (["instructions", "list", "--profile", "nobody"], "no [profiles.nobody]"),
    (["instructions", "follow", "--count", "-2", "--token", "t"], "--count: '-2': must be 0 or more"),
    (["statements", "list", "--format", "xml", *NOWHERE], "invalid choice: 'xml'"),
    (["statements", "follow", "--every", "0", *NOWHERE], "--every: '0': must be greater than 0"),
    (["curves", "fetch", "--token-file", "{d}/none.token"], "none.token: no such file"),
    (["curves", "follow", "--server", "h:1"], "give --token"),
    (["award", "submit", "--market", "m", "--file", "{d}/award.csv", *NOWHERE],
     "field import_kw: 'abc' is not a number"),
    (["meters", "submit", "--market", "m", "--file", "{d}/readings.csv", *NOWHERE], "field kw: is empty"),
    (["meters", "history", "--file", "{d}/history.csv", *NOWHERE], "field interval: column is missing"),
    (["meters", "imbalance", "m", "--format", "xml", *NOWHERE], "invalid choice: 'xml'"),
    (["award", "interval", "--market", "m", "--interval", "2030-01-01T00:05Z", *NOWHERE],
     "--interval and --import-kw go together"),
    (["award", "interval", "--market", "m", "--file", "{d}/award.csv", "--import-kw", "5", *NOWHERE],
     "give --file, or --interval with --import-kw, not both"),
    (["flex", "post", "--market", "m", "--file", "{d}/needs.csv", *NOWHERE], "field max_price: column is missing"),
    (["flex", "submit", "--market", "m", "--file", "{d}/offers.csv", *NOWHERE], "'maybe' is not true or false"),
    (["flex", "withdraw", "--market", "m", "--server", "h:1"], "required: --offer"),
    (["flex", "offers", "--config", "{d}/broken.toml"], "not TOML"),
    (["flex", "auction", "--market", "m", "--pricing", "cheapest", *NOWHERE], "invalid choice: 'cheapest'"),
    (["flex", "results", "--server", "h:1"], "give --token"),
    (["ders", "register", "--file", "{d}/none.csv", *NOWHERE], "no such file"),
    (["ders", "list", "--server", "h:1"], "give --token"),
    (["ders", "retire", "d1", *NOWHERE], "required: --reason"),
    (["ders", "review", "--min-useful-kw", "-1", *NOWHERE], "--min-useful-kw: '-1': must be greater than 0"),
    (["ders", "envelopes", "--feeder", "f", "--rule", "fifo", *NOWHERE], "invalid choice: 'fifo'"),
    (["direct", "schedules", "--feeder", "f", "--file", "{d}/bids_bad_time.csv", *NOWHERE],
     "field interval: 'tomorrow' is not an ISO 8601"),
    (["direct", "bids", "--feeder", "f", "--file", "{d}/none.csv", *NOWHERE], "no such file"),
    (["direct", "check", "--rule", "fifo", *NOWHERE], "invalid choice: 'fifo'"),
    (["conflicts", "list", "--format", "xml", *NOWHERE], "invalid choice: 'xml'"),
    (["conflicts", "follow", "--count", "-2", "--token", "t"], "--count: '-2': must be 0 or more"),
    (["audit", "records", "--server", "h:1"], "give --token"),
    (["audit", "verify", "--server", "h:1"], "give --token"),
    (["whoami", "--ca", "{d}/none.pem", "--token", "t"], "none.pem: no such file"),
    (["config", "show", "--config", "{d}/missing.toml"], "missing.toml: no such file"),
    (["completion", "fish"], "invalid choice: 'fish'"),
    (["territories", "create", "t", *NOWHERE], "give --feeder or --interfaces"),
    (["territories", "create", "t", "--interfaces", "{d}/broken.toml", *NOWHERE], "broken.toml: not JSON"),
    (["territories", "show", "t", "--server", "h:1"], "give --token"),
    (["territories", "open", "s", "--territory", "t", "--start", "soon", *NOWHERE], "not an ISO 8601 time"),
    (["territories", "status", "s", "--server", "h:1"], "give --token"),
    (["territories", "gate", "s", "--timeout", "0", *NOWHERE], "--timeout: '0': must be greater than 0"),
    (["territories", "clear", "s", "--format", "xml", *NOWHERE], "invalid choice: 'xml'"),
    (["territories", "publish", "s", "--server", "h:1"], "give --token"),
    (["territories", "settle", "--server", "h:1"], "required: session_id"),
]


@pytest.mark.parametrize("argv, fragment", BAD, ids=[" ".join(a[:2]) + f" #{k}" for k, (a, _) in enumerate(BAD)])
def test_bad_input_exits_2_with_one_line(argv, fragment, files, capsys):
    try:
        code = cli.main([a.replace("{d}", str(files)) for a in argv])
    except SystemExit as exc:   # a usage error, from argparse's own checks
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert fragment in err, err


def test_usage_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["markets", "list", "--format", "xml"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("dsomarket markets list: error: argument --format: invalid choice")


@pytest.fixture
def served(tmp_path):
    path = tmp_path / "market.sqlite"
    tokens = create_tokens(path, PARTICIPANTS)
    server = ThreadedServer(path)
    yield server, tokens
    server.stop()


def test_input_the_server_rejects_exits_2_and_a_refusal_exits_1(served, run, tmp_path):
    server, tokens = served
    conn = ["--server", server.target, "--token", tokens["dso"]]
    code, _, err = run("markets", "create", "m", "--feeder", "nowhere", "--start", "2030-01-01T00:00Z", *conn)
    assert code == 1 and err.startswith("dsomarket: error: NOT_FOUND: ") and len(err.splitlines()) == 1
    assert run("feeders", "create", "f", "--builtin", "ieee33", *conn)[0] == 0
    code, _, err = run("markets", "create", "m", "--feeder", "f", "--start", "2030-01-01T00:00Z", "--intervals",
                       500, *conn)
    assert code == 2 and "INVALID_ARGUMENT: interval_count" in err and len(err.splitlines()) == 1
    code, _, err = run("feeders", "create", "g", "--builtin", "ieee999", *conn)
    assert code == 2 and "INVALID_ARGUMENT" in err and len(err.splitlines()) == 1
    code, _, err = run("markets", "gate", "nope", *conn)
    assert code == 1 and "NOT_FOUND" in err and len(err.splitlines()) == 1
    code, _, err = run("feeders", "list", "--server", server.target, "--token", tokens["agg-a"])
    assert code == 1 and "PERMISSION_DENIED" in err


def test_a_network_change_that_leaves_a_market_infeasible_and_reopening_it(served, run, tmp_path):
    """An interface limit of 0 kW with load on the feeder: the clearing fails, and the operator reopens."""
    server, tokens = served
    conn = ["--server", server.target, "--token", tokens["dso"]]
    assert run("feeders", "create", "f", "--builtin", "ieee33", *conn)[0] == 0
    assert run("markets", "create", "m", "--feeder", "f", "--start", "2030-01-01T00:00Z", "--intervals", 1,
               *conn)[0] == 0
    (tmp_path / "changes.csv").write_text("change_id,kind,element,start,import_max_kw,why\n"
                                          "c1,interface,,2029-12-31T00:00Z,0,substation transformer out\n")
    code, out, err = run("network", "submit", "--feeder", "f", "--file", tmp_path / "changes.csv", "--format",
                         "csv", *conn)
    assert code == 0 and "network version 1" in err and out.strip() == ",".join(
        ["market_id", "status", "diagnosis", "revision", "republished"])
    changes = json.loads(run("network", "list", "--feeder", "f", "--format", "json", *conn)[1])
    assert [(c["change_id"], c["kind"], c["import_max_kw"], c["reason"], c["version"]) for c in changes] == \
        [("c1", "interface", 0.0, "substation transformer out", 1)]
    code, _, err = run("markets", "reopen", "m", "--reason", "early", *conn)
    assert code == 1 and "FAILED_PRECONDITION" in err and len(err.splitlines()) == 1
    assert run("markets", "gate", "m", *conn)[0] == 0
    code, _, err = run("markets", "clear", "m", "--iso-price", "50", *conn)
    assert code == 1 and "is closed: infeasible" in err
    code, out, _ = run("markets", "reopen", "m", "--reason", "interface out: bids may change", *conn)
    assert code == 0 and out == "market m is open\n"


# -- output ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    name: str
    kw: float
    price: Decimal
    at: datetime
    length: timedelta
    tags: tuple


ROWS = [Row("a", -1e-9, Decimal("10.125"), datetime(2030, 6, 3, 10, tzinfo=timezone.utc), timedelta(hours=1),
            ("x", "y")),
        Row("long-name", 1234.56789, Decimal("-0.5"), datetime(2030, 6, 3, 11, 0, 0, 5, tzinfo=timezone.utc),
            timedelta(minutes=5), ())]


def test_table_rounds_aligns_and_never_prints_minus_zero():
    text = io.StringIO()
    output.emit(ROWS, "table", stdout=text)
    lines = text.getvalue().splitlines()
    assert lines[0].split() == ["name", "kw", "price", "at", "length", "tags"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split()[1] == "0" and "1234.568" in lines[3]
    assert lines[2].index("0 ") == lines[3].index("8 ")   # numbers right-aligned in one column
    assert "1:00:00" in lines[2] and "0:05:00" in lines[3] and "x;y" in lines[2]


def test_csv_and_json_keep_every_value_exact():
    text = io.StringIO()
    output.emit(ROWS, "csv", stdout=text)
    df = pl.read_csv(io.StringIO(text.getvalue()), schema_overrides={"price": pl.Utf8})
    assert df["price"].to_list() == ["10.125", "-0.5"] and df["kw"].to_list() == [-1e-9, 1234.56789]
    assert df["at"].to_list() == ["2030-06-03T10:00:00Z", "2030-06-03T11:00:00.000005Z"]
    text = io.StringIO()
    output.emit(ROWS, "json", stdout=text)
    first = json.loads(text.getvalue())[0]
    assert first == {"name": "a", "kw": -1e-9, "price": "10.125", "at": "2030-06-03T10:00:00Z", "length": 3600.0,
                     "tags": "x;y"}


def test_parquet_has_typed_columns_and_the_format_follows_the_extension(tmp_path):
    assert output.emit(ROWS, None, tmp_path / "rows.parquet") == 2
    df = pl.read_parquet(tmp_path / "rows.parquet")
    assert df.schema["at"] == pl.Datetime("us", "UTC") and df.schema["kw"] == pl.Float64
    assert df["price"].to_list() == ["10.125", "-0.5"]
    output.emit(ROWS, None, tmp_path / "rows.json")
    assert len(json.loads((tmp_path / "rows.json").read_text())) == 2


def test_parquet_goes_to_a_pipe_but_not_to_a_terminal():
    pipe = io.TextIOWrapper(io.BytesIO())
    output.emit(ROWS, "parquet", stdout=pipe)
    assert pl.read_parquet(io.BytesIO(pipe.buffer.getvalue())).height == 2

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    with pytest.raises(InputError, match="parquet is binary"):
        output.emit(ROWS, "parquet", stdout=Terminal())


def test_an_empty_list_still_prints_its_header():
    for fmt, expected in (("csv", "name,kw,price,at,length,tags\n"), ("json", "[]\n")):
        text = io.StringIO()
        output.emit([], fmt, columns=Row, stdout=text)
        assert text.getvalue() == expected
    text = io.StringIO()
    output.emit([], "table", columns=Row, stdout=text)
    assert text.getvalue().splitlines()[0].split() == ["name", "kw", "price", "at", "length", "tags"]


# -- connection settings --------------------------------------------------------------------------

def test_settings_come_from_flag_then_environment_then_profile_then_file_then_default(tmp_path):
    config = tmp_path / "c.toml"
    (tmp_path / "agg.token").write_text("from-token-file\n")
    config.write_text('server = "file:1"\ntimeout = 5\nca = "certs/ca.pem"\n'
                      '[profiles.agg]\nserver = "profile:1"\ntoken_file = "agg.token"\n')
    s = resolve({}, {}, config)
    assert (s.server, s.token, s.timeout, s.ca) == ("file:1", "", 5.0, tmp_path / "certs/ca.pem")
    s = resolve({}, {}, config, "agg")
    assert (s.server, s.token, s.sources["server"]) == ("profile:1", "from-token-file", f"{config} [profiles.agg]")
    s = resolve({}, {"DSOMARKET_SERVER": "env:1", "DSOMARKET_TOKEN": "env-token", "DSOMARKET_PROFILE": "agg"},
                config)
    assert (s.server, s.token, s.sources["token"]) == ("env:1", "env-token", "env")
    s = resolve({"server": "flag:1", "token": "flag-token", "token_file": tmp_path / "agg.token"},
                {"DSOMARKET_SERVER": "env:1"}, config, "agg")
    assert (s.server, s.token, s.sources["server"]) == ("flag:1", "flag-token", "flag")
    s = resolve({}, {"DSOMARKET_CONFIG": str(config)})
    assert s.server == "file:1"
    s = resolve({}, {"XDG_CONFIG_HOME": str(tmp_path / "empty")})
    assert (s.server, s.timeout, s.config_path) == ("127.0.0.1:50051", 60.0,
                                                    tmp_path / "empty" / "dsomarket" / "config.toml")


def test_the_default_config_file_is_read_from_xdg_config_home(tmp_path, run, monkeypatch):
    home = tmp_path / "xdg" / "dsomarket"
    home.mkdir(parents=True)
    (home / "config.toml").write_text('server = "xdg:7"\ntoken = "dsm_secret_token_value"\n')
    code, out, _ = run("config", "show")
    assert code == 0 and "xdg:7" in out and "dsm_secr…" in out and "secret_token_value" not in out
    monkeypatch.setenv("DSOMARKET_SERVER", "env:8")
    code, out, _ = run("config", "show", "--server", "flag:9")
    server = next(line for line in out.splitlines() if line.startswith("server"))
    assert server.split() == ["server", "flag:9", "flag"] and "env:8" not in out


def test_settings_reject_what_they_do_not_know(tmp_path):
    (tmp_path / "c.toml").write_text('timeout = "soon"\n')
    with pytest.raises(InputError, match="timeout: must be a positive number"):
        resolve({}, {}, tmp_path / "c.toml")
    with pytest.raises(InputError, match="DSOMARKET_TIMEOUT: is not a number"):
        resolve({}, {"DSOMARKET_TIMEOUT": "x", "XDG_CONFIG_HOME": str(tmp_path)})


# -- completion and version -------------------------------------------------------------------------

def complete(script: str, words: list[str]) -> list[str]:
    """What bash completes for ``words`` (the last one being typed)."""
    line = " ".join(f"'{w}'" if w else "''" for w in words)
    program = f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _dsomarket; echo "${{COMPREPLY[@]}}"'
    return subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True).stdout.split()


def test_bash_completion_knows_commands_options_and_choices(run):
    script = bash_script(build_parser())
    assert "markets" in complete(script, ["dsomarket", "mar"])
    assert {"create", "list", "gate", "clear", "settle", "override"} <= set(complete(script,
                                                                                     ["dsomarket", "markets", ""]))
    assert complete(script, ["dsomarket", "markets", "list", "--format", ""]) == ["table", "csv", "json", "parquet"]
    assert "--include-withdrawn" in complete(script, ["dsomarket", "bids", "list", "--inc"])
    code, out, _ = run("completion", "zsh")
    assert code == 0 and "bashcompinit" in out and "complete -o filenames -F _dsomarket dsomarket" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"dsomarket {__version__}"


def test_every_server_command_has_a_bad_input_case():
    """The table above covers each participant command (a new command needs its case)."""
    covered = {tuple(a for a in argv[:2] if not a.startswith("-")) for argv, _ in BAD}
    parser = build_parser()
    groups = ("feeders", "markets", "network", "resources", "bids", "awards", "instructions", "statements",
              "curves", "award", "ders", "direct", "conflicts", "territories")
    sub = next(a for a in parser._actions if a.choices and "markets" in a.choices).choices
    for group in groups:
        actions = next(a for a in sub[group]._actions if a.choices).choices
        for action in actions:
            assert (group, action) in covered, f"{group} {action}"
    meters = next(a for a in sub["meters"]._actions if a.choices).choices
    for action in set(meters) - {"settle"}:   # offline: tests/test_metering.py
        assert ("meters", action) in covered, f"meters {action}"
    flex = next(a for a in sub["flex"]._actions if a.choices).choices
    for action in set(flex) - {"clear", "needs", "awards"}:   # offline, or covered in tests/test_server_flex.py
        assert ("flex", action) in covered, f"flex {action}"

"""``dsomarket territories``: a territory session driven from the command line against a running server."""

from __future__ import annotations

import json

import pytest

from tests.harness import PARTICIPANTS, ThreadedServer, create_tokens, database


@pytest.fixture
def served(tmp_path):
    path = database(tmp_path)
    tokens = create_tokens(path, PARTICIPANTS)
    server = ThreadedServer(path)
    yield server, tokens
    server.stop()


def test_a_session_from_the_command_line(served, run, tmp_path):
    server, tokens = served
    op = ["--server", server.target, "--token", tokens["dso"]]
    for fid, name in (("f-a", "synth:30:1"), ("f-b", "synth:30:2"), ("f-c", "synth:30:3"), ("f-x", "ieee33")):
        assert run("feeders", "create", fid, "--builtin", name, *op)[0] == 0
    spec = tmp_path / "territory.json"
    spec.write_text(json.dumps({"interfaces": [
        {"interface_id": "sub-bc", "feeders": ["f-b", "f-c"], "import_max_kw": 5000},
        {"interface_id": "tight", "feeders": ["f-x"], "import_max_kw": 100}]}))
    code, out, err = run("territories", "create", "north", "--feeder", "f-a", "--interfaces", spec, *op,
                         "--format", "json")
    assert code == 0, err
    assert [r["interface_id"] for r in json.loads(out)] == ["f-a", "sub-bc", "tight"]

    code, out, err = run("territories", "open", "s1", "--territory", "north", "--start", "2031-01-02T00:00Z",
                         "--intervals", "2", *op, "--format", "csv")
    assert code == 0, err
    assert out.splitlines()[1].startswith("f-a,s1:f-a,open")
    assert run("territories", "gate", "s1", *op)[0] == 0

    code, out, err = run("territories", "clear", "s1", "--iso-price", "40", *op, "--format", "json")
    rows = {r["interface_id"]: r for r in json.loads(out)}
    assert code == 1 and "2 of 3 interfaces cleared optimal" in err
    assert rows["f-a"]["status"] == rows["sub-bc"]["status"] == "optimal"
    assert rows["tight"]["status"] == "infeasible" and "import" in rows["tight"]["diagnosis"]

    code, out, _ = run("territories", "publish", "s1", *op, "--format", "json")
    states = {r["interface_id"]: r["state"] for r in json.loads(out)}
    assert code == 1 and states == {"f-a": "published", "sub-bc": "published", "tight": "closed"}
    code, out, err = run("territories", "status", "s1", "--server", server.target, "--token", tokens["auditor"])
    assert code == 0 and "infeasible" in out

    code, _, err = run("territories", "create", "south", *op)
    assert code == 2 and "--feeder or --interfaces" in err
    code, _, err = run("territories", "clear", "s1", *op)  # only the infeasible one is left closed: it re-clears
    assert code == 1
    code, _, err = run("territories", "settle", "s1", *op)
    assert code == 1 and "FAILED_PRECONDITION" in err and "no awarded market" in err

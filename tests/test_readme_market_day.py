"""The README's market day from the command line, run line by line as written.

``dsomarket`` lines run in process; the two shell lines that write the config
file run in bash; ``dsomarket serve ... &`` is replaced by the same server on
port 0 in a thread (the config file is pointed at it), so that parallel test
runs never compete for port 50051.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.harness import ThreadedServer

ROOT = Path(__file__).resolve().parents[1]


def readme_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A market day from the command line", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_market_day_runs_as_written(tmp_path, run, monkeypatch):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    server = None
    outputs = {}
    try:
        for line in readme_lines():
            if line.startswith("dsomarket serve"):
                db = shlex.split(line)[shlex.split(line).index("--db") + 1]
                server = ThreadedServer(tmp_path / db)
            elif line.startswith("export "):
                name, value = line.removeprefix("export ").split("=", 1)
                monkeypatch.setenv(name, value.replace("$PWD", str(tmp_path)))
            elif line.startswith("dsomarket "):
                argv, _, target = line.partition(" > ")
                code, out, err = run(*shlex.split(argv)[1:])
                assert code == 0, f"{line}: {err}"
                outputs[argv] = out
                if target:
                    (tmp_path / target.strip()).write_text(out)
            else:
                subprocess.run(["bash", "-c", line], check=True, cwd=tmp_path)
                config = tmp_path / "day.toml"
                if server is not None and config.exists():
                    config.write_text(config.read_text().replace("127.0.0.1:50051", server.target))
        assert server is not None
        awards = next(out for argv, out in outputs.items() if argv.startswith("dsomarket awards list"))
        assert len(awards.splitlines()) == 2 + 12   # header, rule, 3 bids x 4 hours
        assert "audit chain intact" in outputs["dsomarket audit verify --profile auditor"]
    finally:
        if server is not None:
            server.stop()

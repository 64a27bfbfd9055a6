"""docs/library.md is a notebook: its Python cells run top to bottom from the repository root."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cells() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "library.md").read_text(), re.S)


def test_the_library_notebook_runs_as_written(tmp_path, monkeypatch, capsys):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    assert len(cells()) >= 5
    for k, cell in enumerate(cells()):
        exec(compile(cell, f"docs/library.md cell {k + 1}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed.startswith("optimal welfare ") and "most loaded: line" in printed
    for name in ("feeder.png", "dlmp_heatmap.png", "curve.svg", "dispatch.png"):
        assert (tmp_path / "out" / name).stat().st_size > 5000, name

"""The README's main job, `dsomarket demo`, runs end to end and says that everything checked out."""

from __future__ import annotations

import asyncio

from dsomarket.clients.demo import run_demo


def test_demo_runs_a_whole_market_day_and_replays_it(tmp_path):
    lines: list[str] = []
    assert asyncio.run(run_demo(tmp_path, out=lines.append)) == 0
    text = "\n".join(lines)
    assert "clearing at the forecast price: optimal" in text
    assert "award optimal" in text
    assert "FAILED_PRECONDITION" in text and "PERMISSION_DENIED" in text
    assert "chain intact" in text and "all identical" in text

"""What the request log costs a call: the same calls with the log written, with the log level above
INFO, and with the interceptor taken out.

Run: ``python benchmarks/bench_requestlog.py [--calls 2000] [--rounds 3]``.

One in-process server on a fresh SQLite file (loopback, port 0) per variant; one aggregator client
calls ``GetIdentity`` (authentication and the log, almost nothing else) back to back ``--calls``
times, then ``ListBids`` of an empty market the same number of times. Variants:

- ``logged``: ``dsomarket.server.requests`` at INFO into a file handler with the text format of
  ``dsomarket serve`` (what a server does by default);
- ``quiet``: the logger above INFO (``serve -q``): the interceptor times the call but writes nothing;
- ``none``: ``create_server`` without the interceptor (the baseline).

The rounds alternate the variants, and the figure is each variant's median calls/s over the rounds as a
ratio to ``none``: the shared machine's drift then hits all three alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsomarket.server import app as server_app  # noqa: E402
from dsomarket.server.requestlog import log as request_log  # noqa: E402
from tests.harness import running, small_market  # noqa: E402


class _PassThrough(server_app.RequestLogInterceptor):
    async def intercept_service(self, continuation, handler_call_details):
        return await continuation(handler_call_details)


async def _rate(workdir: Path, calls: int) -> tuple[float, float]:
    async with running(workdir) as env:
        market = await small_market(env, intervals=1)
        agg = env.clients["agg-a"]
        await agg.identity()   # the token is checked once and cached: every timed call is alike
        started = time.perf_counter()
        for _ in range(calls):
            await agg.identity()
        identity = calls / (time.perf_counter() - started)
        started = time.perf_counter()
        for _ in range(calls):
            await agg.list_bids(market_id=market.market_id)
        return identity, calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[tuple[float, float]]] = {"none": [], "quiet": [], "logged": []}
    with tempfile.TemporaryDirectory() as tmp:
        handler = logging.FileHandler(Path(tmp) / "serve.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        request_log.addHandler(handler)
        request_log.propagate = False
        for r in range(args.rounds):
            for variant in rates:
                request_log.setLevel(logging.INFO if variant == "logged" else logging.WARNING)
                patch = mock.patch.object(server_app, "RequestLogInterceptor", _PassThrough) \
                    if variant == "none" else contextlib.nullcontext()
                with patch:
                    work = Path(tmp) / f"{variant}-{r}"
                    work.mkdir()
                    rates[variant].append(asyncio.run(_rate(work, args.calls)))
        lines = sum(1 for _ in open(Path(tmp) / "serve.log"))
    base = [statistics.median(x[k] for x in rates["none"]) for k in (0, 1)]
    print(f"{args.calls} calls per method, {args.rounds} rounds; {lines} request lines written when logged")
    print(f"{'variant':<8} {'GetIdentity/s':>14} {'ratio':>6} {'ListBids/s':>11} {'ratio':>6}")
    for variant, xs in rates.items():
        med = [statistics.median(x[k] for x in xs) for k in (0, 1)]
        print(f"{variant:<8} {med[0]:>14.0f} {med[0] / base[0]:>6.2f} {med[1]:>11.0f} {med[1] / base[1]:>6.2f}")


if __name__ == "__main__":
    main()

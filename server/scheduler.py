"""The timeline that runs itself: gate closure, clearing and publication on each market's schedule.

A :class:`Scheduler` runs inside the server as one asyncio task. Each
:meth:`Scheduler.tick` reads the markets from the database and takes every
step that is due at the clock's time, in order:

- OPEN -> CLOSED once the first interval's gate has closed
  (:func:`server.timeline.gate_closure`);
- CLOSED -> CLEARED (or stays CLOSED with a status) when it was never cleared
  (``clearing_status`` empty), at the market's default forecast price; a failed
  clearing is left to the operator, never retried on its own;
- CLEARED -> PUBLISHED, so the ISO's stream receives the curves.

Restart safety comes from the store, not from memory: every step is one
transaction that checks the market's state before it writes (a clearing is
recorded together with the state it moves to), so after a crash the first
tick catches up from the durable state, and a step that was done, by the
scheduler or by the operator, is never done twice. Steps run under the
market's lock (as the operator's calls do), and the operator's calls stay
available at any time. The clock is injectable (:class:`ManualClock` in tests,
:class:`ScaledClock` to run a day in seconds), so the schedule does not depend
on the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from dsomarket.server import store, timeline
from dsomarket.server.auth import Principal
from dsomarket.server.db import now_us
from dsomarket.server.errors import FailedPrecondition
from dsomarket.server.notify import CURVES

SCHEDULER = Principal("scheduler", "operator")
"""Who the audit log names for the scheduler's steps."""
log = logging.getLogger("dsomarket.scheduler")


class WallClock:
    """The real time."""

    def now_us(self) -> int:
        return now_us()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass
class ScaledClock:
    """Time that starts at ``start_us`` and runs ``speed`` times faster than the wall clock."""

    start_us: int
    speed: float = 1.0

    def __post_init__(self):
        self._wall0 = time.monotonic()

    def now_us(self) -> int:
        return self.start_us + int((time.monotonic() - self._wall0) * self.speed * 1e6)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds / self.speed)


@dataclass
class ManualClock:
    """Time that moves only when told (tests): :meth:`set` or :meth:`advance`."""

    now: int

    def now_us(self) -> int:
        return self.now

    def set(self, us: int) -> None:
        self.now = int(us)

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1e6)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0.01)


@dataclass(frozen=True)
class Step:
    """One step the scheduler took: ``action`` is close, clear or publish; ``status`` the clearing's."""

    market_id: str
    action: str
    status: str = ""


def due(market: dict, now: int) -> str | None:
    """The step due for a market at time ``now`` (microseconds), or None."""
    state = market["state"]
    if state == "open":
        return "close" if now >= timeline.gate_closure(market, 0) else None
    if state == "closed":
        return "clear" if market["clearing_status"] == "" else None
    if state == "cleared":
        return "publish"
    return None


def _active(conn) -> list[dict]:
    rows = conn.execute("SELECT * FROM markets WHERE state IN ('open', 'closed', 'cleared') ORDER BY market_id")
    return [dict(r) for r in rows]


class Scheduler:
    """Takes each market's due steps at the clock's time; see the module docstring.

    Parameters
    ----------
    app
        The server's :class:`server.services.App`.
    clock
        ``now_us()`` and ``sleep(seconds)`` (simulated seconds).
    period
        Simulated seconds between ticks when nothing woke the scheduler.
    """

    def __init__(self, app, clock=None, period: float = 1.0):
        self.app = app
        self.clock = clock or WallClock()
        self.period = period
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()

    async def tick(self) -> list[Step]:
        """Take every step due now, market by market, until none is due; returns what was done."""
        done: list[Step] = []
        while True:
            now = self.clock.now_us()
            markets = await self.app.reader.call(_active)
            steps = [(m, due(m, now)) for m in markets]
            steps = [(m, s) for m, s in steps if s is not None]
            if not steps:
                return done
            for market, action in steps:
                try:
                    done.append(await self._take(market["market_id"], action))
                except FailedPrecondition:
                    continue  # the operator (or another tick) took the step first: nothing to do twice

    async def _take(self, market_id: str, action: str) -> Step:
        app = self.app
        if action == "close":
            await app.writer.call(store.close_gate, SCHEDULER, market_id)
            return Step(market_id, "close")
        if action == "clear":
            _, _, outcome = await app.clear(SCHEDULER, market_id, first=True)
            return Step(market_id, "clear", outcome.status)
        await app.writer.call(store.publish, SCHEDULER, market_id)
        app.notifier.notify(CURVES)
        return Step(market_id, "publish")

    def start(self) -> None:
        """Run :meth:`tick` every ``period`` simulated seconds in a background task, until :meth:`stop`."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for step in await self.tick():
                    log.info("scheduler: %s %s %s", step.action, step.market_id, step.status)
            except Exception:  # a failing tick must not stop the timeline; the next one retries
                log.exception("scheduler tick failed")
            await self.clock.sleep(self.period)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

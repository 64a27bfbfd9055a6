"""The timeline that runs itself: gates, clearing, publication and settlement on each market's schedule.

A :class:`Scheduler` runs inside the server as one asyncio task. Each
:meth:`Scheduler.tick` reads the markets from the database and takes every
step that is due at the clock's time (:func:`due`), in order:

- a real-time or hour-ahead market rolls: at each interval's own gate
  (:func:`server.timeline.gate_closure`) that interval alone is closed (its
  bids and forecast stop, later intervals stay open), cleared on its own bids
  at the default forecast price and published to the ISO's stream, where the
  ISO awards it (``RealTimeService.SubmitIntervalAward``); the market stays
  OPEN until its last interval is published, then it is PUBLISHED. One whose
  resources link its intervals (storage, EV energy, ramps) at its first gate
  is closed and cleared whole instead;
- another market: OPEN -> CLOSED at its first interval's gate, CLOSED ->
  CLEARED (or stays CLOSED with a status) when it was never cleared, CLEARED ->
  PUBLISHED;
- a clearing that is not optimal (whole or one interval) is left to the
  operator, never retried on its own (ClearMarket on a rolling market clears
  its failed intervals again);
- AWARDED -> SETTLED once the meter window (``meter_window``, default
  :data:`METER_WINDOW_SECONDS`) after the market's last interval has passed,
  and then the metered imbalance, as soon as the readings are complete (never
  on a gap: it waits for the readings). A market that rolled through its gates
  settles each awarded interval on its own once the meter window after that
  interval has passed (open, published or awarded; step ``settle`` in
  ``interval_steps``, so never twice), and is SETTLED with its last interval.

Restart safety comes from the store, not from memory: every step is one
transaction that checks the market's state (and the interval's steps, table
``interval_steps``) before it writes (a clearing is recorded together with
the state it moves to), so after a crash the first tick catches up from the
durable state, and a step that was done, by the scheduler or by the operator,
is never done twice. Steps run under the market's lock (as the operator's
calls do), and the operator's calls stay available (a rolling market's
single gate excepted). The clock is injectable (:class:`ManualClock` in tests,
:class:`ScaledClock` to run a day in seconds), so the schedule does not depend
on the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from dsomarket.server import markets_engine, realtime_service, realtime_store, store, timeline
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
    """One step the scheduler took: ``action`` close, clear, publish, settle or imbalance; ``interval_idx`` the
    interval of a rolling gate's step (None: the whole market); ``status`` the clearing's."""

    market_id: str
    action: str
    status: str = ""
    interval_idx: int | None = None


METER_WINDOW_SECONDS = 3600.0
"""Default time after a market's last interval ends that its meter data may take to come in: the scheduler
settles the market then (docs/realtime.md#a-timeline-that-runs-itself)."""
RETRY_SECONDS = 300.0
"""A step that failed (a reference market without its award, a gap in the readings) is tried again after
this many simulated seconds, or at once for the imbalance when new readings came in."""


def due(market: dict, now: int, steps: dict | None = None, meter_window_us: int = int(METER_WINDOW_SECONDS * 1e6)
        ) -> list[tuple[str, int | None]]:
    """The steps due for a market at time ``now`` (microseconds): ``(action, interval_idx or None)``.

    ``steps`` are the rolling steps taken so far (:func:`server.realtime_store.interval_steps` of the market).
    A real-time or hour-ahead market rolls: at each interval's gate that interval alone is closed, cleared and
    published (``("close", 0)`` at the first gate lets the scheduler decide, see :meth:`Scheduler.tick`);
    another market closes whole at its first gate. An AWARDED market settles, and a SETTLED one with meter
    readings settles its imbalance, once ``meter_window_us`` has passed after its last interval ends.
    """
    state, steps = market["state"], steps or {}
    count = int(market["interval_count"])
    # A market that rolled through its gates settles each awarded interval once its own meter window has passed.
    rolled = market["kind"] in timeline.ROLLING and any("publish" in taken for taken in steps.values())
    settle = [("settle", k) for k in range(count) if "award" in steps.get(k, {}) and "settle" not in steps[k]
              and now >= timeline.interval_start(market, k + 1) + meter_window_us] if rolled else []
    if state == "open":
        if market["kind"] in timeline.ROLLING:
            out = []
            for k in range(count):
                taken = steps.get(k, {})
                if "close" not in taken:
                    if now >= timeline.gate_closure(market, k):
                        out.append(("close", k))
                elif "clear" not in taken:
                    out.append(("clear", k))
                elif taken["clear"] == "optimal" and "publish" not in taken:
                    out.append(("publish", k))
            return out + settle
        return [("close", None)] if now >= timeline.gate_closure(market, 0) else []
    if rolled and state in ("published", "awarded"):
        return settle
    if state == "closed":
        return [("clear", None)] if market["clearing_status"] == "" else []
    if state == "cleared":
        return [("publish", None)]
    settled_by = timeline.interval_start(market, count) + meter_window_us
    if state == "awarded" and now >= settled_by:
        return [("settle", None)]
    if state == "settled" and now >= settled_by and market.get("readings") and not market.get("imbalance_settled"):
        return [("imbalance", None)]
    return []


def _active(conn) -> tuple[list[dict], dict]:
    """The markets with steps left, with their meter reading count and whether their imbalance is settled;
    the rolling steps of the open ones."""
    rows = conn.execute(
        "SELECT m.*, (SELECT COUNT(*) FROM meter_readings r WHERE r.market_id = m.market_id) AS readings, "
        "EXISTS (SELECT 1 FROM imbalance_settlements i WHERE i.market_id = m.market_id) AS imbalance_settled "
        "FROM markets m WHERE m.state IN ('open', 'closed', 'cleared', 'published', 'awarded') OR (m.state = "
        "'settled' AND NOT "
        "EXISTS (SELECT 1 FROM imbalance_settlements i WHERE i.market_id = m.market_id) AND EXISTS (SELECT 1 FROM "
        "meter_readings r WHERE r.market_id = m.market_id)) ORDER BY m.market_id")
    markets = [dict(r) for r in rows]
    return markets, realtime_store.interval_steps(conn, [m["market_id"] for m in markets if m["kind"] in
                                                         timeline.ROLLING and m["state"] != "settled"])


def _batched(todo: list[tuple[dict, str, int | None]]) -> list[tuple[dict, str, object]]:
    """The due steps with each market's interval clearings as one step (a tuple of intervals): intervals are
    independent, so those one tick found closed are cleared in one engine call (catching up after a restart,
    or ticks coarser than the intervals), and each is recorded as cleared."""
    out: list = []
    clearing: dict = {}
    for market, action, k in todo:
        if action == "clear" and k is not None:
            if market["market_id"] not in clearing:
                clearing[market["market_id"]] = []
                out.append((market, action, clearing[market["market_id"]]))
            clearing[market["market_id"]].append(k)
        else:
            out.append((market, action, k))
    return [(m, a, tuple(k) if isinstance(k, list) else k) for m, a, k in out]


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
    meter_window
        Simulated seconds after a market's last interval ends before it is settled (:func:`due`).
    """

    def __init__(self, app, clock=None, period: float = 1.0, meter_window: float = METER_WINDOW_SECONDS):
        self.app = app
        self.clock = clock or WallClock()
        self.period = period
        self.meter_window_us = int(meter_window * 1e6)
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()
        self._failed: dict = {}  # (market_id, action, interval) -> (simulated time, reading count) of a failure

    def _waiting(self, market: dict, action: str, k, now: int) -> bool:
        """True while a step that failed waits for its retry (see :data:`RETRY_SECONDS`)."""
        failed = self._failed.get((market["market_id"], action, k))
        if failed is None:
            return False
        at, readings = failed
        if action == "imbalance" and market["readings"] != readings:
            return False
        return now < at + int(RETRY_SECONDS * 1e6)

    async def tick(self) -> list[Step]:
        """Take every step due now, market by market, until none is due; returns what was done."""
        done: list[Step] = []
        while True:
            now = self.clock.now_us()
            markets, steps = await self.app.reader.call(_active)
            todo = [(m, action, k) for m in markets
                    for action, k in due(m, now, steps.get(m["market_id"]), self.meter_window_us)
                    if not self._waiting(m, action, k, now)]
            if not todo:
                return done
            rolling = set(steps)  # markets whose rolling gates have begun
            for market, action, k in _batched(todo):
                try:
                    taken = await self._take(market, action, k, market["market_id"] in rolling)
                    done += taken
                    if any(step.interval_idx is not None for step in taken):
                        rolling.add(market["market_id"])
                except FailedPrecondition as exc:
                    # The operator (or another tick) took the step first, or it cannot be taken yet: nothing is
                    # done twice, and a step that cannot be taken waits for its retry.
                    for j in k if isinstance(k, tuple) else (k,):
                        self._failed[(market["market_id"], action, j)] = (now, market["readings"])
                    log.info("scheduler: %s %s not taken: %s", action, market["market_id"], exc)

    async def _take(self, market: dict, action: str, k, rolling: bool) -> list[Step]:
        """Take one step (``k``: an interval, a tuple of intervals cleared together, or None: the market)."""
        app, market_id = self.app, market["market_id"]
        if action == "close" and k is not None and not rolling:
            # The first gate of a real-time or hour-ahead market: it rolls interval by interval unless its
            # resources link its intervals (storage, EV energy, ramps), which are cleared together.
            rows = await app.reader.call(store.market_rows, market_id)
            if await app.solve(lambda: markets_engine.couples(app.inputs(rows))):
                k = None
        if k is not None:
            if action == "settle":
                await realtime_service.settle_intervals(app, SCHEDULER, market_id, [k])
                return [Step(market_id, "settle", interval_idx=k)]
            if action == "close":
                await app.writer.call(realtime_store.close_interval, SCHEDULER, market_id, k)
                return [Step(market_id, "close", interval_idx=k)]
            if action == "clear":
                _, outcome = await app.clear_intervals(SCHEDULER, market_id, list(k))
                return [Step(market_id, "clear", outcome.status, j) for j in k]
            await app.writer.call(realtime_store.publish_interval, SCHEDULER, market_id, k)
            app.notifier.notify(CURVES)
            return [Step(market_id, "publish", interval_idx=k)]
        if action == "close":
            await app.writer.call(store.close_gate, SCHEDULER, market_id)
            return [Step(market_id, "close")]
        if action == "clear":
            _, _, outcome = await app.clear(SCHEDULER, market_id, first=True)
            return [Step(market_id, "clear", outcome.status)]
        if action == "publish":
            await app.writer.call(store.publish, SCHEDULER, market_id)
            app.notifier.notify(CURVES)
            return [Step(market_id, "publish")]
        if action == "settle" and await app.settles_by_interval(market_id):  # awarded by interval, cleared whole
            await realtime_service.settle_intervals(app, SCHEDULER, market_id)
            return [Step(market_id, "settle")]
        if action == "settle":
            async with app.lock(market_id):
                outcome = await app.settlement(market_id)
                await app.writer.call(store.record_settlement, SCHEDULER, market_id, outcome)
            return [Step(market_id, "settle")]
        await realtime_service.settle_imbalance(app, SCHEDULER, market_id)
        return [Step(market_id, "imbalance")]

    def start(self) -> None:
        """Run :meth:`tick` every ``period`` simulated seconds in a background task, until :meth:`stop`."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for step in await self.tick():
                    log.info("scheduler: %s %s%s %s", step.action, step.market_id,
                             "" if step.interval_idx is None else f"[{step.interval_idx}]", step.status)
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

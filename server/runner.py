"""Executors of a territory: interfaces fanned out to worker processes or to a Ray cluster.

Interfaces are independent problems, so a territory is split into shards and
each shard lives in one worker: a local process (:class:`LocalRunner`, the
embedded default, one per core) or a Ray actor (:class:`RayRunner`, on a
cluster). A shard loads its interfaces once and keeps each one's market built
(:class:`dsomarket.engine.territory.InterfaceSession`), so the day-ahead
clearing builds the models and a 5-minute real-time re-clear of the same
interfaces re-solves them warm in the worker that holds them.

Both runners run the same :class:`Shard` code on the same shards (assigned by
weight, deterministically), so their results are identical, and identical to
one worker's. Nothing here does maths: a shard calls the engine per interface
and turns any failure of one interface (bad input, infeasible market, an
unexpected exception) into that interface's status, so the others publish.

Workers start with ``forkserver`` (``spawn`` where there is none), never
``fork``: a forked child of a parent that has run polars or HiGHS threads can
hang (DESIGN.md section 9).

What a shard is given:

- :class:`Job`: an interface id, a picklable ``load(*args) -> Interface`` (run
  in the worker, so reading files happens in parallel; on a cluster the files
  must be where every node can read them) and a weight for balancing;
- :class:`Cycle`: the ISO price and whether to trace curves;
- optionally a ``sink(outcome) -> dict``, also run in the worker (the command
  line writes each interface's files there); without one, the outcomes
  themselves come back. A sink with a ``done()`` method has it called in the
  worker once the call's interfaces are all through it (the command line
  flushes its files there, once per worker and call).

Work whose inputs come with each call (the service's clearing of a territory
session, read from its store) goes through :meth:`LocalRunner.map` /
:meth:`RayRunner.map`: one :class:`Task` per interface, ``fn(*args)`` run in a
worker, a failure (or a lost worker) reported as that task's error. A task
with ``keep`` is handed what its interface's last task left in the worker
(the service keeps each interface's built market there, so that a real-time
session of the same feeders re-clears warm): such tasks go to the same shard
every time, and each worker keeps at most ``keep`` interfaces, dropping the
least recently used (an idle territory's) first. A restarted runner keeps
nothing: its next tasks start cold.

A large argument that many calls share (a real-time market's day-ahead reference, the same in every
session of the day) goes in a :class:`Shared`: the runner sends its value to a worker once, and later
tasks on that worker carry only its key (a worker that no longer holds it asks for it again).

A worker that dies (a local process killed, out of memory, a solver crash; a
Ray actor lost with its node) is replaced at once by a fresh one, and the
call that lost it is done again there: its kept markets are rebuilt cold
(the interfaces' results are the same, as a cold clearing's always are), the
interfaces of a :meth:`load` / :meth:`run` are loaded again, and each result
says so (``recovered``), as does the log. If the call loses the fresh worker
too, the shard's interfaces are taken one at a time, each on a live worker,
so that an interface that kills every worker it runs on fails alone
(``worker lost``) and the others of its shard still clear. The call never
waits for a worker that cannot be restarted: a Ray actor that is not placed
within :data:`REVIVE_SECONDS` fails its shard's interfaces in that call.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import resource
import threading
import time
import traceback
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping

import polars as pl

from dsomarket.engine.bids import MarketRules, couples_intervals
from dsomarket.engine.clearing import ClearingOptions, ClearingResult
from dsomarket.engine.errors import InputError
from dsomarket.engine.interface import InterfaceCurve, join_curves
from dsomarket.engine.runs import trace_runs
from dsomarket.engine.territory import Interface, InterfaceSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One interface to load in a worker: ``load(*args)`` returns its :class:`Interface`.

    ``weight`` estimates its work (buses plus bids, say) for balancing shards.
    """

    interface_id: str
    load: Callable[..., Interface]
    args: tuple = ()
    weight: float = 1.0


@dataclass(frozen=True)
class Task:
    """One interface's work in a worker: ``fn(*args)`` (both picklable).

    ``weight`` estimates its work for balancing shards, as for :class:`Job`. With ``keep``, the call is
    ``fn(kept, *args)`` and returns ``(value, kept)``: ``kept`` is what the interface's last such task left
    in the worker (None the first time, after a restart, or once evicted), and the returned one stays
    there for the next (None keeps nothing). It never leaves the worker, so it need not be picklable.
    """

    interface_id: str
    fn: Callable[..., Any]
    args: tuple = ()
    weight: float = 1.0
    keep: bool = False


@dataclass(frozen=True, eq=False)
class Shared:
    """An argument of a :class:`Task` that calls of many sessions share: ``value`` crosses to a worker once.

    Equal ``key`` must mean an equal value (a digest of what the task reads of it, say). The runner sends
    the value to a shard's worker the first time, and from then on only the key, which the worker
    resolves from the values it holds (the last :data:`KEEP` it was sent, least recently used dropped
    first); the task's function receives ``value``. A worker that lost it (evicted, or a fresh worker
    after a loss) is sent it again. Runners that keep nothing (``keep=0``) send it every time.
    """

    key: str
    value: Any
    by_key: bool = False   # set by the runner: the worker holds the value, only the key crosses


@dataclass(frozen=True)
class _Missing:
    """A worker's answer to a task naming :class:`Shared` keys it does not hold: send their values."""

    keys: tuple[str, ...]


@dataclass(frozen=True)
class TaskResult:
    """What a :class:`Task` returned, or why it failed (``error`` non-empty, ``value`` None).

    ``recovered`` is non-empty when the task's worker was lost during the call and the task ran again,
    without what its interface had kept, on a fresh worker; it says what happened.
    """

    interface_id: str
    value: Any = None
    error: str = ""
    recovered: str = ""


@dataclass(frozen=True)
class Cycle:
    """One clearing cycle of every interface.

    Attributes
    ----------
    iso_price
        Per MWh: one price, or a mapping from interval start (UTC) to price.
    curves
        Also trace each interface's exact curve and its ISO offer.
    max_segments
        Segments per side of the ISO offer.
    forecast
        ISO price assumed in other intervals when storage couples them (per MWh).
    """

    iso_price: float | Mapping[datetime, float]
    curves: bool = False
    max_segments: int = 10
    forecast: float | None = None


@dataclass(frozen=True, eq=False)
class InterfaceOutcome:
    """What one cycle produced for one interface.

    ``status`` is the clearing's status (``optimal``, ``infeasible``, ...), or
    ``input_error`` / ``error`` when the interface could not be loaded or
    cleared; ``error`` then says why. ``seconds`` is the wall time in the worker. ``recovered`` is
    non-empty when the interface's worker was lost during the cycle and the interface was loaded and
    cleared again on a fresh one (see the module notes).
    """

    interface_id: str
    members: tuple[str, ...]
    status: str
    error: str = ""
    clearing: ClearingResult | None = None
    curve: InterfaceCurve | None = None
    offer: pl.DataFrame | None = None
    offer_area: float | None = None
    buses: int = 0
    bids: int = 0
    warm: bool = False
    seconds: float = 0.0
    recovered: str = ""

    def report(self) -> dict:
        """Facts for the territory summary; nothing that varies between identical runs (no timings), but
        ``recovered`` when a lost worker was replaced under the interface."""
        out: dict[str, Any] = {"interface_id": self.interface_id, "feeders": list(self.members),
                               "status": self.status, "buses": self.buses, "bids": self.bids}
        if self.error:
            out["error"] = self.error
        if self.recovered:
            out["recovered"] = self.recovered
        c = self.clearing
        if c is not None:
            out["clearing_status"] = c.status
            if c.ok:
                imports = c.interface_import_kw.tolist()
                out["import_kw"] = imports[0] if len(imports) == 1 else imports
                out["welfare"] = c.welfare
            if c.diagnosis:
                out["diagnosis"] = list(c.diagnosis)
        if self.curve is not None:
            out["curve_bands"] = self.curve.bands.height
            out["iso_offer_area_per_hour"] = self.offer_area
        return out


KEEP = 64
"""Interfaces whose kept state (:class:`Task` ``keep``) one worker holds at most, by default: at the ~15-18 MiB
of a 1,000-bus, 1,000-bid interface (docs/territory.md) about 1 GiB per worker."""


class Shard:
    """The interfaces one worker holds, each with its market kept built between cycles, and the state
    kept tasks left (at most ``keep`` interfaces', least recently used dropped first)."""

    def __init__(self, rules: MarketRules, options: ClearingOptions, keep: int = KEEP):
        self.rules, self.options, self.keep = rules, options, keep
        self.sessions: dict[str, InterfaceSession] = {}
        self.members: dict[str, tuple[str, ...]] = {}
        self.failed: dict[str, tuple[str, str]] = {}
        self.kept: OrderedDict[str, Any] = OrderedDict()
        self.shared: OrderedDict[str, Any] = OrderedDict()   # Shared values by key, least recently used first

    def load(self, jobs: list[Job]) -> int:
        """Load (or reload) interfaces; a failing one is remembered with its error. Returns how many loaded."""
        for job in jobs:
            self.sessions.pop(job.interface_id, None)
            self.failed.pop(job.interface_id, None)
            try:
                interface = job.load(*job.args)
                self.members[job.interface_id] = interface.members
                self.sessions[job.interface_id] = InterfaceSession(interface, self.rules, self.options)
            except InputError as exc:
                self.failed[job.interface_id] = ("input_error", str(exc))
            except Exception as exc:  # one bad interface must not stop the shard
                self.failed[job.interface_id] = ("error", _describe(exc))
        return len(self.sessions)

    def run(self, cycle: Cycle, sink: Callable[[InterfaceOutcome], Any] | None = None,
            only: list[str] | None = None) -> list:
        """Clear every interface of the shard (or those in ``only``); the sink's value per interface, or the
        outcomes."""
        ids = self.sessions.keys() | self.failed.keys()
        if only is not None:
            ids &= set(only)
        out = []
        for iid in sorted(ids):
            outcome = self._one(iid, cycle)
            out.append(outcome if sink is None else _sink(sink, outcome))
        done = getattr(sink, "done", None)
        if done is not None:
            done()   # raises: the call is lost, and done again on a fresh worker (module notes)
        return out

    def peak_rss_kb(self) -> int:
        """Peak resident memory of this worker process, KiB (Linux ``ru_maxrss``)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def cpu_seconds(self) -> float:
        """CPU time this worker process has used so far, s (what a benchmark on a busy machine compares)."""
        return time.process_time()

    def pid(self) -> int:
        """This worker's process id."""
        return os.getpid()

    def call(self, tasks: list[Task]) -> list[TaskResult]:
        """Run each task; an exception is that task's error (and drops what it kept), the others still run."""
        out = []
        for task in tasks:
            iid = task.interface_id
            args = self._resolve(task.args)
            if isinstance(args, _Missing):
                out.append(TaskResult(iid, args))
                continue
            try:
                if not task.keep:
                    out.append(TaskResult(iid, task.fn(*args)))
                    continue
                value, kept = task.fn(self.kept.pop(iid, None), *args)
                if kept is not None and self.keep > 0:
                    self.kept[iid] = kept
                    while len(self.kept) > self.keep:
                        self.kept.popitem(last=False)
                out.append(TaskResult(iid, value))
            except Exception as exc:  # isolate the failure to this interface
                out.append(TaskResult(iid, error=_describe(exc)))
        return out

    def kept_ids(self) -> list[str]:
        """Interfaces whose kept state this worker holds, least recently used first."""
        return list(self.kept)

    def shared_keys(self) -> list[str]:
        """Keys of the :class:`Shared` values this worker holds, least recently used first."""
        return list(self.shared)

    def _resolve(self, args: tuple) -> tuple | _Missing:
        """A task's arguments with each :class:`Shared` replaced by its value (held from now on when it came
        with it); :class:`_Missing` names the keys this worker does not hold."""
        missing = tuple(a.key for a in args if isinstance(a, Shared) and a.by_key and a.key not in self.shared)
        if missing:
            return _Missing(missing)
        out = []
        for a in args:
            if isinstance(a, Shared):
                if not a.by_key and self.keep > 0:
                    self.shared[a.key] = a.value
                value = a.value if not a.by_key else self.shared[a.key]
                if a.key in self.shared:
                    self.shared.move_to_end(a.key)
                while len(self.shared) > self.keep:
                    self.shared.popitem(last=False)
                a = value
            out.append(a)
        return tuple(out)

    def _one(self, iid: str, cycle: Cycle) -> InterfaceOutcome:
        if iid in self.failed:
            status, error = self.failed[iid]
            return InterfaceOutcome(iid, self.members.get(iid, ()), status, error)
        session = self.sessions[iid]
        sizes = {"members": session.interface.members, "buses": session.interface.feeder.topology.n_bus,
                 "bids": session.book.n}
        t0 = time.perf_counter()
        warm = session.warm
        try:
            res = session.clear(cycle.iso_price)
            curve = offer = area = None
            if cycle.curves and res.status == "optimal":
                curve = session.curve(cycle.forecast)
                offer, area = curve.iso_offer(cycle.max_segments)
        except InputError as exc:
            return InterfaceOutcome(iid, status="input_error", error=str(exc), **sizes)
        except Exception as exc:  # isolate the failure to this interface
            return InterfaceOutcome(iid, status="error", error=_describe(exc), **sizes)
        return InterfaceOutcome(iid, status=res.status, clearing=res, curve=curve, offer=offer, offer_area=area,
                                warm=warm, seconds=time.perf_counter() - t0, **sizes)


def _sink(sink: Callable, outcome: InterfaceOutcome) -> Any:
    try:
        return sink(outcome)
    except Exception as exc:  # a failed write is that interface's failure
        return InterfaceOutcome(outcome.interface_id, outcome.members, "error",
                                f"writing results: {_describe(exc)}").report()


def _describe(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {os.path.basename(where[0].filename)}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


def assign(jobs: list[Job], shards: int) -> list[list[Job]]:
    """Jobs split over shards, heaviest first to the lightest shard (ties by id): deterministic."""
    parts: list[list[Job]] = [[] for _ in range(shards)]
    load = [0.0] * shards
    for job in sorted(jobs, key=lambda j: (-j.weight, j.interface_id)):
        k = min(range(shards), key=lambda s: (load[s], s))
        parts[k].append(job)
        load[k] += job.weight
    return parts


def _merge(per_shard: list[list], key: Callable) -> list:
    return sorted((item for part in per_shard for item in part), key=key)


def _order(item) -> str:
    return item.interface_id if isinstance(item, InterfaceOutcome) else item["interface_id"]


REVIVE_SECONDS = 120.0
"""How long a call waits for a replacement Ray actor to be placed (a cluster that lost the CPUs it needs
would otherwise keep the call waiting for ever)."""


class _Lost(Exception):
    """A shard's worker was lost and could not be replaced (no Ray node took the new actor in time)."""


class _Base:
    """What both runners do on top of their way of reaching the shards: placing work, and recovering a lost
    worker (module notes). A runner gives :meth:`_submit` / :meth:`_result` (a call on shard ``k`` and its
    value, or the exception that lost the worker) and :meth:`_revive` (a fresh worker for shard ``k``)."""

    shards: int

    def __init__(self, rules: MarketRules, options: ClearingOptions, keep: int):
        if keep < 0:
            raise InputError("territory", "keep", f"must be at least 0 (got {keep})")
        self.rules, self.options, self.keep = rules, options, keep
        self._home: dict[str, int] = {}     # shard of each interface whose tasks keep state
        self._home_weight: list[float] = []
        self._parts: list[list[Job]] = []
        self._bad: dict[str, str] = {}      # loaded interfaces that kill every worker they run on, and why
        self._down: dict[int, str] = {}     # shards whose worker could not be replaced, and why
        self._sent: dict[int, set[str]] = {}   # Shared keys sent to each shard's current worker
        # map() is called from more than one thread (a server's territory sessions and its markets' curves):
        # one call at a time owns the workers and the bookkeeping above.
        self._lock = threading.Lock()

    def _submit(self, k: int, method: str, args: tuple) -> Any:
        raise NotImplementedError

    def _result(self, k: int, handle: Any) -> Any:
        """The value of a submitted call, or the exception that lost the worker (never raised)."""
        raise NotImplementedError

    def _revive(self, k: int) -> None:
        """Replace shard ``k``'s worker by a fresh one (nothing loaded, nothing kept); :class:`_Lost` if it
        cannot be."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _send(self, k: int, method: str, args: tuple) -> Any:
        if k in self._down:   # its replacement was not placed last time: try once more
            self._fresh(k)
            del self._down[k]
        return self._submit(k, method, args)

    def _gather(self, method: str, args: list[tuple]) -> list:
        """``method(*args[k])`` on every shard k at once: its value, or the exception that lost its worker
        (which is then replaced, so the next call finds a live one)."""
        handles = []
        for k, a in enumerate(args):
            try:
                handles.append(self._send(k, method, a))
            except Exception as exc:  # the worker was already gone
                handles.append(_Failed(exc))
        out = [h.exc if isinstance(h, _Failed) else self._result(k, h) for k, h in enumerate(handles)]
        return [self._replace(k, method, v) if isinstance(v, BaseException) else v for k, v in enumerate(out)]

    def _call(self, k: int, method: str, *args) -> Any:
        """``method(*args)`` on shard k alone: its value, or the exception that lost the worker (replaced)."""
        try:
            value = self._result(k, self._send(k, method, args))
        except Exception as exc:  # the worker was already gone
            value = exc
        return self._replace(k, method, value) if isinstance(value, BaseException) else value

    def _fresh(self, k: int) -> None:
        """:meth:`_revive` shard k: its new worker holds no :class:`Shared` value."""
        self._sent.pop(k, None)
        self._revive(k)

    def _replace(self, k: int, method: str, exc: BaseException) -> BaseException:
        """After ``exc`` lost shard k's worker: a fresh one in its place. Returns ``exc``, or :class:`_Lost`
        when no fresh worker could be had (the shard is then down until a later call revives it)."""
        if isinstance(exc, _Lost):
            self._down[k] = str(exc)
            return exc
        log.warning("territory worker %d lost during %s (%s): starting a fresh one", k, method, _describe(exc))
        try:
            self._fresh(k)
        except _Lost as lost:
            log.error("territory worker %d could not be replaced: %s", k, lost)
            self._down[k] = str(lost)
            return lost
        return exc

    def load(self, jobs: list[Job]) -> None:
        """Place the interfaces on the shards and load them there (replaces what was loaded)."""
        ids = [j.interface_id for j in jobs]
        if len(set(ids)) != len(ids):
            raise InputError("territory", "interface_id", "an interface id appears twice")
        self._parts = assign(jobs, self.shards)
        self._bad = {}
        for k, value in enumerate(self._gather("load", [(part,) for part in self._parts])):
            if isinstance(value, BaseException):
                self._reload(k, value)

    def _reload(self, k: int, exc: BaseException) -> bool:
        """Load shard k's interfaces (but the bad ones) on the fresh worker that replaced the one ``exc`` lost:
        all at once, else one at a time, marking those whose loading loses the worker. False if no worker
        could be had."""
        if isinstance(exc, _Lost):
            value: Any = exc
        else:
            jobs = [j for j in self._parts[k] if j.interface_id not in self._bad]
            value = self._call(k, "load", jobs)
            if not isinstance(value, BaseException):
                return True
            good: list[Job] = []
            for job in jobs:
                if isinstance(value, _Lost):
                    break
                value = self._call(k, "load", [job])
                if not isinstance(value, BaseException):
                    good.append(job)
                    continue
                self._bad[job.interface_id] = f"worker lost: {_describe(value)}"
                if good and not isinstance(value, _Lost):
                    value = self._call(k, "load", good)   # the lost worker took them along
        if isinstance(value, _Lost):
            for job in self._parts[k]:
                self._bad.setdefault(job.interface_id, f"worker lost: {_describe(value)}")
            return False
        return True

    def run(self, cycle: Cycle, sink: Callable[[InterfaceOutcome], Any] | None = None) -> list:
        """One cycle of every loaded interface, in interface id order (warm after the first).

        A shard whose worker dies is given a fresh worker, loads its interfaces again and clears them
        again there, cold (each result says ``recovered``); an interface that loses every worker it
        runs on is reported with status ``error`` (as a report when a sink is given), and the other
        interfaces are unaffected.
        """
        results = self._gather("run", [(cycle, sink)] * self.shards)
        for k, value in enumerate(results):
            if isinstance(value, BaseException):
                value = self._rerun(k, cycle, sink, value)
            done = {_order(item) for item in value}
            results[k] = value + [self._failed_outcome(k, j.interface_id, sink) for j in self._parts[k]
                                  if j.interface_id not in done]
        return _merge(results, _order)

    def _rerun(self, k: int, cycle: Cycle, sink, exc: BaseException) -> list:
        """Shard k's cycle again on the fresh worker that replaced the one ``exc`` lost (module notes)."""
        note = f"worker lost ({_describe(exc)}); a fresh worker loaded and cleared it again, cold"
        log.warning("territory worker %d: %s", k, note)
        value = self._call(k, "run", cycle, sink) if self._reload(k, exc) else exc
        if not isinstance(value, BaseException):
            return [_recovered(item, note) for item in value]
        out: list = []
        if isinstance(value, _Lost) or not self._reload(k, value):
            return out
        for job in self._parts[k]:   # one interface at a time, so that one that kills its worker fails alone
            if job.interface_id in self._bad:
                continue
            value = self._call(k, "run", cycle, sink, [job.interface_id])
            if not isinstance(value, BaseException):
                out += [_recovered(item, note) for item in value]
                continue
            self._bad[job.interface_id] = f"worker lost: {_describe(value)}"
            if isinstance(value, _Lost) or not self._reload(k, value):
                break
        return out

    def _failed_outcome(self, k: int, iid: str, sink) -> Any:
        reason = self._bad.get(iid) or f"worker lost: {self._down.get(k, 'it could not be replaced')}"
        outcome = InterfaceOutcome(iid, (), "error", reason)
        return outcome.report() if sink is not None else outcome

    def map(self, tasks: list[Task]) -> list[TaskResult]:
        """Run independent tasks on the shards (placed by weight); results in the tasks' order.

        Nothing is kept between calls, so this works beside :meth:`load` and :meth:`run`. The tasks of a
        shard whose worker died run again on a fresh worker (``recovered``; kept state is gone, so kept
        tasks start cold); a task that loses every worker it runs on gets the error ``worker lost: ...``;
        the other results stand.
        """
        ids = [t.interface_id for t in tasks]
        if len(set(ids)) != len(ids):
            raise InputError("territory", "interface_id", "an interface id appears twice")
        asked = time.perf_counter()
        with self._lock:
            waited = time.perf_counter() - asked
            if waited > 1.0:   # another caller's tasks (a territory session, a market's curves) held the workers
                log.info("runner: %d tasks waited %.1f s for another caller's", len(tasks), waited)
            return self._map(tasks, ids)

    def _map(self, tasks: list[Task], ids: list[str]) -> list[TaskResult]:
        parts = self._place(tasks)
        results = self._gather("call", [(self._by_key(k, part),) for k, part in enumerate(parts)])
        by_id = {}
        for k, (part, value) in enumerate(zip(parts, results, strict=True)):
            if not isinstance(value, BaseException):
                value = self._resend(k, part, value)
            if isinstance(value, BaseException):
                value = self._recall(k, part, value)
            by_id.update((r.interface_id, r) for r in value)
        return [by_id[i] for i in ids]

    def _by_key(self, k: int, part: list[Task]) -> list[Task]:
        """Shard k's tasks as sent: a :class:`Shared` value its worker was sent before goes by its key."""
        if self.keep == 0:
            return part
        sent = self._sent.setdefault(k, set())
        out = []
        for task in part:
            args = []
            for a in task.args:
                if isinstance(a, Shared):
                    if a.key in sent:
                        a = Shared(a.key, None, by_key=True)
                    sent.add(a.key)
                args.append(a)
            out.append(dataclasses.replace(task, args=tuple(args)))
        return out

    def _resend(self, k: int, part: list[Task], value: list[TaskResult]) -> list[TaskResult] | BaseException:
        """Shard k's results, with the tasks whose worker no longer held a :class:`Shared` value run again with
        the values; the exception that lost the worker meanwhile, if it was lost."""
        again = [i for i, r in enumerate(value) if isinstance(r.value, _Missing)]
        if not again:
            return value
        log.info("territory worker %d: %d tasks sent their shared values again", k, len(again))
        redone = self._call(k, "call", [part[i] for i in again])
        if isinstance(redone, BaseException):
            return redone
        value = list(value)
        for i, r in zip(again, redone, strict=True):
            value[i] = r
        return value

    def _recall(self, k: int, part: list[Task], exc: BaseException) -> list[TaskResult]:
        """Shard k's tasks again on the fresh worker that replaced the one ``exc`` lost (module notes)."""
        note = f"worker lost ({_describe(exc)}); ran again on a fresh worker, cold"
        log.warning("territory worker %d: %d tasks: %s", k, len(part), note)
        value = exc if isinstance(exc, _Lost) else self._call(k, "call", part)
        if not isinstance(value, BaseException):
            return [dataclasses.replace(r, recovered=note) for r in value]
        out = []
        for task in part:   # one at a time, so that a task that kills its worker fails alone
            one = value if isinstance(value, _Lost) else self._call(k, "call", [task])
            if isinstance(one, BaseException):
                out.append(TaskResult(task.interface_id, error=f"worker lost: {_describe(one)}"))
                value = one
            else:
                out.append(dataclasses.replace(one[0], recovered=note))
        return out

    def _place(self, tasks: list[Task]) -> list[list[Task]]:
        """Tasks on the shards: those without ``keep`` by weight (:func:`assign`); those with ``keep`` on their
        interface's shard, a new interface (heaviest first) on the shard with the least such weight."""
        parts = assign([t for t in tasks if not t.keep], self.shards)
        if len(self._home_weight) != self.shards:
            self._home_weight = [0.0] * self.shards
        for task in sorted((t for t in tasks if t.keep), key=lambda t: (-t.weight, t.interface_id)):
            if task.interface_id not in self._home:
                k = min(range(self.shards), key=lambda s: (self._home_weight[s], s))
                self._home[task.interface_id] = k
                self._home_weight[k] += task.weight
            parts[self._home[task.interface_id]].append(task)
        return parts

    def kept_ids(self) -> list[list[str]]:
        """Per shard, the interfaces whose kept state its worker holds ([] for a lost worker)."""
        return [[] if isinstance(v, BaseException) else v for v in self._gather("kept_ids", [()] * self.shards)]

    def peak_rss_kb(self) -> list[int]:
        """Peak resident memory of each shard's worker, KiB (0 for a lost worker)."""
        return [0 if isinstance(v, BaseException) else v for v in self._gather("peak_rss_kb", [()] * self.shards)]

    def cpu_seconds(self) -> list[float]:
        """CPU time each shard's worker has used so far, s (0 for a lost worker)."""
        return [0.0 if isinstance(v, BaseException) else v for v in self._gather("cpu_seconds", [()] * self.shards)]

    def pids(self) -> list[int]:
        """Process id of each shard's worker (0 for a lost one): the handle an operator (or a test) kills."""
        return [0 if isinstance(v, BaseException) else v for v in self._gather("pid", [()] * self.shards)]

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class _Failed:
    exc: BaseException


def _recovered(item: Any, note: str) -> Any:
    """A run's result (an outcome, or a sink's report) marked as cleared again on a fresh worker."""
    if isinstance(item, InterfaceOutcome):
        return dataclasses.replace(item, recovered=note)
    return item | {"recovered": note} if isinstance(item, dict) else item


def start_method() -> str:
    """``forkserver`` where the platform has it, else ``spawn``; never ``fork`` (see the module notes)."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


_WORKER_SHARD: Shard | None = None


def _worker_init(rules: MarketRules, options: ClearingOptions, keep: int) -> None:
    global _WORKER_SHARD
    # A worker answers through its pipe: its inherited stdout would only mix the HiGHS banner into the
    # parent's output (the command line's summary, a script's CSV).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    _WORKER_SHARD = Shard(rules, options, keep)


def _worker_call(method: str, *args):
    return getattr(_WORKER_SHARD, method)(*args)


class LocalRunner(_Base):
    """Shards in local worker processes, one process per shard (default: one per core).

    Each shard is a single-process pool, so its interfaces and their built
    models stay in the same process from one cycle to the next.
    """

    def __init__(self, workers: int | None = None, rules: MarketRules = MarketRules(),
                 options: ClearingOptions = ClearingOptions(), keep: int = KEEP):
        super().__init__(rules, options, keep)
        n = workers if workers is not None else (os.cpu_count() or 1)
        if n < 1:
            raise InputError("territory", "workers", f"must be at least 1 (got {n})")
        self.shards = n
        self._ctx = multiprocessing.get_context(start_method())
        if self._ctx.get_start_method() == "forkserver":
            # Imported once in the fork server, so each worker starts without re-importing the engine.
            self._ctx.set_forkserver_preload(["dsomarket.server.runner"])
        self._pools = [self._pool() for _ in range(n)]

    def _pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(1, mp_context=self._ctx, initializer=_worker_init,
                                   initargs=(self.rules, self.options, self.keep))

    def _submit(self, k: int, method: str, args: tuple):
        return self._pools[k].submit(_worker_call, method, *args)   # BrokenProcessPool: the worker is gone

    def _result(self, k: int, handle) -> Any:
        try:
            return handle.result()
        except Exception as exc:   # BrokenProcessPool: the worker process died under the call
            return exc

    def _revive(self, k: int) -> None:
        self._pools[k].shutdown(wait=False, cancel_futures=True)
        self._pools[k] = self._pool()

    def close(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)


class RayRunner(_Base):
    """Shards as Ray actors, one CPU each (default: one per CPU of the cluster).

    Parameters
    ----------
    address
        ``auto`` (the cluster this machine belongs to), ``ray://host:10001`` or
        ``host:6379``; None uses the Ray instance this process already started
        (``ray.init``) or starts a local one. Only a Ray instance this runner
        started is shut down by :meth:`close`.
    shards
        Actors to create; default the cluster's CPU count.
    keep
        Interfaces whose kept state (:class:`Task` ``keep``) one actor holds at most.

    Ray is an optional dependency (``pip install dsomarket[ray]``); every node
    needs dsomarket installed (same version), as its actors run this module.
    """

    def __init__(self, address: str | None = None, shards: int | None = None,
                 rules: MarketRules = MarketRules(), options: ClearingOptions = ClearingOptions(), keep: int = KEEP):
        super().__init__(rules, options, keep)
        try:
            import ray
        except ImportError:
            raise InputError("territory", "ray", "Ray is not installed: pip install 'dsomarket[ray]'") from None
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        n = shards if shards is not None else max(1, int(ray.cluster_resources().get("CPU", 1)))
        if n < 1:
            raise InputError("territory", "workers", f"must be at least 1 (got {n})")
        self.shards = n
        # No max_restarts: a lost actor is replaced by the runner itself (module notes), which retries each
        # lost call once and then task by task, where Ray's own restart and task retries would re-run an
        # interface that kills its actor as often as they are allowed, and fail its whole shard after.
        self._actor = ray.remote(num_cpus=1, max_concurrency=1)(Shard)
        self._actors = [self._new() for _ in range(n)]

    def _new(self):
        return self._actor.remote(self.rules, self.options, self.keep)

    def _submit(self, k: int, method: str, args: tuple):
        return getattr(self._actors[k], method).remote(*args)

    def _result(self, k: int, handle) -> Any:
        try:
            return self._ray.get(handle)
        except self._ray.exceptions.RayError as exc:  # the actor or its node is gone (RayActorError)
            return exc

    def _revive(self, k: int) -> None:
        ray = self._ray
        try:
            ray.kill(self._actors[k], no_restart=True)
        except ValueError:   # not an actor handle any more
            pass
        self._actors[k] = self._new()
        try:
            ray.get(self._actors[k].pid.remote(), timeout=REVIVE_SECONDS)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayError) as exc:
            raise _Lost(f"no Ray node took its replacement within {REVIVE_SECONDS:g} s "
                        f"({type(exc).__name__})") from None

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
        if self._started:
            self._ray.shutdown()


FAN_OUT_SEGMENTS = 200
"""Bid segments from which :class:`CurveFanOut` sends a loss-aware or coupled market's curves to the runner's
processes: below it, a market's curves take well under a second where a fan-out costs the pickling of its
model's inputs and, for the first one, the start of the processes."""


@dataclass(frozen=True)
class _Refusal:
    """The :class:`~engine.errors.InputError` a part's tracing raised, as fields (it does not pickle as itself)."""

    table: str
    field: str
    reason: str
    row: int | None


def _trace_part(runs, book, rules: MarketRules, resources, options: ClearingOptions, forecast,
                intervals: list[int]) -> InterfaceCurve | _Refusal:
    """:func:`engine.runs.trace_runs` of some intervals (a :class:`CurveFanOut` task, run in a worker)."""
    try:
        return trace_runs(runs, book, rules, resources, options, forecast=forecast, intervals=intervals)
    except InputError as exc:   # the market refused: the clearing's outcome says why, as if traced in one process
        return _Refusal(exc.table, exc.field, exc.reason, exc.row)


class CurveFanOut:
    """Traces the curves of a market of several intervals on a runner's processes, as
    :func:`engine.runs.trace_runs` would in one (:meth:`engine.runs.KeptMarket.curve`'s ``trace``).

    Each interval's curve is the same whichever others are traced with it, in whichever process
    (:func:`engine.interface.trace_intervals`), so the intervals are dealt out in turn, one :class:`Task` of
    ``trace_runs(intervals=...)`` per process, and the parts joined (:func:`engine.interface.join_curves`): the
    same bands, so the same clearing digest, as one process traces; each part builds its market (and, coupled
    and loss-aware, clears the horizon at the forecast) again, which is what the fan-out costs. Only curves that
    are costly for their size go out: those of a loss-aware market (each made of converged clearings) or of a
    horizon whose storage, EVs or ramps couple its intervals. A lossless market of independent intervals (cheap
    curves, where pickling 100,000 segments to the processes cost more than it saved:
    ``python benchmarks/bench_service.py --workers 1`` against ``--workers 2``), a market of fewer than
    ``min_segments`` bid segments, an SOCP market (sampled, all intervals at once) and a runner of one process
    trace here.

    A part whose market refuses (an :class:`~engine.errors.InputError`: no curve at the forecast, say) refuses
    the whole as one process would. A part whose worker is lost twice fails the call with
    :class:`server.errors.Unavailable` naming the intervals (the loss is logged): nothing is recorded and the
    market stays closed, to be cleared again. A part that raises anything else raises :class:`RuntimeError`
    with the part's error, which the clearing logs and records as a defect, as it would a defect in one
    process: the details stay in the server log, not in the caller's status.

    The runner's workers are shared with the server's territory sessions and :meth:`_Base.map` serves one
    caller at a time: a market's curves wait for a territory session's tasks and the other way round (a wait
    over a second is logged). Give ``serve --workers`` the cores both need.

    Parameters
    ----------
    runner
        Returns the runner to use (a server starts its runner at the first call that needs it).
    min_segments
        Bid segments from which a market's curves are fanned out (default :data:`FAN_OUT_SEGMENTS`).
    """

    def __init__(self, runner: Callable[[], "_Base"], min_segments: int | None = None):
        self.runner, self.min_segments = runner, min_segments

    def __call__(self, runs, book, rules: MarketRules, resources, options: ClearingOptions,
                 forecast) -> InterfaceCurve:
        todo = list(range(book.n_interval))
        least = FAN_OUT_SEGMENTS if self.min_segments is None else self.min_segments
        costly = options.formulation == "lossaware" or couples_intervals(book, resources)
        if not costly or options.formulation == "socp" or len(todo) < 2 or book.n < least:
            return trace_runs(runs, book, rules, resources, options, forecast=forecast)
        pool = self.runner()
        n = min(pool.shards, len(todo))
        if n < 2:
            return trace_runs(runs, book, rules, resources, options, forecast=forecast)
        from dsomarket.server.errors import Unavailable   # grpc: only where a server runs this

        t0 = time.perf_counter()
        parts = [todo[k::n] for k in range(n)]
        tasks = [Task(f"curves {k}", _trace_part, (runs, book, rules, resources, options, forecast, part),
                      float(len(part))) for k, part in enumerate(parts)]
        curves = []
        for part, result in zip(parts, pool.map(tasks), strict=True):
            if result.error.startswith("worker lost"):
                log.error("curves of intervals %s: %s", part, result.error)
                raise Unavailable(f"the interface curves of intervals {part} could not be traced in a runner "
                                  "process (it was lost; the server log has the details); the market stays "
                                  "closed: clear it again")
            if result.error:   # a defect: the caller records it as one in the calling process would be
                raise RuntimeError(f"the curves of intervals {part} failed in a runner process: {result.error}")
            if isinstance(result.value, _Refusal):
                v = result.value
                raise InputError(v.table, v.field, v.reason, v.row)
            if result.recovered:
                log.warning("curves of intervals %s: %s", part, result.recovered)
            curves.append(result.value)
        log.info("curves: %d intervals traced on %d runner processes in %.3f s (parts %s s)", len(todo), n,
                 time.perf_counter() - t0, ", ".join(f"{c.seconds:.3f}" for c in curves))
        return join_curves(curves, forecast)


def runner(workers: int | None = None, ray_address: str | None = None, rules: MarketRules = MarketRules(),
           options: ClearingOptions = ClearingOptions(), keep: int = KEEP) -> LocalRunner | RayRunner:
    """The runner a caller asked for: Ray when ``ray_address`` is given, else local processes; ``keep`` is
    :class:`Shard`'s bound on the interfaces whose kept state one worker holds."""
    if ray_address:
        return RayRunner(ray_address, workers, rules, options, keep)
    return LocalRunner(workers, rules, options, keep)

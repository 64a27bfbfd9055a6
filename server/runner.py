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
  themselves come back.

Work whose inputs come with each call (the service's clearing of a territory
session, read from its store) goes through :meth:`LocalRunner.map` /
:meth:`RayRunner.map`: one :class:`Task` per interface, ``fn(*args)`` run in a
worker, a failure (or a lost worker) reported as that task's error. A task
with ``keep`` is handed what its interface's last task left in the worker
(the service keeps each interface's built market there, so that a real-time
session of the same feeders re-clears warm): such tasks go to the same shard
every time, and each worker keeps at most ``keep`` interfaces, dropping the
least recently used (an idle territory's) first. A restarted runner, or a
worker that died, keeps nothing: its next tasks start cold.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
import traceback
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping

import polars as pl

from dsomarket.engine.bids import MarketRules
from dsomarket.engine.clearing import ClearingOptions, ClearingResult
from dsomarket.engine.errors import InputError
from dsomarket.engine.interface import InterfaceCurve
from dsomarket.engine.territory import Interface, InterfaceSession


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


@dataclass(frozen=True)
class TaskResult:
    """What a :class:`Task` returned, or why it failed (``error`` non-empty, ``value`` None)."""

    interface_id: str
    value: Any = None
    error: str = ""


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
    cleared; ``error`` then says why. ``seconds`` is the wall time in the worker.
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

    def report(self) -> dict:
        """Facts for the territory summary; nothing that varies between identical runs (no timings)."""
        out: dict[str, Any] = {"interface_id": self.interface_id, "feeders": list(self.members),
                               "status": self.status, "buses": self.buses, "bids": self.bids}
        if self.error:
            out["error"] = self.error
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

    def run(self, cycle: Cycle, sink: Callable[[InterfaceOutcome], Any] | None = None) -> list:
        """Clear every interface of the shard; the sink's value per interface, or the outcomes."""
        out = []
        for iid in sorted(self.sessions.keys() | self.failed.keys()):
            outcome = self._one(iid, cycle)
            out.append(outcome if sink is None else _sink(sink, outcome))
        return out

    def peak_rss_kb(self) -> int:
        """Peak resident memory of this worker process, KiB (Linux ``ru_maxrss``)."""
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def call(self, tasks: list[Task]) -> list[TaskResult]:
        """Run each task; an exception is that task's error (and drops what it kept), the others still run."""
        out = []
        for task in tasks:
            iid = task.interface_id
            try:
                if not task.keep:
                    out.append(TaskResult(iid, task.fn(*task.args)))
                    continue
                value, kept = task.fn(self.kept.pop(iid, None), *task.args)
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


class _Base:
    """What both runners do on top of their way of reaching the shards (``_gather``)."""

    shards: int

    def __init__(self, rules: MarketRules, options: ClearingOptions, keep: int):
        if keep < 0:
            raise InputError("territory", "keep", f"must be at least 0 (got {keep})")
        self.rules, self.options, self.keep = rules, options, keep
        self._home: dict[str, int] = {}     # shard of each interface whose tasks keep state
        self._home_weight: list[float] = []

    def _gather(self, method: str, args: list[tuple]) -> list:
        """``method(*args[k])`` on every shard k: its value, or the exception that lost the shard."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def load(self, jobs: list[Job]) -> None:
        """Place the interfaces on the shards and load them there (replaces what was loaded)."""
        ids = [j.interface_id for j in jobs]
        if len(set(ids)) != len(ids):
            raise InputError("territory", "interface_id", "an interface id appears twice")
        self._parts = assign(jobs, self.shards)
        self._lost: dict[int, str] = {}
        self._note_lost(self._gather("load", [(part,) for part in self._parts]))

    def run(self, cycle: Cycle, sink: Callable[[InterfaceOutcome], Any] | None = None) -> list:
        """One cycle of every loaded interface, in interface id order (warm after the first).

        A shard whose worker died (or whose actor was lost) reports each of its
        interfaces with status ``error`` (as a report when a sink is given); the
        other shards' interfaces are unaffected.
        """
        results = self._note_lost(self._gather("run", [(cycle, sink)] * self.shards))
        for k, reason in self._lost.items():
            failed = [InterfaceOutcome(job.interface_id, (), "error", f"worker lost: {reason}")
                      for job in self._parts[k]]
            results[k] = [o.report() for o in failed] if sink is not None else failed
        return _merge(results, _order)

    def map(self, tasks: list[Task]) -> list[TaskResult]:
        """Run independent tasks on the shards (placed by weight); results in the tasks' order.

        Nothing is kept between calls, so this works beside :meth:`load` and :meth:`run`. The tasks of a
        shard whose worker died get the error ``worker lost: ...``; the other shards' results stand.
        """
        ids = [t.interface_id for t in tasks]
        if len(set(ids)) != len(ids):
            raise InputError("territory", "interface_id", "an interface id appears twice")
        parts = self._place(tasks)
        results = self._gather("call", [(part,) for part in parts])
        by_id = {}
        for part, value in zip(parts, results, strict=True):
            if isinstance(value, BaseException):
                value = [TaskResult(t.interface_id, error=f"worker lost: {_describe(value)}") for t in part]
            by_id.update((r.interface_id, r) for r in value)
        return [by_id[i] for i in ids]

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

    def _note_lost(self, results: list) -> list:
        """Remember the shards whose call failed as a whole (the worker is gone)."""
        for k, value in enumerate(results):
            if isinstance(value, BaseException):
                self._lost.setdefault(k, _describe(value))
        return results

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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

    def _gather(self, method: str, args: list[tuple]) -> list:
        futures = []
        for pool, a in zip(self._pools, args, strict=True):
            try:
                futures.append(pool.submit(_worker_call, method, *a))
            except BrokenProcessPool as exc:  # the worker died in an earlier call
                futures.append(exc)
        out = [f if isinstance(f, BaseException) else (f.exception() or f.result()) for f in futures]
        for k, value in enumerate(out):
            if isinstance(value, BrokenProcessPool):
                # A fresh worker for the next call: a stateless map works again, while load/run still
                # report the shard lost (``_lost``) until the interfaces are loaded again.
                self._pools[k].shutdown(wait=False, cancel_futures=True)
                self._pools[k] = self._pool()
        return out

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
        actor = ray.remote(num_cpus=1, max_concurrency=1)(Shard)
        self._actors = [actor.remote(rules, options, keep) for _ in range(n)]

    def _gather(self, method: str, args: list[tuple]) -> list:
        refs = [getattr(a, method).remote(*x) for a, x in zip(self._actors, args, strict=True)]
        out = []
        for ref in refs:
            try:
                out.append(self._ray.get(ref))
            except self._ray.exceptions.RayError as exc:  # the actor or its node is gone
                out.append(exc)
        return out

    def close(self) -> None:
        for a in self._actors:
            self._ray.kill(a)
        self._actors = []
        if self._started:
            self._ray.shutdown()


def runner(workers: int | None = None, ray_address: str | None = None, rules: MarketRules = MarketRules(),
           options: ClearingOptions = ClearingOptions(), keep: int = KEEP) -> LocalRunner | RayRunner:
    """The runner a caller asked for: Ray when ``ray_address`` is given, else local processes; ``keep`` is
    :class:`Shard`'s bound on the interfaces whose kept state one worker holds."""
    if ray_address:
        return RayRunner(ray_address, workers, rules, options, keep)
    return LocalRunner(workers, rules, options, keep)

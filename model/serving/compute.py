"""The compute threads of :class:`model.serving.scheduler.Scheduler`: what runs next, batches, heat-map levels and
their pause points. The only threads that run an engine's passes.

Each waits on the condition for the most urgent work, in this order:
    1. a due classification micro-batch (:mod:`.batching`: full, nothing more on its way, or waited
       ``max_batch_wait_s``), at most this thread's share (:func:`.batching.share_of_work`); several run
       side by side on a core's share of the threads, a lone photo gets them all;
    2. when no classification waits or runs and no heat map is in progress: the next level of a heat map
       (:mod:`.jobs`): every waiting chat's first (coarse) map before any finer map, chats taking turns.
A map runs on all threads. Before each explainer batch it reaches its **pause point** (:meth:`_pause_point`):
its thread runs due classification batches itself (or waits while other threads run them), and a fine map
runs each waiting coarse map to its end before it goes on. So a photo waits for at most one explainer batch,
and a new /why's first map for at most one batch of someone's fine map. A map also ends there when its
caller gave up, its deadline passed, or the service stops.
"""
from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from model.engine import Preparation, ServingEngine
from model.prediction import prediction_of_row
from model.threads import name_os_thread

from .admission import DeadlinePassed, Stopping
from .batching import BatchQueue, PendingRequest, share_of_work
from .jobs import JobKind, MapJob, MapQueue

if TYPE_CHECKING:
    from .levels import ServedModel

log = logging.getLogger("model.serving.scheduler")

ALL_MAP_KINDS = (JobKind.COARSE_MAP, JobKind.FINE_MAP)


class _Abandoned(Exception):
    """Raised at a map's pause point to end it (shutdown, or nobody waits for it any more)."""


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True)
class ComputeConfig:
    """How the compute runs (the same type for the bot's scheduler and a replica's)."""

    max_batch: int
    max_batch_wait_s: float
    decode_workers: int
    threads: int  # compute threads of the engine in all (torch: intra-op threads)
    classify_workers: int  # compute threads side by side
    explain_batch_size: int
    explain_cache_size: int
    warm_up_batch: int  # photos in the warm-up passes at start (0: none)


class SchedulerObserver(Protocol):
    """Told what the compute threads did (metrics); called on a compute thread, so it must be quick."""

    def batch_done(self, model: str, size: int, seconds: float) -> None: ...

    def level_done(self, model: str, patch: int, stride: int, seconds: float, cached: bool) -> None: ...


class ComputeThreads:
    """The state the compute threads share and their loop (see the module docstring)."""

    def __init__(self, config: ComputeConfig, clock: Callable[[], float], observer: SchedulerObserver | None):
        self.config = config
        self.clock = clock
        self.observer = observer
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # recent batch sizes, for /stats and tests
        self.heatmap_pauses = 0  # pause points at which a map let more urgent work run first
        self.threads: list[threading.Thread] = []
        self._workers = max(1, config.classify_workers)
        self._threads_alone = config.threads
        self._threads_shared = max(1, config.threads // self._workers)
        self._cond = threading.Condition()
        self._state = State.NEW
        self._batches = BatchQueue(config.max_batch, config.max_batch_wait_s)
        self._maps = MapQueue()
        self._on_the_way = 0  # reserved photos still downloading or decoding: a batch may wait for them
        self._running_batches = 0
        self._maps_in_progress = 0  # started and not finished (running, paused, or nested in a pause)
        self._map_computing = False  # a map's thread is between pause points, using all the threads
        self._warming = 0  # compute threads still warming up
        self._model_prepared = False  # thread 0 prepared the main model; the others may warm up

    served: dict[str, ServedModel]

    def _warmed_up(self) -> None:
        raise NotImplementedError

    def _name_of(self, served: ServedModel) -> str:
        return next((name for name, known in self.served.items() if known is served), "replaced")

    # ---- warm-up ---------------------------------------------------------------------------------------
    def prepare_engine(self, engine: ServingEngine) -> Preparation:
        """Prepare ``engine`` as this scheduler runs it (its workers, their share of the threads)."""
        return engine.prepare(workers=self._workers, threads=self._threads_shared, probe_batch=min(4, self._share_cap()))

    def _warm_up_share(self) -> int:
        """Photos in each compute thread's warm-up pass: its share of WARM_UP_BATCH, at most its batch share."""
        return max(1, min(self._share_cap(), -(-self.config.warm_up_batch // self._workers)))

    def _warm_up(self, index: int) -> None:
        """Thread 0 prepares the main model (unless it came prepared); then every thread runs its own first
        passes at the shapes it will serve, so a burst right after start pays for none."""
        engine = self.served["main"].engine
        if index == 0:
            try:
                if engine.preparation is None:
                    self.prepare_engine(engine)
                log.info("classification forward pass: %s", engine.preparation.describe())
                if self.config.warm_up_batch > 0 and self._workers > 1:
                    # A lone photo's pass on all threads, before the others start theirs: torch's thread count
                    # is partly process-wide, so passes on different counts at once would blur it.
                    seconds = engine.warm_up(1, self._threads_alone)
                    log.info("warm-up: a lone photo on %d threads in %.2f s", self._threads_alone, seconds)
            except Exception:  # a broken network shows up on the first request, answered per request
                log.exception("preparing the model failed")
            with self._cond:
                self._model_prepared = True
                self._cond.notify_all()
        else:
            with self._cond:
                self._cond.wait_for(lambda: self._model_prepared, 300)
        if self.config.warm_up_batch > 0:
            per_thread = self._warm_up_share()
            try:
                seconds = engine.warm_up(per_thread, self._threads_shared)
                log.info("warm-up on %s: batch %d on %d thread(s) in %.2f s", threading.current_thread().name,
                         per_thread, self._threads_shared, seconds)
            except Exception:
                log.exception("warm-up pass failed")
        with self._cond:
            self._warming -= 1
            if self._warming == 0:
                if self._state is State.STARTING:
                    self._state = State.RUNNING
                self._warmed_up()
                self._cond.notify_all()
            self._cond.wait_for(lambda: self._warming == 0, 300)  # serve together, once all are warm

    # ---- choosing work ---------------------------------------------------------------------------------
    def _compute_thread(self, index: int) -> None:
        name_os_thread()
        self._warm_up(index)
        while True:
            with self._cond:
                while True:
                    # One map at a time: a second would double the activations, and the first one's
                    # pause points already serve whatever is more urgent.
                    kinds = ALL_MAP_KINDS if not self._maps_in_progress else ()
                    work = self._next_work(kinds)
                    if work is not None:
                        break
                    if self._state is State.STOPPING and not self._batches:
                        return
                    self._cond.wait(self._batches.due_in(self.clock(), self._on_the_way, self._share()))
            self._run(work)

    def _share_cap(self) -> int:
        return -(-self.config.max_batch // self._workers)

    def _share(self) -> int:
        return share_of_work(self.config.max_batch, self._workers, len(self._batches), self._on_the_way)

    def _next_work(self, map_kinds: tuple[JobKind, ...]):
        """Under the lock: ("batch", requests, threads), else ("map", job) of one of ``map_kinds``, or None."""
        batch = self._batches.take(self.clock(), force=self._state is State.STOPPING, on_the_way=self._on_the_way,
                                   limit=self._share())
        if batch:
            alone = not (self._running_batches or self._batches or self._on_the_way or self._map_computing)
            self._running_batches += 1
            return "batch", batch, self._threads_alone if alone else self._threads_shared
        classifying = self._running_batches or self._batches
        if map_kinds and not classifying and self._state is State.RUNNING:
            job = self._maps.take(map_kinds)
            if job is not None:
                self._maps_in_progress += 1
                return "map", job
        return None

    def _run(self, work) -> None:
        if work[0] == "batch":
            _, batch, threads = work
            try:
                # Each photo runs on the model chosen when it was queued (its chat's, before or after a reload).
                for group in _by_model(batch):
                    self._run_batch(group, group[0].model, threads)
            finally:
                with self._cond:
                    self._running_batches -= 1
                    self._cond.notify_all()  # the others' share of the work, and whether maps may run, changed
        else:
            self._run_map_level(work[1])

    # ---- running it ------------------------------------------------------------------------------------
    def _run_batch(self, batch: list[PendingRequest], served: ServedModel, threads: int) -> None:
        engine = served.engine
        self.batch_sizes.append(len(batch))
        started = time.perf_counter()
        try:
            engine.use_threads(threads)  # per OS thread, and cheap (docs/benchmarks.md)
            probabilities = engine.probabilities(np.stack([request.payload for request in batch]))
        except Exception:
            if len(batch) > 1:  # one malformed input must not fail its neighbours: run each alone to find it
                for request in batch:
                    self._run_batch([request], served, threads)
                return
            log.exception("classification failed")
            batch[0].deliver(None, RuntimeError("classification failed"))
            return
        if self.observer is not None:
            self.observer.batch_done(self._name_of(served), len(batch), time.perf_counter() - started)
        for request, row in zip(batch, probabilities):
            request.deliver((prediction_of_row(row, engine.class_names, checkpoint_id=engine.checkpoint_id),
                             len(batch)), None)

    def _expired(self, job: MapJob) -> bool:
        return job.deadline is not None and self.clock() > job.deadline

    def _run_map_level(self, job: MapJob) -> None:
        """One level of ``job`` on this thread; the job queues again for its next level."""
        engine = job.served.engine
        engine.use_threads(self._threads_alone)
        with self._cond:
            outer_computing, self._map_computing = self._map_computing, True
        started = time.perf_counter()
        try:
            if self._expired(job):
                raise DeadlinePassed("the caller stopped waiting")
            level = job.served.run_next_level(job, lambda done, total: self._pause_point(job))
        except _Abandoned:
            job.emit("error", DeadlinePassed("the caller stopped waiting") if self._expired(job) and self._state is
                     State.RUNNING else Stopping("the heat map was abandoned"))
            job.next_level = len(job.levels)
        except Exception as error:  # ImageError and the unexpected alike go back to the caller
            job.emit("error", error)
            job.next_level = len(job.levels)
        else:
            if self.observer is not None:
                self.observer.level_done(self._name_of(job.served), level.patch, level.stride,
                                         time.perf_counter() - started, level.cached)
            job.emit("result", level)
        finally:
            with self._cond:
                self._map_computing = outer_computing
                self._maps_in_progress -= 1
                if not job.finished and not job.cancelled:
                    if self._state is State.RUNNING:
                        self._maps.add(job)
                    else:
                        job.emit("error", Stopping("the service is stopping"))
                self._cond.notify_all()
            engine.use_threads(self._threads_alone)  # a nested pause may have changed it

    def _pause_point(self, job: MapJob) -> None:
        """Before each explainer batch of ``job``: serve what is more urgent, then go on (or abandon the map)."""
        more_urgent = (JobKind.COARSE_MAP,) if job.kind is JobKind.FINE_MAP else ()
        paused = False
        with self._cond:
            self._map_computing = False
            try:
                while True:
                    if self._state is not State.RUNNING or job.cancelled or self._expired(job):
                        raise _Abandoned()
                    work = self._next_work(more_urgent)
                    if work is None and not (self._running_batches or self._batches):
                        return
                    if not paused:
                        paused = True
                        self.heatmap_pauses += 1
                    if work is None:  # other threads are classifying, or a batch is forming: leave them the cores
                        self._cond.wait(self._batches.due_in(self.clock(), self._on_the_way, self._share()))
                        continue
                    self._cond.release()
                    try:
                        self._run(work)
                    finally:
                        self._cond.acquire()
            finally:
                self._map_computing = True
        job.served.engine.use_threads(self._threads_alone)


def _by_model(batch: list[PendingRequest]) -> list[list[PendingRequest]]:
    groups: dict[int, list[PendingRequest]] = {}
    for request in batch:
        groups.setdefault(id(request.model), []).append(request)
    return list(groups.values())

"""The inference scheduler: every CPU-heavy step of the bot runs on its threads, never on the event loop.

Threads, and who waits on what (one lock, ``InferenceScheduler._cond``, guards every piece of state below):

- **event loop** (PTB's handlers): admits requests (:meth:`reserve`, :meth:`explain`; :class:`Busy` at once
  when full), awaits asyncio futures and queues. It never blocks on the lock for longer than a queue update.
- **decode pool** (``decode_workers`` threads): photo bytes -> PIL -> normalized tensor (PIL releases the GIL).
- **compute threads** (``classify_workers``): the only threads that run the network. Each waits on the
  condition for the most urgent work, in this order:
    1. a due classification micro-batch (:mod:`bot.batching`: full, nothing more on its way, or waited
       ``max_batch_wait_s``), at most this thread's share (:func:`bot.batching.share_of_work`); several run
       side by side on a core's share of the torch threads, a lone photo gets them all;
    2. when no classification waits or runs and no heat map is in progress: the next level of a heat map
       (:mod:`bot.jobs`): every waiting chat's first (coarse) map before any finer map, chats taking turns.
  What a pass runs on is chosen at warm-up (:func:`model.runtime.prepare_model`: device, runtime,
  precision, each logged with its reason and shown in /stats). On OpenVINO a pass runs on OpenVINO's own
  threads (all cores, one stream; ``torch.set_num_threads`` does not reach them) with the GIL released, so
  two compute threads' batches queue on that stream instead of splitting the cores.
  A map runs on all torch threads. Before each explainer batch it reaches its **pause point**
  (:meth:`_pause_point`): its thread runs due classification batches itself (or waits while other threads
  run them), and a fine map runs each waiting coarse map to its end before it goes on. So a photo waits for
  at most one explainer batch, and a new /why's first map for at most one batch of someone's fine map.

A photo: ``reserve`` (counted, and "on its way" so a forming batch may wait for it) -> download (event loop)
-> ``Reservation.classify``: decode pool -> batch queue -> compute thread -> ``Prediction`` -> future.
A /why: ``explain`` -> :class:`MapJob` (coarse) -> compute thread: decode, coarse map, rendered -> event loop
sends it -> the job queues again as a fine map -> fine map -> the event loop edits it in.

Models (``models``): "main", and "canary" while a candidate serves a share of chats. A photo runs on the
model named when it was queued (a batch of both runs one pass per model), a /why on the one it started with;
:meth:`swap` (a reload) changes what later work gets, never what is already queued or running.

States: NEW -> STARTING (warm-up on the compute threads; requests already queue) -> RUNNING -> STOPPING
(new requests get :class:`Stopping`; queued classifications are still answered; maps end at their next
pause point with :class:`Stopping`) -> STOPPED (threads joined).
"""
from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from model import Classifier, Prediction
from model.predict import prediction_from_probabilities
from model.runtime import ModelPreparation, prepare_model, runtime_cache_dir, warm_up_pass
from model.threads import name_os_thread

from .batching import BatchQueue, PendingRequest, share_of_work
from .heatmaps import HeatMapMaker
from .inference import MAIN, Busy, Explanation, Stopping
from .jobs import JobKind, MapJob, MapQueue

log = logging.getLogger(__name__)

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
class SchedulerConfig:
    """Built from the bot's Settings (:func:`bot.config.Settings.scheduler_config`); no defaults of its own."""

    max_batch: int
    max_batch_wait_s: float
    queue_size: int
    per_chat_queue: int
    why_queue_size: int
    decode_workers: int
    torch_threads: int
    classify_workers: int
    explain_batch_size: int
    explain_cache_size: int
    warm_up_batch: int  # photos in the warm-up passes at start (0: none)
    frozen_graph: bool | None  # None: measure eager against the graph at start and keep the faster
    precision: str = "auto"  # model.runtime.prepare_model's choices: auto (measured at start) or forced
    device: str = "auto"
    runtime: str = "auto"


class InferenceScheduler:
    """``await classify(chat, bytes)`` -> :class:`Prediction`; ``async for e in explain(chat, bytes, levels)``."""

    def __init__(self, classifier: Classifier, config: SchedulerConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        # Models by name: "main" (CHECKPOINT_PATH), and "canary" while one is served to a share of chats.
        self.models: dict[str, Classifier] = {MAIN: classifier}
        self._makers: dict[str, HeatMapMaker] = {MAIN: self._maker(classifier)}
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # recent batch sizes, for /stats and tests
        self.heatmap_pauses = 0  # pause points at which a map let more urgent work run first
        self.preparation: ModelPreparation | None = None  # what the warm-up chose and measured
        # Called on a compute thread after each batch: (runtime, precision, seconds, photos); bot.metrics sets it.
        self.forward_observer: Callable[[str, str, float, int], None] | None = None
        self.threads: list[threading.Thread] = []
        self._workers = max(1, config.classify_workers)
        self._threads_alone = config.torch_threads
        self._threads_shared = max(1, config.torch_threads // self._workers)
        self._cond = threading.Condition()
        self._state = State.NEW
        self._batches = BatchQueue(config.max_batch, config.max_batch_wait_s)
        self._maps = MapQueue()
        self._on_the_way = 0  # reserved photos still downloading or decoding: a batch may wait for them
        self._running_batches = 0
        self._maps_in_progress = 0  # started and not finished (running, paused, or nested in a pause)
        self._map_computing = False  # a map's thread is between pause points, using all the torch threads
        self._admitted = Counter()  # per chat: requests admitted and not yet answered
        self._admitted_maps = 0
        self._warming = 0  # compute threads still warming up
        self._model_prepared = False  # thread 0 chose eager or the graph; the others may warm up
        self._ready = threading.Event()
        self._decoder: ThreadPoolExecutor | None = None

    @property
    def classifier(self) -> Classifier:
        return self.models[MAIN]

    @property
    def heatmaps(self) -> HeatMapMaker:
        return self._makers[MAIN]

    @heatmaps.setter
    def heatmaps(self, maker) -> None:  # tests hold the heat-map work with a stand-in
        self._makers[MAIN] = maker

    def _maker(self, classifier: Classifier) -> HeatMapMaker:
        return HeatMapMaker(classifier, self.config.explain_batch_size, self.config.explain_cache_size)

    # ---- life cycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the threads; the compute threads warm up first (``await ready()`` waits for that)."""
        with self._cond:
            if self._state is not State.NEW:
                return
            self._state = State.STARTING
            self._warming = self._workers
        self._decoder = ThreadPoolExecutor(self.config.decode_workers, thread_name_prefix="decode",
                                           initializer=name_os_thread)
        # Start every decoder now, not on the first burst (ThreadPoolExecutor starts them lazily).
        barrier = threading.Barrier(self.config.decode_workers)
        for _ in range(self.config.decode_workers):
            self._decoder.submit(barrier.wait, 5.0)
        self.threads = [threading.Thread(target=self._compute_thread, args=(index,), daemon=True,
                                         name="compute" if index == 0 else f"compute_{index}")
                        for index in range(self._workers)]
        for thread in self.threads:
            thread.start()

    async def ready(self) -> None:
        """Wait until the warm-up is done (the bot polls only after it, so the first burst runs at full speed)."""
        await asyncio.to_thread(self._ready.wait)

    def begin_stop(self) -> None:
        """Refuse new work; answer queued classifications; end maps at their next pause point."""
        with self._cond:
            if self._state in (State.STOPPING, State.STOPPED):
                return
            self._state = State.STOPPING
            abandoned = self._maps.drain()
            self._cond.notify_all()
        for job in abandoned:
            job.emit("error", Stopping("the service is stopping"))

    async def stop(self, timeout: float = 5.0) -> None:
        """:meth:`begin_stop`, then wait (at most ``timeout``) for the threads to end."""
        self.begin_stop()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("compute thread %s did not stop within %.1f s", thread.name, timeout)
        with self._cond:
            self._state = State.STOPPED
        if self._decoder is not None:
            self._decoder.shutdown(wait=False, cancel_futures=True)

    def prepare_replacement(self, classifier: Classifier) -> ModelPreparation:
        """Get a new model ready to serve (forward pass chosen, first passes run), on the calling thread, while
        the old one keeps serving; then :meth:`swap` it in."""
        preparation = self._prepare(classifier)
        if self.config.warm_up_batch > 0:
            warm_up_pass(classifier, self._warm_up_share(), self._threads_shared)
        return preparation

    def _prepare(self, classifier: Classifier) -> ModelPreparation:
        """Choose ``classifier``'s forward pass the way this scheduler will run it (see model.runtime)."""
        return prepare_model(classifier, self.config.frozen_graph, probe_batch=min(4, self._share_cap()),
                             workers=self._workers, threads=self._threads_shared, precision=self.config.precision,
                             device=self.config.device, runtime=self.config.runtime,
                             cache_dir=runtime_cache_dir(classifier))

    def _warm_up_share(self) -> int:
        """Photos in each compute thread's warm-up pass: its share of WARM_UP_BATCH, at most its batch share."""
        return max(1, min(self._share_cap(), -(-self.config.warm_up_batch // self._workers)))

    def swap(self, classifier: Classifier, preparation: ModelPreparation, model: str = MAIN) -> None:
        """Serve ``classifier`` as ``model`` from the next photo and the next /why on. Photos queued and maps
        started finish on the model they started with."""
        maker = self._maker(classifier)
        with self._cond:
            self.models[model], self._makers[model] = classifier, maker
            if model == MAIN:
                self.preparation = preparation

    @property
    def state(self) -> State:
        return self._state

    def queue_length(self) -> int:
        """Requests admitted and not yet answered (downloading, decoding, waiting, or running)."""
        with self._cond:
            return sum(self._admitted.values())

    def waiting_for_batch(self) -> int:
        """Photos decoded and waiting for the next batch (a subset of :meth:`queue_length`)."""
        with self._cond:
            return len(self._batches)

    # ---- admission -------------------------------------------------------------------------------------
    def _admit(self, chat_id: Hashable, heatmap: bool = False) -> None:
        with self._cond:
            if self._state not in (State.STARTING, State.RUNNING):
                raise Stopping("the service is not running")
            total = sum(self._admitted.values())
            if total >= self.config.queue_size:
                raise Busy(f"{total} requests queued")
            if self._admitted[chat_id] >= self.config.per_chat_queue:
                raise Busy(f"chat {chat_id} has {self._admitted[chat_id]} requests queued")
            if heatmap and self._admitted_maps >= self.config.why_queue_size:
                raise Busy(f"{self._admitted_maps} heat maps queued")
            self._admitted[chat_id] += 1
            self._admitted_maps += heatmap
            if not heatmap:
                self._on_the_way += 1

    def _release(self, chat_id: Hashable, heatmap: bool = False) -> None:
        with self._cond:
            self._admitted[chat_id] -= 1
            if self._admitted[chat_id] <= 0:
                del self._admitted[chat_id]
            self._admitted_maps -= heatmap

    def _not_coming(self) -> None:
        with self._cond:
            self._on_the_way -= 1
            self._cond.notify_all()  # one fewer photo to wait for may make a batch due

    # ---- classification --------------------------------------------------------------------------------
    def reserve(self, chat_id: Hashable, model: str = MAIN) -> Reservation:
        """A place for a photo still to be downloaded; raises :class:`Busy` at once when full.

        Taken before the download, so an overloaded bot refuses without fetching the photo, and a batch
        that forms meanwhile may wait for it (up to the batch wait) instead of leaving with one or two
        photos while the rest of a burst is still arriving.
        Use as ``with scheduler.reserve(chat) as reservation: ... await reservation.classify(data)``.
        """
        self._admit(chat_id)
        return Reservation(self, chat_id, model)

    async def classify(self, chat_id: Hashable, data: bytes, model: str = MAIN) -> Prediction:
        """Decode (raises :class:`model.ImageError`), then classify in the next micro-batch."""
        with self.reserve(chat_id, model) as reservation:
            return await reservation.classify(data)

    async def classify_tensor(self, chat_id: Hashable, tensor: torch.Tensor, model: str = MAIN) -> Prediction:
        """Classify an already preprocessed 3 x 224 x 224 tensor in the next micro-batch."""
        with self.reserve(chat_id, model) as reservation:
            return await reservation.classify_tensor(tensor)

    async def _submit(self, chat_id: Hashable, tensor: torch.Tensor, model: str) -> Prediction:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def deliver(result, error):  # on a compute thread
            _settle_threadsafe(loop, future, result, error)

        with self._cond:
            self._on_the_way -= 1  # off the way and into the queue in one step: never in neither place
            if self._state not in (State.STARTING, State.RUNNING):
                self._cond.notify_all()
                raise Stopping("the service is stopping")
            classifier = self.models.get(model, self.models[MAIN])  # a canary removed meanwhile: the main model
            self._batches.add(PendingRequest(chat_id, tensor, self.clock(), deliver, classifier))
            self._cond.notify_all()
        return await future

    # ---- heat maps -------------------------------------------------------------------------------------
    async def explain(self, chat_id: Hashable, data: bytes, levels: Sequence[tuple[int, int]],
                      model: str = MAIN, target: int | None = None, language=None) -> AsyncIterator[Explanation]:
        """Heat maps for each (patch, stride) in ``levels``, coarse to fine; the last has ``final=True``.
        ``target``: the class to explain (default: the predicted one); ``language``: the texts' bot.i18n.Language.

        If the finest map is cached, only it is produced. Raises :class:`Busy`, :class:`model.ImageError`.
        """
        self._admit(chat_id, heatmap=True)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(kind, value):  # on a compute thread
            _call_threadsafe(loop, events.put_nowait, (kind, value))

        job = MapJob(chat_id, bytes(data), [(int(p), int(s)) for p, s in levels], emit, target=target, language=language)
        try:
            with self._cond:
                if self._state not in (State.STARTING, State.RUNNING):
                    raise Stopping("the service is stopping")
                job.maker = self._makers.get(model, self._makers[MAIN])  # a canary removed meanwhile: the main one
                self._maps.add(job)
                self._cond.notify_all()
            while True:
                kind, value = await events.get()
                if kind == "error":
                    raise value
                yield value
                if value.final:
                    return
        finally:
            job.cancelled = True
            self._release(chat_id, heatmap=True)

    # ---- the compute threads ---------------------------------------------------------------------------
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

    def _warm_up(self, index: int) -> None:
        """Thread 0 prepares the model (frozen graph or eager, by measurement when asked); then every thread
        runs its own first passes at the shapes it will serve, so a burst right after start pays for none."""
        if index == 0:
            try:
                torch.set_num_threads(self._threads_shared)
                self.preparation = self._prepare(self.classifier)
                log.info("classification forward pass: %s", self.preparation.describe())
                if self.config.warm_up_batch > 0 and self._workers > 1:
                    # A lone photo's pass on all threads, before the others start theirs: torch's thread count
                    # is partly process-wide, so passes on different counts at once would blur it.
                    seconds = warm_up_pass(self.classifier, 1, self._threads_alone)
                    log.info("warm-up: a lone photo on %d threads in %.2f s", self._threads_alone, seconds)
            except Exception:  # a broken network shows up on the first request, answered per request
                log.exception("preparing the model failed: serving the eager fp32 network")
                self.classifier.to("cpu")
                self.classifier.graph, self.classifier.runner, self.classifier.precision = None, None, "fp32"
                self.classifier.runtime = "torch"
                self.preparation = ModelPreparation("eager", "preparing the model failed (see the log)")
            with self._cond:
                self._model_prepared = True
                self._cond.notify_all()
        else:
            with self._cond:
                self._cond.wait_for(lambda: self._model_prepared, 300)
        if self.config.warm_up_batch > 0:
            per_thread = self._warm_up_share()
            try:
                seconds = warm_up_pass(self.classifier, per_thread, self._threads_shared)
                log.info("warm-up on %s: batch %d on %d thread(s) in %.2f s", threading.current_thread().name,
                         per_thread, self._threads_shared, seconds)
            except Exception:
                log.exception("warm-up pass failed")
        with self._cond:
            self._warming -= 1
            if self._warming == 0:
                if self._state is State.STARTING:
                    self._state = State.RUNNING
                self._ready.set()
                self._cond.notify_all()
            self._cond.wait_for(lambda: self._ready.is_set(), 300)  # serve together, once all are warm

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
                torch.set_num_threads(threads)  # per OS thread, and cheap (docs/benchmarks.md)
                # Each photo runs on the model chosen when it was queued (its chat's, before or after a reload).
                for group in _by_model(batch):
                    self._run_batch(group, group[0].model)
            finally:
                with self._cond:
                    self._running_batches -= 1
                    self._cond.notify_all()  # the others' share of the work, and whether maps may run, changed
        else:
            self._run_map_level(work[1])

    def _run_batch(self, batch: list[PendingRequest], classifier: Classifier) -> None:
        self.batch_sizes.append(len(batch))
        try:
            started = time.perf_counter()
            probabilities = classifier.probabilities(torch.stack([request.payload for request in batch]))
            if self.forward_observer is not None:
                self.forward_observer(classifier.runtime, classifier.precision, time.perf_counter() - started, len(batch))
        except Exception:
            if len(batch) > 1:  # one malformed input must not fail its neighbours: run each alone to find it
                for request in batch:
                    self._run_batch([request], classifier)
                return
            log.exception("classification failed")
            batch[0].deliver(None, RuntimeError("classification failed"))
            return
        for request, row in zip(batch, probabilities):
            request.deliver(prediction_from_probabilities(row, classifier.class_names,
                                                          checkpoint_id=classifier.checkpoint_id), None)

    def _run_map_level(self, job: MapJob) -> None:
        """One level of ``job`` on this thread; the job queues again for its next level."""
        torch.set_num_threads(self._threads_alone)
        with self._cond:
            outer_computing, self._map_computing = self._map_computing, True
        try:
            explanation = job.maker.run_next_level(job, lambda done, total: self._pause_point(job))
        except _Abandoned:
            job.emit("error", Stopping("the heat map was abandoned"))
            job.next_level = len(job.levels)
        except Exception as error:  # ImageError and the unexpected alike go back to the caller
            job.emit("error", error)
            job.next_level = len(job.levels)
        else:
            job.emit("result", explanation)
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
            torch.set_num_threads(self._threads_alone)  # a nested pause may have changed it

    def _pause_point(self, job: MapJob) -> None:
        """Before each explainer batch of ``job``: serve what is more urgent, then go on (or abandon the map)."""
        more_urgent = (JobKind.COARSE_MAP,) if job.kind is JobKind.FINE_MAP else ()
        paused = False
        with self._cond:
            self._map_computing = False
            try:
                while True:
                    if self._state is not State.RUNNING or job.cancelled:
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
        torch.set_num_threads(self._threads_alone)


class Reservation:
    """One admitted classification, from before its download to its answer (see :meth:`InferenceScheduler.reserve`)."""

    def __init__(self, scheduler: InferenceScheduler, chat_id: Hashable, model: str = MAIN):
        self._scheduler = scheduler
        self._chat_id = chat_id
        self._model = model
        self._on_the_way = True  # counted as on its way until it is queued or given up

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc_info) -> None:
        if self._on_the_way:  # the download or the decoding failed: nothing to wait for any more
            self._on_the_way = False
            self._scheduler._not_coming()
        self._scheduler._release(self._chat_id)

    async def classify(self, data: bytes) -> Prediction:
        """Decode (raises :class:`model.ImageError`), then classify in the next micro-batch. Once only."""
        scheduler = self._scheduler
        loop = asyncio.get_running_loop()
        classifier = scheduler.classifier
        tensor = await loop.run_in_executor(scheduler._decoder, lambda: classifier.preprocess(classifier.open(data)))
        return await self.classify_tensor(tensor)

    async def classify_tensor(self, tensor: torch.Tensor) -> Prediction:
        if not self._on_the_way:
            raise RuntimeError("a reservation classifies one photo")
        self._on_the_way = False  # _submit takes it off the count in the same step as it queues it
        return await self._scheduler._submit(self._chat_id, tensor, self._model)


def _by_model(batch: list[PendingRequest]) -> list[list[PendingRequest]]:
    groups: dict[int, list[PendingRequest]] = {}
    for request in batch:
        groups.setdefault(id(request.model), []).append(request)
    return list(groups.values())


def _call_threadsafe(loop: asyncio.AbstractEventLoop, callback, *args) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop closed meanwhile (shutdown): nobody waits for this any more
        pass


def _settle_threadsafe(loop, future: asyncio.Future, result, error: BaseException | None) -> None:
    def settle():
        if future.done():  # the caller gave up (cancelled)
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    _call_threadsafe(loop, settle)

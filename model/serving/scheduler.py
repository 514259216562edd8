"""The serving core: compute threads that drive :class:`model.engine.ServingEngine` models, NumPy in and out. The
bot's in-process backend (:mod:`bot.inference.local`) and each cluster replica (:mod:`model.serve.replica`) run it.

Threads, and who waits on what (one lock, ``Scheduler._cond``, guards the queues; :mod:`.admission` counts itself):

- **event loop**: admits requests (:meth:`Scheduler.reserve`, :meth:`Scheduler.explain`; :class:`Busy` at once
  when full), awaits asyncio futures and queues. It never blocks on the lock for longer than a queue update.
- **decode pool** (``decode_workers`` threads): photo bytes -> the engine's normalized array.
- **compute threads** (``classify_workers``): the only threads that run the network (:mod:`.compute`): the
  most urgent work first: due classification micro-batches (:mod:`.batching`), then, when none waits or
  runs and no map is in progress, the next heat-map level (:mod:`.jobs`: every chat's coarse map before any
  finer one, chats taking turns). A map pauses before each explainer batch (its pause point) for more
  urgent work.

A photo: ``reserve`` (counted, and "on its way" so a forming batch may wait for it) -> download (the caller)
-> ``Reservation.classify``: decode pool -> batch queue -> compute thread -> ``Prediction``.
A /why: ``explain`` -> :class:`MapJob` (coarse) -> compute thread: decode, coarse level -> the caller gets a
:class:`LevelResult` -> the job queues again as a fine map -> fine level.

Models (``models``): "main", and "canary" while a candidate serves a share of chats. A photo runs on the
model named when it was queued (a batch of both runs one pass per model), a /why on the one it started
with; :meth:`Scheduler.swap` (a reload) changes what later work gets, never what is already queued or running.

States: NEW -> STARTING (warm-up on the compute threads; requests already queue) -> RUNNING -> STOPPING
(new requests get :class:`Stopping`; queued classifications are still answered; maps end at their next
pause point with :class:`Stopping`) -> STOPPED (threads joined).
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from model.engine import Preparation, ServingEngine
from model.prediction import Prediction
from model.threads import name_os_thread

from .admission import Admission, Busy, DeadlinePassed, Limits, Stopping, Ticket
from .batching import PendingRequest
from .bridge import Reservation, call_threadsafe, settle_threadsafe
from .compute import ComputeConfig, ComputeThreads, SchedulerObserver, State
from .jobs import MapJob
from .levels import LevelResult, ServedModel

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Busy", "ComputeConfig", "DeadlinePassed", "Limits", "Scheduler", "SchedulerObserver", "State", "Stopping"]

log = logging.getLogger(__name__)

MAIN = "main"


class Scheduler(ComputeThreads):
    """``await classify(chat, bytes, model)`` -> Prediction; ``async for level in explain(chat, bytes, levels, model)``."""

    def __init__(self, engine: ServingEngine, config: ComputeConfig, limits: Limits,
                 clock: Callable[[], float] = time.monotonic, observer: SchedulerObserver | None = None):
        super().__init__(config, clock, observer)
        self.admission = Admission(limits)
        self.served: dict[str, ServedModel] = {MAIN: self._served(engine)}
        self._ready = threading.Event()
        self._decoder: ThreadPoolExecutor | None = None

    def _served(self, engine: ServingEngine) -> ServedModel:
        return ServedModel(engine, self.config.explain_batch_size, self.config.explain_cache_size)

    @property
    def models(self) -> dict[str, ServingEngine]:
        """The engines by name, as served now."""
        return {name: served.engine for name, served in self.served.items()}

    @property
    def preparation(self) -> Preparation | None:
        return self.served[MAIN].engine.preparation

    # ---- life cycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the threads; the compute threads warm up first (``await ready()`` waits for that)."""
        with self._cond:
            if self._state is not State.NEW:
                return
            self._state = State.STARTING
            self._warming = self._workers
        workers = self.config.decode_workers
        self._decoder = ThreadPoolExecutor(workers, thread_name_prefix="decode", initializer=name_os_thread)
        barrier = threading.Barrier(workers)  # start every decoder now, not on the first burst
        for _ in range(workers):
            self._decoder.submit(barrier.wait, 5.0)
        self.threads = [threading.Thread(target=self._compute_thread, args=(index,), daemon=True,
                                         name="compute" if index == 0 else f"compute_{index}")
                        for index in range(self._workers)]
        for thread in self.threads:
            thread.start()

    async def ready(self) -> None:
        """Wait until the warm-up is done (the bot polls only after it, so the first burst runs at full speed)."""
        await asyncio.to_thread(self._ready.wait)

    def _warmed_up(self) -> None:  # from the last compute thread to finish its warm-up, under the lock
        self._ready.set()

    def begin_stop(self) -> None:
        """Refuse new work; answer queued classifications; end maps at their next pause point."""
        self.admission.close()
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

    # ---- models ----------------------------------------------------------------------------------------
    def prepare_replacement(self, engine: ServingEngine) -> Preparation:
        """Get a new model ready to serve (prepared as this scheduler runs it, first passes run), on the calling
        thread, while the old one keeps serving; then :meth:`swap` it in."""
        preparation = engine.preparation or self.prepare_engine(engine)
        if self.config.warm_up_batch > 0:
            engine.warm_up(self._warm_up_share(), self._threads_shared)
        return preparation

    def swap(self, engine: ServingEngine, model: str = MAIN) -> None:
        """Serve ``engine`` as ``model`` from the next photo and the next /why on. Photos queued and maps
        started finish on the model they started with."""
        served = self._served(engine)
        with self._cond:
            self.served[model] = served

    def remove(self, model: str) -> None:
        """Stop serving ``model`` (not the main one): later work for it goes to the main model."""
        if model != MAIN:
            with self._cond:
                self.served.pop(model, None)

    def forget(self, digests: set[str]) -> int:
        """Drop the cached maps of these photos (sha256 of their bytes), for /forget."""
        return sum(served.cache.forget(digests) for served in list(self.served.values()))

    @property
    def state(self) -> State:
        return self._state

    def queue_length(self) -> int:
        """Requests admitted and not yet answered (downloading, decoding, waiting, or running)."""
        return self.admission.queued()

    def waiting_for_batch(self) -> int:
        """Photos decoded and waiting for the next batch (a subset of :meth:`queue_length`)."""
        with self._cond:
            return len(self._batches)

    def maps_waiting(self) -> int:
        with self._cond:
            return len(self._maps)

    # ---- classification --------------------------------------------------------------------------------
    def reserve(self, chat_id: Hashable, model: str = MAIN) -> Reservation:
        """A place for a photo still to be downloaded; raises :class:`Busy` at once when full.

        Taken before the download, so an overloaded service refuses without fetching the photo, and a batch
        that forms meanwhile may wait for it (up to the batch wait) instead of leaving with one or two
        photos while the rest of a burst is still arriving.
        Use as ``with scheduler.reserve(chat) as reservation: ... await reservation.classify(data)``.
        """
        self.admission.admit(chat_id)
        with self._cond:
            self._on_the_way += 1
        served = self.served.get(model, self.served[MAIN])  # its decoding is that model's

        def not_coming() -> None:
            with self._cond:
                self._on_the_way -= 1
                self._cond.notify_all()  # one fewer photo to wait for may make a batch due

        return Reservation(lambda data: self._decode(served, data), lambda array: self._submit(chat_id, array, model),
                           not_coming, lambda: self.admission.release(chat_id))

    async def classify(self, chat_id: Hashable, data: bytes, model: str = MAIN) -> Prediction:
        """Decode (raises :class:`model.ImageError`), then classify in the next micro-batch."""
        with self.reserve(chat_id, model) as reservation:
            return await reservation.classify(data)

    async def classify_array(self, chat_id: Hashable, array, model: str = MAIN) -> Prediction:
        """Classify an already preprocessed 3 x crop x crop image in the next micro-batch."""
        with self.reserve(chat_id, model) as reservation:
            return await reservation.classify_array(array)

    classify_tensor = classify_array

    async def _decode(self, served: ServedModel, data: bytes) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self._decoder, served.engine.decode, data)

    async def _submit(self, chat_id: Hashable, array: np.ndarray, model: str) -> tuple[Prediction, int]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def deliver(result, error):  # on a compute thread
            settle_threadsafe(loop, future, result, error)

        with self._cond:
            self._on_the_way -= 1  # off the way and into the queue in one step: never in neither place
            if self._state not in (State.STARTING, State.RUNNING):
                self._cond.notify_all()
                raise Stopping("the service is stopping")
            served = self.served.get(model, self.served[MAIN])  # a canary removed meanwhile: the main model
            self._batches.add(PendingRequest(chat_id, array, self.clock(), deliver, served))
            self._cond.notify_all()
        return await future

    # ---- heat maps -------------------------------------------------------------------------------------
    def reserve_map(self, chat_id: Hashable) -> Ticket:
        """A heat map's place, taken before its photo is downloaded; raises :class:`Busy` at once when full."""
        return Ticket(self.admission, chat_id, heat_map=True)

    async def explain(self, chat_id: Hashable, data: bytes, levels: Sequence[tuple[int, int]], model: str = MAIN,
                      deadline_s: float | None = None, ticket: Ticket | None = None) -> AsyncIterator[LevelResult]:
        """Each (patch, stride) of ``levels``' :class:`LevelResult`, coarse to fine; the last has ``final=True``.
        If the finest map is cached, only it comes. Raises :class:`Busy`, :class:`model.ImageError`, and
        :class:`DeadlinePassed` once ``deadline_s`` (this scheduler's clock) has passed. ``ticket``: its place,
        from :meth:`reserve_map` (released when the maps end); None: taken here."""
        ticket = ticket or self.reserve_map(chat_id)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(kind, value):  # on a compute thread
            call_threadsafe(loop, events.put_nowait, (kind, value))

        deadline = None if deadline_s is None else self.clock() + deadline_s
        job = MapJob(chat_id, bytes(data), [(int(p), int(s)) for p, s in levels], emit, deadline=deadline)
        try:
            with self._cond:
                if self._state not in (State.STARTING, State.RUNNING):
                    raise Stopping("the service is stopping")
                job.served = self.served.get(model, self.served[MAIN])  # a canary removed meanwhile: the main one
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
            ticket.release()

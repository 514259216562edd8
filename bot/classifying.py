"""The classification threads: decoded photos wait in micro-batches (:mod:`bot.batching`), the threads run
them through the network and hand each result back to the event loop that asked.

With ``workers=1`` every batch runs on all ``torch_threads``. With one worker per core (the bot's
default, ``CLASSIFY_WORKERS``), the workers run batches side by side, each on a core's share of the
threads: torch's threads wait for each other at every layer, so when the event loop or a decoder takes
one of two cores for a moment, a batch on two threads stalls on both, while two batches on one thread
each lose only that moment on one core (``bench/bench_interference.py`` measures both). A batch that is
the only work in sight (a lone photo) still gets all the threads, so it is answered as fast as before.
Each worker takes at most its share of the work in sight (:func:`bot.batching.share_of_work`), so the
activations in memory stay those of one ``max_batch`` pass and the workers finish a burst together.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Callable, Hashable

import torch

from model import Classifier, Prediction
from model.predict import prediction_from_probabilities
from model.threads import name_os_thread

from .batching import BatchQueue, PendingRequest, share_of_work
from .heatmaps import Busy

log = logging.getLogger(__name__)


class ClassificationWorkers:
    """``await submit(chat, tensor)`` -> :class:`Prediction`, from the next micro-batch that includes it."""

    def __init__(self, classifier: Classifier, *, max_batch: int, max_batch_wait_s: float, torch_threads: int,
                 workers: int = 1, frozen_graph: bool = False, warm_up_batch: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.classifier = classifier
        self.clock = clock
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # recent batch sizes, for /stats and tests
        self.idle = threading.Event()  # nothing queued or running: the heat-map thread may use the cores
        self.idle.set()
        self.threads: list[threading.Thread] = []
        self._max_batch = max_batch
        self._workers = max(1, workers)
        self._threads_alone = torch_threads
        self._threads_shared = max(1, torch_threads // self._workers)
        self._frozen_graph = frozen_graph
        self._warm_up_batch = warm_up_batch
        self._batches = BatchQueue(max_batch, max_batch_wait_s)
        self._cond = threading.Condition()
        self._on_the_way = 0  # reserved, not yet queued (downloading, decoding): a batch may wait for them
        self._running_batches = 0  # workers inside a forward pass
        self._stopping = False
        self._model_ready = threading.Event()  # the first worker has built the graph and warmed up

    def start(self) -> None:
        if self.threads:
            return
        self.threads = [threading.Thread(target=self._work, args=(index,), daemon=True,
                                         name="classify" if index == 0 else f"classify_{index}")
                        for index in range(self._workers)]
        for thread in self.threads:
            thread.start()

    def begin_stop(self) -> None:
        """Answer what is queued, then end the threads (join them from outside)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.idle.set()  # nothing waits for the workers any more: the heat-map thread may go on to stop

    def waiting(self) -> int:
        """Photos queued for the next batches (not those running)."""
        with self._cond:
            return len(self._batches)

    def expect(self) -> None:
        """One more photo is on its way (downloading, decoding): a forming batch may wait for it."""
        with self._cond:
            self._on_the_way += 1

    def not_coming(self) -> None:
        """A photo that was on its way will not come (its download or decoding failed)."""
        with self._cond:
            self._on_the_way -= 1
            self._cond.notify_all()  # one fewer to wait for may make a batch due

    async def submit(self, chat_id: Hashable, tensor: torch.Tensor, was_on_the_way: bool) -> Prediction:
        """Queue one preprocessed photo; raises :class:`Busy` once stopping."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def deliver(result, error):  # called from a classification thread
            loop.call_soon_threadsafe(_settle, future, result, error)

        with self._cond:
            # Off the way and into the queue in one step, so a worker never sees the photo in neither
            # place and leaves without it.
            self._on_the_way -= was_on_the_way
            if self._stopping:
                raise Busy("the service is stopping")
            self.idle.clear()
            self._batches.add(PendingRequest(chat_id, tensor, self.clock(), deliver))
            self._cond.notify()
        return await future

    def _work(self, index: int) -> None:
        """One worker: take the next due batch (at most its share), run it, hand back each result."""
        name_os_thread()
        if index == 0:
            try:
                torch.set_num_threads(self._threads_alone)  # per thread: OpenMP keeps the setting per thread
                if self._frozen_graph:
                    # Here, not at load: the half second of tracing overlaps the bot's start instead of
                    # delaying it; a photo that arrives meanwhile waits in the queue.
                    self.classifier.use_frozen_graph()
                self._warm_up()
            finally:
                self._model_ready.set()
        else:
            self._model_ready.wait()
        while True:
            with self._cond:
                while True:
                    now = self.clock()
                    share = share_of_work(self._max_batch, self._workers, len(self._batches), self._on_the_way)
                    batch = self._batches.take(now, force=self._stopping, on_the_way=self._on_the_way, limit=share)
                    if batch:
                        alone = not self._running_batches and not self._batches and not self._on_the_way
                        self._running_batches += 1
                        break
                    if not self._batches and not self._running_batches:
                        self.idle.set()
                    if self._stopping:
                        return
                    self._cond.wait(self._batches.due_in(now, self._on_the_way, share))
            try:
                threads = self._threads_alone if alone else self._threads_shared
                torch.set_num_threads(threads)
                started = time.monotonic()
                self._run_batch(batch)
                log.debug("batch of %d on %d thread(s): %.0f ms", len(batch), threads, 1000 * (time.monotonic() - started))
            finally:
                with self._cond:
                    self._running_batches -= 1
                    self._cond.notify_all()  # the others' share of the work, and the idle state, changed

    def _warm_up(self) -> None:
        """One pass at the largest batch before the first request (which waits meanwhile, in the queue).

        oneDNN prepares its kernels for that shape, and the heap grows to that working set once
        (model/memory.py keeps it), instead of both happening inside the first burst of photos: measured
        here, the first batch of 16 took 1.5 s instead of 0.85 s without it.
        """
        if self._warm_up_batch < 1:
            return
        side = self.classifier.preprocess_config.crop
        started = time.monotonic()
        try:
            self.classifier.probabilities(torch.zeros(self._warm_up_batch, 3, side, side))
        except Exception:  # a broken network shows up on the first real request, answered per request
            log.exception("warm-up pass failed")
            return
        log.info("warm-up: batch %d in %.2f s", self._warm_up_batch, time.monotonic() - started)

    def _run_batch(self, batch: list[PendingRequest]) -> None:
        self.batch_sizes.append(len(batch))
        try:
            probabilities = self.classifier.probabilities(torch.stack([request.payload for request in batch]))
        except Exception:
            if len(batch) > 1:
                # One malformed input must not fail its neighbours: run each alone to find it.
                for request in batch:
                    self._run_batch([request])
                return
            log.exception("classification failed")
            batch[0].deliver(None, RuntimeError("classification failed"))
            return
        for request, row in zip(batch, probabilities):
            request.deliver(prediction_from_probabilities(row, self.classifier.class_names), None)


def _settle(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.done():  # the caller gave up (cancelled); nothing to hand back
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

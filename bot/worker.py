"""The inference service: every CPU-heavy step runs here, off the bot's event loop.

Three kinds of threads, so nothing oversubscribes the cores (the heat-map one is in :mod:`bot.heatmaps`):

- a small pool that decodes and preprocesses photos (PIL releases the GIL while decoding);
- ``classify_workers`` classification threads that run micro-batches side by side
  (:mod:`bot.classifying`), with torch's intra-op threads shared between them;
- one heat-map thread, at a lower priority: it pauses at the next layer or explainer batch whenever a
  classification waits, so a /why delays an answer by at most one explainer batch.

Admission is bounded: past ``queue_size`` requests in flight (or ``per_chat_queue`` for one chat, or
``why_queue_size`` heat maps) callers get :class:`Busy` at once instead of waiting without end.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Hashable, Sequence

import torch

from model import Classifier, Prediction
from model.threads import name_os_thread

from .classifying import ClassificationWorkers
from .heatmaps import Busy, Explanation, HeatMapJob, HeatMapWorker

log = logging.getLogger(__name__)



@dataclass
class ServiceConfig:
    max_batch: int = 16
    max_batch_wait_s: float = 0.01
    queue_size: int = 128
    per_chat_queue: int = 20
    why_queue_size: int = 8
    decode_workers: int = 2
    torch_threads: int = 2
    explain_batch_size: int = 16
    explain_cache_size: int = 64
    warm_up_batch: int = 0  # > 0: one forward pass of this many blank photos before serving (bot/classifying.py)
    frozen_graph: bool = False  # classify with the network traced into one TorchScript graph (model/graph.py)
    classify_workers: int = 1  # classification threads running batches side by side (bot/classifying.py)


@dataclass
class _Counts:
    total: int = 0
    heatmaps: int = 0
    per_chat: Counter = field(default_factory=Counter)


class InferenceService:
    """``await classify(chat, bytes)`` -> :class:`Prediction`; ``async for e in explain(chat, bytes, levels)``."""

    def __init__(self, classifier: Classifier, config: ServiceConfig = ServiceConfig(),
                 clock: Callable[[], float] = time.monotonic):
        self.classifier = classifier
        self.config = config
        self.clock = clock
        self.classification = ClassificationWorkers(
            classifier, max_batch=config.max_batch, max_batch_wait_s=config.max_batch_wait_s,
            torch_threads=config.torch_threads, workers=config.classify_workers, frozen_graph=config.frozen_graph,
            warm_up_batch=config.warm_up_batch, clock=clock)
        self._counts = _Counts()
        self._counts_lock = threading.Lock()
        self.heatmaps = HeatMapWorker(classifier, self.classification.idle, config.explain_batch_size,
                                      config.explain_cache_size, config.torch_threads)
        self._stopping = False
        self._decoder: ThreadPoolExecutor | None = None

    # ---- life cycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._decoder is not None:
            return
        torch.set_num_threads(self.config.torch_threads)
        self._decoder = ThreadPoolExecutor(self.config.decode_workers, thread_name_prefix="decode",
                                           initializer=_decode_thread_setup)
        self.classification.start()
        self.heatmaps.start()

    async def stop(self, timeout: float = 5.0) -> None:
        """Answer the classifications already queued, cancel heat maps, stop the threads (within ``timeout``)."""
        with self._counts_lock:
            self._stopping = True
        self.classification.begin_stop()
        self.heatmaps.begin_stop()
        deadline = time.monotonic() + timeout
        for thread in [*self.classification.threads, self.heatmaps.thread]:
            if thread is None:
                continue
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("worker thread %s did not stop within %.1f s", thread.name, timeout)
        self.heatmaps.finish_stop()
        if self._decoder is not None:
            self._decoder.shutdown(wait=False, cancel_futures=True)

    @property
    def batch_sizes(self):
        """Recent micro-batch sizes (for /stats and tests)."""
        return self.classification.batch_sizes

    @property
    def heatmap_pauses(self) -> int:
        """Times a heat map stopped to let classifications run (for /stats and tests)."""
        return self.heatmaps.pauses

    def queue_length(self) -> int:
        """Requests admitted and not yet answered (downloading, decoding, waiting, or running)."""
        with self._counts_lock:
            return self._counts.total

    def waiting_for_batch(self) -> int:
        """Photos decoded and waiting for the next batch (a subset of :meth:`queue_length`)."""
        return self.classification.waiting()

    # ---- admission --------------------------------------------------------------------------------------
    def _admit(self, chat_id: Hashable, heatmap: bool = False) -> None:
        with self._counts_lock:
            counts = self._counts
            if self._stopping or self._decoder is None:
                raise Busy("the service is not running")
            if counts.total >= self.config.queue_size:
                raise Busy(f"{counts.total} requests queued")
            if counts.per_chat[chat_id] >= self.config.per_chat_queue:
                raise Busy(f"chat {chat_id} has {counts.per_chat[chat_id]} requests queued")
            if heatmap and counts.heatmaps >= self.config.why_queue_size:
                raise Busy(f"{counts.heatmaps} heat maps queued")
            counts.total += 1
            counts.per_chat[chat_id] += 1
            counts.heatmaps += heatmap

    def _release(self, chat_id: Hashable, heatmap: bool = False) -> None:
        with self._counts_lock:
            counts = self._counts
            counts.total -= 1
            counts.heatmaps -= heatmap
            counts.per_chat[chat_id] -= 1
            if counts.per_chat[chat_id] <= 0:
                del counts.per_chat[chat_id]

    # ---- classification ---------------------------------------------------------------------------------
    def _decode(self, data: bytes) -> torch.Tensor:
        return self.classifier.preprocess(self.classifier.open(data))

    def reserve(self, chat_id: Hashable) -> "Reservation":
        """A place in the queue for a photo still to be downloaded; raises :class:`Busy` at once when full.

        Taken before the download, so an overloaded bot refuses without fetching the photo, and the batcher
        knows the photo is on its way: a batch that forms meanwhile may wait for it (up to the batch wait)
        instead of leaving with one or two photos while the rest of a burst is still arriving.
        Use as ``with service.reserve(chat) as reservation: ... await reservation.classify(data)``.
        """
        self._admit(chat_id)
        self.classification.expect()
        return Reservation(self, chat_id)

    async def classify(self, chat_id: Hashable, data: bytes) -> Prediction:
        """Decode (raises :class:`model.ImageError`), then classify in the next micro-batch."""
        with self.reserve(chat_id) as reservation:
            return await reservation.classify(data)

    async def classify_tensor(self, chat_id: Hashable, tensor: torch.Tensor) -> Prediction:
        """Queue an already preprocessed 3 x 224 x 224 tensor for the next micro-batch."""
        self._admit(chat_id)
        try:
            return await self.classification.submit(chat_id, tensor, was_on_the_way=False)
        finally:
            self._release(chat_id)

    # ---- heat maps ----------------------------------------------------------------------------------------
    async def explain(self, chat_id: Hashable, data: bytes,
                      levels: Sequence[tuple[int, int]]) -> AsyncIterator[Explanation]:
        """Heat maps for each (patch, stride) in ``levels``, coarse to fine; the last has ``final=True``.

        If the finest map is cached, only it is produced. Raises :class:`Busy`, :class:`model.ImageError`.
        """
        self._admit(chat_id, heatmap=True)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = HeatMapJob(chat_id, bytes(data), [(int(p), int(s)) for p, s in levels],
                         emit=lambda kind, value: loop.call_soon_threadsafe(events.put_nowait, (kind, value)))
        try:
            self.heatmaps.submit(job)
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


class Reservation:
    """One admitted classification, from before its download to its answer (see :meth:`InferenceService.reserve`)."""

    def __init__(self, service: InferenceService, chat_id: Hashable):
        self._service = service
        self._chat_id = chat_id
        self._on_the_way = True  # counted as on its way (service.classification) until it is queued or given up

    def __enter__(self) -> "Reservation":
        return self

    def __exit__(self, *exc_info) -> None:
        if self._on_the_way:  # the download failed, or decoding did: nothing to wait for any more
            self._on_the_way = False
            self._service.classification.not_coming()
        self._service._release(self._chat_id)

    async def classify(self, data: bytes) -> Prediction:
        """Decode (raises :class:`model.ImageError`), then classify in the next micro-batch. Once only."""
        if not self._on_the_way:
            raise RuntimeError("a reservation classifies one photo")
        service = self._service
        loop = asyncio.get_running_loop()
        tensor = await loop.run_in_executor(service._decoder, service._decode, data)
        self._on_the_way = False  # submit takes it off the count in the same step as it queues it
        return await service.classification.submit(self._chat_id, tensor, was_on_the_way=True)


def _decode_thread_setup() -> None:
    # No torch.set_num_threads(1) here: measured, it cut the whole bot to about one busy core. Decoding
    # uses PIL and NumPy only (model.preprocess.normalize), so it starts no OpenMP team of its own.
    name_os_thread()


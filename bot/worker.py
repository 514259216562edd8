"""The inference service: every CPU-heavy step runs here, off the bot's event loop.

Three kinds of threads, so nothing oversubscribes the cores:

- a small pool that decodes and preprocesses photos (PIL releases the GIL while decoding);
- one classification thread that runs micro-batches (:class:`bot.batching.BatchQueue`) with torch's
  intra-op threads set to ``torch_threads``;
- one heat-map thread. Heat maps have a lower priority: a forward pre-hook on every module call made from
  that thread waits while any classification is waiting or running, so a /why pauses at the next layer
  boundary and never delays an answer by more than one layer of one explainer batch.

Admission is bounded: past ``queue_size`` requests in flight (or ``per_chat_queue`` for one chat, or
``why_queue_size`` heat maps) callers get :class:`Busy` at once instead of waiting without end.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import threading
import time
from collections import Counter, OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import AsyncIterator, Callable, Hashable, Sequence

import torch

from model import Classifier, Prediction
from model.explain_cache import ExplanationCache
from model.occlusion import OcclusionExplainer
from model.predict import prediction_from_probabilities
from model.render import render_overlay

from .batching import BatchQueue, PendingRequest

log = logging.getLogger(__name__)

# Final heat-map PNGs kept for an instant repeat /why (about 0.2 MB each); the maps themselves are in
# model.explain_cache, which is bigger.
RENDERED_CACHE_SIZE = 16


class Busy(Exception):
    """Too much work is queued (overall, for this chat, or the service is stopping); try again later."""


class _ExplainCancelled(Exception):
    """Raised inside the heat-map thread to abandon a map (shutdown, or nobody waits for it any more)."""


@dataclass(frozen=True)
class Explanation:
    """One rendered heat map; ``final`` is the last (finest) one of a /why."""

    png: bytes
    label: str
    confidence: float
    patch: int
    stride: int
    final: bool
    cached: bool


@dataclass
class _ExplainJob:
    chat_id: Hashable
    data: bytes
    levels: list[tuple[int, int]]
    emit: Callable[[str, object], None]
    cancelled: bool = False


@dataclass
class ServiceConfig:
    max_batch: int = 16
    max_batch_wait_s: float = 0.01
    queue_size: int = 64
    per_chat_queue: int = 20
    why_queue_size: int = 8
    decode_workers: int = 2
    torch_threads: int = 2
    explain_batch_size: int = 16
    explain_cache_size: int = 64


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
        self.cache = ExplanationCache(config.explain_cache_size)
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # recent batch sizes, for /stats and tests
        self.heatmap_pauses = 0  # times a heat map stopped at a layer boundary to let classifications run
        self._batches = BatchQueue(config.max_batch, config.max_batch_wait_s)
        self._cond = threading.Condition()
        self._classify_idle = threading.Event()
        self._classify_idle.set()
        self._counts = _Counts()
        self._counts_lock = threading.Lock()
        self._explain_jobs: queue.Queue[_ExplainJob | None] = queue.Queue()
        self._rendered: OrderedDict[tuple, Explanation] = OrderedDict()  # touched by the heat-map thread only
        self._explainers: dict[tuple[int, int], OcclusionExplainer] = {}
        self._current_job: _ExplainJob | None = None
        self._explain_thread_id: int | None = None
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._decoder: ThreadPoolExecutor | None = None
        self._hook_handle = None

    # ---- life cycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        torch.set_num_threads(self.config.torch_threads)
        self._decoder = ThreadPoolExecutor(self.config.decode_workers, thread_name_prefix="decode")
        self._hook_handle = torch.nn.modules.module.register_module_forward_pre_hook(self._yield_to_classification)
        self._threads = [
            threading.Thread(target=self._classify_loop, name="classify", daemon=True),
            threading.Thread(target=self._explain_loop, name="explain", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    async def stop(self, timeout: float = 5.0) -> None:
        """Answer the classifications already queued, cancel heat maps, stop the threads (within ``timeout``)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._classify_idle.set()
        self._explain_jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            await asyncio.to_thread(thread.join, max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("worker thread %s did not stop within %.1f s", thread.name, timeout)
        while True:  # heat maps still queued behind the stop marker: tell their callers
            try:
                job = self._explain_jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.emit("error", Busy("the service is stopping"))
        if self._decoder is not None:
            self._decoder.shutdown(wait=False, cancel_futures=True)
        if self._hook_handle is not None:
            self._hook_handle.remove()
            self._hook_handle = None

    def queue_length(self) -> int:
        """Requests admitted and not yet answered (decoding, waiting, or running)."""
        with self._counts_lock:
            return self._counts.total

    # ---- admission --------------------------------------------------------------------------------------
    def _admit(self, chat_id: Hashable, heatmap: bool = False) -> None:
        with self._counts_lock:
            counts = self._counts
            if self._stopping or not self._threads:
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

    async def classify(self, chat_id: Hashable, data: bytes) -> Prediction:
        """Decode (raises :class:`model.ImageError`), then classify in the next micro-batch."""
        self._admit(chat_id)
        try:
            loop = asyncio.get_running_loop()
            tensor = await loop.run_in_executor(self._decoder, self._decode, data)
            return await self.classify_tensor(chat_id, tensor, _admitted=True)
        finally:
            self._release(chat_id)

    async def classify_tensor(self, chat_id: Hashable, tensor: torch.Tensor, _admitted: bool = False) -> Prediction:
        """Queue an already preprocessed 3 x 224 x 224 tensor for the next micro-batch."""
        if not _admitted:
            self._admit(chat_id)
        try:
            loop = asyncio.get_running_loop()
            future: asyncio.Future = loop.create_future()

            def deliver(result, error):  # called from the classification thread
                loop.call_soon_threadsafe(_settle, future, result, error)

            with self._cond:
                if self._stopping:
                    raise Busy("the service is stopping")
                self._classify_idle.clear()
                self._batches.add(PendingRequest(chat_id, tensor, self.clock(), deliver))
                self._cond.notify()
            return await future
        finally:
            if not _admitted:
                self._release(chat_id)

    def _classify_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = self.clock()
                    batch = self._batches.take(now, force=self._stopping)
                    if batch:
                        break
                    if not self._batches:
                        self._classify_idle.set()
                    if self._stopping:
                        return
                    self._cond.wait(self._batches.due_in(now))
            self._run_batch(batch)

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

    # ---- heat maps ----------------------------------------------------------------------------------------
    async def explain(self, chat_id: Hashable, data: bytes,
                      levels: Sequence[tuple[int, int]]) -> AsyncIterator[Explanation]:
        """Heat maps for each (patch, stride) in ``levels``, coarse to fine; the last has ``final=True``.

        If the finest map is cached, only it is produced. Raises :class:`Busy`, :class:`model.ImageError`.
        """
        self._admit(chat_id, heatmap=True)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = _ExplainJob(chat_id, bytes(data), [(int(p), int(s)) for p, s in levels],
                          emit=lambda kind, value: loop.call_soon_threadsafe(events.put_nowait, (kind, value)))
        try:
            self._explain_jobs.put(job)
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

    def _explain_loop(self) -> None:
        self._explain_thread_id = threading.get_ident()
        while True:
            job = self._explain_jobs.get()
            if job is None:
                return
            if job.cancelled:
                continue
            if self._stopping:
                job.emit("error", Busy("the service is stopping"))
                continue
            self._current_job = job
            try:
                self._run_explain(job)
            except _ExplainCancelled:
                job.emit("error", Busy("the heat map was cancelled"))
            except Exception as exc:  # ImageError and the unexpected alike go back to the caller
                job.emit("error", exc)
            finally:
                self._current_job = None

    def _run_explain(self, job: _ExplainJob) -> None:
        digest = hashlib.sha256(job.data).hexdigest()
        checkpoint_id = self.classifier.checkpoint_id
        final_key = (checkpoint_id, digest, *job.levels[-1])
        rendered = self._rendered.get(final_key)
        if rendered is not None:  # asked before: no decoding, no drawing
            self._rendered.move_to_end(final_key)
            job.emit("result", replace(rendered, cached=True))
            return
        image = self.classifier.open(job.data)
        tensor = self.classifier.preprocess(image)
        levels = job.levels
        if self.cache.get(checkpoint_id, digest, *levels[-1]) is not None:
            levels = levels[-1:]
        for index, (patch, stride) in enumerate(levels):
            result = self.cache.get(checkpoint_id, digest, patch, stride)
            cached = result is not None
            if result is None:
                result = self._explainer(patch, stride).explain(tensor)
                self.cache.put(checkpoint_id, digest, patch, stride, result)
            label = self.classifier.class_names[result.target]
            png = render_overlay(image, result.occlusion_map, label, result.probability,
                                 preprocess_config=self.classifier.preprocess_config, patch=patch, stride=stride)
            explanation = Explanation(png, label, result.probability, patch, stride,
                                      final=index == len(levels) - 1, cached=cached)
            if explanation.final:
                self._rendered[final_key] = explanation
                while len(self._rendered) > RENDERED_CACHE_SIZE:
                    self._rendered.popitem(last=False)
            job.emit("result", explanation)

    def _explainer(self, patch: int, stride: int) -> OcclusionExplainer:
        key = (patch, stride)
        if key not in self._explainers:
            self._explainers[key] = OcclusionExplainer(self.classifier.network, patch=patch, stride=stride,
                                                       batch_size=self.config.explain_batch_size)
        return self._explainers[key]

    def _yield_to_classification(self, module, args):
        """Global forward pre-hook: in the heat-map thread, wait while classifications are queued or running."""
        if threading.get_ident() != self._explain_thread_id:
            return None
        paused = False
        while True:
            job = self._current_job
            if self._stopping or (job is not None and job.cancelled):
                raise _ExplainCancelled()
            if self._classify_idle.is_set():
                return None
            if not paused:
                paused = True
                self.heatmap_pauses += 1
            self._classify_idle.wait(0.1)


def _settle(future: asyncio.Future, result, error: BaseException | None) -> None:
    if future.done():  # the caller gave up (cancelled); nothing to hand back
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

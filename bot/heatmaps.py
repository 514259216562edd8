"""The heat-map thread of the inference service: occlusion maps, coarse to fine, at a lower priority.

Priority without a scheduler: a global forward pre-hook runs before every ``nn.Module`` call, and in this
thread it waits while any classification is queued or running (``classify_idle`` is clear). The explainer
calls modules for its clean pass (every layer) and for the network head once per batch of positions, so
a /why pauses at the next layer or batch boundary and delays an answer by at most one explainer batch.
The same hook abandons a map when the service stops or nobody waits for it any more.
"""
from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable, Hashable

import torch

from model import Classifier
from model.explain_cache import ExplanationCache
from model.occlusion import OcclusionExplainer
from model.render import render_overlay
from model.threads import name_os_thread

log = logging.getLogger(__name__)

# Final heat-map PNGs kept for an instant repeat /why (about 0.2 MB each); the maps themselves are in
# model.explain_cache, which is bigger.
RENDERED_CACHE_SIZE = 16


class Busy(Exception):
    """Too much work is queued (overall, for this chat, or the service is stopping); try again later."""


class _Cancelled(Exception):
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
class HeatMapJob:
    chat_id: Hashable
    data: bytes
    levels: list[tuple[int, int]]
    emit: Callable[[str, object], None]  # ("result", Explanation) or ("error", exception), thread-safe
    cancelled: bool = False


class HeatMapWorker:
    def __init__(self, classifier: Classifier, classify_idle: threading.Event, batch_size: int, cache_size: int,
                 torch_threads: int):
        self.classifier = classifier
        self.cache = ExplanationCache(cache_size)
        self.pauses = 0  # times a heat map stopped to let classifications run
        self.thread: threading.Thread | None = None
        self._classify_idle = classify_idle
        self._batch_size = batch_size
        self._torch_threads = torch_threads
        self._jobs: queue.Queue[HeatMapJob | None] = queue.Queue()
        self._rendered: OrderedDict[tuple, Explanation] = OrderedDict()  # touched by this thread only
        self._explainers: dict[tuple[int, int], OcclusionExplainer] = {}
        self._current: HeatMapJob | None = None
        self._thread_id: int | None = None
        self._stopping = False
        self._hook = None

    def start(self) -> None:
        self._hook = torch.nn.modules.module.register_module_forward_pre_hook(self._yield_to_classification)
        self.thread = threading.Thread(target=self._loop, name="heatmaps", daemon=True)
        self.thread.start()

    def submit(self, job: HeatMapJob) -> None:
        self._jobs.put(job)

    def begin_stop(self) -> None:
        """Abandon the running map at its next module call; the thread ends after that."""
        self._stopping = True
        self._jobs.put(None)

    def finish_stop(self) -> None:
        """After the thread ended: tell the callers of maps still queued, remove the hook."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.emit("error", Busy("the service is stopping"))
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _loop(self) -> None:
        name_os_thread()
        torch.set_num_threads(self._torch_threads)  # OpenMP keeps this per thread
        self._thread_id = threading.get_ident()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.cancelled:
                continue
            if self._stopping:
                job.emit("error", Busy("the service is stopping"))
                continue
            self._current = job
            try:
                self._run(job)
            except _Cancelled:
                job.emit("error", Busy("the heat map was cancelled"))
            except Exception as exc:  # ImageError and the unexpected alike go back to the caller
                job.emit("error", exc)
            finally:
                self._current = None

    def _run(self, job: HeatMapJob) -> None:
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
            if self._explainers:  # coarse and fine maps share one folded copy of the network
                self._explainers[key] = next(iter(self._explainers.values())).with_settings(patch, stride)
            else:
                self._explainers[key] = OcclusionExplainer(self.classifier.network, patch=patch, stride=stride,
                                                           batch_size=self._batch_size)
        return self._explainers[key]

    def _yield_to_classification(self, module, args):
        """Global forward pre-hook: in this thread, wait while classifications are queued or running."""
        if threading.get_ident() != self._thread_id:
            return None
        paused = False
        while True:
            job = self._current
            if self._stopping or (job is not None and job.cancelled):
                raise _Cancelled()
            if self._classify_idle.is_set():
                return None
            if not paused:
                paused = True
                self.pauses += 1
            self._classify_idle.wait(0.1)

"""What a cluster replica computes, without Ray: the model prepared once, classification batches, and heat-map
levels in priority order. :mod:`model.serve.deployments` wraps these in Ray Serve deployments.

Threads in an Explainer replica: Serve's event loop admits requests and awaits them; ONE map thread runs
every level (a second would double the activations on the replica's cores). It takes the most urgent
level first: every waiting request's first (coarse) level before any finer one. A finer map, before each
explainer batch (its pause point), runs the coarse levels that arrived meanwhile, then goes on; and it
stops there when its caller gave up or its deadline passed. The same rules as the bot's own scheduler
(bot/scheduler.py), for one replica's share of the work.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from model.explain_cache import ExplanationCache
from model.occlusion import ExplainersBySetting, OcclusionResult
from model.precision import resolve_device
from model.predict import Classifier, prediction_from_probabilities
from model.runtime import prepare_model, runtime_cache_dir

from .wire import DeadlinePassed

log = logging.getLogger(__name__)

def prepare_replica_model(classifier: Classifier, device: str, precision: str, threads: int) -> str:
    """Get ``classifier`` ready once per replica, by the single-process bot's rules (:func:`model.runtime.prepare_model`:
    device, runtime and precision, each ``auto`` or forced); returns a one-line description for the cluster's
    info (and the gateway's /stats). Raises ValueError, :class:`model.precision.DeviceUnavailable`."""
    frozen = None if resolve_device(device).type == "cpu" else False  # the frozen graph is measured on the CPU only
    preparation = prepare_model(classifier, frozen_graph=frozen, probe_batch=4, workers=1, threads=threads,
                                precision=precision, device=device, cache_dir=runtime_cache_dir(classifier))
    return preparation.describe()


class ClassifyWork:
    """A Classifier replica's model: decode (any thread), then batches on ``threads`` torch threads."""

    def __init__(self, classifier: Classifier, threads: int):
        self.classifier = classifier
        self.threads = threads
        self.device = next(classifier.network.parameters()).device
        # (runtime, precision, seconds, photos) after each batch: model.serve.replica_metrics sets it.
        self.forward_observer: Callable[[str, str, float, int], None] | None = None

    def decode(self, data: bytes) -> torch.Tensor:
        """Raises :class:`model.ImageError` for anything that is not a usable picture."""
        return self.classifier.preprocess(self.classifier.open(data))

    def run_batch(self, tensors: Sequence[torch.Tensor]) -> list[dict]:
        torch.set_num_threads(self.threads)  # per OS thread: this is the thread the batch runs on
        started = time.perf_counter()
        probabilities = self.classifier.probabilities(torch.stack(list(tensors)).to(self.device)).cpu()
        if self.forward_observer is not None:
            self.forward_observer(self.classifier.runtime, self.classifier.precision, time.perf_counter() - started,
                                  len(tensors))
        return [prediction_from_probabilities(row, self.classifier.class_names).to_dict() for row in probabilities]


@dataclass
class MapLevel:
    """One level of one request, waiting for (or on) the map thread."""

    request: MapRequest
    index: int

    @property
    def coarse(self) -> bool:  # any level but a request's last is a coarse one
        return self.index < len(self.request.levels) - 1


@dataclass
class MapRequest:
    data: bytes
    levels: list[tuple[int, int]]
    deadline: float  # time.monotonic() after which nobody waits
    loop: asyncio.AbstractEventLoop
    results: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    tensor: torch.Tensor | None = None
    digest: str = ""

    def emit(self, item) -> None:  # from the map thread
        try:
            self.loop.call_soon_threadsafe(self.results.put_nowait, item)
        except RuntimeError:  # the replica's loop closed (shutdown): nobody waits any more
            pass

    def gone(self) -> bool:
        return self.cancelled or time.monotonic() > self.deadline


@dataclass(frozen=True)
class MapResult:
    """A map level as the gateway gets it: the OcclusionResult's fields, and what it needs to draw it."""

    result: OcclusionResult
    label: str
    patch: int
    stride: int
    cached: bool
    final: bool  # the request's last (finest) map

    def frame_parts(self) -> tuple[dict, dict[str, np.ndarray]]:
        meta = {"kind": "map", "label": self.label, "patch": self.patch, "stride": self.stride, "cached": self.cached,
                "final": self.final}
        arrays = {}
        for item in dataclasses.fields(self.result):  # every field travels, arrays as arrays: new ones too
            value = getattr(self.result, item.name)
            if isinstance(value, np.ndarray):
                arrays[item.name] = value
            else:
                meta[item.name] = value.item() if isinstance(value, np.generic) else value
        return meta, arrays


class MapWork:
    """An Explainer replica's model and its one map thread (see the module docstring)."""

    def __init__(self, classifier: Classifier, batch_size: int, cache_size: int, threads: int):
        self.classifier = classifier
        self.threads = threads
        self.cache = ExplanationCache(cache_size)
        self._explainer = ExplainersBySetting(self.classifier, batch_size)
        self._cond = threading.Condition()
        self._coarse: deque[MapLevel] = deque()
        self._fine: deque[MapLevel] = deque()
        self._stopping = False
        self.pauses = 0
        # (seconds, coarse, cached) after each level: model.serve.replica_metrics sets it.
        self.level_observer: Callable[[float, bool, bool], None] | None = None
        self._thread = threading.Thread(target=self._run, name="maps", daemon=True)
        self._thread.start()

    def waiting(self) -> int:
        with self._cond:
            return len(self._coarse) + len(self._fine)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    async def explain(self, data: bytes, levels: list[tuple[int, int]], timeout_s: float) -> AsyncIterator[MapResult]:
        """Each level's :class:`MapResult`, coarse to fine; raises ImageError, :class:`DeadlinePassed`."""
        request = MapRequest(bytes(data), levels, time.monotonic() + timeout_s, asyncio.get_running_loop())
        self._queue(MapLevel(request, 0))
        try:
            while True:
                item = await request.results.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.final:
                    return
        finally:
            request.cancelled = True  # a caller that hung up: the map thread drops the rest at its next pause

    def _queue(self, level: MapLevel) -> None:
        with self._cond:
            (self._coarse if level.coarse else self._fine).append(level)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._coarse or self._fine or self._stopping)
                if self._stopping:
                    return
                level = (self._coarse or self._fine).popleft()
            self._run_level(level)

    def _run_level(self, level: MapLevel) -> None:
        request = level.request
        try:
            if request.gone():
                raise DeadlinePassed("the caller stopped waiting")
            started = time.perf_counter()
            result = self._compute(level)
            if self.level_observer is not None:
                self.level_observer(time.perf_counter() - started, not result.final, result.cached)
        except Exception as error:  # ImageError, DeadlinePassed and the unexpected go back to the caller
            request.emit(error)
            return
        request.emit(result)
        if level.index + 1 < len(request.levels):
            self._queue(MapLevel(request, level.index + 1))

    def _compute(self, level: MapLevel) -> MapResult:
        request, classifier = level.request, self.classifier
        if request.tensor is None:
            request.digest = hashlib.sha256(request.data).hexdigest()
            request.tensor = classifier.preprocess(classifier.open(request.data))
            if self.cache.get(classifier.checkpoint_id, request.digest, *request.levels[-1]) is not None:
                level.index = len(request.levels) - 1  # the finest map is known: skip the coarse ones
        patch, stride = request.levels[level.index]
        result = self.cache.get(classifier.checkpoint_id, request.digest, patch, stride)
        cached = result is not None
        if result is None:
            torch.set_num_threads(self.threads)
            result = self._explainer(patch, stride).explain(request.tensor,
                                                            between_batches=lambda done, total: self._pause(level))
            self.cache.put(classifier.checkpoint_id, request.digest, patch, stride, result)
        final = level.index + 1 == len(request.levels)
        if final:
            request.tensor = None  # the photo is no longer needed
        return MapResult(result, classifier.class_names[result.target], patch, stride, cached, final)

    def _pause(self, level: MapLevel) -> None:
        """Before each explainer batch: drop the map if nobody waits; a fine map runs waiting coarse ones first."""
        if level.request.gone():
            raise DeadlinePassed("the caller stopped waiting")
        if level.coarse:
            return
        while True:
            with self._cond:
                if not self._coarse or self._stopping:
                    return
                coarse = self._coarse.popleft()
                self.pauses += 1
            self._run_level(coarse)
            torch.set_num_threads(self.threads)

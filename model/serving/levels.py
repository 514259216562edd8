"""One heat-map level of one served model: hash, decode, skip the coarse map when the fine one is cached, look up
the cache, explain. No threads, no drawing: the scheduler runs a level on a compute thread and hands the
explainer its pause point; the caller draws what comes out (the bot) or sends it on (a replica).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from model.engine import BetweenBatches, MapExplainer, ServingEngine
from model.explain_cache import ExplanationCache
from model.occlusion_result import OcclusionResult

from .jobs import MapJob


@dataclass(frozen=True)
class LevelResult:
    """One level of a /why as computed: the grid and map (every class's, see OcclusionResult), where it came from."""

    result: OcclusionResult
    patch: int
    stride: int
    cached: bool
    final: bool  # the request's last (finest) map
    digest: str  # sha256 of the photo's bytes
    checkpoint_id: str  # the model that computed it


class ServedModel:
    """An engine as the scheduler serves it: its explainers (one per setting) and its cache of maps."""

    def __init__(self, engine: ServingEngine, batch_size: int, cache_size: int):
        self.engine = engine
        self.batch_size = batch_size
        self.cache = ExplanationCache(cache_size)
        self._explainers: dict[tuple[int, int], MapExplainer] = {}

    @property
    def checkpoint_id(self) -> str:
        return self.engine.checkpoint_id

    def explainer(self, patch: int, stride: int) -> MapExplainer:
        key = (patch, stride)
        if key not in self._explainers:  # one compute thread runs maps at a time: no lock needed
            self._explainers[key] = self.engine.explainer(patch, stride, self.batch_size)
        return self._explainers[key]

    def run_next_level(self, job: MapJob, pause: BetweenBatches) -> LevelResult:
        """Compute ``job``'s next level and advance it; raises :class:`model.ImageError` for a bad photo."""
        checkpoint_id = self.engine.checkpoint_id
        if job.next_level == 0:
            job.state.update(digest=hashlib.sha256(job.data).hexdigest(), image=self.engine.decode(job.data))
            if self.cache.get(checkpoint_id, job.state["digest"], *job.levels[-1]) is not None:
                job.levels = job.levels[-1:]  # the finest map is known: skip the coarse one
        patch, stride = job.levels[job.next_level]
        digest = job.state["digest"]
        result = self.cache.get(checkpoint_id, digest, patch, stride)
        cached = result is not None
        if result is None:
            result = self.explainer(patch, stride).explain(job.state["image"], between_batches=pause)
            self.cache.put(checkpoint_id, digest, patch, stride, result)
        job.next_level += 1
        if job.finished:
            job.state.pop("image", None)  # the decoded photo is no longer needed
        return LevelResult(result, patch, stride, cached, job.finished, digest, checkpoint_id)

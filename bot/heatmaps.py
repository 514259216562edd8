"""Heat maps for /why, one level at a time: decode, look up the caches, explain, render.

No threads here: :mod:`bot.scheduler` runs each level on one of its compute threads and hands the
explainer its pause point (``between_batches``), where the thread serves more urgent work first.

A map is explained for the predicted class unless the job names another (a "Why not …?" button): the
cached result keeps every class's grid, so that map is drawn from the cache without inference. Drawing is
:func:`render_explanation`, a pure function of the photo, the result, the class and the language.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, replace

from PIL import Image

from model import Classifier
from model.explain_cache import ExplanationCache
from model.occlusion import BetweenBatches, OcclusionExplainer, OcclusionResult
from model.preprocess import PreprocessConfig
from model.render import render_overlay

from . import messages
from .i18n import ENGLISH, Language
from .jobs import MapJob

# Final heat-map PNGs kept for an instant repeat /why (about 0.2 MB each); the maps themselves are in
# model.explain_cache, which is bigger.
RENDERED_CACHE_SIZE = 16
WHY_NOT_CLASSES = 3  # "Why not …?" buttons for the other classes among the top 3


@dataclass(frozen=True)
class Explanation:
    """One rendered heat map; ``final`` is the last (finest) one of a /why. ``label``/``confidence``: the class
    the map explains and its probability; ``predicted``: the model's answer; ``others``: the other likely classes
    (top 3, neither of those two), by index, for "Why not …?" buttons."""

    png: bytes
    label: str
    confidence: float
    patch: int
    stride: int
    final: bool
    cached: bool
    predicted: str = ""
    others: tuple[tuple[int, str], ...] = ()


def render_explanation(photo: Image.Image, result: OcclusionResult, target: int, lang: Language,
                       class_names: list[str], preprocess_config: PreprocessConfig, patch: int, stride: int) -> bytes:
    """The heat-map PNG of ``result`` for class ``target``, with its texts in ``lang`` (no inference)."""
    chosen = result.for_target(target)
    label = class_names[target]
    return render_overlay(photo, chosen.occlusion_map, label, chosen.probability, preprocess_config=preprocess_config,
                          patch=patch, stride=stride, texts=messages.heat_map_texts(label, chosen.probability, lang))


class HeatMapMaker:
    """The work of a /why's levels. Called from one compute thread at a time per job; the caches lock themselves
    (the rendered-PNG cache is touched only under the scheduler's one-map-at-a-time rule)."""

    def __init__(self, classifier: Classifier, batch_size: int, cache_size: int):
        self.classifier = classifier
        self.cache = ExplanationCache(cache_size)
        self._batch_size = batch_size
        self._rendered: OrderedDict[tuple, Explanation] = OrderedDict()
        self._explainers: dict[tuple[int, int], OcclusionExplainer] = {}

    def run_next_level(self, job: MapJob, pause: BetweenBatches) -> Explanation:
        """Compute and render ``job``'s next level and advance it; raises :class:`model.ImageError`."""
        checkpoint_id = self.classifier.checkpoint_id
        lang = job.language or ENGLISH
        if job.next_level == 0:
            digest = hashlib.sha256(job.data).hexdigest()
            final_key = (checkpoint_id, digest, *job.levels[-1], job.target, lang.code)
            rendered = self._rendered.get(final_key)
            if rendered is not None:  # asked before: no decoding, no drawing
                self._rendered.move_to_end(final_key)
                job.next_level = len(job.levels)
                return replace(rendered, cached=True)
            image = self.classifier.open(job.data)
            job.state.update(digest=digest, image=image, tensor=self.classifier.preprocess(image))
            if self.cache.get(checkpoint_id, digest, *job.levels[-1]) is not None:
                job.levels = job.levels[-1:]  # the finest map is known: skip the coarse one
        patch, stride = job.levels[job.next_level]
        digest, image = job.state["digest"], job.state["image"]
        result = self.cache.get(checkpoint_id, digest, patch, stride)
        cached = result is not None
        if result is None:
            result = self._explainer(patch, stride).explain(job.state["tensor"], between_batches=pause)
            self.cache.put(checkpoint_id, digest, patch, stride, result)
        names = self.classifier.class_names
        target = result.target if job.target is None else job.target
        if not 0 <= target < len(names):
            raise ValueError(f"class {target} is not one of this model's {len(names)}")
        png = render_explanation(image, result, target, lang, names, self.classifier.preprocess_config, patch, stride)
        job.next_level += 1
        others = tuple((index, names[index]) for index in result.top_classes(WHY_NOT_CLASSES)
                       if index not in (target, result.target))
        explanation = Explanation(png, names[target], result.for_target(target).probability, patch, stride,
                                  final=job.finished, cached=cached, predicted=names[result.target], others=others)
        if explanation.final:
            job.state.clear()  # the decoded photo is no longer needed
            self._rendered[(checkpoint_id, digest, patch, stride, job.target, lang.code)] = explanation
            while len(self._rendered) > RENDERED_CACHE_SIZE:
                self._rendered.popitem(last=False)
        return explanation

    def _explainer(self, patch: int, stride: int) -> OcclusionExplainer:
        key = (patch, stride)
        if key not in self._explainers:
            if self._explainers:  # coarse and fine maps share one folded copy of the network
                self._explainers[key] = next(iter(self._explainers.values())).with_settings(patch, stride)
            else:
                self._explainers[key] = OcclusionExplainer.for_classifier(self.classifier, patch, stride, self._batch_size)
        return self._explainers[key]

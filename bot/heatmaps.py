"""Heat maps for /why, one level at a time: decode, look up the caches, explain, render.

No threads here: :mod:`bot.scheduler` runs each level on one of its compute threads and hands the
explainer its pause point (``between_batches``), where the thread serves more urgent work first.

A map is explained for the predicted class unless the job names another (a "Why not …?" button): the
cached result keeps every class's grid, so that map is drawn from the cache without inference. Drawing is
:func:`bot.inference.render_explanation`, a pure function of the photo, the result, the class and the language.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import replace

from model import Classifier
from model.explain_cache import ExplanationCache
from model.occlusion import BetweenBatches, ExplainersBySetting

from .i18n import ENGLISH
from .inference import Explanation, explanation_of
from .jobs import MapJob

# Final heat-map PNGs kept for an instant repeat /why (about 0.2 MB each); the maps themselves are in
# model.explain_cache, which is bigger.
RENDERED_CACHE_SIZE = 16


class HeatMapMaker:
    """The work of a /why's levels. Called from one compute thread at a time per job; the caches lock themselves
    (the rendered-PNG cache is touched only under the scheduler's one-map-at-a-time rule)."""

    def __init__(self, classifier: Classifier, batch_size: int, cache_size: int):
        self.classifier = classifier
        self.cache = ExplanationCache(cache_size)
        self._rendered: OrderedDict[tuple, Explanation] = OrderedDict()
        self._explainer = ExplainersBySetting(self.classifier, batch_size)

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
        job.next_level += 1
        explanation = explanation_of(image, result, job.target, lang, self.classifier.class_names,
                                     self.classifier.preprocess_config, patch, stride, final=job.finished, cached=cached)
        if explanation.final:
            job.state.clear()  # the decoded photo is no longer needed
            self._rendered[(checkpoint_id, digest, patch, stride, job.target, lang.code)] = explanation
            while len(self._rendered) > RENDERED_CACHE_SIZE:
                self._rendered.popitem(last=False)
        return explanation

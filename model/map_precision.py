"""Which precision a heat map is computed in, decided once per map before its grid, from a coarser level.

A bf16 map's values lie within ``BF16_MAP_TOLERANCE`` of the fp32 map's (model/occlusion.py), so a map whose
range is within bf16's noise would show noise as a pattern. The explainer used to compute such a map in bf16,
look at its range, and compute it again in fp32: two maps' work (on the saturated random-init model a 16/8
map took 18.3 s that way against 14.8 s in fp32 alone). Now the decision comes first, from the coarsest map
already known for the same image and class (a /why's coarse map, before its fine one), or where none is
known from a probe of four quadrants (patch 112, stride 112: four whole-network passes and the clean one):

- fp32 where that coarser level's largest |value| is below ``BF16_MAP_NOISE`` x :data:`COARSE_MARGIN`,
  else the map's own precision. The largest |value|, not the range: the renderer scales its colours to it
  (model/render.py), so bf16's error shows as a pattern only where every value is near the noise; a map
  whose drops are all large and alike (a small range) shows one colour, and bf16 cannot change that.
  A finer patch hides less, so its drops are mostly smaller than a coarser level's: the margin (3) is a
  safety factor for that, chosen, not yet fitted to measured coarse-to-fine ratios (docs/benchmarks.md).

Each decision is logged with its reason. The ranges are kept per (image digest, class) in a small LRU shared by
one engine's explainers (:class:`CoarseRanges`).
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .occlusion_grid import grid_positions, occluded_copies

PROBE_PATCH = 112  # the quadrant probe: 4 positions on a 224 image
COARSE_MARGIN = 3.0
KEPT = 64  # images whose coarse ranges are remembered (a /why's coarse and fine maps are minutes apart at most)


def image_digest(image: np.ndarray) -> str:
    """A digest of the normalized image's bytes (the same photo decodes to the same array)."""
    return hashlib.sha1(np.ascontiguousarray(image, dtype=np.float32).tobytes()).hexdigest()


@dataclass(frozen=True)
class MapDecision:
    precision: str
    reason: str


def decide(precision: str, coarse_range: float, coarse_patch: int, noise: float, margin: float = COARSE_MARGIN) -> MapDecision:
    """The precision for a map asked in ``precision``, given the range of a coarser level (patch ``coarse_patch``)."""
    if precision == "fp32":
        return MapDecision("fp32", "fp32 asked")
    if coarse_range < noise * margin:
        return MapDecision("fp32", f"the {coarse_patch}-pixel level's largest drop {coarse_range:.4f} is within {precision} "
                                   f"noise (below {margin:g} x {noise:.3f}): computed in fp32")
    return MapDecision(precision, f"the {coarse_patch}-pixel level's largest drop {coarse_range:.4f} is well above "
                                  f"{precision} noise: computed in {precision}")


class CoarseRanges:
    """(image digest, class) -> (patch, map range) of the coarsest map computed; thread-safe, bounded."""

    def __init__(self, kept: int = KEPT):
        self._kept, self._lock = kept, threading.Lock()
        self._ranges: OrderedDict[tuple[str, int], tuple[int, float]] = OrderedDict()

    def coarser_than(self, digest: str, target: int, patch: int) -> tuple[int, float] | None:
        """The recorded (patch, range) for this image and class if its patch is larger than ``patch``."""
        with self._lock:
            found = self._ranges.get((digest, target))
            if found is not None:
                self._ranges.move_to_end((digest, target))
        return found if found is not None and found[0] > patch else None

    def record(self, digest: str, target: int, patch: int, value_range: float) -> None:
        """Keep the coarsest level's range (a larger patch replaces a smaller one, not the reverse)."""
        with self._lock:
            old = self._ranges.get((digest, target))
            if old is None or patch >= old[0]:
                self._ranges[(digest, target)] = (patch, value_range)
            self._ranges.move_to_end((digest, target))
            while len(self._ranges) > self._kept:
                self._ranges.popitem(last=False)


def decide_map(ranges: CoarseRanges, image: np.ndarray, target: int | None, patch: int, precision: str,
               probabilities: Callable[[np.ndarray], np.ndarray], noise: float) -> tuple[MapDecision, int]:
    """(the decision for one map of ``image``, its target) for the NumPy engines (model/openvino_engine.py and
    model/openvino_incremental.py): the coarser level kept in ``ranges`` for this image and class, or where none is
    kept the quadrant probe, run with ``probabilities`` (N x 3 x H x W -> N x classes) in the map's asked
    precision and kept as this image's coarse level."""
    clean = probabilities(image[None])[0]
    target = int(clean.argmax()) if target is None else target
    if not 0 <= target < len(clean):
        raise ValueError(f"target {target} out of range for {len(clean)} classes")
    digest = image_digest(image)
    coarse = ranges.coarser_than(digest, target, patch)
    if coarse is None:
        probe = max(1, min(PROBE_PATCH, image.shape[-1] // 2))
        corners = [(top, left) for top in grid_positions(image.shape[-1], probe, probe)
                   for left in grid_positions(image.shape[-1], probe, probe)]
        quadrants = probabilities(occluded_copies(image, corners, probe))[:, target]
        coarse = (probe, float(np.abs(float(clean[target]) - quadrants).max()))
        ranges.record(digest, target, *coarse)
    return decide(precision, coarse[1], coarse[0], noise), target

"""An occlusion map and the grid it came from, as plain numpy arrays: no torch, so a gateway bot that draws
maps computed on a cluster (bot/inference/cluster.py) reads them without loading a model."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class OcclusionResult:
    """Plain numpy arrays and numbers only (picklable, no tensors), so a result can cross processes."""

    occlusion_map: np.ndarray  # float32, (G, G), G = (size - patch) // stride + 1
    target: int  # the class index explained
    probability: float  # P(target | clean image)
    probability_grid: np.ndarray | None = None  # float32, (classes, G, G): P(class | image occluded at (row, col))
    clean_probabilities: np.ndarray | None = None  # float32, (classes,): P(class | clean image)

    def for_target(self, target: int) -> OcclusionResult:
        """The result for another class, from the kept grid (no inference)."""
        if target == self.target:
            return self
        if self.probability_grid is None or self.clean_probabilities is None:
            raise ValueError("this result kept only its own class's map")
        if not 0 <= target < len(self.clean_probabilities):
            raise ValueError(f"target {target} out of range for {len(self.clean_probabilities)} classes")
        clean = self.clean_probabilities[target]
        return replace(self, occlusion_map=(clean - self.probability_grid[target]).astype(np.float32), target=target,
                       probability=float(clean))

    def top_classes(self, count: int) -> list[int]:
        """The ``count`` most probable classes of the clean image, most probable first."""
        if self.clean_probabilities is None:
            return [self.target]
        return [int(i) for i in np.argsort(-self.clean_probabilities, kind="stable")[:count]]

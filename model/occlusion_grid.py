"""The occlusion grid in NumPy, shared by every engine (no torch): where the patches go, the occluded
copies, and the bf16 map rule's constants (the map's definition is in :mod:`model.occlusion`)."""
from __future__ import annotations

import numpy as np

# How far a bf16 map's values may lie from the fp32 map's: the largest difference measured on a model trained
# on the synthetic separable classes was 0.010 (bench/bench_precision.py --parts maps; docs/benchmarks.md).
BF16_MAP_TOLERANCE = 0.015
# A bf16 map whose max - min is below this (twice the tolerance) could be mostly noise: it is redone in fp32.
BF16_MAP_NOISE = 2 * BF16_MAP_TOLERANCE


def grid_positions(size: int, patch: int, stride: int) -> list[int]:
    """Top (or left) coordinates of the patch along one axis: 0, s, 2s, ... while start + patch <= size."""
    if patch < 1 or stride < 1 or patch > size:
        raise ValueError(f"need 1 <= patch <= {size} and stride >= 1 (got patch={patch}, stride={stride})")
    return list(range(0, size - patch + 1, stride))


def occluded_copies(image: np.ndarray, corners: list[tuple[int, int]], patch: int) -> np.ndarray:
    """Copies of ``image`` (3 x H x W float32), one per (top, left) corner, each with its patch set to 0."""
    batch = np.repeat(image[None], len(corners), axis=0)
    for k, (top, left) in enumerate(corners):
        batch[k, :, top : top + patch, left : left + patch] = 0
    return batch


def no_pause(done: int, total: int) -> None:
    """The ``between_batches`` hook of a map nobody pauses or abandons."""
    return None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, returned as float32 (as torch.softmax of float32 logits, to ~1e-7): every
    NumPy engine's probabilities, so their maps compare position by position."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

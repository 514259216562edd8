"""Occlusion heat maps: how much the predicted class's probability drops when a patch is hidden.

Definition (a contract shared with the CLI, the bot and the tests): for the class ``c`` explained and the
normalized 224 x 224 image ``x``, for each patch position (i, j) = (row * stride, col * stride) with
``i + patch <= 224``, set ``x[:, i:i+patch, j:j+patch] = 0`` (the ImageNet mean colour after normalization)
and record ``map[row, col] = P(c | x) - P(c | occluded x)`` (softmax probabilities).

Each pass yields every class's probability at every position, so an :class:`OcclusionResult` keeps that
whole grid: the map for any other class (a "why not …?") is then arithmetic, no new inference.
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from .incremental import IncrementalOcclusion
from .incremental_plan import UnsupportedNetwork

log = logging.getLogger(__name__)

METHODS = ("incremental", "batched", "naive")

# Called before each batch of patch positions with (positions done, positions in all): a progress bar,
# or a scheduler's pause point (it may block, or raise to abandon the map).
BetweenBatches = Callable[[int, int], None]


def _no_pause(done: int, total: int) -> None:
    return None
# The incremental engine recomputes windows about a third of the size of whole-network activations, so
# it takes this many times ``batch_size`` positions per batch at about the same memory; fewer, larger
# ops also suffer less from thread hand-offs on a busy 2-core machine.
INCREMENTAL_BATCH_FACTOR = 3


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


def grid_positions(size: int, patch: int, stride: int) -> list[int]:
    """Top (or left) coordinates of the patch along one axis: 0, s, 2s, ... while start + patch <= size."""
    if patch < 1 or stride < 1 or patch > size:
        raise ValueError(f"need 1 <= patch <= {size} and stride >= 1 (got patch={patch}, stride={stride})")
    return list(range(0, size - patch + 1, stride))


def occluded_batch(image: torch.Tensor, corners: list[tuple[int, int]], patch: int) -> torch.Tensor:
    """Copies of ``image`` (3 x H x W), one per (top, left) corner, each with its patch set to 0."""
    batch = image.unsqueeze(0).repeat(len(corners), 1, 1, 1)
    for k, (top, left) in enumerate(corners):
        batch[k, :, top : top + patch, left : left + patch] = 0
    return batch


@torch.inference_mode()
def _probabilities(network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    logits = network(batch.contiguous(memory_format=torch.channels_last))
    return torch.softmax(logits.float(), dim=1)


def _check_image(image: torch.Tensor) -> torch.Tensor:
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] != image.shape[2]:
        raise ValueError(f"expected a normalized 3 x H x H image tensor, got shape {tuple(image.shape)}")
    return image.detach().float().cpu()


@torch.inference_mode()
def naive_probability_grid(network: torch.nn.Module, image: torch.Tensor, patch: int, stride: int,
                           between_batches: BetweenBatches = _no_pause) -> np.ndarray:
    """The reference: one whole-network forward pass per patch position, batch 1 (classes x G x G). Slow."""
    image = _check_image(image)
    positions = grid_positions(image.shape[-1], patch, stride)
    result = None
    for row, top in enumerate(positions):
        for col, left in enumerate(positions):
            between_batches(row * len(positions) + col, len(positions) ** 2)
            probs = _probabilities(network, occluded_batch(image, [(top, left)], patch))[0].numpy()
            if result is None:
                result = np.zeros((len(probs), len(positions), len(positions)), dtype=np.float32)
            result[:, row, col] = probs
    return result


def naive_occlusion_map(network: torch.nn.Module, image: torch.Tensor, target: int, patch: int, stride: int,
                        between_batches: BetweenBatches = _no_pause) -> np.ndarray:
    """The reference map for ``target`` (see :func:`naive_probability_grid`); kept for tests."""
    clean = float(_probabilities(network, _check_image(image).unsqueeze(0))[0, target])
    return clean - naive_probability_grid(network, image, patch, stride, between_batches)[target]


@torch.inference_mode()
def batched_probability_grid(network: torch.nn.Module, image: torch.Tensor, patch: int, stride: int,
                             batch_size: int = 16, between_batches: BetweenBatches = _no_pause) -> np.ndarray:
    """Whole-network forward passes over batches of occluded copies (classes x G x G probabilities)."""
    image = _check_image(image)
    positions = grid_positions(image.shape[-1], patch, stride)
    corners = [(top, left) for top in positions for left in positions]
    grid = None
    for start in range(0, len(corners), batch_size):
        chunk = corners[start : start + batch_size]
        between_batches(start, len(corners))
        probs = _probabilities(network, occluded_batch(image, chunk, patch)).numpy()
        if grid is None:
            grid = np.zeros((probs.shape[1], len(corners)), dtype=np.float32)
        grid[:, start : start + len(chunk)] = probs.T
    return grid.reshape(-1, len(positions), len(positions))


@torch.inference_mode()
def batched_occlusion_map(
    network: torch.nn.Module, image: torch.Tensor, target: int, patch: int, stride: int, batch_size: int = 16,
    clean_probability: float | None = None, between_batches: BetweenBatches = _no_pause,
) -> np.ndarray:
    """The map for ``target`` by :func:`batched_probability_grid` (the straightforward fast-ish way)."""
    if clean_probability is None:
        clean_probability = float(_probabilities(network, _check_image(image).unsqueeze(0))[0, target])
    return clean_probability - batched_probability_grid(network, image, patch, stride, batch_size, between_batches)[target]


def incremental_probability_grid(engine: IncrementalOcclusion, image: torch.Tensor, patch: int, stride: int,
                                 batch_size: int, between_batches: BetweenBatches = _no_pause) -> np.ndarray:
    """Every class's probability at every position (classes x G x G) by incremental inference: one clean
    pass, then only the reachable windows per position."""
    prepared = engine.prepare(_check_image(image), patch, stride)
    count = len(prepared.starts)
    grid = None
    done = 0
    for chunk in prepared.batches(batch_size):
        between_batches(done, count * count)
        done += len(chunk)
        probs = torch.softmax(prepared.logits(chunk).float(), dim=1).numpy()
        if grid is None:
            grid = np.zeros((probs.shape[1], count, count), dtype=np.float32)
        rows, cols = zip(*chunk)
        grid[:, list(rows), list(cols)] = probs.T
    return grid


def incremental_occlusion_map(
    engine: IncrementalOcclusion, image: torch.Tensor, target: int, patch: int, stride: int, batch_size: int,
    clean_probability: float, between_batches: BetweenBatches = _no_pause,
) -> np.ndarray:
    """The map for ``target`` by :func:`incremental_probability_grid`."""
    return clean_probability - incremental_probability_grid(engine, image, patch, stride, batch_size, between_batches)[target]


class OcclusionExplainer:
    """Constructed once with the network and settings, called on normalized image tensors.

    ``batch_size`` is the number of positions per whole-network pass (``INCREMENTAL_BATCH_FACTOR`` times
    that for the incremental engine). ``method``: ``incremental`` (recompute only what each patch can reach; falls back to ``batched``
    for networks that are not a torchvision ResNet), ``batched`` (whole network, batched) or ``naive``
    (batch 1 reference). All three give the same map. ``network`` may also be a loaded classifier
    (anything with a ``.network``).
    """

    def __init__(self, network: torch.nn.Module, patch: int = 16, stride: int = 8, batch_size: int = 16,
                 method: str = "incremental"):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if patch < 1 or stride < 1 or batch_size < 1:
            raise ValueError("patch, stride and batch_size must be positive")
        if not isinstance(network, torch.nn.Module) and isinstance(getattr(network, "network", None), torch.nn.Module):
            network = network.network
        self.network = network.eval()
        self._engine: IncrementalOcclusion | None = None
        if method == "incremental":
            try:
                self._engine = IncrementalOcclusion(self.network)
            except UnsupportedNetwork as exc:
                log.warning("incremental occlusion unavailable (%s); using batched whole-network passes", exc)
        self.patch = patch
        self.stride = stride
        self.batch_size = batch_size
        self.method = method

    def with_settings(self, patch: int, stride: int) -> OcclusionExplainer:
        """The same explainer with another patch/stride, sharing the folded network (about 100 MB for ResNet50)."""
        if patch < 1 or stride < 1:
            raise ValueError("patch and stride must be positive")
        other = copy.copy(self)
        other.patch, other.stride = patch, stride
        return other

    @torch.inference_mode()
    def explain(self, image: torch.Tensor, target: int | None = None, *,
                between_batches: BetweenBatches | None = None) -> OcclusionResult:
        """The map for ``target`` (default: the predicted class). ``between_batches(done, total)`` runs
        before each batch of positions, in the calling thread: it may block (yield the cores) or raise
        (abandon the map); the clean pass before the first call is one batch-1 forward."""
        between_batches = between_batches or _no_pause
        image = _check_image(image)
        grid_positions(image.shape[-1], self.patch, self.stride)  # validates the settings for this size
        clean = _probabilities(self.network, image.unsqueeze(0))[0]
        if target is None:
            target = int(clean.argmax())
        if not 0 <= target < clean.numel():
            raise ValueError(f"target {target} out of range for {clean.numel()} classes")
        if self.method == "naive":
            grid = naive_probability_grid(self.network, image, self.patch, self.stride, between_batches)
        elif self._engine is not None:
            grid = incremental_probability_grid(self._engine, image, self.patch, self.stride,
                                                self.batch_size * INCREMENTAL_BATCH_FACTOR, between_batches)
        else:
            grid = batched_probability_grid(self.network, image, self.patch, self.stride, self.batch_size, between_batches)
        clean_probabilities = clean.numpy().astype(np.float32)
        probability = float(clean[target])
        return OcclusionResult(occlusion_map=(probability - grid[target]).astype(np.float32), target=target,
                               probability=probability, probability_grid=grid, clean_probabilities=clean_probabilities)

    def __call__(self, image: torch.Tensor, target: int | None = None, *,
                 between_batches: BetweenBatches | None = None) -> np.ndarray:
        return self.explain(image, target, between_batches=between_batches).occlusion_map

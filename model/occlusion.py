"""Occlusion heat maps: how much the predicted class's probability drops when a patch is hidden.

Definition (a contract shared with the CLI, the bot and the tests): for the class ``c`` explained and the
normalized 224 x 224 image ``x``, for each patch position (i, j) = (row * stride, col * stride) with
``i + patch <= 224``, set ``x[:, i:i+patch, j:j+patch] = 0`` (the ImageNet mean colour after normalization)
and record ``map[row, col] = P(c | x) - P(c | occluded x)`` (softmax probabilities).

Each pass yields every class's probability at every position, so an :class:`OcclusionResult` keeps that
whole grid: the map for any other class (a "why not …?") is then arithmetic, no new inference.

Precision: a map is computed in one precision throughout (the clean and the occluded probabilities from
the same forward pass), fp32 or bf16. A bf16 map's values lie within :data:`BF16_MAP_TOLERANCE` of the
fp32 map's, so a bf16 map whose whole range is within :data:`BF16_MAP_NOISE` would show noise as if it
meant something: such a map is computed in fp32, decided once before its grid from a coarser level of the
same image (:mod:`model.map_precision`; the README, "Heat maps in bf16").
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import numpy as np
import torch

from .incremental import IncrementalOcclusion
from .incremental_plan import UnsupportedNetwork
from .map_precision import PROBE_PATCH, CoarseRanges, decide, image_digest
from .occlusion_grid import BF16_MAP_NOISE, BF16_MAP_TOLERANCE  # noqa: F401 (re-exported)
from .occlusion_result import OcclusionResult
from .precision import DTYPES

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
# Where a faster whole-network forward pass than torch's exists (OpenVINO: :mod:`model.openvino_runtime`),
# batched passes of it are used instead of the incremental engine once the engine would still compute more
# than this fraction of a whole pass's multiply-adds per position (56/28: 0.59, 16/8: 0.42, 8/4: 0.41).
# bf16: always. On a quiet machine the engine in torch bf16 was 1.4x faster at 16/8, but with one core
# busy torch's two OpenMP threads wait for each other at every layer and it was 3-4x slower than OpenVINO
# (16/8: 17.3 s against 4.6 s; 8/4: 115 s against 37 s), and a bot's cores are rarely quiet.
# fp32: OpenVINO's fp32 is only ~1.3x torch's per image, so the engine's saving wins from 16/8 down.
FAST_FORWARD_ABOVE = {"bf16": 0.0, "fp32": 0.7}

Forward = Callable[[torch.Tensor], torch.Tensor]  # normalized N x 3 x H x W batch -> logits


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
def _probabilities(network: Forward, batch: torch.Tensor) -> torch.Tensor:
    logits = network(batch.contiguous(memory_format=torch.channels_last))
    return torch.softmax(logits.float(), dim=1).cpu()


def _check_image(image: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3 or image.shape[1] != image.shape[2]:
        raise ValueError(f"expected a normalized 3 x H x H image tensor, got shape {tuple(image.shape)}")
    return image.detach().float().to(device)


class _InDtype:
    """``network`` run in another dtype (its own copy of the weights), returning fp32 logits."""

    def __init__(self, network: torch.nn.Module, dtype: torch.dtype):
        self.dtype, self.network = dtype, copy.deepcopy(network).to(dtype)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network(batch.to(self.dtype)).float()


@torch.inference_mode()
def naive_probability_grid(network: Forward, image: torch.Tensor, patch: int, stride: int,
                           between_batches: BetweenBatches = _no_pause) -> np.ndarray:
    """The reference: one whole-network forward pass per patch position, batch 1 (classes x G x G). Slow."""
    image = _check_image(image, _device_of(network))
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


def naive_occlusion_map(network: Forward, image: torch.Tensor, target: int, patch: int, stride: int,
                        between_batches: BetweenBatches = _no_pause) -> np.ndarray:
    """The reference map for ``target`` (see :func:`naive_probability_grid`); kept for tests."""
    clean = float(_probabilities(network, _check_image(image, _device_of(network)).unsqueeze(0))[0, target])
    return clean - naive_probability_grid(network, image, patch, stride, between_batches)[target]


@torch.inference_mode()
def batched_probability_grid(network: Forward, image: torch.Tensor, patch: int, stride: int,
                             batch_size: int = 16, between_batches: BetweenBatches = _no_pause) -> np.ndarray:
    """Whole-network forward passes over batches of occluded copies (classes x G x G probabilities);
    ``network`` may be any forward pass (e.g. OpenVINO's, :mod:`model.openvino_runtime`)."""
    image = _check_image(image, _device_of(network))
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
    network: Forward, image: torch.Tensor, target: int, patch: int, stride: int, batch_size: int = 16,
    clean_probability: float | None = None, between_batches: BetweenBatches = _no_pause,
) -> np.ndarray:
    """The map for ``target`` by :func:`batched_probability_grid` (the straightforward fast-ish way)."""
    if clean_probability is None:
        clean_probability = float(_probabilities(network, _check_image(image, _device_of(network)).unsqueeze(0))[0, target])
    return clean_probability - batched_probability_grid(network, image, patch, stride, batch_size, between_batches)[target]


def _device_of(network: Forward) -> torch.device:
    parameter = next(network.parameters(), None) if isinstance(network, torch.nn.Module) else None
    return parameter.device if parameter is not None else torch.device("cpu")


def _incremental_grid(prepared, batch_size: int, between_batches: BetweenBatches) -> np.ndarray:
    count = len(prepared.starts)
    grid = None
    done = 0
    for chunk in prepared.batches(batch_size):
        between_batches(done, count * count)
        done += len(chunk)
        probs = torch.softmax(prepared.logits(chunk).float(), dim=1).cpu().numpy()
        if grid is None:
            grid = np.zeros((probs.shape[1], count, count), dtype=np.float32)
        rows, cols = zip(*chunk)
        grid[:, list(rows), list(cols)] = probs.T
    return grid


def incremental_probability_grid(engine: IncrementalOcclusion, image: torch.Tensor, patch: int, stride: int,
                                 batch_size: int, between_batches: BetweenBatches = _no_pause) -> np.ndarray:
    """Every class's probability at every position (classes x G x G) by incremental inference: one clean
    pass, then only the reachable windows per position."""
    prepared = engine.prepare(_check_image(image, engine.plan.device), patch, stride)
    return _incremental_grid(prepared, batch_size, between_batches)


def incremental_occlusion_map(
    engine: IncrementalOcclusion, image: torch.Tensor, target: int, patch: int, stride: int, batch_size: int,
    clean_probability: float | None = None, between_batches: BetweenBatches = _no_pause,
) -> np.ndarray:
    """The map for ``target`` by incremental inference (``clean_probability`` default: the engine's own clean
    pass, in its dtype)."""
    prepared = engine.prepare(_check_image(image, engine.plan.device), patch, stride)
    if clean_probability is None:
        clean_probability = float(torch.softmax(prepared.clean_logits.float(), dim=1)[0, target])
    return clean_probability - _incremental_grid(prepared, batch_size, between_batches)[target]


class OcclusionExplainer:
    """Constructed once with the network and settings, called on normalized image tensors.

    ``batch_size`` is the number of positions per whole-network pass (``INCREMENTAL_BATCH_FACTOR`` times
    that for the incremental engine). ``method``: ``incremental`` (recompute only what each patch can reach; falls back to ``batched``
    for networks that are not a torchvision ResNet), ``batched`` (whole network, batched) or ``naive``
    (batch 1 reference). All three give the same map. ``network`` may also be a loaded classifier
    (anything with a ``.network``); the map is computed on the network's device.

    ``precision`` (``fp32`` or ``bf16``) is what the map is computed in; ``forward`` (optional) is a
    whole-network forward pass in that precision for the ``batched`` and ``naive`` methods, e.g. a
    classifier's OpenVINO ``runner``; by default the torch network in that dtype. With ``fast_forward``
    True, that ``forward`` is faster per image than torch, and ``incremental`` uses batched passes of it
    instead wherever the engine would save too little (:data:`FAST_FORWARD_ABOVE`): the fastest exact
    path per patch/stride. A bf16 map within :data:`BF16_MAP_NOISE` is computed in fp32 instead (module docstring).
    """

    def __init__(self, network: torch.nn.Module, patch: int = 16, stride: int = 8, batch_size: int = 16,
                 method: str = "incremental", precision: str = "fp32", forward: Forward | None = None,
                 fast_forward: bool = False):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
        if patch < 1 or stride < 1 or batch_size < 1:
            raise ValueError("patch, stride and batch_size must be positive")
        if not isinstance(network, torch.nn.Module) and isinstance(getattr(network, "network", None), torch.nn.Module):
            network = network.network
        self.network = network.eval()
        self.precision = precision
        self._device = _device_of(self.network)
        self._forward = forward
        self._fast_forward = fast_forward and forward is not None
        self._engine: IncrementalOcclusion | None = None
        if method == "incremental":
            try:
                self._engine = IncrementalOcclusion(self.network, DTYPES[precision])
            except UnsupportedNetwork as exc:
                log.warning("incremental occlusion unavailable (%s); using batched whole-network passes", exc)
        self._fp32: OcclusionExplainer | None = None  # made when a bf16 map is decided to be fp32
        self.coarse_ranges = CoarseRanges()  # shared with with_settings() copies and the fp32 explainer
        self.patch = patch
        self.stride = stride
        self.batch_size = batch_size
        self.method = method
        self.mode = "exact"  # WHY_MODE; "adaptive" only through with_mode(), for the fine map

    @classmethod
    def for_classifier(cls, classifier, patch: int = 16, stride: int = 8, batch_size: int = 16) -> OcclusionExplainer:
        """The explainer for a prepared classifier (:func:`model.runtime.prepare_model`): in its precision, on its
        device, with its OpenVINO forward pass where that serves it."""
        precision = classifier.map_precision or classifier.precision  # int8 classifies, maps in bf16/fp32
        forward = classifier.map_runner or classifier.runner
        if classifier.runtime == "openvino" and getattr(forward, "model", None) is not None:
            from .openvino_occlusion import OpenVINOOcclusion, queue_settings

            forward = OpenVINOOcclusion(forward.model, precision, **queue_settings(forward.threads))
        return cls(classifier.network, patch, stride, batch_size, precision=precision,
                   forward=forward, fast_forward=classifier.runtime == "openvino")

    def with_settings(self, patch: int, stride: int) -> OcclusionExplainer:
        """The same explainer with another patch/stride, sharing the folded network (about 100 MB for ResNet50)."""
        if patch < 1 or stride < 1:
            raise ValueError("patch and stride must be positive")
        other = copy.copy(self)
        other.patch, other.stride, other.mode = patch, stride, "exact"
        return other

    @property
    def forward(self) -> Forward:
        """The whole-network forward pass in this explainer's precision (made on first use)."""
        if self._forward is None:
            self._forward = self.network if self.precision == "fp32" else _InDtype(self.network, DTYPES[self.precision])
        return self._forward

    @torch.inference_mode()
    def explain(self, image: torch.Tensor, target: int | None = None, *,
                between_batches: BetweenBatches | None = None) -> OcclusionResult:
        """The map for ``target`` (default: the predicted class). ``between_batches(done, total)`` runs
        before each batch of positions, in the calling thread: it may block (yield the cores) or raise
        (abandon the map); the clean pass before the first call is one batch-1 forward.

        A map asked in bf16 is computed in bf16 or fp32 as decided once, before its grid, from a coarser level
        of the same image (:mod:`model.map_precision`): no map is computed twice."""
        between_batches = between_batches or _no_pause
        image = _check_image(image, self._device)
        grid_positions(image.shape[-1], self.patch, self.stride)  # validates the settings for this size
        digest = image_digest(image.cpu().numpy())
        explainer = self
        if self.precision != "fp32":
            explainer, target = self._decide(image, target, digest)
        result = explainer._explain(image, target, between_batches)
        self.coarse_ranges.record(digest, result.target, self.patch, float(np.abs(result.occlusion_map).max()))
        return result

    def _decide(self, image: torch.Tensor, target: int | None, digest: str) -> tuple[OcclusionExplainer, int]:
        """(the explainer in the precision decided for this map, the target): see :mod:`model.map_precision`."""
        clean = None
        if target is None:
            clean = _probabilities(self.forward, image.unsqueeze(0))[0]
            target = int(clean.argmax())
        coarse = self.coarse_ranges.coarser_than(digest, target, self.patch)
        if coarse is None:  # no coarser map of this image yet: the quadrant probe is its coarse level
            if clean is None:
                clean = _probabilities(self.forward, image.unsqueeze(0))[0]
            if not 0 <= target < clean.numel():
                raise ValueError(f"target {target} out of range for {clean.numel()} classes")
            quadrants = batched_probability_grid(self.forward, image, PROBE_PATCH, PROBE_PATCH, 4)[target]
            coarse = (PROBE_PATCH, float(np.abs(float(clean[target]) - quadrants).max()))
            self.coarse_ranges.record(digest, target, *coarse)
        decision = decide(self.precision, coarse[1], coarse[0], BF16_MAP_NOISE)
        log.info("the %dx%d map: %s", self.patch, self.stride, decision.reason)
        return (self if decision.precision == self.precision else self.in_fp32()), target

    def _explain(self, image: torch.Tensor, target: int | None, between_batches: BetweenBatches) -> OcclusionResult:
        prepared = None
        if self.method != "naive" and self._engine is not None:  # its clean pass, in its precision
            prepared = self._engine.prepare(image, self.patch, self.stride)
            if self._fast_forward and self.engine_share(prepared) > FAST_FORWARD_ABOVE[self.precision]:
                prepared = None
        if prepared is not None:
            clean = torch.softmax(prepared.clean_logits.float(), dim=1)[0].cpu()
        else:
            clean = _probabilities(self.forward, image.unsqueeze(0))[0]
        if target is None:
            target = int(clean.argmax())
        if not 0 <= target < clean.numel():
            raise ValueError(f"target {target} out of range for {clean.numel()} classes")
        if self.method == "naive":
            grid = naive_probability_grid(self.forward, image, self.patch, self.stride, between_batches)
        elif prepared is not None:
            grid = _incremental_grid(prepared, self.batch_size * INCREMENTAL_BATCH_FACTOR, between_batches)
        elif self.mode == "adaptive":  # WHY_MODE=adaptive, fine maps only (model/adaptive_occlusion.py)
            grid = self._adaptive_grid(image, clean.numpy(), target, between_batches)
        elif hasattr(self.forward, "probability_grid"):  # OpenVINO's async queue (model/openvino_occlusion.py)
            grid = self.forward.probability_grid(image.cpu().numpy(), self.patch, self.stride, self.batch_size,
                                                 between_batches)
        else:
            grid = batched_probability_grid(self.forward, image, self.patch, self.stride, self.batch_size, between_batches)
        probability = float(clean[target])
        occlusion = (probability - grid[target]).astype(np.float32)
        return OcclusionResult(occlusion_map=occlusion, target=target, probability=probability, probability_grid=grid,
                               clean_probabilities=clean.numpy().astype(np.float32))

    def _adaptive_grid(self, image: torch.Tensor, clean: np.ndarray, target: int, between_batches: BetweenBatches) -> np.ndarray:
        from .adaptive_occlusion import adaptive_probability_grid

        done = [0]

        def probabilities_at(corners: list[tuple[int, int]]) -> np.ndarray:
            out = []
            for start in range(0, len(corners), self.batch_size):
                between_batches(done[0], len(corners))
                chunk = corners[start : start + self.batch_size]
                out.append(_probabilities(self.forward, occluded_batch(image, chunk, self.patch)).numpy())
                done[0] += len(chunk)
            return np.concatenate(out)

        starts = grid_positions(image.shape[-1], self.patch, self.stride)
        return adaptive_probability_grid(probabilities_at, starts, clean, target)[0]

    def with_mode(self, mode: str) -> OcclusionExplainer:
        """The same explainer computing its grid ``exact`` (every position) or ``adaptive`` (an approximation)."""
        if mode not in ("exact", "adaptive"):
            raise ValueError(f"mode must be exact or adaptive, got {mode!r}")
        other = copy.copy(self)
        other.mode = mode
        return other

    def engine_share(self, prepared) -> float:
        """The incremental engine's multiply-adds per position as a fraction of a whole forward pass's."""
        batched, _, full = prepared.multiply_adds(prepared.batches(self.batch_size * INCREMENTAL_BATCH_FACTOR))
        return batched / full

    def in_fp32(self) -> OcclusionExplainer:
        """This explainer computing in fp32 (itself when it already does)."""
        if self.precision == "fp32":
            return self
        if self._fp32 is None:
            self._fp32 = OcclusionExplainer(self.network, self.patch, self.stride, self.batch_size, self.method)
            self._fp32.coarse_ranges = self.coarse_ranges
        fp32 = self._fp32.with_settings(self.patch, self.stride)
        fp32.mode = self.mode
        return fp32

    def __call__(self, image: torch.Tensor, target: int | None = None, *,
                 between_batches: BetweenBatches | None = None) -> np.ndarray:
        return self.explain(image, target, between_batches=between_batches).occlusion_map


class ExplainersBySetting:
    """One :class:`OcclusionExplainer` per (patch, stride) for a prepared classifier, made on first use; coarse
    and fine maps share one folded copy of the network (about 100 MB for ResNet50)."""

    def __init__(self, classifier, batch_size: int, adaptive: tuple[int, int] | None = None):
        """``adaptive``: the one (patch, stride) computed approximately (WHY_MODE=adaptive: the fine map); None: all exact."""
        self._classifier, self._batch_size, self._adaptive = classifier, batch_size, adaptive
        self._made: dict[tuple[int, int], OcclusionExplainer] = {}

    def __call__(self, patch: int, stride: int) -> OcclusionExplainer:
        key = (patch, stride)
        if key not in self._made:
            if self._made:
                self._made[key] = next(iter(self._made.values())).with_settings(patch, stride)
            else:
                self._made[key] = OcclusionExplainer.for_classifier(self._classifier, patch, stride, self._batch_size)
            if key == self._adaptive:
                self._made[key] = self._made[key].with_mode("adaptive")
        return self._made[key]

"""What serving needs of a model, whichever runtime computes it: the typed contract between the inference
backends (the bot's scheduler, the cluster's replicas) and the compute (torch, OpenVINO).

NumPy in and out, no torch here: a bot whose model runs on OpenVINO from an exported IR never imports torch,
and the scheduler that drives an engine does not know which one it drives. Implementations:

- the torch engine (a prepared :class:`model.predict.Classifier`: torch eager/graph, or OpenVINO converted
  from the checkpoint at start), which imports torch;
- the OpenVINO engine on an export (the IR and manifest beside the checkpoint), which does not.

An engine is made ready once (device, runtime and precision chosen, each with its reason in
:attr:`ServingEngine.preparation`), then called from several threads: :meth:`probabilities` and an
explainer's ``explain`` may run side by side on different threads, each after :meth:`use_threads` on its own.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import numpy as np

from .occlusion_result import OcclusionResult
from .preprocess import PreprocessConfig

# Called before each batch of patch positions with (positions done, positions in all): a progress bar, or a
# scheduler's pause point (it may block, or raise to abandon the map).
BetweenBatches = Callable[[int, int], None]


class Preparation(Protocol):
    """How an engine computes, and why (for the log, /stats and the metrics' model info)."""

    runtime: str  # "torch" or "openvino"
    precision: str  # "fp32", "bf16" (later "int8")
    device: str  # "cpu" or "cuda"

    def describe(self) -> str: ...


@runtime_checkable
class MapExplainer(Protocol):
    """One occlusion setting (patch, stride) of an engine: a normalized 3 x H x W image -> its map and grid."""

    patch: int
    stride: int

    def explain(self, image: np.ndarray, target: int | None = None, *,
                between_batches: BetweenBatches | None = None) -> OcclusionResult: ...


@runtime_checkable
class ServingEngine(Protocol):
    """A model ready to serve: decode, classify batches, explain (see the module docstring)."""

    class_names: list[str]
    checkpoint_id: str  # the checkpoint file's sha256: cache keys, journal entries, canary salt
    preprocess_config: PreprocessConfig

    @property
    def preparation(self) -> Preparation | None:
        """None until :meth:`prepare` ran."""
        ...

    def prepare(self, workers: int, threads: int, probe_batch: int) -> Preparation:
        """Choose how to compute (device, runtime, precision, by measurement where asked), on the calling thread,
        as it will be served: ``workers`` threads side by side, ``threads`` compute threads each. Raises
        ValueError for a setting it cannot serve. An engine fixed at export may just return its preparation."""
        ...

    def decode(self, data: bytes) -> np.ndarray:
        """Photo bytes -> the normalized float32 3 x crop x crop array the network takes; raises
        :class:`model.ImageError` for anything that is not a usable picture. Any thread."""
        ...

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x crop x crop float32 -> N x classes float32 softmax probabilities."""
        ...

    def explainer(self, patch: int, stride: int, batch_size: int) -> MapExplainer:
        """The explainer for one setting (made once per setting; explainers share the engine's weights)."""
        ...

    def use_threads(self, threads: int) -> None:
        """How many compute threads the calling OS thread's next passes may use (torch: intra-op threads;
        OpenVINO: its own pool, so nothing to do)."""
        ...

    def warm_up(self, batch: int, threads: int) -> float:
        """One blank pass of ``batch`` photos on ``threads`` threads of the calling thread; its seconds."""
        ...

"""The checkpoints the in-process backend serves: where they are, and loading one the safe way, at start, on a
reload and for a canary alike (:func:`model.engines.load_engine`): its verified OpenVINO export with no torch
where that can serve, else the torch engine (``weights_only``), the reason logged; then, once prepared, a probe
forward pass (:func:`model.engines.probe_engine`). A missing, truncated or foreign file, an export that fails
its check where torch is not installed, or a failed probe, is a :class:`model.CheckpointError`. torch is
imported only for the torch engine: a bot on an export never loads it, and a gateway bot (INFERENCE_ADDRESS)
never loads a model.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model.choices import TorchChoices
    from model.engine import Preparation, ServingEngine

__all__ = ["ModelFiles", "load_engine_for", "prepare_and_probe"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFiles:
    """CHECKPOINT_PATH, and CANARY_CHECKPOINT with its CANARY_SHARE of chats."""

    main: Path | None = None
    canary: Path | None = None
    canary_share: float = 0.0

    @classmethod
    def from_settings(cls, settings) -> ModelFiles:
        return cls(settings.checkpoint_path, settings.canary_checkpoint, settings.canary_share)


def load_engine_for(path, choices: TorchChoices, strict: bool = False) -> ServingEngine:
    """The engine that serves the checkpoint at ``path`` (see the module docstring), not yet prepared; which one,
    and why, is logged. Raises CheckpointError."""
    from model.engines import load_engine

    engine, why = load_engine(path, runtime=choices.runtime, device=choices.device, precision=choices.precision,
                              frozen_graph=choices.frozen_graph, strict=strict, adaptive=choices.adaptive,
                              map_engine=choices.map_engine)
    log.info("%s served by %s", path, why)
    return engine


def prepare_and_probe(engine: ServingEngine, prepare: Callable[[ServingEngine], Preparation]) -> Preparation:
    """``prepare(engine)`` (the scheduler's preparation, first passes included), then the probe pass. Raises
    CheckpointError, also for an export OpenVINO could not compile, and ValueError for a setting it cannot serve."""
    from model.engines import probe_engine
    from model.errors import CheckpointError
    from model.export_manifest import ExportUnusable

    try:
        preparation = prepare(engine)
    except ExportUnusable as error:
        raise CheckpointError(str(error)) from None
    probe_engine(engine)
    return preparation

"""The checkpoints the in-process backend serves: where they are, and loading one the safe way.

A file is loaded with ``weights_only``, then checked with a probe forward pass; a missing, truncated or foreign
file, or one whose probe fails, is a :class:`model.CheckpointError`. torch is imported here only when a file is
loaded: a gateway bot (INFERENCE_ADDRESS) never loads a model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from model import CheckpointError

if TYPE_CHECKING:
    from model import Classifier


@dataclass(frozen=True)
class ModelFiles:
    """CHECKPOINT_PATH, and CANARY_CHECKPOINT with its CANARY_SHARE of chats."""

    main: Path | None = None
    canary: Path | None = None
    canary_share: float = 0.0

    @classmethod
    def from_settings(cls, settings) -> ModelFiles:
        return cls(settings.checkpoint_path, settings.canary_checkpoint, settings.canary_share)


def load_and_probe(path) -> Classifier:
    """The checkpoint at ``path`` as a classifier that has answered one probe image; raises CheckpointError."""
    import torch

    from model import load_classifier

    classifier = load_classifier(path)
    side = classifier.preprocess_config.crop
    try:
        probabilities = classifier.probabilities(torch.zeros(1, 3, side, side))
    except Exception as error:  # a checkpoint that loads but cannot run
        raise CheckpointError(f"the probe forward pass failed: {error}") from None
    if tuple(probabilities.shape) != (1, len(classifier.class_names)) or not all(
            math.isfinite(float(p)) for p in probabilities[0]):
        raise CheckpointError("the probe forward pass gave no valid probabilities")
    return classifier

"""The checkpoints the in-process backend serves: where they are, and loading one the safe way
(:func:`model.predict.load_checked`: ``weights_only``, then a probe forward pass; a missing, truncated or foreign
file, or one whose probe fails, is a :class:`model.CheckpointError`). torch is imported only when a file is
loaded: a gateway bot (INFERENCE_ADDRESS) never loads a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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
    from model.predict import load_checked

    return load_checked(path)

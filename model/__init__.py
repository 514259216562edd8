"""The model package: network, preprocessing, checkpoints, prediction and explanation.

It knows nothing of Telegram or of training; both the bot and the training module build on it.
Names load on first use (PEP 562), so ``from model import Prediction, ImageError`` does not import torch:
a bot that sends its inference to a cluster (INFERENCE_ADDRESS) runs without it.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import CheckpointError, ImageError
from .prediction import Prediction
from .preprocess import PreprocessConfig, open_image, preprocess

# The names that need torch -> the submodule that defines them, imported on first use.
_WHERE = {
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "ProductNet": "network",
    "WeightsError": "network",
    "build_network": "network",
    "Classifier": "predict",
    "load_classifier": "predict",
}

__all__ = [
    "CheckpointError",
    "Classifier",
    "ImageError",
    "Prediction",
    "PreprocessConfig",
    "ProductNet",
    "WeightsError",
    "build_network",
    "load_checkpoint",
    "load_classifier",
    "open_image",
    "preprocess",
    "save_checkpoint",
]

if TYPE_CHECKING:
    from .checkpoint import load_checkpoint, save_checkpoint
    from .network import ProductNet, WeightsError, build_network
    from .predict import Classifier, load_classifier


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value

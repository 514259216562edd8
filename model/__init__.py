"""The model package: network, preprocessing, checkpoints, prediction and explanation.

It knows nothing of Telegram or of training; both the bot and the training module build on it.
"""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .network import ProductNet, WeightsError, build_network
from .predict import Classifier, Prediction, load_classifier
from .preprocess import ImageError, PreprocessConfig, open_image, preprocess

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

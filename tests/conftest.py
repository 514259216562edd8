"""Fixtures shared by every test package: tiny random-init checkpoints and generated photos.

Nothing here touches the network or needs ImageNet weights.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model import build_network, load_classifier, save_checkpoint

SEED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "seed"
CLASS_NAMES = ["kurti", "saree", "shirt"]


def make_photo(width: int = 320, height: int = 240, colour=(200, 40, 40), seed: int = 0) -> Image.Image:
    """A noisy RGB picture with a coloured rectangle, different for each seed."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    array[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = colour
    return Image.fromarray(array, "RGB")


def image_bytes(image: Image.Image, fmt: str = "JPEG", **save_args) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-init ResNet50 checkpoint with three classes (deterministic)."""
    torch.manual_seed(0)
    network = build_network(len(CLASS_NAMES), "none").eval()
    path = tmp_path_factory.mktemp("checkpoint") / "model.pt"
    save_checkpoint(path, network, CLASS_NAMES, training={"weights": "none"}, metrics={"test_accuracy": 0.0})
    return path


@pytest.fixture(scope="session")
def classifier(tiny_checkpoint):
    return load_classifier(tiny_checkpoint)


@pytest.fixture
def photo_jpeg() -> bytes:
    return image_bytes(make_photo())


@pytest.fixture
def seed_data() -> Path:
    if not SEED_DATA.is_dir():
        pytest.skip(f"{SEED_DATA} not present")
    return SEED_DATA

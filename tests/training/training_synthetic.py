"""Generated photo folders for the training tests: nothing is downloaded, nothing needs ImageNet weights.

The three classes differ in texture as well as colour (flat, stripes, a fine checkerboard), because the
augmentation recolours photos (hue, channel swaps, inversion) and a random-init ResNet50 tells textures apart
far better than outlines.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("checks", "plain", "stripes")
COLOURS = {"checks": (50, 70, 230), "plain": (220, 40, 40), "stripes": (40, 200, 60)}


def synthetic_photo(kind: str, seed: int, size: int = 96) -> Image.Image:
    """The class's pattern over the whole frame (random phase, tint and background), plus noise.

    Whole-frame patterns, because a random-init ResNet50's pooled features mostly reflect texture statistics:
    a small shape at a random position is lost in them, a texture is not.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + rng.integers(0, 12)
    if kind == "plain":
        pattern = np.full((size, size), 0.8)
    elif kind == "stripes":
        pattern = ((yy // 10) % 2).astype(float)
    elif kind == "checks":
        pattern = (((yy // 3) + (xx // 3)) % 2).astype(float)
    else:
        raise ValueError(f"unknown synthetic class {kind!r}")
    colour = np.array(COLOURS[kind]) + rng.integers(-25, 26, size=3)
    background = rng.integers(60, 160)
    array = pattern[..., None] * colour + (1 - pattern[..., None]) * background + rng.normal(0, 15, (size, size, 3))
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8), "RGB")


def write_class_folders(root: Path, per_class: int, classes=CLASSES, seed: int = 0) -> Path:
    """``root/<class>/<n>.png`` for each class (names from :data:`CLASSES`)."""
    for c, kind in enumerate(classes):
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            synthetic_photo(kind, seed * 100_000 + c * 1000 + n).save(folder / f"{n:02d}.png")
    return root


def write_split_folders(root: Path, train: int, test: int, classes=CLASSES, seed: int = 0) -> Path:
    """``root/train/<class>/`` and ``root/test/<class>/``."""
    write_class_folders(root / "train", train, classes, seed)
    write_class_folders(root / "test", test, classes, seed + 1)
    return root

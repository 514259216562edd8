"""Augmentation: what the model sees keeps its shape and dtype, but the pixels change, reproducibly."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from training_synthetic import synthetic_photo

from model.preprocess import preprocess
from training.augment import (
    AugmentConfig,
    CropAndPad,
    Emboss,
    augmented_copy,
    build_augmentation,
    copy_seed,
    save_preview_grid,
)


def photo() -> Image.Image:
    return synthetic_photo("stripes", 0, size=120).resize((160, 120))


def test_augmented_photos_keep_shape_and_dtype_after_the_shared_preprocessing():
    clean = preprocess(photo())
    augmentation = build_augmentation()
    for seed in range(8):
        out = augmented_copy(photo(), augmentation, copy_seed(0, 0, seed))
        assert isinstance(out, Image.Image) and out.mode == "RGB"
        tensor = preprocess(out)
        assert tensor.shape == clean.shape == (3, 224, 224)
        assert tensor.dtype == clean.dtype == torch.float32


def test_augmentation_changes_pixels_and_copies_differ():
    clean = preprocess(photo())
    augmentation = build_augmentation()
    copies = [preprocess(augmented_copy(photo(), augmentation, copy_seed(0, 0, c))) for c in range(6)]
    assert all(not torch.equal(copy, clean) for copy in copies)
    assert len({copy.sum().item() for copy in copies}) == len(copies)


def test_the_same_seed_gives_the_same_copy_and_leaves_torch_rng_alone():
    augmentation = build_augmentation()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = np.asarray(augmented_copy(photo(), augmentation, 42))
    assert torch.equal(torch.rand(1), before)  # the global generator was not advanced
    second = np.asarray(augmented_copy(photo(), augmentation, 42))
    assert np.array_equal(first, second)
    assert not np.array_equal(first, np.asarray(augmented_copy(photo(), augmentation, 43)))


def test_disabled_augmentation_is_the_identity():
    off = AugmentConfig(flip_p=0, invert_p=0, crop_pad_p=0, affine_p=0, blur_or_emboss_p=0, brightness_contrast_p=0,
                        hue_saturation_p=0, channel_jitter_p=0)
    assert np.array_equal(np.asarray(build_augmentation(off)(photo())), np.asarray(photo()))


def test_emboss_keeps_size_and_mode_and_changes_pixels():
    out = Emboss(alpha=(1.0, 1.0), strength=(1.0, 1.0))(photo())
    assert out.size == photo().size and out.mode == "RGB"
    assert not np.array_equal(np.asarray(out), np.asarray(photo()))


def test_crop_and_pad_stays_within_its_fraction_and_pads_with_the_fill():
    torch.manual_seed(0)
    transform = CropAndPad(fraction=0.2, fill=255)
    sizes = [transform(photo()).size for _ in range(20)]
    assert all(160 * 0.6 - 2 <= w <= 160 * 1.4 + 2 and 120 * 0.6 - 2 <= h <= 120 * 1.4 + 2 for w, h in sizes)
    assert len(set(sizes)) > 1
    torch.manual_seed(1)
    padded = None
    for _ in range(20):
        out = transform(photo())
        if out.size[0] > 170:
            padded = out
            break
    assert padded is not None
    array = np.asarray(padded)
    assert (array[:, 0] == 255).all() or (array[:, -1] == 255).all()


def test_preview_grid_is_a_png_of_the_requested_tiles(tmp_path):
    path = save_preview_grid(photo(), tmp_path / "grid" / "preview.png", rows=2, columns=3, tile=50)
    with Image.open(path) as grid:
        assert grid.format == "PNG"
        assert grid.size == (3 * 54 + 4, 2 * 54 + 4)
        tiles = [np.asarray(grid.crop((4 + c * 54, 4 + r * 54, 54 + c * 54, 54 + r * 54))) for r in range(2) for c in range(3)]
    assert len({t.tobytes() for t in tiles}) == 6  # every augmented tile differs from the clean one and each other

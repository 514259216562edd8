"""Photo augmentation with torchvision.transforms.v2, covering the seed project's imgaug list.

The seed used imgaug, which does not import with NumPy 2 and has been unmaintained since 2020; the same
kinds of change are made here with ``torchvision.transforms.v2``. Augmentation works on the decoded PIL photo
*before* the shared ``model.preprocess`` resize/crop/normalize, so training and serving end with exactly the
same transform.

Randomness comes from torch's global generator (as for every torchvision transform); callers that need
reproducible copies seed it (see :func:`augmented_copy`).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image, ImageFilter
from torchvision.transforms import v2

from model.preprocess import PreprocessConfig, resize_and_crop


@dataclass(frozen=True)
class AugmentConfig:
    """How often and how strongly each augmentation applies (probabilities in 0..1)."""

    flip_p: float = 0.5
    invert_p: float = 0.05  # rare: it taught the seed model that a shirt can be light or dark
    crop_pad_p: float = 0.5
    crop_pad_fraction: float = 0.12  # each side cropped or padded by up to this fraction
    affine_p: float = 0.6
    degrees: float = 20.0
    translate: float = 0.1
    scale: tuple[float, float] = (0.8, 1.15)
    shear: float = 10.0
    blur_or_emboss_p: float = 0.3
    brightness_contrast_p: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    hue_saturation_p: float = 0.4
    hue: float = 0.15
    saturation: float = 0.5
    channel_jitter_p: float = 0.15
    fill: int = 255  # product photos mostly have light backgrounds: new pixels are white

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class Emboss(v2.Transform):
    """imgaug's Emboss: a 3x3 relief kernel of random ``strength``, blended with the photo by ``alpha``."""

    def __init__(self, alpha: tuple[float, float] = (0.3, 0.8), strength: tuple[float, float] = (0.5, 1.5)):
        super().__init__()
        self.alpha = alpha
        self.strength = strength

    def make_params(self, flat_inputs: list) -> dict:
        alpha = float(torch.empty(1).uniform_(*self.alpha))
        strength = float(torch.empty(1).uniform_(*self.strength))
        return {"alpha": alpha, "strength": strength}

    def transform(self, inpt, params: dict):
        if not isinstance(inpt, Image.Image):
            return inpt
        s = params["strength"]
        # Sums to 1, so flat areas keep their colour and only edges get the relief.
        kernel = ImageFilter.Kernel((3, 3), [-1 - s, -s, 0, -s, 1, s, 0, s, 1 + s], scale=1)
        return Image.blend(inpt, inpt.filter(kernel), params["alpha"])


class CropAndPad(v2.Transform):
    """imgaug's CropAndPad: each side independently cropped (negative) or padded (positive) by up to
    ``fraction`` of the photo's size; padding uses ``fill``."""

    def __init__(self, fraction: float = 0.1, fill: int = 255):
        super().__init__()
        self.fraction = fraction
        self.fill = fill

    def make_params(self, flat_inputs: list) -> dict:
        return {"sides": torch.empty(4).uniform_(-self.fraction, self.fraction).tolist()}

    def transform(self, inpt, params: dict):
        if not isinstance(inpt, Image.Image):
            return inpt
        width, height = inpt.size
        left, top, right, bottom = params["sides"]
        box = (
            round(-left * width),
            round(-top * height),
            width + round(right * width),
            height + round(bottom * height),
        )
        # PIL's crop pads with black outside the image; paste onto a filled canvas instead.
        canvas = Image.new("RGB", (box[2] - box[0], box[3] - box[1]), (self.fill,) * 3)
        canvas.paste(inpt, (-box[0], -box[1]))
        return canvas


def build_augmentation(config: AugmentConfig = AugmentConfig()) -> v2.Compose:
    """PIL photo -> augmented PIL photo (any size; the shared resize/crop comes after)."""
    fill = (config.fill,) * 3
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(config.flip_p),
            v2.RandomApply([CropAndPad(config.crop_pad_fraction, config.fill)], p=config.crop_pad_p),
            v2.RandomApply(
                [
                    v2.RandomAffine(
                        degrees=config.degrees,
                        translate=(config.translate, config.translate),
                        scale=config.scale,
                        shear=config.shear,
                        interpolation=v2.InterpolationMode.BILINEAR,
                        fill=fill,
                    )
                ],
                p=config.affine_p,
            ),
            v2.RandomApply(
                [v2.RandomChoice([v2.GaussianBlur(kernel_size=7, sigma=(0.5, 2.5)), Emboss()])],
                p=config.blur_or_emboss_p,
            ),
            v2.RandomApply(
                [v2.ColorJitter(brightness=config.brightness, contrast=config.contrast)], p=config.brightness_contrast_p
            ),
            v2.RandomApply([v2.ColorJitter(saturation=config.saturation, hue=config.hue)], p=config.hue_saturation_p),
            # The seed's per-channel colour jitter: a red kurti may come out green or blue.
            v2.RandomApply([v2.RandomChannelPermutation()], p=config.channel_jitter_p),
            v2.RandomInvert(config.invert_p),
        ]
    )


def copy_seed(seed: int, photo_index: int, copy_index: int) -> int:
    """A seed for one augmented copy, independent of batch order and of other photos."""
    digest = hashlib.sha256(f"{seed}:{photo_index}:{copy_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def augmented_copy(photo: Image.Image, augmentation: v2.Compose, seed: int) -> Image.Image:
    """``augmentation(photo)`` with torch's generator seeded by ``seed``, leaving the global state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return augmentation(photo)


def save_preview_grid(
    photo: Image.Image,
    path: str | Path,
    *,
    config: AugmentConfig = AugmentConfig(),
    preprocess: PreprocessConfig = PreprocessConfig(),
    rows: int = 4,
    columns: int = 8,
    tile: int = 112,
    seed: int = 0,
) -> Path:
    """A PNG grid of what the model sees: the clean photo first (top left, framed), then augmented copies,
    each after the shared resize and centre crop."""
    augmentation = build_augmentation(config)
    gap = 4
    grid = Image.new("RGB", (columns * (tile + gap) + gap, rows * (tile + gap) + gap), (40, 40, 40))
    for index in range(rows * columns):
        shown = photo if index == 0 else augmented_copy(photo, augmentation, copy_seed(seed, 0, index))
        thumb = resize_and_crop(shown.convert("RGB"), preprocess).resize((tile, tile), Image.BILINEAR)
        x, y = gap + (index % columns) * (tile + gap), gap + (index // columns) * (tile + gap)
        if index == 0:
            grid.paste((255, 200, 0), (x - gap, y - gap, x + tile + gap, y + tile + gap))
        grid.paste(thumb, (x, y))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path

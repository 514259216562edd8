"""Decoding and preprocessing: the one transform shared by training evaluation, serving and explanation.

Decoding is defensive because the bytes come from strangers: size limits are checked from the header
before any pixel is decoded, and every failure becomes an :class:`ImageError` with a short, human message.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A 30000 x 30000 PNG is 900 MP; real photos are far below 50 MP. Checked from the header, before decoding.
DEFAULT_MAX_PIXELS = 50_000_000
MIN_SIDE = 8


@dataclass(frozen=True)
class PreprocessConfig:
    """Resize the short side to ``resize``, centre-crop ``crop`` x ``crop``, normalize with mean/std."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessConfig:
        return cls(
            resize=int(data["resize"]),
            crop=int(data["crop"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
        )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB; transparency is composited over white, 16-bit and float are rescaled."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        lo, hi = float(array.min()), float(array.max())
        if image.mode.startswith("I;16") and hi <= 65535 and lo >= 0:
            scaled = array / 257.0
        else:
            scaled = (array - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(array)
        image = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "La":  # premultiplied alpha: Pillow converts it to RGBA only via LA
        image = image.convert("LA")
    if image.mode in ("LA", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def open_image(
    source: bytes | str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = MIN_SIDE,
    draft_size: int | None = None,
) -> Image.Image:
    """Decode ``source`` (bytes or a path) into an upright RGB PIL image, or raise :class:`ImageError`.

    ``draft_size`` lets JPEGs decode at a reduced scale (1/2, 1/4, 1/8) while keeping the short side at
    least that many pixels: the pixels that would be thrown away by the resize are never decoded.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"no such file: {path}")
        if path.is_dir():
            raise ImageError(f"{path} is a folder, not an image")
        data = path.read_bytes()
    else:
        data = bytes(source)
    if not data:
        raise ImageError("the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"the image is too large ({width}x{height} pixels; the limit is {max_pixels // 1_000_000} megapixels)"
                )
            if min(width, height) < min_side:
                raise ImageError(f"the image is too small ({width}x{height} pixels; need at least {min_side} on each side)")
            if draft_size and image.format == "JPEG":
                # EXIF rotation does not change the short side, so drafting before transposing is safe.
                image.draft("RGB", _draft_target(width, height, draft_size))
            image.load()
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("the image is too large to decode safely") from None
    except UnidentifiedImageError:
        raise ImageError("this is not an image I can read (JPEG, PNG, WebP, GIF, BMP, TIFF...)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"the image is damaged or truncated ({exc})") from None


def _draft_target(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    return max(1, int(width * scale) + 1), max(1, int(height * scale) + 1)


def resize_and_crop(image: Image.Image, config: PreprocessConfig = PreprocessConfig()) -> Image.Image:
    """Short side to ``config.resize`` (bilinear, antialiased), then the centre ``crop`` x ``crop`` square.

    In one step: only the region that survives the crop (:func:`crop_box`) is resampled, straight to
    ``crop`` x ``crop``. Same filter, same pixel centres, so the same picture to within one grey level
    (rounding), in half the time of resizing the whole photo and throwing most of it away.
    """
    return image.resize((config.crop, config.crop), Image.BILINEAR, box=crop_box(image.size, config), reducing_gap=None)


def crop_box(size: tuple[int, int], config: PreprocessConfig = PreprocessConfig()) -> tuple[float, float, float, float]:
    """The region (left, top, right, bottom) of an image of ``size`` that the model sees after resize+crop."""
    width, height = size
    scale = config.resize / min(width, height)
    new_w, new_h = max(config.crop, round(width * scale)), max(config.crop, round(height * scale))
    left, top = (new_w - config.crop) // 2, (new_h - config.crop) // 2
    sx, sy = width / new_w, height / new_h
    return (left * sx, top * sy, (left + config.crop) * sx, (top + config.crop) * sy)


def to_array(image: Image.Image, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """A ``crop`` x ``crop`` RGB image to a normalized float32 3 x H x W array (NumPy only: no torch).

    One multiply-add instead of divide-subtract-divide. The serving path stays in NumPy end to end, so a bot
    whose runtime is OpenVINO never imports torch (and the decode threads never start torch's OpenMP teams
    beside the classifier's, which once cut the whole bot to about one busy core).
    """
    std = np.asarray(config.std, dtype=np.float32)
    scale = 1.0 / (255.0 * std)
    shift = np.asarray(config.mean, dtype=np.float32) / std
    array = np.asarray(image, dtype=np.uint8).astype(np.float32)
    array *= scale
    array -= shift
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def preprocess_array(image: Image.Image, config: PreprocessConfig = PreprocessConfig()) -> np.ndarray:
    """RGB PIL image -> normalized 3 x crop x crop float32 array (resize short side, centre crop, mean/std)."""
    return to_array(resize_and_crop(_to_rgb(image), config), config)


def normalize(image: Image.Image, config: PreprocessConfig = PreprocessConfig()) -> torch.Tensor:
    """:func:`to_array` as a torch tensor (for training and the torch runtime)."""
    import torch  # here, not at the top: decoding and rendering import without torch (a gateway bot)

    return torch.from_numpy(to_array(image, config))


def preprocess(image: Image.Image, config: PreprocessConfig = PreprocessConfig()) -> torch.Tensor:
    """RGB PIL image -> normalized 3 x crop x crop tensor (resize short side, centre crop, mean/std)."""
    return normalize(resize_and_crop(_to_rgb(image), config), config)


# Never let PIL quietly fill a truncated file with grey: that would classify garbage with confidence.
ImageFile.LOAD_TRUNCATED_IMAGES = False

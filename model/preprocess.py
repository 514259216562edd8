"""Decoding and preprocessing: the one transform shared by training evaluation, serving and explanation.

Decoding is defensive because the bytes come from strangers: size limits are checked from the header
before any pixel is decoded, and every failure becomes an :class:`ImageError` with a short, human message.

The memory budget of one decode (what a 100 kB file may cost the bot), enforced here:

- Only the formats in :data:`ACCEPTED_FORMATS` are opened: Pillow's other plugins are never tried on a
  stranger's bytes.
- One decode may use at most :data:`DECODE_BUDGET_BYTES` (64 MiB) of pixel memory, counted from the header
  before any pixel is decoded: the pixel count times what one pixel costs at the peak of its way to RGB
  (:func:`peak_bytes_per_pixel`: Pillow's storage of the decoded mode, the file's own sample size when it is
  wider, and the copies the conversion to RGB makes beside it). So the pixel cap depends on the mode: about
  15.7 MP for 8-bit RGB, 10.5 MP for 48-bit RGB, 7 MP for 16-bit grey. ``tests/model/test_decode_memory.py``
  measures the real peak (VmHWM of a fresh process) of each kind at its cap and checks it stays inside.
- A JPEG is decoded in draft mode (libjpeg scales by 1/2, 1/4 or 1/8 while decoding) when the caller gives
  ``draft_size``, as the bot does: a 7000 x 7000 JPEG decodes to 875 x 875. What counts then is the drafted
  size, plus, for a progressive JPEG, libjpeg's buffer of the whole image's DCT coefficients (2 bytes per
  sample at full size, which no draft reduces).
- No float64 copies: 16-bit samples become 8-bit by keeping their high byte (integer, no arithmetic copy);
  32-bit integer and float images are stretched in one float32 array, in place.
- With the bot's DECODE_WORKERS (at most 4) decoding at once, decoding costs at most 4 x 64 MiB = 256 MiB
  over the bot's resting memory; the downloaded bytes are capped apart (MAX_BYTES_IN_FLIGHT, bot/handlers/budget.py).

Telegram's photos are JPEGs of at most 1280 px and never meet these caps; only documents do.
"""
from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin, UnidentifiedImageError

from .errors import ImageError

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A 30000 x 30000 PNG is 900 MP; real photos are far below 50 MP. Checked from the header, before decoding.
DEFAULT_MAX_PIXELS = 50_000_000
MIN_SIDE = 8
DECODE_BUDGET_BYTES = 64 * 2**20  # the pixel memory one decode may use (see the module docstring)
# What the bot opens (Pillow's plugin names; "JPEG" also opens a camera's multi-picture MPO). The message names them.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
_FORMAT_NAMES = "JPEG, PNG, WebP, GIF, BMP or TIFF"

# Pillow's storage of one pixel of each mode (RGB and the other 3-band modes are kept in 4 bytes).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2, "LA": 4, "La": 4, "PA": 4}
# What the way to RGB allocates beside the decoded pixels, per pixel (see _to_rgb): 4 for the RGB result,
# 4 more for an RGBA step and the white background, 1 for an alpha mask, 2 + 1 for the 16-bit copy and its
# high bytes, 4 + 1 for the float32 stretch of I and F.
_CONVERSION_BYTES = {"RGB": 0, "1": 4, "L": 4, "P": 4, "CMYK": 4, "YCbCr": 4, "LAB": 4, "HSV": 4,
                     "RGBA": 5, "RGBa": 9, "LA": 9, "La": 13, "PA": 9,
                     "I;16": 7, "I;16B": 7, "I;16L": 7, "I;16N": 7, "I": 9, "F": 9}
# Decoders that hold a frame of their own beside Pillow's (bytes per pixel, measured): libwebp's RGBA output
# and the copy Pillow converts it from; the GIF decoder's frame and palette expansion; libtiff's RGBA reads.
_DECODER_FRAME_BYTES = {"WEBP": 12, "GIF": 5, "TIFF": 4}
# What a decode needs whatever the size (zlib's window, row buffers, the 224 x 224 result), kept out of the budget.
_DECODER_OVERHEAD_BYTES = 4 * 2**20


def peak_bytes_per_pixel(image: Image.Image) -> int:
    """What one pixel of the opened (not yet decoded) ``image`` costs at the peak of decoding it to RGB."""
    mode = image.mode
    stored = _STORED_BYTES.get(mode, 4)
    conversion = _CONVERSION_BYTES.get(mode, 8)
    if mode == "P" and "transparency" in image.info:
        conversion = _CONVERSION_BYTES["RGBA"] + 4
    # A 16-bit-per-sample file (a 48-bit RGB PNG) is unpacked from samples wider than Pillow keeps; counted
    # at their width, so a decoder that keeps all 16 bits would still fit the budget.
    raw_bytes = _raw_bytes_per_pixel(image)
    return max(stored, raw_bytes) + conversion + _DECODER_FRAME_BYTES.get(image.format, 0)


def pixel_cap(image: Image.Image, budget: int = DECODE_BUDGET_BYTES) -> int:
    """The most pixels an image of this kind (format, mode, sample width) may have to decode within ``budget``."""
    return max(0, budget - _DECODER_OVERHEAD_BYTES) // peak_bytes_per_pixel(image)


def _raw_bytes_per_pixel(image: Image.Image) -> int:
    rawmode = image.tile[0][-1] if image.tile and isinstance(image.tile[0][-1], str) else ""
    if ";16" in rawmode:
        return 2 * len(rawmode.split(";")[0])  # "RGB;16B": 3 samples of 2 bytes
    return 0


def _jpeg_coefficient_bytes(image: Image.Image) -> int:
    """libjpeg keeps a progressive JPEG's coefficients for the whole image (2 bytes a sample), at any draft scale."""
    if not image.info.get("progressive"):
        return 0
    bands = len(image.getbands())
    if bands != 3:
        return 2 * bands * image.width * image.height
    chroma = {0: 1.0, 1: 0.5, 2: 0.25}.get(JpegImagePlugin.get_sampling(image), 1.0)  # 4:4:4, 4:2:2, 4:2:0
    return int(2 * (1 + 2 * chroma) * image.width * image.height)


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
    """Any PIL mode to RGB; transparency is composited over white, 16-bit and float are rescaled (no float64)."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode.startswith("I;16"):
        image = _sixteen_bit_to_l(image)
    elif image.mode in ("I", "F"):
        image = _stretch_to_l(image)
    if image.mode == "La":  # premultiplied alpha: Pillow converts it to RGBA only via LA
        image = image.convert("LA")
    if image.mode in ("LA", "PA", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    """16-bit grey to 8-bit by its high byte (x >> 8, within one grey level of x / 257): a strided view, one copy."""
    array = np.asarray(image)  # uint16, in the image's byte order (I;16B is big-endian)
    big_endian = array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian)
    high_bytes = array.view(np.uint8)[:, (0 if big_endian else 1)::2]
    return Image.fromarray(np.ascontiguousarray(high_bytes))  # uint8, 2-D: mode L


def _stretch_to_l(image: Image.Image) -> Image.Image:
    """32-bit integer or float grey, min..max stretched to 0..255, in one float32 array worked in place."""
    array = np.array(image, dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        array[~finite] = 0.0
    del finite
    lo, hi = float(array.min()), float(array.max())
    if hi > lo:
        array -= lo
        array *= 255.0 / (hi - lo)
    else:
        array[...] = 0.0
    np.clip(array, 0, 255, out=array)
    return Image.fromarray(array.astype(np.uint8))


def open_image(
    source: bytes | str | Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = MIN_SIDE,
    draft_size: int | None = None,
    decode_budget: int | None = DECODE_BUDGET_BYTES,
) -> Image.Image:
    """Decode ``source`` (bytes or a path) into an upright RGB PIL image, or raise :class:`ImageError`.

    ``draft_size`` lets JPEGs decode at a reduced scale (1/2, 1/4, 1/8) while keeping the short side at
    least that many pixels: the pixels that would be thrown away by the resize are never decoded.
    ``decode_budget`` is the pixel memory the decode may use (the module docstring); None: only ``max_pixels``
    (a local file the user chose, drawn at full size by ``python -m model explain``).
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"no such file: {path}")
        if path.is_dir():
            raise ImageError(f"{path} is a folder, not an image")
        data = path.read_bytes()
    else:
        data = source
    if not data:
        raise ImageError("the file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"the image is too large ({width}x{height} pixels; the limit is {max_pixels // 1_000_000} megapixels)"
                )
            if min(width, height) < min_side:
                raise ImageError(f"the image is too small ({width}x{height} pixels; need at least {min_side} on each side)")
            coefficients = 0
            if draft_size and isinstance(image, JpegImagePlugin.JpegImageFile):  # JPEG and MPO
                coefficients = _jpeg_coefficient_bytes(image)
                # EXIF rotation does not change the short side, so drafting before transposing is safe.
                image.draft("RGB", _draft_target(width, height, draft_size))
            if decode_budget is not None:
                _check_budget(image, (width, height), coefficients, decode_budget)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an upright image
            return _to_rgb(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError("the image is too large to decode safely") from None
    except UnidentifiedImageError:
        raise ImageError(f"this is not an image I can read ({_FORMAT_NAMES})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"the image is damaged or truncated ({exc})") from None


def _check_budget(image: Image.Image, size: tuple[int, int], coefficients: int, budget: int) -> None:
    """Refuse, from the header, a decode of a ``size`` file (``image.size`` is a JPEG's drafted size)
    whose pixels and ``coefficients`` (libjpeg's, :func:`_jpeg_coefficient_bytes`) cost more than ``budget`` bytes."""
    cost = image.width * image.height * peak_bytes_per_pixel(image) + coefficients
    if cost > budget - _DECODER_OVERHEAD_BYTES:
        limit = (budget - _DECODER_OVERHEAD_BYTES) * size[0] * size[1] / cost / 1_000_000
        raise ImageError(f"the image is too large ({size[0]}x{size[1]} pixels; for this kind "
                         f"of image ({image.format} {image.mode}) the limit is {limit:.1f} megapixels)")


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

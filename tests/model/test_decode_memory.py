"""The decoding memory budget (model/preprocess.py's docstring), measured: the peak memory (VmHWM) of a fresh
process that decodes one file as the bot does must stay within DECODE_BUDGET_BYTES.

Each kind is tried at the largest square its pixel cap allows, where the budget is tightest: the bound is
the budget itself, since the cap is the budget divided by the kind's cost per pixel, less a fixed 4 MiB for
what a decoder needs whatever the size (zlib's window, row buffers). The four bombs of issue 25 (about
100-750 kB each) are refused before a pixel is decoded, or (the JPEG) decoded in draft mode at 1/8 scale.
"""
from __future__ import annotations

import io
import math
import sys

import pytest
from PIL import Image

from devtools import bombs
from devtools.samples import image_bytes
from model.errors import ImageError
from model.preprocess import ACCEPTED_FORMATS, DECODE_BUDGET_BYTES, open_image, pixel_cap

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads VmHWM from /proc")


def _pil(mode: str, fmt: str, colour, **save_args):
    return lambda side: image_bytes(Image.new(mode, (side, side), colour), fmt, **save_args)


KINDS = {
    "png_rgb8": lambda side: bombs.solid_png(side, side, bombs.RGB8),
    "png_grey16": lambda side: bombs.solid_png(side, side, bombs.GREY16),
    "png_rgb48": lambda side: bombs.solid_png(side, side, bombs.RGB16),
    "png_rgba8": lambda side: bombs.solid_png(side, side, bombs.RGBA8),
    "png_palette_transparent": _pil("P", "PNG", 3, transparency=0),
    "webp_rgb": _pil("RGB", "WEBP", (150, 60, 60)),
    "gif": _pil("P", "GIF", 3),
    "tiff_cmyk": _pil("CMYK", "TIFF", (1, 2, 3, 4)),
}


def cap_side(make) -> int:
    """The largest square side of this kind within the budget (its cost per pixel read from a small header)."""
    return math.isqrt(pixel_cap(Image.open(io.BytesIO(make(32)))))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_at_its_cap_decodes_within_the_budget(kind):
    make = KINDS[kind]
    side = cap_side(make)
    result = bombs.decode_peak(make(side))
    assert result["outcome"] == "decoded"
    assert result["peak_bytes"] <= DECODE_BUDGET_BYTES, (kind, side, result)
    with pytest.raises(ImageError, match="too large"):  # a little past the cap: refused from the header
        open_image(make(side + side // 20 + 1))


def test_a_progressive_jpeg_counts_libjpegs_coefficients():
    # 4500 x 4500, 4:2:0: 3 bytes of coefficients a pixel at full size, whatever the draft scale (~58 MiB).
    result = bombs.decode_peak(bombs.solid_jpeg(4500, 4500, progressive=True))
    assert result["outcome"] == "decoded" and result["peak_bytes"] <= DECODE_BUDGET_BYTES, result
    refused = bombs.decode_peak(bombs.solid_jpeg(7000, 7000, progressive=True))
    assert "too large" in refused["outcome"] and refused["peak_bytes"] <= DECODE_BUDGET_BYTES // 8, refused


def test_the_four_bombs_cost_at_most_the_budget():
    for name, data in bombs.four_bombs().items():
        assert len(data) < 1_000_000, name
        result = bombs.decode_peak(data)
        assert result["peak_bytes"] <= DECODE_BUDGET_BYTES, (name, result)
        if name.startswith("png"):  # refused from the header: nothing decoded (the file is already in memory)
            assert "too large" in result["outcome"] and result["peak_bytes"] <= DECODE_BUDGET_BYTES // 8, (name, result)
        else:  # the JPEG: drafted to 875 x 875 by libjpeg while decoding
            assert result["outcome"] == "decoded", result


def test_only_the_accepted_formats_are_opened():
    ppm = image_bytes(Image.new("RGB", (32, 32)), "PPM")  # Pillow reads it; the bot does not
    with pytest.raises(ImageError, match="not an image I can read") as refused:
        open_image(ppm)
    assert "JPEG" in str(refused.value) and "PNG" in str(refused.value)
    for fmt in ACCEPTED_FORMATS:
        assert open_image(image_bytes(Image.new("RGB", (32, 32), (9, 9, 9)), fmt)).size == (32, 32)


def test_sixteen_bit_and_float_images_are_converted_without_float64():
    import numpy as np

    grey16 = Image.fromarray(np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    as_l = np.asarray(open_image(image_bytes(grey16, "PNG")))[..., 0]
    assert (as_l.astype(int) - (np.asarray(grey16).astype(int) >> 8)).max() == 0
    floats = Image.fromarray(np.linspace(-1.0, 3.0, 64 * 64, dtype=np.float32).reshape(64, 64), mode="F")
    from model.preprocess import preprocess_array

    assert np.isfinite(preprocess_array(floats)).all()

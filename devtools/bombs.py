"""Small files that decode big (the four "bombs" of issue 25, and their relatives), and a way to measure
what decoding one costs: the peak memory (VmHWM) of a fresh process that decodes it as the bot does.

The PNGs are written row by row with zlib (one solid colour compresses to ~100 kB), so making them costs
this process nothing; the JPEG is encoded by Pillow from a solid picture.
"""
from __future__ import annotations

import functools
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import zlib
from pathlib import Path

from .samples import _png_chunk, image_bytes

# (bit depth, PNG colour type, samples per pixel) of the PNG kinds
GREY8, GREY16, RGB8, RGB16, RGBA8 = (8, 0, 1), (16, 0, 1), (8, 2, 3), (16, 2, 3), (8, 6, 4)


@functools.lru_cache(maxsize=16)
def solid_png(width: int, height: int, kind: tuple[int, int, int] = RGB8, level: int = 9) -> bytes:
    """A valid ``width`` x ``height`` PNG of one mid-grey colour, of ``kind`` (GREY16, RGB16, ...)."""
    depth, colour_type, samples = kind
    row = b"\x00" + b"\x80" * (width * samples * depth // 8)  # filter byte 0, then the samples
    compressor = zlib.compressobj(level)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


@functools.lru_cache(maxsize=4)
def solid_jpeg(width: int, height: int, progressive: bool = False) -> bytes:
    from PIL import Image

    return image_bytes(Image.new("RGB", (width, height), (150, 60, 60)), "JPEG", quality=80, progressive=progressive)


def four_bombs() -> dict[str, bytes]:
    """The four documents of issue 25, each ~100-750 kB: name -> bytes."""
    return {
        "png16_grey_7000": solid_png(7000, 7000, GREY16),
        "png48_rgb_4000": solid_png(4000, 4000, RGB16),
        "png8_rgb_7000": solid_png(7000, 7000, RGB8),
        "jpeg_7000": solid_jpeg(7000, 7000),
    }


_MEASURE = textwrap.dedent("""
    import json, sys
    data = open(sys.argv[1], "rb").read()
    from model.preprocess import ImageError, open_image, preprocess_array

    def status(field):
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(field + ":"))

    preprocess_array(open_image(open(sys.argv[2], "rb").read(), draft_size=256))  # codecs loaded, numpy warm
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # VmHWM := VmRSS (Linux), so the peak below is this decode's
    before = status("VmRSS")
    try:
        preprocess_array(open_image(data, draft_size=int(sys.argv[3])))
        outcome = "decoded"
    except ImageError as error:
        outcome = str(error)
    print(json.dumps({"peak_bytes": status("VmHWM") - before, "outcome": outcome}))
""")


def decode_peak(data: bytes, code_root: Path | str | None = None, draft_size: int = 256) -> dict:
    """What decoding ``data`` as the bot does (open_image with draft, then preprocess_array) costs, measured
    in a fresh process that runs the code under ``code_root`` (default: this checkout):
    ``{"peak_bytes": VmHWM over the RSS before, "outcome": "decoded" or the ImageError's message}``."""
    root = Path(code_root) if code_root else Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as folder:
        path, warm = Path(folder) / "image", Path(folder) / "warm"
        path.write_bytes(data)
        warm.write_bytes(solid_png(64, 64) if data[:4] == b"\x89PNG" else image_bytes_of_format(data))
        env = {**os.environ, "PYTHONPATH": str(root)}
        done = subprocess.run([sys.executable, "-c", _MEASURE, str(path), str(warm), str(draft_size)], env=env,
                              capture_output=True, text=True, timeout=300, cwd=root)
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def image_bytes_of_format(data: bytes) -> bytes:
    """A tiny image of the same format as ``data`` (to load its codec before measuring)."""
    import io

    from PIL import Image

    fmt = Image.open(io.BytesIO(data)).format or "PNG"
    return image_bytes(Image.new("RGB", (64, 64), (10, 20, 30)), fmt)

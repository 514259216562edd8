"""What users send to the bot in the tests, ``make demo`` and the benches: generated photos (different for
each seed, no files needed) and every kind of bad input (a PDF, a text file, truncated or tiny pictures,
a decompression bomb)."""
from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image

CLASS_NAMES = ["kurti", "saree", "shirt"]  # the classes of the random-init checkpoints built for tests and benches
PALETTE = [(200, 40, 40), (40, 60, 200), (230, 200, 30), (40, 160, 60), (160, 40, 160), (250, 250, 250)]


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


def jpeg(seed: int = 0, width: int = 320, height: int = 240) -> bytes:
    """A small photo, different for each seed (different colours too)."""
    return image_bytes(make_photo(width, height, PALETTE[seed % len(PALETTE)], seed))


def png(seed: int = 0, width: int = 300, height: int = 260) -> bytes:
    return image_bytes(make_photo(width, height, PALETTE[seed % len(PALETTE)], seed), "PNG")


def truncated_jpeg() -> bytes:
    data = jpeg(1, 640, 480)
    return data[: len(data) // 2]


def one_pixel_png() -> bytes:
    return image_bytes(Image.new("RGB", (1, 1), (120, 30, 30)), "PNG")


PDF = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
       b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
TEXT_FILE = b"shopping list:\n- saree\n- kurti\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=1)
def decompression_bomb(side: int = 30000) -> bytes:
    """A real, valid ``side`` x ``side`` one-bit PNG of one colour: ~110 kB on disk, 900 megapixels decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte 0, then the packed bits of one row
    compressor = zlib.compressobj(9)
    block = row * 1000
    body = b"".join(compressor.compress(block) for _ in range(side // 1000))
    body += compressor.compress(row * (side % 1000)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")

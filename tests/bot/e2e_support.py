"""What users send in the end-to-end tests (good photos, every kind of bad input) and how answers are checked."""
from __future__ import annotations

import functools
import io
import importlib.util
import re
import struct
import zlib
from pathlib import Path

from PIL import Image

# tests/conftest.py holds the shared picture helpers; "import conftest" would find tests/bot/conftest.py
# instead (both folders are plain directories), so load the shared one by its path.
_spec = importlib.util.spec_from_file_location("shared_test_helpers", Path(__file__).resolve().parents[1] / "conftest.py")
_shared = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_shared)
make_photo, image_bytes, CLASS_NAMES = _shared.make_photo, _shared.image_bytes, _shared.CLASS_NAMES

PALETTE = [(200, 40, 40), (40, 60, 200), (230, 200, 30), (40, 160, 60), (160, 40, 160), (250, 250, 250)]


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


# ---- the bot's settings -------------------------------------------------------------------------
def settings_env(fake, checkpoint: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment the bot would read, pointing at the fake server (settings named as in the issue)."""
    env = {
        "TELEGRAM_BOT_TOKEN": fake.token,
        "TELEGRAM_API_BASE_URL": fake.api_base_url,
        "TELEGRAM_FILE_BASE_URL": fake.file_base_url,
        "CHECKPOINT_PATH": str(checkpoint),
        "DATA_DIR": str(data_dir),
        # Heat maps small enough for a test: a 2x2 coarse map, then a 3x3 "fine" one.
        "WHY_COARSE_PATCH": "112",
        "WHY_COARSE_STRIDE": "112",
        "WHY_PATCH": "112",
        "WHY_STRIDE": "56",
        "LOG_LEVEL": "INFO",
        "WARM_UP_BATCH": "0",  # a second of ResNet50 per bot start, in every test; tested on its own
        # The shared session classifier stays eager, so tests do not depend on which bot traced it first;
        # the graph (the default) is tested end to end on a bot that loads its own model.
        "FROZEN_GRAPH": "0",
    }
    env.update({key: str(value) for key, value in extra.items()})
    return env



# ---- checking answers ----------------------------------------------------------------------------
def expected_prediction(classifier, data: bytes):
    """What the model says about these bytes, decoded exactly the way the bot is meant to decode them."""
    return classifier.predict_image(classifier.open(data))


def percentages(text: str) -> list[float]:
    return [float(number) for number in re.findall(r"(\d+(?:[.,]\d+)?)\s*%", text.replace(",", "."))]


def assert_prediction(call, prediction) -> None:
    """The answer names the predicted class and its confidence as a percentage."""
    text = call.text
    assert call.method == "sendMessage", call
    assert prediction.label.replace("_", " ").lower() in text.lower(), text
    assert any(abs(p - prediction.confidence * 100) <= 1.0 for p in percentages(text)), (text, prediction)


def assert_short_notice(call) -> None:
    """A friendly text for bad input: short, no traceback, no prediction."""
    assert call.method == "sendMessage", call
    text = call.text
    assert 0 < len(text) <= 400, text
    assert "Traceback" not in text and "Error:" not in text, text
    assert not percentages(text), f"a prediction for bad input? {text!r}"


def inline_buttons(call) -> list[dict]:
    markup = call.params.get("reply_markup") or {}
    return [button for row in markup.get("inline_keyboard", []) for button in row]


def why_button(call) -> dict:
    buttons = [b for b in inline_buttons(call) if "why" in b["text"].lower()]
    assert buttons and buttons[0].get("callback_data"), f"no 'Why?' button under {call}"
    return buttons[0]


def file_ids(message: dict) -> set[str]:
    """Every file id of a user's photo message (all its sizes) or document."""
    sizes = message.get("photo") or []
    document = message.get("document")
    return {size["file_id"] for size in sizes} | ({document["file_id"]} if document else set())


def open_picture(data: bytes | None) -> Image.Image:
    assert data, "no picture was uploaded"
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture

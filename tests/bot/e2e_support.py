"""How the end-to-end tests check the bot's answers. What users send (photos, bad input) and the bot's
settings are in devtools (devtools.samples, devtools.bot_env), shared with make demo and the benches."""
from __future__ import annotations

import io
import re

from PIL import Image


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


def album_lines(call) -> list[str]:
    """The numbered lines of an album's one answer ("#1 Saree (93%)", ...), in order."""
    lines = [line for line in call.text.splitlines() if re.match(r"#\d+ ", line)]
    assert [int(line[1:].split()[0]) for line in lines] == list(range(1, len(lines) + 1)), call.text
    return lines


def assert_line_prediction(line: str, prediction) -> None:
    """One album line names the predicted class and its confidence."""
    assert prediction.label.replace("_", " ").lower() in line.lower(), line
    assert any(abs(p - prediction.confidence * 100) <= 1.0 for p in percentages(line)), (line, prediction)


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

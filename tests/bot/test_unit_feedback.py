"""The feedback inbox on disk, and the feedback buttons' callback data."""
import io
import json
import os

import pytest
from PIL import Image

from bot.feedback import NONE_OF_THESE, FeedbackInbox, write_atomically
from bot.feedback_flow import answer_keyboard, classes_keyboard, parse_feedback
from bot.store import photo_key

CLASSES = ["kurti", "saree", "shirt"]


def jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_record_with_the_users_label_and_hashed_chat(tmp_path):
    inbox = FeedbackInbox(tmp_path / "fb")
    photo = inbox.save_photo("AQADu1", jpeg())
    record = inbox.record(chat_id=4242, file_unique_id="AQADu1", photo=photo, predicted="kurti", confidence=0.81234,
                          label="saree", checkpoint_id="abc")
    on_disk = [json.loads(p.read_text()) for p in (tmp_path / "fb" / "records").glob("*.json")]
    assert on_disk == [json.loads(json.dumps(record.__dict__))]
    assert on_disk[0]["label"] == "saree" and on_disk[0]["predicted"] == "kurti" and on_disk[0]["correct"] is False
    assert "4242" not in json.dumps(on_disk) and on_disk[0]["chat"] == inbox.chat_hash(4242)
    assert (tmp_path / "fb" / "labels" / "saree" / "AQADu1.jpg").read_bytes() == jpeg()
    assert inbox.records() == [record]


def test_salt_is_kept_and_differs_between_inboxes(tmp_path):
    first = FeedbackInbox(tmp_path / "a")
    assert FeedbackInbox(tmp_path / "a").chat_hash(1) == first.chat_hash(1)
    assert FeedbackInbox(tmp_path / "b").chat_hash(1) != first.chat_hash(1)
    assert FeedbackInbox(tmp_path / "c", salt="given").chat_hash(1) == FeedbackInbox(tmp_path / "d", salt="given").chat_hash(1)


def test_same_photo_twice_is_stored_once(tmp_path):
    inbox = FeedbackInbox(tmp_path)
    first = inbox.save_photo("U1", jpeg())
    assert inbox.photo_path("U1") == first
    second = inbox.save_photo("U1", b"would be a different download")
    assert second == first and first.read_bytes() == jpeg()
    for chat in (1, 2):
        inbox.record(chat_id=chat, file_unique_id="U1", photo=first, predicted="kurti", confidence=0.9, label="kurti",
                     checkpoint_id="c")
    assert len(list((tmp_path / "photos").iterdir())) == 1
    assert len(inbox.records()) == 2
    linked = tmp_path / "labels" / "kurti" / first.name
    assert linked.exists() and len(list(linked.parent.iterdir())) == 1


def test_crash_during_a_write_leaves_no_partial_record(tmp_path, monkeypatch):
    inbox = FeedbackInbox(tmp_path)
    photo = inbox.save_photo("U1", jpeg())

    def crash(src, dst):
        raise OSError("killed")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        inbox.record(chat_id=1, file_unique_id="U1", photo=photo, predicted="kurti", confidence=0.9, label="shirt",
                     checkpoint_id="c")
    monkeypatch.undo()
    assert inbox.records() == []
    assert not (tmp_path / "labels" / "shirt" / photo.name).exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith(".") and p.name != ".salt"]
    assert leftovers == []


def test_a_reader_skips_a_half_written_temporary(tmp_path):
    inbox = FeedbackInbox(tmp_path)
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / ".20260101-x.json.1234.tmp").write_text('{"time": "2026-')  # a writer killed mid-write
    write_atomically(tmp_path / "records" / "ok.json", json.dumps({
        "time": "t", "file_unique_id": "U", "photo": "photos/U.jpg", "predicted": "kurti", "confidence": 0.5,
        "label": NONE_OF_THESE, "correct": False, "checkpoint_id": "c", "chat": "h"}).encode())
    assert [r.label for r in inbox.records()] == [NONE_OF_THESE]


def test_parse_feedback():
    assert parse_feedback("fb:abc:ok", CLASSES) == ("abc", "ok")
    assert parse_feedback("fb:abc:no", CLASSES) == ("abc", "no")
    assert parse_feedback("fb:abc:1", CLASSES) == ("abc", "saree")
    assert parse_feedback("fb:abc:x", CLASSES) == ("abc", None)
    for bad in ("fb:abc:3", "fb:abc:-1", "fb::ok", "why:abc", "fb:abc", "fb:a:b:c"):
        assert parse_feedback(bad, CLASSES) is None


def test_every_button_fits_telegrams_64_bytes():
    key = photo_key("x" * 200)
    many_classes = [f"class_{i}" for i in range(120)]
    markups = [answer_keyboard(key, feedback_on=True), classes_keyboard(key, many_classes)]
    data = [button.callback_data for markup in markups for row in markup.inline_keyboard for button in row]
    assert len(data) == 3 + 120 + 2
    assert all(len(item.encode()) < 64 for item in data)
    assert answer_keyboard(key, feedback_on=False).inline_keyboard == ((answer_keyboard(key, True).inline_keyboard[0]),)

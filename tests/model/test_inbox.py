"""The feedback inbox on disk: atomic records, photos once, salted chat hashes, crash leftovers ignored."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from devtools.samples import image_bytes, make_photo
from model.inbox import (
    NONE_OF_THESE,
    FeedbackRecord,
    Inbox,
    InboxError,
    atomic_write,
    chat_hash,
    is_temp,
)
from model.live_accuracy import LiveAccuracy

REPO = Path(__file__).resolve().parents[2]


def record(photo_id="U1", label="saree", predicted="saree", chat="c1", time="2026-11-24T20:00:00.000000Z"):
    return FeedbackRecord(photo_id=photo_id, photo_file=f"photos/{photo_id}.jpg", predicted=predicted, confidence=0.9,
                          label=label, checkpoint_id="ab" * 32, chat=chat, time=time)


def test_record_round_trip(tmp_path):
    inbox = Inbox(tmp_path)
    written = record(label=NONE_OF_THESE)
    path = inbox.add_record(written)
    assert path.parent == inbox.records_dir / "c1" and path.suffix == ".json"  # one folder per chat
    assert inbox.records() == [written]
    assert not written.right and record().right


def test_same_photo_is_stored_once(tmp_path):
    inbox = Inbox(tmp_path)
    jpeg = image_bytes(make_photo(seed=1))
    first = inbox.add_photo("AgADxyz", jpeg)
    second = inbox.add_photo("AgADxyz", image_bytes(make_photo(seed=2)))
    assert first == second == inbox.photo_path("AgADxyz")
    assert first.name == "AgADxyz.jpg" and first.read_bytes() == jpeg
    assert inbox.photo_count() == 1
    png = inbox.add_photo("AgADpng", image_bytes(make_photo(seed=3), "PNG"))
    assert png.suffix == ".png" and inbox.photo_count() == 2


@pytest.mark.parametrize("bad_id", ["../escape", "a/b", "", "x" * 200, "dot.dot"])
def test_photo_ids_never_become_paths_outside(tmp_path, bad_id):
    with pytest.raises(InboxError):
        Inbox(tmp_path).add_photo(bad_id, b"\xff\xd8\xff")
    assert not (tmp_path / "photos").exists() or not any((tmp_path / "photos").iterdir())


def test_readers_skip_temp_and_damaged_files(tmp_path, caplog):
    inbox = Inbox(tmp_path)
    inbox.add_record(record())
    (inbox.records_dir / ".20261124-half.json.x1.tmp").write_text('{"format": "product-id-feed')
    (inbox.records_dir / "20261124-broken.json").write_text('{"format": "product-id-feed')  # e.g. edited by hand
    (inbox.records_dir / "notes.txt").write_text("not a record")
    (inbox.photos_dir).mkdir()
    (inbox.photos_dir / ".U9.jpg.abc.tmp").write_bytes(b"\xff\xd8")
    assert [r.label for r in inbox.records()] == ["saree"]
    assert inbox.photo_count() == 0 and inbox.photo_path("U9") is None
    assert "broken.json" in caplog.text


def test_a_failed_write_leaves_nothing_and_the_next_one_works(tmp_path, monkeypatch):
    inbox = Inbox(tmp_path)
    real_replace = os.replace

    def crash(*args):
        raise OSError("disk gone at the worst moment")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        inbox.add_record(record())
    monkeypatch.setattr(os, "replace", real_replace)
    assert inbox.records() == [] and list(inbox.chat_dir("c1").iterdir()) == []
    inbox.add_record(record(label="kurti"))
    assert [r.label for r in inbox.records()] == ["kurti"]


def test_killed_in_the_middle_of_a_write(tmp_path):
    """A real SIGKILL after the bytes are written and before the rename: readers see nothing of it, the
    leftover temp file is ignored (and later cleaned), and the next write works."""
    inbox_dir = tmp_path / "inbox"
    Inbox(inbox_dir).add_record(record(label="shirt"))
    script = textwrap.dedent(f"""
        import os, signal, sys, types
        # An empty stand-in for the model package: importing the real one would load torch, seconds for nothing.
        package = sys.modules["model"] = types.ModuleType("model")
        package.__path__ = [{str(REPO / "model")!r}]
        from model.inbox import FeedbackRecord, Inbox
        os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)  # dies between fsync and rename
        Inbox({str(inbox_dir)!r}).add_record(FeedbackRecord("U2", "photos/U2.jpg", "kurti", 0.5, "saree", "ck", "c2"))
    """)
    child = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                           capture_output=True, timeout=120)
    assert child.returncode == -9, child.stderr.decode()
    inbox = Inbox(inbox_dir)
    leftovers = [p for p in inbox.chat_dir("c2").iterdir() if is_temp(p)]
    assert len(leftovers) == 1 and '"label": "saree"' in leftovers[0].read_text()  # the whole record, never renamed
    assert [r.label for r in inbox.records()] == ["shirt"]
    inbox.add_record(record(photo_id="U3", label="kurti", time="2026-11-24T21:00:00.000000Z"))
    assert [r.label for r in inbox.records()] == ["shirt", "kurti"]
    assert inbox.remove_stale_temp_files(older_than_s=3600) == 0  # might still be in progress: kept
    old = time.time() - 7200
    os.utime(leftovers[0], (old, old))
    assert inbox.remove_stale_temp_files(older_than_s=3600) == 1 and not leftovers[0].exists()


def test_exclusive_write_keeps_the_first(tmp_path):
    target = tmp_path / "x"
    assert atomic_write(target, b"first", exclusive=True)
    assert not atomic_write(target, b"second", exclusive=True)
    assert target.read_bytes() == b"first" and list(tmp_path.iterdir()) == [target]


def test_salt_is_made_once_private_and_kept(tmp_path):
    inbox = Inbox(tmp_path)
    salt = inbox.salt()
    assert len(salt) == 64 and inbox.salt() == salt == Inbox(tmp_path).salt()
    assert inbox.salt_path.stat().st_mode & 0o777 == 0o600
    assert inbox.salt("given-by-operator") == "given-by-operator"


def test_chat_hash_hides_the_id():
    hashed = chat_hash(123456789, "salt-a")
    assert hashed == chat_hash(123456789, "salt-a")
    assert "123456789" not in hashed and len(hashed) == 16
    assert hashed != chat_hash(123456789, "salt-b") and hashed != chat_hash(123456780, "salt-a")


def test_forget_chat_deletes_its_records_and_unshared_photos(tmp_path):
    inbox = Inbox(tmp_path)
    for photo_id in ("Umine", "Ushared", "Uother"):
        inbox.add_photo(photo_id, b"\xff\xd8\xff" + photo_id.encode())
    inbox.add_record(record("Umine", chat="me"))
    inbox.add_record(record("Ushared", chat="me"))
    inbox.add_record(record("Ushared", chat="you"))
    inbox.add_record(record("Uother", chat="you"))
    assert inbox.forget_chat("me") == (2, 1)
    assert {r.chat for r in inbox.records()} == {"you"}
    assert inbox.photo_path("Umine") is None and inbox.photo_path("Ushared") and inbox.photo_path("Uother")


def test_live_accuracy_counts_each_chats_latest_judgement():
    records = [
        record("U1", label="kurti", predicted="saree", chat="a", time="2026-01-01T00:00:00Z"),
        record("U1", label="saree", predicted="saree", chat="a", time="2026-01-02T00:00:00Z"),  # changed their mind
        record("U2", label="shirt", predicted="saree", chat="a"),
        record("U2", label=NONE_OF_THESE, predicted="saree", chat="b"),
        record("U3", label="kurti", predicted="kurti", chat="b"),
    ]
    live = LiveAccuracy.of(records)
    assert (live.judged, live.right, live.none_of_these) == (4, 2, 1)
    assert live.accuracy == 0.5
    scores = live.per_class(["kurti", "saree", "shirt"])
    assert scores["saree"] == {"answered": 3, "right": 1, "precision": 1 / 3, "labelled": 1, "recall": 1.0}
    assert scores["shirt"]["answered"] == 0 and scores["shirt"]["precision"] is None and scores["shirt"]["recall"] == 0.0

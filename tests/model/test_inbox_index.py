"""The inbox indexed by chat (issue 25 §3, §8): per-chat folders, deletion by name without reading records, the
flat layout migrated, files 0600, an odd time skipped, and deleting a photo reaching exports and reviews."""
from __future__ import annotations

import json
import logging

from model.inbox import FeedbackRecord, Inbox, record_epoch
from model.inbox_exports import EXPORT_MARKER, REVIEWS_FILE
from model.inbox_names import parse_record_name


def record(photo_id="U1", chat="c1", user="", time="2026-11-24T20:00:00.000000Z", label="saree"):
    return FeedbackRecord(photo_id=photo_id, photo_file=f"photos/{photo_id}.jpg", predicted="saree", confidence=0.9,
                          label=label, checkpoint_id="ab" * 32, chat=chat, time=time, user=user)


def add(inbox: Inbox, *records: FeedbackRecord) -> None:
    for item in records:
        inbox.add_photo(item.photo_id, b"\xff\xd8\xff" + item.photo_id.encode())
        inbox.add_record(item)


def test_record_names_index_chat_user_photo_and_time(tmp_path):
    inbox = Inbox(tmp_path)
    path = inbox.add_record(record("AgAD-x_1", chat="abcd", user="0f" * 8))
    assert path.parent == inbox.records_dir / "abcd"
    name = parse_record_name(path.name)
    assert (name.user, name.photo_id) == ("0f" * 8, "AgAD-x_1") and name.epoch == record_epoch(record())
    assert path.stat().st_mode & 0o777 == 0o600
    assert inbox.photo_path("AgAD-x_1") is None and inbox.add_photo("AgAD-x_1", b"\xff\xd8\xff").stat().st_mode & 0o777 == 0o600


def test_forget_and_purge_read_no_record(tmp_path, monkeypatch):
    inbox = Inbox(tmp_path)
    add(inbox, record("Uold", chat="c1", time="2026-01-01T00:00:00Z"), record("Unew", chat="c2"),
        record("Umine", chat="c3", user="aa" * 8))
    reads = []
    real_read = Inbox._read
    monkeypatch.setattr(Inbox, "_read", lambda self, path: reads.append(path) or real_read(self, path))
    fresh = Inbox(tmp_path)
    assert fresh.purge_older_than(record_epoch(record()) - 1) == (1, 1)
    assert fresh.forget_chat("c2") == (1, 1)
    assert fresh.forget_user("c3", "aa" * 8) == (1, 1)
    assert reads == [] and fresh.photo_count() == 0


def test_a_member_forgets_only_their_own_records_in_a_group(tmp_path):
    inbox = Inbox(tmp_path)
    add(inbox, record("Ushared", chat="group", user="aa" * 8), record("Ushared", chat="group", user="bb" * 8),
        record("Uold", chat="group"), record("Umine", chat="group", user="aa" * 8))
    assert inbox.forget_user("group", "aa" * 8) == (2, 1)  # Ushared is still needed by bb's record
    assert sorted((r.photo_id, r.user) for r in inbox.records()) == [("Uold", ""), ("Ushared", "bb" * 8)]
    assert inbox.photo_path("Umine") is None and inbox.photo_path("Ushared") is not None


def test_the_flat_layout_is_read_and_migrated(tmp_path):
    inbox = Inbox(tmp_path)
    inbox.records_dir.mkdir(parents=True)
    old = record("Uflat", chat="c9")
    (inbox.records_dir / "20261124T200000000000Z-1a2b3c4d.json").write_text(json.dumps(
        {k: v for k, v in json.loads(old.to_json()).items() if k != "user"}))  # written before records had a user
    (inbox.records_dir / "20261124-broken.json").write_text("{")
    assert [r.photo_id for r in inbox.records()] == ["Uflat"] and inbox.records()[0].user == ""
    assert inbox.migrate_flat_records() == 1
    [moved] = list((inbox.records_dir / "c9").iterdir())
    assert moved.stat().st_mode & 0o777 == 0o600 and parse_record_name(moved.name).photo_id == "Uflat"
    assert Inbox(tmp_path).records() == [old] and (inbox.records_dir / "20261124-broken.json").exists()
    assert Inbox(tmp_path).forget_chat("c9") == (1, 0)


def test_an_unexpected_time_is_skipped_and_logged_not_raised(tmp_path, caplog):
    inbox = Inbox(tmp_path)
    add(inbox, record("Uodd", time="yesterday-ish"), record("Uold", time="2026-01-01T00:00:00Z"))
    with caplog.at_level(logging.WARNING):
        assert record_epoch(record(time="24/11/2026")) is None
        assert inbox.purge_older_than(record_epoch(record())) == (1, 1)  # the old one goes, the odd one stays
    assert "not UTC ISO 8601" in caplog.text
    assert [r.photo_id for r in inbox.records()] == ["Uodd"]


def test_deleting_a_photo_deletes_its_export_links_and_review(tmp_path):
    from training.feedback import export_labelled
    from training.trust import read_reviews, write_review

    inbox = Inbox(tmp_path / "inbox")
    for chat in ("c1", "c2"):
        add(inbox, record("Ugone", chat=chat, user=chat.encode().hex()), record("Ukept", chat=chat, user="ee" * 8))
    write_review(inbox.root, "Ugone", "saree")
    assert (inbox.root / REVIEWS_FILE).stat().st_mode & 0o777 == 0o600
    out = tmp_path / "export"
    assert export_labelled(inbox.root, out) == {"saree": 2}
    assert (out / EXPORT_MARKER).exists() and (out / "saree" / "Ugone.jpg").exists()
    unrelated = tmp_path / "not-an-export" / "saree"
    unrelated.mkdir(parents=True)
    (unrelated / "Ugone.jpg").write_bytes(b"mine")
    inbox.register_export(unrelated.parent)  # no marker: never touched
    assert inbox.forget_user("c1", b"c1".hex()) == (1, 0)
    assert inbox.forget_chat("c2") == (2, 1)
    assert not (out / "saree" / "Ugone.jpg").exists() and (out / "saree" / "Ukept.jpg").exists()
    assert (unrelated / "Ugone.jpg").exists()
    assert read_reviews(inbox.root) == {}

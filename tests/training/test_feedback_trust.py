"""Feedback is a claim, not the truth: one adversarial chat cannot change the training set beyond its cap, an
admin's review brings a lone correction in, the report names the adversary, and live accuracy per checkpoint
comes with 95% intervals and says whether a difference is conclusive."""
from __future__ import annotations

import pytest
from test_feedback import judge

from model.inbox import FeedbackRecord
from model.live_accuracy import CheckpointScore, accuracy_difference, per_checkpoint, wilson_interval
from training.feedback import live_report, main
from training.trust import TrustRule, suspicious_chats, trusted_labels, write_review

ADVERSARY = "evil"


def record(photo: str, label: str, predicted: str, chat: str, checkpoint: str = "a" * 64, minute: int = 0):
    return FeedbackRecord(photo, f"photos/{photo}.jpg", predicted, 0.9, label, checkpoint, chat,
                          f"2026-12-01T10:{minute // 60:02d}:{minute % 60:02d}Z")


def honest_records() -> list[FeedbackRecord]:
    """Ten chats, each confirming two right answers; five corrections, each made by two chats."""
    records = [record(f"h{chat}_{i}", "kurti", "kurti", f"chat{chat}", minute=2 * chat + i)
               for chat in range(10) for i in range(2)]
    for k in range(5):
        records += [record(f"fix{k}", "shirt", "saree", f"chat{k}", minute=30 + k),
                    record(f"fix{k}", "shirt", "saree", f"chat{k + 5}", minute=30 + k)]
    return records


def adversary_records() -> list[FeedbackRecord]:
    """A hundred sarees 'corrected' to shirt, and thirty answers confirmed, all from one chat."""
    return ([record(f"evil{i}", "shirt", "saree", ADVERSARY, minute=40 + i % 19) for i in range(100)]
            + [record(f"evilright{i}", "saree", "saree", ADVERSARY, minute=i % 59) for i in range(30)])


def test_one_adversarial_chat_changes_the_training_set_by_at_most_its_cap():
    rule = TrustRule()
    without = trusted_labels(honest_records(), {}, rule).labels
    attacked = trusted_labels(honest_records() + adversary_records(), {}, rule)
    assert set(without.items()) <= set(attacked.labels.items())  # every honest label stays
    added = {photo for photo in attacked.labels if photo not in without}
    assert added <= {f"evilright{i}" for i in range(30)}  # none of the hundred false corrections
    assert all(label == "saree" for photo, label in attacked.labels.items() if photo.startswith("evil"))
    assert 1 <= len(added) <= max(rule.cap_floor, int(rule.max_chat_share * len(attacked.labels)))
    assert attacked.per_chat[ADVERSARY] == len(added)
    assert all(f"fix{k}" in attacked.labels for k in range(5))  # corrections two chats agree on count
    assert len(without) == 25


def test_the_report_names_the_adversary_and_not_the_honest_chats():
    found = suspicious_chats(honest_records() + adversary_records())
    assert [s.chat for s in found] == [ADVERSARY]
    assert found[0].against_everyone == 100 and found[0].judged == 130


def test_a_review_brings_a_lone_correction_in_and_overrides_users(tmp_path):
    from model.inbox import Inbox

    inbox = Inbox(tmp_path / "feedback")
    judge(inbox, "Ulone", "shirt", "saree", "chat1")  # a correction nobody else made
    judge(inbox, "Uboth", "kurti", "saree", "chat1")
    judge(inbox, "Uboth", "kurti", "saree", "chat2")
    assert trusted_labels(inbox.records(), {}).labels == {"Uboth": "kurti"}
    assert main(["review", "--inbox", str(inbox.root)]) == 0
    write_review(inbox.root, "Ulone", "shirt")
    write_review(inbox.root, "Uboth", "saree")  # the admin disagrees with both users
    assert main(["review", "--inbox", str(inbox.root), "--photo", "Ulone", "--label", "shirt"]) == 0
    from training.trust import read_reviews

    assert trusted_labels(inbox.records(), read_reviews(inbox.root)).labels == {"Ulone": "shirt", "Uboth": "saree"}
    assert main(["review", "--inbox", str(inbox.root), "--photo", "nope", "--label", "shirt"]) == 2


def test_wilson_interval_matches_the_formula_and_stays_in_range():
    low, high = wilson_interval(40, 50)
    assert low == pytest.approx(0.6696, abs=1e-3) and high == pytest.approx(0.8875, abs=1e-3)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    assert wilson_interval(0, 0) is None


def test_per_checkpoint_accuracy_and_whether_the_difference_is_conclusive(tmp_path):
    records = ([record(f"a{i}", "kurti" if i < 40 else "saree", "kurti", f"u{i}", "a" * 64) for i in range(50)]
               + [record(f"b{i}", "kurti" if i < 20 else "saree", "kurti", f"u{i}", "b" * 64) for i in range(50)])
    scores = {s.checkpoint_id[0]: s for s in per_checkpoint(records)}
    assert (scores["a"].right, scores["a"].judged, scores["b"].right) == (40, 50, 20)
    diff, low, high = accuracy_difference(scores["a"], scores["b"])
    assert diff == pytest.approx(0.4) and low > 0  # conclusive
    small = accuracy_difference(CheckpointScore("x", 4, 3), CheckpointScore("y", 4, 2))
    assert small[1] < 0 < small[2]  # not conclusive


def test_the_report_shows_checkpoints_with_intervals(tmp_path):
    from model.inbox import Inbox

    inbox = Inbox(tmp_path / "feedback")
    for i in range(6):
        judge(inbox, f"U{i}", "kurti", "kurti", f"chat{i}")
    text, out = live_report(inbox.root, tmp_path / "report")
    assert "live accuracy by checkpoint (95% Wilson interval):" in text
    assert "cccccccccccc: 100.0% (6 of 6), 61.0%-100.0%" in text


def user_record(photo: str, label: str, predicted: str, chat: str, user: str, minute: int = 0) -> FeedbackRecord:
    return FeedbackRecord(photo, f"photos/{photo}.jpg", predicted, 0.9, label, "a" * 64, chat,
                          f"2026-12-01T11:{minute // 60:02d}:{minute % 60:02d}Z", user=user)


def test_one_user_with_a_private_chat_and_groups_they_made_is_still_one_voter():
    """Issue 25 §3: the same person in four chats passes min_chats, never min_users."""
    rooms = ["private", "group1", "group2", "group3"]
    records = [user_record("P1", "shirt", "saree", room, "u" * 16, minute=i) for i, room in enumerate(rooms)]
    trusted = trusted_labels(records, {})
    assert trusted.labels == {} and trusted.left_out["P1"].reason == "a lone correction"
    assert trusted.left_out["P1"].detail.startswith("from 1 user(s)")  # their latest word, once
    two_people = records[:1] + [user_record("P1", "shirt", "saree", "group1", "v" * 16)]
    assert trusted_labels(two_people, {}).labels == {"P1": "shirt"}
    same_room = [user_record("P1", "shirt", "saree", "group1", "u" * 16),
                 user_record("P1", "shirt", "saree", "group1", "v" * 16)]
    assert trusted_labels(same_room, {}).labels == {}  # two users, but one chat: chats still count too
    assert trusted_labels(same_room, {}, TrustRule(min_chats=1)).labels == {"P1": "shirt"}


def test_one_users_votes_across_chats_count_once_and_share_one_cap():
    """Their "Right"s from many groups are one voter per photo, and their cap does not grow with each group."""
    rule = TrustRule(cap_floor=3, max_chat_share=0.0)
    records = [user_record(f"R{i}", "kurti", "kurti", f"group{i % 5}", "u" * 16, minute=i) for i in range(20)]
    trusted = trusted_labels(records, {}, rule)
    assert len(trusted.labels) == 3 and trusted.per_user["user:" + "u" * 16] == 3
    assert sum(1 for why in trusted.left_out.values() if why.reason == "over the cap") == 17
    tie = [user_record("T", "kurti", "saree", "a", "u" * 16), user_record("T", "shirt", "saree", "b", "u" * 16, 1)]
    assert trusted_labels(tie, {}).left_out["T"].reason == "a lone correction"  # their latest word only, once


def test_old_records_without_a_user_count_their_chat_as_the_voter():
    records = [record("O1", "shirt", "saree", "chatA"), record("O1", "shirt", "saree", "chatB")]
    assert trusted_labels(records, {}).labels == {"O1": "shirt"}

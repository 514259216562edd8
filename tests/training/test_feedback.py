"""The feedback inbox seen from training: consensus labels, "None of these" left out, export for --extra
(training on more photos), and the live report (text, JSON, confusion matrix PNG)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from devtools.samples import image_bytes, make_photo
from model.inbox import NONE_OF_THESE, FeedbackRecord, Inbox
from training.data import load_dataset
from training.feedback import FeedbackError, export_labelled, labelled_photos, live_report, main
from training.pipeline import TrainingSettings, run_training

COLOURS = {"kurti": (200, 40, 40), "saree": (40, 60, 200), "shirt": (230, 200, 30)}


def judge(inbox: Inbox, photo_id: str, label: str, predicted: str, chat: str, time: str = "2026-11-24T20:00:00Z"):
    colour = COLOURS.get(label, (250, 250, 250))
    path = inbox.add_photo(photo_id, image_bytes(make_photo(96, 96, colour, seed=sum(map(ord, photo_id)))))
    inbox.add_record(FeedbackRecord(photo_id, path.relative_to(inbox.root).as_posix(), predicted, 0.7, label,
                                    "c" * 64, chat, time))


@pytest.fixture
def inbox(tmp_path) -> Inbox:
    """Five judged photos: 2 saree (one a correction two chats agree on), 1 kurti, 1 "none of these", 1 the
    users disagree on; plus a mind changed."""
    inbox = Inbox(tmp_path / "feedback")
    judge(inbox, "Ua", "saree", "saree", "chat1")
    judge(inbox, "Ub", "saree", "kurti", "chat1")
    judge(inbox, "Ub", "saree", "kurti", "chat3")
    judge(inbox, "Uc", "shirt", "kurti", "chat2", "2026-11-24T20:00:00Z")
    judge(inbox, "Uc", "kurti", "kurti", "chat2", "2026-11-24T20:05:00Z")  # changed their mind: kurti
    judge(inbox, "Ud", NONE_OF_THESE, "shirt", "chat3")
    judge(inbox, "Ue", "saree", "shirt", "chat1")
    judge(inbox, "Ue", "shirt", "shirt", "chat2")  # 1 vote each: left out
    return inbox


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """DIR/<class>/ with 3 photos per class (2 train, 1 test after the stratified split)."""
    root = tmp_path / "data"
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(3):
            make_photo(96, 96, colour, seed=i).save(root / name / f"{i}.jpg")
    return root


def test_labelled_photos_use_the_consensus_and_leave_out_none_of_these(inbox):
    photos = labelled_photos(inbox.root)
    assert {name: [p.stem for p in paths] for name, paths in photos.items()} == {"kurti": ["Uc"], "saree": ["Ua", "Ub"]}
    assert NONE_OF_THESE not in photos
    assert labelled_photos(inbox.root, class_names=["kurti", "shirt"]) == {"kurti": photos["kurti"]}


def test_training_with_extra_uses_the_feedback_photos(inbox, tiny_data, tmp_path):
    exported = tmp_path / "labels"
    assert export_labelled(inbox.root, exported) == {"kurti": 1, "saree": 2}
    plain = load_dataset(tiny_data, seed=0)
    more = load_dataset(tiny_data, seed=0, extra_dirs=[exported])
    grown = {name: more.counts("train")[name] - plain.counts("train")[name] for name in plain.class_names}
    assert grown == {"kurti": 1, "saree": 2, "shirt": 0}
    assert more.test == plain.test  # feedback photos only ever train
    assert {s.path.name for s in more.train} - {s.path.name for s in plain.train} == {"Ua.jpg", "Ub.jpg", "Uc.jpg"}


def test_a_training_run_counts_the_feedback_photos(inbox, tiny_data, tmp_path):
    exported = tmp_path / "labels"
    export_labelled(inbox.root, exported)
    settings = TrainingSettings(data=tiny_data, out=tmp_path / "ck" / "model.pt", weights="none", epochs=2, copies=1,
                                extra=(exported,), batch_size=16)
    result = run_training(settings)
    record = json.loads((result.run_dir / "metrics.json").read_text())["settings"]
    assert record["train_counts"] == {"kurti": 3, "saree": 4, "shirt": 2}


def test_export_replaces_its_own_folder_and_refuses_others(inbox, tmp_path):
    exported = tmp_path / "labels"
    export_labelled(inbox.root, exported)
    judge(inbox, "Uf", "shirt", "shirt", "chat4")
    assert export_labelled(inbox.root, exported) == {"kurti": 1, "saree": 2, "shirt": 1}
    assert sorted(p.name for p in (exported / "shirt").iterdir()) == ["Uf.jpg"]
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "mine.txt").write_text("keep me")
    with pytest.raises(FeedbackError, match="not made by an export"):
        export_labelled(inbox.root, precious)
    assert (precious / "mine.txt").read_text() == "keep me"


def test_live_report(inbox, tmp_path):
    text, out = live_report(inbox.root, tmp_path / "report")
    # Latest judgement per (photo, chat): Ua right, Ub wrong twice, Uc right, Ud none, Ue right once and wrong once.
    assert "live accuracy: 42.9% (3 of 7 answers judged right; 1 'none of these'" in text
    kurti = next(line for line in text.splitlines() if line.startswith("kurti"))
    assert kurti.split()[:3] == ["kurti", "3", "1"]  # answered 3 times, right once
    assert "training may use 3 photo(s)" in text
    summary = json.loads((out / "live_accuracy.json").read_text())
    assert summary["confusion_matrix"]["rows_users_said"] == ["kurti", "saree", "shirt", NONE_OF_THESE]
    assert summary["confusion_matrix"]["counts"] == [[1, 0, 0], [2, 1, 1], [0, 0, 1], [0, 0, 1]]
    assert summary["photos_kept"] == 5
    with Image.open(out / "live_confusion_matrix.png") as picture:
        assert picture.size[0] > 300 and picture.size[1] > 300


def test_cli(inbox, tmp_path, capsys):
    assert main(["report", "--inbox", str(inbox.root)]) == 0
    printed = capsys.readouterr().out
    assert "live accuracy" in printed and (inbox.root / "report" / "live_confusion_matrix.png").is_file()
    assert main(["export", "--inbox", str(inbox.root), "--out", str(tmp_path / "labels")]) == 0
    assert "1 kurti, 2 saree" in capsys.readouterr().out
    assert main(["report", "--inbox", str(tmp_path / "nowhere")]) == 2
    assert "not a feedback inbox" in capsys.readouterr().err


def test_extra_can_be_the_inbox_itself(inbox, tiny_data):
    plain = load_dataset(tiny_data, seed=0)
    more = load_dataset(tiny_data, seed=0, extra_dirs=[inbox.root])
    grown = {name: more.counts("train")[name] - plain.counts("train")[name] for name in plain.class_names}
    assert grown == {"kurti": 1, "saree": 2, "shirt": 0}

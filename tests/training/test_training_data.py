"""Folders -> samples: both layouts, the split, skipped files and the errors raised before any work."""
from __future__ import annotations

import logging

import pytest
from training_synthetic import synthetic_photo, write_class_folders, write_split_folders

from training.data import DataError, load_dataset


def test_split_layout_keeps_the_given_split_with_sorted_class_names(tmp_path):
    write_split_folders(tmp_path, train=3, test=2, classes=("stripes", "checks", "plain"))
    dataset = load_dataset(tmp_path)
    assert dataset.class_names == ("checks", "plain", "stripes")
    assert dataset.layout == "split"
    assert dataset.counts("train") == {"checks": 3, "plain": 3, "stripes": 3}
    assert dataset.counts("test") == {"checks": 2, "plain": 2, "stripes": 2}
    assert all(s.path.parent.parent.name == "train" for s in dataset.train)
    assert all(dataset.class_names[s.label] == s.path.parent.name for s in dataset.train + dataset.test)


def test_class_folders_are_split_stratified_and_reproducibly(tmp_path):
    write_class_folders(tmp_path, per_class=8)
    first = load_dataset(tmp_path, test_fraction=0.25, seed=3)
    again = load_dataset(tmp_path, test_fraction=0.25, seed=3)
    other = load_dataset(tmp_path, test_fraction=0.25, seed=4)
    assert first.layout == "folders"
    assert first.counts("test") == {"checks": 2, "plain": 2, "stripes": 2}
    assert first.counts("train") == {"checks": 6, "plain": 6, "stripes": 6}
    assert first == again
    assert {s.path for s in first.test} != {s.path for s in other.test}
    assert not {s.path for s in first.train} & {s.path for s in first.test}


def test_unreadable_and_non_image_files_are_skipped_with_a_warning_naming_them(tmp_path, caplog):
    write_split_folders(tmp_path, train=2, test=1, classes=("checks", "plain"))
    notes = tmp_path / "train" / "checks" / "notes.txt"
    notes.write_text("not a photo")
    broken = tmp_path / "train" / "plain" / "broken.jpg"
    jpeg = tmp_path / "whole.jpg"
    synthetic_photo("plain", 1).save(jpeg)
    broken.write_bytes(jpeg.read_bytes()[:200])
    (tmp_path / "train" / "plain" / ".DS_Store").write_bytes(b"\x00\x01")
    with caplog.at_level(logging.WARNING, logger="training.data"):
        dataset = load_dataset(tmp_path)
    assert {p for p, _ in dataset.skipped} == {notes, broken}
    assert str(notes) in caplog.text and str(broken) in caplog.text
    assert dataset.counts("train") == {"checks": 2, "plain": 2}


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    write_class_folders(tmp_path, per_class=3, classes=("checks", "plain"))
    (tmp_path / "stripes").mkdir()
    with pytest.raises(DataError, match="stripes.*no readable photos"):
        load_dataset(tmp_path)


def test_a_class_folder_with_only_unreadable_files_counts_as_empty(tmp_path):
    write_split_folders(tmp_path, train=2, test=1, classes=("checks", "plain"))
    for photo in (tmp_path / "train" / "plain").iterdir():
        photo.write_bytes(b"garbage")
    with pytest.raises(DataError, match="plain.*no readable photos"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("classes", [(), ("checks",)])
def test_fewer_than_two_classes_is_an_error(tmp_path, classes):
    write_class_folders(tmp_path, per_class=3, classes=classes)
    with pytest.raises(DataError, match="at least two class"):
        load_dataset(tmp_path)


def test_a_class_without_test_photo_is_an_error(tmp_path):
    write_split_folders(tmp_path, train=2, test=1, classes=("checks", "plain"))
    for photo in (tmp_path / "test" / "plain").iterdir():
        photo.unlink()
    with pytest.raises(DataError, match="'plain' has no test photo"):
        load_dataset(tmp_path)


def test_a_class_missing_from_test_is_an_error(tmp_path):
    write_split_folders(tmp_path, train=2, test=1, classes=("checks", "plain"))
    write_class_folders(tmp_path / "train", per_class=2, classes=("stripes",))
    with pytest.raises(DataError, match="'stripes' has no test photo"):
        load_dataset(tmp_path)


def test_a_single_photo_class_cannot_be_split(tmp_path):
    write_class_folders(tmp_path, per_class=3, classes=("checks", "plain"))
    write_class_folders(tmp_path, per_class=1, classes=("stripes",))
    with pytest.raises(DataError, match="'stripes' has 1 readable photo"):
        load_dataset(tmp_path)


def test_missing_data_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nowhere")


def test_extra_photos_join_training_and_unknown_folders_are_ignored_with_a_note(tmp_path, caplog):
    data = write_split_folders(tmp_path / "data", train=2, test=1, classes=("checks", "plain"))
    extra = write_class_folders(tmp_path / "feedback", per_class=2, classes=("plain", "stripes"), seed=7)
    (extra / "none_of_these").mkdir()
    synthetic_photo("plain", 99).save(extra / "none_of_these" / "x.png")
    with caplog.at_level(logging.WARNING, logger="training.data"):
        dataset = load_dataset(data, extra_dirs=[extra])
    assert dataset.class_names == ("checks", "plain")
    assert dataset.counts("train") == {"checks": 2, "plain": 4}
    assert dataset.counts("test") == {"checks": 1, "plain": 1}
    extra_paths = {s.path for s in dataset.train if extra in s.path.parents}
    assert extra_paths == set((extra / "plain").iterdir())
    assert "none_of_these" in caplog.text and "stripes" in caplog.text

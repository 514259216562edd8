"""From folders of labelled photos to train/test samples, checked before any expensive work starts.

Two layouts are understood:

* ``DIR/train/<class>/`` and ``DIR/test/<class>/`` — the split is given;
* ``DIR/<class>/`` — each class is split into train and test, stratified and reproducibly (by seed).

Class names are the folder names, sorted. Every photo is decoded once here with the same
``model.preprocess.open_image`` the bot uses, so an unreadable or non-image file is skipped (with a warning
naming it) instead of failing in the middle of training. Files are visited in sorted order so that the same
folders and seed always give the same samples in the same order.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from model.inbox import Inbox
from model.preprocess import ImageError, open_image

log = logging.getLogger(__name__)

# Labels from user feedback (issue 8) that mean "none of the known classes": never a training class.
IGNORED_EXTRA_FOLDERS = ("none_of_these",)


class DataError(ValueError):
    """The photo folders cannot be trained on; ``str(error)`` is one line saying what to fix."""


@dataclass(frozen=True)
class Sample:
    """One labelled photo: its file and the index of its class in ``Dataset.class_names``."""

    path: Path
    label: int


@dataclass(frozen=True)
class Dataset:
    """The checked samples: class names (sorted folder names), train and test samples in a fixed order,
    and the files that were skipped with the reason."""

    class_names: tuple[str, ...]
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]
    skipped: tuple[tuple[Path, str], ...] = field(default=())
    layout: str = "split"  # "split" (train/ and test/ given) or "folders" (split here)

    def counts(self, split: str) -> dict[str, int]:
        samples = self.train if split == "train" else self.test
        return {name: sum(1 for s in samples if s.label == i) for i, name in enumerate(self.class_names)}


def _class_folders(directory: Path) -> list[Path]:
    return sorted((p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def _readable_photos(folder: Path, skipped: list[tuple[Path, str]]) -> list[Path]:
    """The files of ``folder`` that decode as images, sorted; the others go to ``skipped`` with a warning.

    Hidden files (``.DS_Store``, half-written ``.tmp`` files of a writer) are passed over silently.
    """
    photos = []
    files = sorted(folder.iterdir(), key=lambda p: p.name)
    for path in tqdm(files, desc=f"checking {folder.name}", unit="file", leave=False, disable=len(files) < 200):
        if path.name.startswith(".") or path.is_dir():
            continue
        try:
            open_image(path, draft_size=64)  # a drafted JPEG decode is enough to prove the file is readable
        except ImageError as exc:
            log.warning("skipped %s: %s", path, exc)
            skipped.append((path, str(exc)))
            continue
        photos.append(path)
    return photos


def _photos_by_class(directory: Path, skipped: list[tuple[Path, str]]) -> dict[str, list[Path]]:
    return {folder.name: _readable_photos(folder, skipped) for folder in _class_folders(directory)}


def _check_classes(by_class: dict[str, list[Path]], where: Path) -> None:
    if len(by_class) < 2:
        found = ", ".join(by_class) or "none"
        raise DataError(f"{where} needs at least two class folders with photos (found: {found})")
    for name, photos in by_class.items():
        if not photos:
            raise DataError(f"class folder {where / name} has no readable photos; add some or remove the folder")


def stratified_split(
    by_class: dict[str, list[Path]], test_fraction: float, seed: int
) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    """Split each class's photos: ``round(n * test_fraction)`` to test (at least 1, at most n - 1)."""
    train: dict[str, list[Path]] = {}
    test: dict[str, list[Path]] = {}
    for name, photos in by_class.items():
        if len(photos) < 2:
            raise DataError(
                f"class {name!r} has {len(photos)} readable photo; it needs at least 2 (one to train on, one to test)"
            )
        shuffled = list(photos)
        # One generator per class, seeded by name: adding a class does not reshuffle the others.
        random.Random(f"{seed}:{name}").shuffle(shuffled)
        n_test = min(len(photos) - 1, max(1, round(len(photos) * test_fraction)))
        test[name] = sorted(shuffled[:n_test])
        train[name] = sorted(shuffled[n_test:])
    return train, test


def _extra_photos(
    extra_dirs: Iterable[Path], class_names: tuple[str, ...], skipped: list[tuple[Path, str]]
) -> dict[str, list[Path]]:
    """Photos from ``--extra`` folders (``<class>/``), for known classes only."""
    extra: dict[str, list[Path]] = {name: [] for name in class_names}
    for directory in extra_dirs:
        directory = Path(directory)
        if not directory.is_dir():
            raise DataError(f"--extra folder {directory} does not exist")
        if Inbox.looks_like_inbox(directory):  # the bot's FEEDBACK_DIR: labels come from its records
            from .feedback import labelled_photos  # imported here: feedback.py pulls in matplotlib

            for name, photos in labelled_photos(directory, class_names).items():
                extra[name] += photos
            continue
        for folder in _class_folders(directory):
            if folder.name not in class_names:
                reason = "not a training class" if folder.name not in IGNORED_EXTRA_FOLDERS else "no class to learn"
                log.warning("note: ignored %s (%s; the classes are %s)", folder, reason, ", ".join(class_names))
                continue
            extra[folder.name] += _readable_photos(folder, skipped)
    return extra


def load_dataset(
    data_dir: str | Path,
    *,
    test_fraction: float = 0.25,
    seed: int = 0,
    extra_dirs: Iterable[str | Path] = (),
) -> Dataset:
    """Scan ``data_dir`` (either layout, see the module docstring) and ``extra_dirs``; raise
    :class:`DataError` for anything that would make training meaningless."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder {data_dir} does not exist")
    skipped: list[tuple[Path, str]] = []
    if (data_dir / "train").is_dir() or (data_dir / "test").is_dir():
        layout = "split"
        if not (data_dir / "test").is_dir() or not (data_dir / "train").is_dir():
            raise DataError(f"{data_dir} has a train/ or test/ folder but not both; add the other or use <class>/ folders")
        train = _photos_by_class(data_dir / "train", skipped)
        test = _photos_by_class(data_dir / "test", skipped)
        _check_classes(train, data_dir / "train")
        for name in test:
            if name not in train:
                raise DataError(f"test class {name!r} has no folder in {data_dir / 'train'}")
        for name in train:
            if not test.get(name):
                raise DataError(f"class {name!r} has no test photo; put at least one in {data_dir / 'test' / name}")
    else:
        layout = "folders"
        by_class = _photos_by_class(data_dir, skipped)
        _check_classes(by_class, data_dir)
        train, test = stratified_split(by_class, test_fraction, seed)

    class_names = tuple(sorted(train))
    for name, photos in _extra_photos(extra_dirs, class_names, skipped).items():
        train[name] = train[name] + photos

    def samples(by_class: dict[str, list[Path]]) -> tuple[Sample, ...]:
        return tuple(Sample(path, i) for i, name in enumerate(class_names) for path in by_class[name])

    return Dataset(class_names, samples(train), samples(test), tuple(skipped), layout)

"""Fixtures for the training tests: generated photo folders and one shared training run on them."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # training_synthetic.py, next to this file

from training_synthetic import LEARN_COPIES, LEARN_EPOCHS, LEARN_PER_CLASS, write_class_folders, write_split_folders  # noqa: E402

from training.pipeline import TrainingSettings, run_training  # noqa: E402


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory):
    """One training run on generated, learnable photos (``<class>/`` layout, split here)."""
    root = tmp_path_factory.mktemp("learn")
    data = write_class_folders(root / "data", LEARN_PER_CLASS)
    settings = TrainingSettings(
        data=data, out=root / "out" / "model.pt", weights="none", copies=LEARN_COPIES, epochs=LEARN_EPOCHS, seed=0
    )
    return settings, run_training(settings)


@pytest.fixture
def tiny_split(tmp_path) -> Path:
    """Two classes, two training photos and one test photo each: the cheapest dataset that trains."""
    return write_split_folders(tmp_path / "tiny", train=2, test=1, classes=("checks", "stripes"))

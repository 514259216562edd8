"""Metrics and plots from an evaluation."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from training.data import Sample
from training.report import (
    build_metrics,
    confusion_matrix,
    new_run_dir,
    per_class_scores,
    save_confusion_matrix,
    save_curves,
)
from training.train import EpochStats, Evaluation, History


def evaluation() -> Evaluation:
    targets = torch.tensor([0, 0, 1, 1, 2])
    predictions = torch.tensor([0, 1, 1, 1, 0])
    probabilities = torch.nn.functional.one_hot(predictions, 3).float() * 0.8 + 0.2 / 3
    return Evaluation(loss=0.5, accuracy=0.6, targets=targets, predictions=predictions, probabilities=probabilities)


def test_confusion_matrix_rows_are_true_classes():
    assert confusion_matrix(evaluation().targets, evaluation().predictions, 3) == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_per_class_precision_and_recall():
    scores = per_class_scores([[1, 1, 0], [0, 2, 0], [1, 0, 0]], ["a", "b", "c"])
    assert scores["a"]["precision"] == pytest.approx(0.5) and scores["a"]["recall"] == pytest.approx(0.5)
    assert scores["b"]["precision"] == pytest.approx(2 / 3) and scores["b"]["recall"] == 1.0
    assert scores["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_metrics_list_the_misclassified_photos():
    samples = [Sample(Path(f"/photos/{i}.jpg"), int(t)) for i, t in enumerate(evaluation().targets)]
    history = History()
    history.add(EpochStats(1.0, 0.5), evaluation())
    metrics = build_metrics(evaluation(), samples, ["a", "b", "c"], history)
    assert metrics["test_accuracy"] == 0.6
    assert [(m["file"], m["true"], m["predicted"]) for m in metrics["misclassified"]] == [
        ("/photos/1.jpg", "a", "b"),
        ("/photos/4.jpg", "c", "a"),
    ]
    assert metrics["misclassified"][0]["confidence"] == pytest.approx(0.8 + 0.2 / 3)
    assert metrics["history"]["train_loss"] == [1.0]


def test_plots_are_pngs(tmp_path):
    history = History()
    for epoch in range(5):
        history.add(EpochStats(1.0 / (epoch + 1), epoch / 5), evaluation())
    for path in (save_confusion_matrix([[3, 1], [0, 4]], ["kurti", "saree"], tmp_path / "cm.png"),
                 save_curves(history, tmp_path / "curves.png")):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 300


def test_run_folders_never_collide(tmp_path):
    first, second = new_run_dir(tmp_path), new_run_dir(tmp_path)
    assert first != second and first.is_dir() and second.is_dir()

"""Whole training runs on generated photos: it learns, the checkpoint holds what it should and serves what
was measured, and the modes train what they claim to."""
from __future__ import annotations

import json

import torch
from conftest import LEARN_COPIES, LEARN_EPOCHS, LEARN_PER_CLASS
from PIL import Image
from training_synthetic import CLASSES

from model import load_checkpoint, load_classifier
from model.network import build_network
from training.data import load_dataset
from training.pipeline import TrainingSettings, run_training, seed_everything


def test_training_learns_the_generated_classes(learned_run):
    _, result = learned_run
    metrics = result.metrics
    assert metrics["test_accuracy"] >= 0.9, metrics["confusion_matrix"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 3 * round(LEARN_PER_CLASS * 0.25)
    assert all(scores["recall"] >= 0.75 for scores in metrics["per_class"].values())
    assert metrics["history"]["test_accuracy"][-1] == metrics["test_accuracy"]
    assert metrics["history"]["train_loss"][-1] < metrics["history"]["train_loss"][0]


def test_checkpoint_holds_class_names_settings_and_metrics(learned_run):
    settings, result = learned_run
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint.class_names == list(CLASSES)
    training = checkpoint.training
    assert (training["weights"], training["epochs"], training["copies"], training["seed"]) == ("none", LEARN_EPOCHS, LEARN_COPIES, 0)
    assert training["unfreeze"] == "none" and training["mode"] == "cached" and training["data"] == str(settings.data)
    assert sum(training["train_counts"].values()) + sum(training["test_counts"].values()) == 3 * LEARN_PER_CLASS
    assert checkpoint.metrics["test_accuracy"] == result.metrics["test_accuracy"]
    assert set(checkpoint.metrics["per_class"]) == set(CLASSES)
    # Frozen backbone: the saved backbone is exactly the seeded initial one.
    seed_everything(0)
    initial = build_network(len(CLASSES), "none")
    for name, value in initial.backbone.state_dict().items():
        assert torch.equal(checkpoint.network.backbone.state_dict()[name], value), name


def test_the_served_checkpoint_reproduces_the_measured_test_results(learned_run):
    settings, result = learned_run
    classifier = load_classifier(result.checkpoint)
    test = load_dataset(settings.data, seed=settings.seed).test
    predictions = classifier.predict_images([classifier.open(s.path) for s in test])
    wrong = {str(s.path) for s, p in zip(test, predictions) if p.label != CLASSES[s.label]}
    assert wrong == {m["file"] for m in result.metrics["misclassified"]}
    assert 1 - len(wrong) / len(test) == result.metrics["test_accuracy"]


def test_the_run_folder_holds_metrics_and_plots(learned_run):
    _, result = learned_run
    assert result.run_dir.parent == result.checkpoint.parent / "runs"
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["metrics"]["test_accuracy"] == result.metrics["test_accuracy"]
    assert saved["settings"]["copies"] == LEARN_COPIES
    for name in ("confusion_matrix.png", "curves.png", "augmentation_preview.png"):
        with Image.open(result.run_dir / name) as image:
            assert image.format == "PNG"


def test_unfreeze_layer4_trains_layer4_and_head_but_nothing_before(tiny_split, tmp_path):
    settings = TrainingSettings(data=tiny_split, out=tmp_path / "model.pt", weights="none", epochs=1, copies=1, unfreeze="layer4")
    result = run_training(settings)
    checkpoint = load_checkpoint(result.checkpoint)
    assert checkpoint.training["mode"] == "images" and checkpoint.training["unfreeze"] == "layer4"
    seed_everything(0)
    initial = build_network(2, "none").state_dict()
    trained = checkpoint.network.state_dict()
    changed = {name for name, value in initial.items() if not torch.equal(trained[name], value)}
    assert any(name.startswith("backbone.layer4.") for name in changed)
    assert any(name.startswith("head.") for name in changed)
    assert all(name.startswith(("backbone.layer4.", "head.")) for name in changed), sorted(changed)[:5]

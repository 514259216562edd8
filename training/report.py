"""Evaluation report: metrics, confusion matrix and training curves, written to a run folder.

Everything in the metrics dict is a plain number, string, list or dict, so it can go into the checkpoint
(read with ``weights_only=True``) and into ``metrics.json`` unchanged.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window (servers have no display)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .data import Sample  # noqa: E402
from .train import Evaluation, History  # noqa: E402


def confusion_matrix(targets: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Rows: true class; columns: predicted class."""
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for true, predicted in zip(targets.tolist(), predictions.tolist()):
        matrix[true, predicted] += 1
    return matrix.tolist()


def per_class_scores(matrix: list[list[int]], class_names: Sequence[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support per class (0.0 where undefined: nothing predicted / no sample)."""
    m = np.asarray(matrix, dtype=np.int64)
    scores = {}
    for i, name in enumerate(class_names):
        true_positive = int(m[i, i])
        predicted, actual = int(m[:, i].sum()), int(m[i, :].sum())
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
    return scores


def misclassified(evaluation: Evaluation, samples: Sequence[Sample], class_names: Sequence[str]) -> list[dict]:
    wrong = []
    for index in torch.nonzero(evaluation.predictions != evaluation.targets).flatten().tolist():
        predicted = int(evaluation.predictions[index])
        wrong.append(
            {
                "file": str(samples[index].path),
                "true": class_names[int(evaluation.targets[index])],
                "predicted": class_names[predicted],
                "confidence": float(evaluation.probabilities[index, predicted]),
            }
        )
    return wrong


def build_metrics(evaluation: Evaluation, test_samples: Sequence[Sample], class_names: Sequence[str], history: History) -> dict:
    matrix = confusion_matrix(evaluation.targets, evaluation.predictions, len(class_names))
    return {
        "test_accuracy": evaluation.accuracy,
        "test_loss": evaluation.loss,
        "train_accuracy": history.train_accuracy[-1] if history.train_accuracy else 0.0,
        "train_loss": history.train_loss[-1] if history.train_loss else 0.0,
        "per_class": per_class_scores(matrix, class_names),
        "confusion_matrix": matrix,
        "class_names": list(class_names),
        "misclassified": misclassified(evaluation, test_samples, class_names),
        "history": history.to_dict(),
    }


def new_run_dir(runs_root: str | Path) -> Path:
    """``runs_root/<UTC timestamp>``, with a suffix when two runs start in the same second."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    root = Path(runs_root)
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        candidate = root / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a run folder under {root}")


def save_confusion_matrix(matrix: list[list[int]], class_names: Sequence[str], path: str | Path) -> Path:
    m = np.asarray(matrix)
    size = max(4.0, 1.0 + 0.8 * len(class_names))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(m, cmap="Blues", vmin=0, vmax=max(1, int(m.max())))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = range(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45 if len(class_names) > 4 else 0, ha="right" if len(class_names) > 4 else "center")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(m) / m.sum() if m.sum() else 0.0
    ax.set_title(f"Test confusion matrix (accuracy {accuracy:.0%}, {m.sum()} photos)")
    threshold = m.max() / 2 if m.max() else 0.5
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def save_curves(history: History, path: str | Path) -> Path:
    epochs = np.arange(1, len(history.train_loss) + 1)
    fig, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(10, 4))
    style = {"marker": "o", "markersize": 4} if len(epochs) <= 20 else {}  # a line of one point is invisible
    loss_ax.plot(epochs, history.train_loss, label="train", **style)
    loss_ax.plot(epochs, history.test_loss, label="test", **style)
    loss_ax.set_title("Loss (class-weighted cross-entropy)")
    loss_ax.set_xlabel("epoch")
    loss_ax.legend()
    accuracy_ax.plot(epochs, history.train_accuracy, label="train", **style)
    accuracy_ax.plot(epochs, history.test_accuracy, label="test", **style)
    if len(epochs) <= 20:
        accuracy_ax.set_xticks(epochs)
        loss_ax.set_xticks(epochs)
    accuracy_ax.set_title("Accuracy")
    accuracy_ax.set_xlabel("epoch")
    accuracy_ax.set_ylim(-0.02, 1.02)
    accuracy_ax.legend(loc="lower right")
    for ax in (loss_ax, accuracy_ax):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_metrics_json(metrics: dict, settings: dict, path: str | Path) -> Path:
    Path(path).write_text(json.dumps({"settings": settings, "metrics": metrics}, indent=2) + "\n")
    return Path(path)

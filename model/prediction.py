"""What a classification answers, as plain data: no torch, so a gateway bot reads answers from a cluster."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """The most likely class, its softmax probability, and the ``top`` classes in descending order."""

    label: str
    confidence: float
    top: tuple[tuple[str, float], ...]
    checkpoint_id: str = field(default="", compare=False)  # the model that answered, where the caller says

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "confidence": self.confidence,
            "top": [{"label": label, "confidence": conf} for label, conf in self.top],
        }

    @classmethod
    def from_dict(cls, data: dict, checkpoint_id: str = "") -> Prediction:
        top = tuple((str(item["label"]), float(item["confidence"])) for item in data["top"])
        return cls(label=str(data["label"]), confidence=float(data["confidence"]), top=top, checkpoint_id=checkpoint_id)


def prediction_of_row(probabilities: np.ndarray, class_names: Sequence[str], top_k: int = 3,
                      checkpoint_id: str = "") -> Prediction:
    """One row of softmax probabilities (NumPy) -> :class:`Prediction` (``top_k`` capped at the number of classes)."""
    k = max(1, min(top_k, len(class_names)))
    row = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    order = np.argsort(-row, kind="stable")[:k]
    top = tuple((class_names[int(i)], float(row[i])) for i in order)
    return Prediction(label=top[0][0], confidence=top[0][1], top=top, checkpoint_id=checkpoint_id)

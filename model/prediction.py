"""What a classification answers, as plain data: no torch, so a gateway bot reads answers from a cluster."""
from __future__ import annotations

from dataclasses import dataclass, field


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

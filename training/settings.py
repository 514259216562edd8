"""The settings of a training run: one frozen dataclass, filled from the CLI, defaults resolved per mode."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from model.preprocess import PreprocessConfig

from .augment import AugmentConfig
from .data import Dataset

# Defaults per mode: head-only epochs on cached features cost milliseconds; image epochs cost a ResNet50
# pass per copy, so fewer epochs and one fresh copy per photo per epoch.
DEFAULTS = {"cached": {"epochs": 60, "copies": 10}, "images": {"epochs": 10, "copies": 1}}
# Cached mode: at most this many augmented photos go through ResNet50 by default (about 5 minutes on 2
# cores): 20 photos get K=10, 3000 photos get K=2. Many photos need fewer augmented copies anyway.
FEATURE_BUDGET = 4000
MIN_DEFAULT_COPIES = 2


def default_copies(mode: str, train_photos: int) -> int:
    if mode != "cached":
        return DEFAULTS[mode]["copies"]
    by_budget = FEATURE_BUDGET // max(train_photos, 1)
    return max(MIN_DEFAULT_COPIES, min(DEFAULTS[mode]["copies"], by_budget))


@dataclass(frozen=True)
class TrainingSettings:
    """Everything a run depends on; ``None`` means the mode's default (see :meth:`resolved`)."""

    data: Path
    out: Path
    weights: str = "imagenet"
    epochs: int | None = None
    copies: int | None = None  # K: augmented copies per training photo (per epoch in image mode)
    seed: int = 0
    unfreeze: str = "none"
    cache: bool = True
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 32
    test_fraction: float = 0.25
    extra: tuple[Path, ...] = ()
    cache_dir: Path | None = None  # default: <out folder>/cache
    runs_dir: Path | None = None  # default: <out folder>/runs
    device: str = "auto"  # cpu, cuda, or auto (CUDA when torch sees a GPU)
    precision: str = "fp32"  # the frozen backbone's feature extraction: fp32 or bf16 (training/features.py)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    @property
    def mode(self) -> str:
        return "cached" if self.unfreeze == "none" and self.cache else "images"

    def resolved(self, train_photos: int) -> TrainingSettings:
        """The settings with every default filled in, for ``train_photos`` training photos."""
        return replace(
            self,
            epochs=self.epochs if self.epochs is not None else DEFAULTS[self.mode]["epochs"],
            copies=self.copies if self.copies is not None else default_copies(self.mode, train_photos),
            cache_dir=self.cache_dir if self.cache_dir is not None else Path(self.out).parent / "cache",
            runs_dir=self.runs_dir if self.runs_dir is not None else Path(self.out).parent / "runs",
        )

    def to_record(self, dataset: Dataset) -> dict:
        """The settings as plain values for the checkpoint and metrics.json, with the photo counts."""
        return {
            "data": str(self.data),
            "extra": [str(p) for p in self.extra],
            "weights": self.weights,
            "mode": self.mode,
            "epochs": self.epochs,
            "copies": self.copies,
            "seed": self.seed,
            "unfreeze": self.unfreeze,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "batch_size": self.batch_size,
            "device": self.device,
            "precision": self.precision,
            "loss": "cross-entropy with inverse-frequency class weights",
            "augment": self.augment.to_dict(),
            "layout": dataset.layout,
            "train_counts": dataset.counts("train"),
            "test_counts": dataset.counts("test"),
            "skipped_files": [str(p) for p, _ in dataset.skipped],
        }

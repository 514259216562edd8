"""The whole training run: folders -> checked samples -> features or images -> trained network -> report
and checkpoint. ``python -m training`` is a thin CLI over :func:`run_training`.

Two ways to train:

* ``cached`` (default: frozen backbone): backbone features of K augmented copies per photo are computed once
  (and cached on disk), then only the head trains, for many cheap epochs;
* ``images`` (``--unfreeze layer4``, or ``--no-cache``): every epoch runs the backbone on freshly augmented
  photos; with ``layer4`` unfrozen, layer4 learns too (at a tenth of the head's learning rate).
"""
from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from model.checkpoint import save_checkpoint
from model.network import ProductNet, build_network, freeze_backbone
from model.precision import resolve_device
from model.preprocess import open_image

from .augment import save_preview_grid
from .data import Dataset, load_dataset
from .features import FeatureSettings, cached_features, extract_features
from .photos import AugmentedPhotos, CleanPhotos
from .report import build_metrics, new_run_dir, save_confusion_matrix, save_curves, write_metrics_json
from .settings import TrainingSettings
from .train import (
    Evaluation,
    History,
    Standardize,
    class_weights,
    evaluate,
    fold_standardization,
    train_one_epoch,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainingResult:
    checkpoint: Path
    run_dir: Path
    metrics: dict
    class_names: tuple[str, ...]


class _ImageModel(nn.Module):
    """backbone -> standardize -> head on images. The backbone's BatchNorm layers stay in eval mode while
    training: statistics of small batches of a few classes would overwrite the pretrained ones."""

    def __init__(self, network: ProductNet, standardize: Standardize):
        super().__init__()
        self.backbone, self.standardize, self.head = network.backbone, standardize, network.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.standardize(self.backbone(x.contiguous(memory_format=torch.channels_last))))

    def train(self, mode: bool = True) -> _ImageModel:
        super().train(mode)
        self.backbone.eval()
        return self


@contextmanager
def torch_threads(count: int):
    """Run the block with ``count`` intra-op threads. The head's small matrix products gain nothing from a
    second thread, and on a busy 2-core server the threads' synchronisation made epochs 10-30x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seeded_loader(dataset, batch_size: int, seed: int, shuffle: bool) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)


def _fit(model, criterion, optimizer, epochs: int, train_loader_for, test_loader, description: str,
         device: torch.device):
    """Epoch loop shared by both modes; returns the history, the last evaluation and per-epoch seconds."""
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    history, seconds = History(), []
    evaluation: Evaluation | None = None
    with tqdm(range(epochs), desc=description, unit="epoch", leave=False) as bar:
        for epoch in bar:
            start = time.perf_counter()
            stats = train_one_epoch(model, criterion, optimizer, train_loader_for(epoch), device)
            scheduler.step()
            seconds.append(time.perf_counter() - start)
            evaluation = evaluate(model, criterion, test_loader, device)
            history.add(stats, evaluation)
            bar.set_postfix(loss=f"{stats.loss:.3f}", test_acc=f"{evaluation.accuracy:.2f}")
    return history, evaluation, seconds


def _train_cached(settings: TrainingSettings, network: ProductNet, dataset: Dataset, criterion) -> tuple:
    feature_settings = FeatureSettings(
        copies=settings.copies,
        seed=settings.seed,
        batch_size=settings.batch_size,
        augment=settings.augment,
        preprocess=settings.preprocess,
        precision=settings.precision,
        device=next(network.parameters()).device.type,
    )
    start = time.perf_counter()
    features = cached_features(network.backbone, dataset.train, dataset.test, feature_settings, settings.cache_dir)
    feature_seconds = time.perf_counter() - start
    log.info("features %s %s (%.1f s)", "read from" if features.from_cache else "computed into", features.path, feature_seconds)

    standardize = Standardize.fit(features.train)
    device = next(network.parameters()).device
    model = nn.Sequential(standardize, network.head).to(device)
    optimizer = torch.optim.SGD(
        network.head.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    train_set = TensorDataset(features.train, features.train_labels)
    test_loader = DataLoader(TensorDataset(features.test, features.test_labels), batch_size=256)
    with torch_threads(1):
        history, evaluation, seconds = _fit(
            model,
            criterion,
            optimizer,
            settings.epochs,
            lambda epoch: _seeded_loader(train_set, settings.batch_size, settings.seed * 1000 + epoch, shuffle=True),
            test_loader,
            "training head",
            device,
        )
    fold_standardization(network.head, standardize)
    timing = {"features_seconds": feature_seconds, "features_from_cache": features.from_cache, "epoch_seconds": seconds}
    return history, evaluation, timing


def _train_on_images(settings: TrainingSettings, network: ProductNet, dataset: Dataset, criterion) -> tuple:
    start = time.perf_counter()
    clean_train = CleanPhotos(dataset.train, settings.preprocess)
    initial, _, _ = extract_features(network.backbone, clean_train, settings.batch_size, "feature statistics")
    standardize = Standardize.fit(initial)
    feature_seconds = time.perf_counter() - start

    model = _ImageModel(network, standardize).to(next(network.parameters()).device)
    layer4 = [p for p in network.backbone.parameters() if p.requires_grad]
    groups = [{"params": list(network.head.parameters())}]
    if layer4:
        groups.append({"params": layer4, "lr": settings.lr * 0.1})  # pretrained weights move gently
    optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay)

    def train_loader_for(epoch: int) -> DataLoader:
        photos = AugmentedPhotos(
            dataset.train,
            copies=settings.copies,
            seed=settings.seed,
            epoch=epoch,
            augment=settings.augment,
            preprocess_config=settings.preprocess,
        )
        return _seeded_loader(photos, settings.batch_size, settings.seed * 1000 + epoch, shuffle=True)

    test_loader = DataLoader(CleanPhotos(dataset.test, settings.preprocess), batch_size=settings.batch_size)
    history, evaluation, seconds = _fit(
        model, criterion, optimizer, settings.epochs, train_loader_for, test_loader, "training on images",
        next(network.parameters()).device,
    )
    fold_standardization(network.head, standardize)
    timing = {"features_seconds": feature_seconds, "features_from_cache": False, "epoch_seconds": seconds}
    return history, evaluation, timing


def run_training(settings: TrainingSettings) -> TrainingResult:
    """Train and save; raises ``DataError`` / ``WeightsError`` (one-line messages) before any heavy work."""
    started = time.perf_counter()
    dataset = load_dataset(settings.data, test_fraction=settings.test_fraction, seed=settings.seed, extra_dirs=settings.extra)
    settings = settings.resolved(train_photos=len(dataset.train))
    device = resolve_device(settings.device)
    seed_everything(settings.seed)
    network = build_network(len(dataset.class_names), settings.weights).to(device)
    freeze_backbone(network, settings.unfreeze)

    labels = torch.tensor([s.label for s in dataset.train])
    criterion = nn.CrossEntropyLoss(weight=class_weights(labels, len(dataset.class_names))).to(device)
    trainer = _train_cached if settings.mode == "cached" else _train_on_images
    history, evaluation, timing = trainer(settings, network, dataset, criterion)

    metrics = build_metrics(evaluation, dataset.test, dataset.class_names, history)
    epoch_seconds = timing.pop("epoch_seconds")
    metrics["timing"] = {
        "mode": settings.mode,
        **timing,
        "epoch_seconds_mean": float(np.mean(epoch_seconds)) if epoch_seconds else 0.0,
        "total_seconds": time.perf_counter() - started,
    }
    record = settings.to_record(dataset)

    run_dir = new_run_dir(settings.runs_dir)
    save_confusion_matrix(metrics["confusion_matrix"], dataset.class_names, run_dir / "confusion_matrix.png")
    save_curves(history, run_dir / "curves.png")
    preview_photo = open_image(dataset.train[0].path, draft_size=settings.preprocess.resize)
    save_preview_grid(preview_photo, run_dir / "augmentation_preview.png", config=settings.augment,
                      preprocess=settings.preprocess, seed=settings.seed)
    record["run_dir"] = str(run_dir)
    write_metrics_json(metrics, record, run_dir / "metrics.json")

    network.eval().to("cpu")  # the checkpoint holds CPU tensors, whatever trained it
    checkpoint = save_checkpoint(
        settings.out, network, list(dataset.class_names), preprocess=settings.preprocess, training=record, metrics=metrics
    )
    return TrainingResult(checkpoint, run_dir, metrics, dataset.class_names)

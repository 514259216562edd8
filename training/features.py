"""The frozen-backbone feature cache: ResNet50 runs once per augmented copy, not once per epoch.

With the backbone frozen, the head only ever sees backbone features. So the features of K augmented copies
of every training photo (and of the clean test photos) are computed once, in batches, and the head is then
trained on them for as many epochs as wanted in milliseconds each.

The cache file is a ``torch.save`` of plain tensors and strings (read back with ``weights_only=True``), named
by a key that hashes everything the features depend on: the photos' bytes and labels, the backbone's weights,
the augmentation settings, K, the seed, the preprocessing, and the precision and device type the backbone ran
in. Change any of them and the key changes, so a stale cache is never used.

Precision (``--precision``): bf16 extraction (autocast: convs and matmuls in bf16, the rest fp32) is several
times faster on CPUs with AMX or AVX-512 BF16, but its features differ from fp32's by bf16 rounding (relative
error about 4e-3), so a head trained on them differs slightly, and metrics are reproducible only for the
same precision: hence the precision in the key, and fp32 as the default. The device type is in the key for
the same reason (CUDA kernels round differently from CPU ones).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from model.checkpoint import torch_save_atomically
from model.preprocess import PreprocessConfig

from .augment import AugmentConfig
from .data import Sample
from .photos import AugmentedPhotos, CleanPhotos

log = logging.getLogger(__name__)
CACHE_FORMAT = "product-id-feature-cache-v1"


@dataclass(frozen=True)
class FeatureSettings:
    """What the cached features depend on, besides the photos and the backbone."""

    copies: int = 10  # K: augmented copies of each training photo
    seed: int = 0
    batch_size: int = 32
    augment: AugmentConfig = AugmentConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    precision: str = "fp32"  # the backbone's compute precision: fp32 or bf16 (autocast)
    device: str = "cpu"  # the device type it ran on


@dataclass(frozen=True)
class Features:
    """Backbone features: ``train`` is (len(train photos) * K) x 2048, row ``i`` from photo ``train_photo[i]``;
    ``test`` is one row per clean test photo. ``from_cache`` says whether they were read from disk."""

    train: torch.Tensor
    train_labels: torch.Tensor
    train_photo: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    key: str
    path: Path
    from_cache: bool


def backbone_fingerprint(backbone: nn.Module) -> str:
    """A hash of the backbone's weights: ImageNet, a local file and each random init all differ."""
    digest = hashlib.sha256()
    for name, tensor in backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(train: Sequence[Sample], test: Sequence[Sample], backbone_hash: str, settings: FeatureSettings) -> str:
    """The hash of everything the features depend on (batch size excluded: it does not change the result)."""
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    for split, samples in (("train", train), ("test", test)):
        for sample in samples:
            digest.update(f"{split}:{sample.label}:".encode())
            digest.update(hashlib.sha256(sample.path.read_bytes()).digest())
    digest.update(backbone_hash.encode())
    digest.update(f"K={settings.copies};seed={settings.seed}".encode())
    digest.update(repr(sorted(settings.augment.to_dict().items())).encode())
    digest.update(repr(sorted(settings.preprocess.to_dict().items())).encode())
    digest.update(f"precision={settings.precision};device={settings.device}".encode())
    return digest.hexdigest()


def extract_features(backbone: nn.Module, photos: Dataset, batch_size: int, description: str = "features",
                     precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run ``backbone`` over a photo dataset in batches (channels_last, inference mode, on the backbone's device,
    in ``precision``) with a progress bar: (features, labels, photo indices) on the CPU, in the dataset's order."""
    device = next(backbone.parameters()).device
    # Outside inference mode: parameters converted inside it would become inference tensors, which a
    # later fine-tuning of layer4 could not train.
    backbone.eval().to(memory_format=torch.channels_last)
    features, labels, photo_indices = [], [], []
    loader = DataLoader(photos, batch_size=batch_size, shuffle=False)
    with tqdm(total=len(photos), desc=description, unit="img", leave=False) as bar:
        for batch, batch_labels, batch_photos in loader:
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=precision == "bf16"):
                inputs = batch.to(device).contiguous(memory_format=torch.channels_last)
                features.append(backbone(inputs).float().cpu())
            labels.append(batch_labels)
            photo_indices.append(batch_photos)
            bar.update(len(batch))
    return torch.cat(features), torch.cat(labels), torch.cat(photo_indices)


def compute_features(backbone: nn.Module, train: Sequence[Sample], test: Sequence[Sample], settings: FeatureSettings) -> dict:
    """The cache file's content: features of K augmented copies of each training photo and of the clean test photos."""
    augmented = AugmentedPhotos(
        train, copies=settings.copies, seed=settings.seed, augment=settings.augment, preprocess_config=settings.preprocess
    )
    train_x, train_y, train_photo = extract_features(backbone, augmented, settings.batch_size, "train features",
                                                     settings.precision)
    test_x, test_y, _ = extract_features(backbone, CleanPhotos(test, settings.preprocess), settings.batch_size,
                                         "test features", settings.precision)
    return {
        "format": CACHE_FORMAT,
        "train": train_x,
        "train_labels": train_y,
        "train_photo": train_photo,
        "test": test_x,
        "test_labels": test_y,
    }


def _load(path: Path, key: str) -> dict | None:
    """The cached payload, or None when the file is missing, damaged or for another key."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged cache is only a cache: recompute
        log.warning("feature cache %s unreadable (%s); recomputing", path, str(exc).splitlines()[0][:120])
        return None
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT or payload.get("key") != key:
        return None
    return payload


def cached_features(
    backbone: nn.Module,
    train: Sequence[Sample],
    test: Sequence[Sample],
    settings: FeatureSettings,
    cache_dir: str | Path | None,
) -> Features:
    """Features from ``cache_dir`` when the key matches, else computed (and stored when ``cache_dir`` is set)."""
    key = cache_key(train, test, backbone_fingerprint(backbone), settings)
    path = Path(cache_dir) / f"features-{key[:24]}.pt" if cache_dir else Path()
    payload = _load(path, key) if cache_dir else None
    from_cache = payload is not None
    if payload is None:
        payload = compute_features(backbone, train, test, settings)
        payload["key"] = key
        if cache_dir:
            torch_save_atomically(payload, path)
    return Features(
        train=payload["train"],
        train_labels=payload["train_labels"],
        train_photo=payload["train_photo"],
        test=payload["test"],
        test_labels=payload["test_labels"],
        key=key,
        path=path,
        from_cache=from_cache,
    )

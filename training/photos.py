"""Torch datasets over photo samples: K augmented copies of each photo, or each photo once, clean.

Both end with the shared ``model.preprocess`` transform. Copy ``c`` of photo ``i`` in epoch ``e`` is
augmented with its own seed (``copy_seed(seed, i, e * K + c)``), so the result does not depend on batch
order or shuffling, and epoch 0 is exactly what the feature cache holds.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torch.utils.data import Dataset

from model.preprocess import PreprocessConfig, open_image, preprocess

from .augment import AugmentConfig, augmented_copy, build_augmentation, copy_seed
from .data import Sample


class _DecodedPhotos:
    """Decodes photos as the bot does (JPEGs drafted to the resize size), remembering the last one so that
    K copies read in a row decode their photo once."""

    def __init__(self, samples: Sequence[Sample], config: PreprocessConfig):
        self.samples = list(samples)
        self.config = config
        self._last: tuple[int, Image.Image] | None = None

    def __call__(self, index: int) -> Image.Image:
        if self._last is None or self._last[0] != index:
            self._last = (index, open_image(self.samples[index].path, draft_size=self.config.resize))
        return self._last[1]


class AugmentedPhotos(Dataset):
    """``copies`` augmented versions of every photo: item ``i`` is (tensor, label, photo index) of photo
    ``i // copies``."""

    def __init__(
        self,
        samples: Sequence[Sample],
        *,
        copies: int,
        seed: int,
        epoch: int = 0,
        augment: AugmentConfig = AugmentConfig(),
        preprocess_config: PreprocessConfig = PreprocessConfig(),
    ):
        self.samples = list(samples)
        self.copies = copies
        self.seed = seed
        self.epoch = epoch
        self.augmentation = build_augmentation(augment)
        self.preprocess_config = preprocess_config
        self._photos = _DecodedPhotos(self.samples, preprocess_config)

    def __len__(self) -> int:
        return len(self.samples) * self.copies

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int, int]:
        index, copy = divmod(item, self.copies)
        seed = copy_seed(self.seed, index, self.epoch * self.copies + copy)
        photo = augmented_copy(self._photos(index), self.augmentation, seed)
        return preprocess(photo, self.preprocess_config), self.samples[index].label, index


class CleanPhotos(Dataset):
    """Every photo once, with only the shared preprocessing: what the bot would see."""

    def __init__(self, samples: Sequence[Sample], preprocess_config: PreprocessConfig = PreprocessConfig()):
        self.samples = list(samples)
        self.preprocess_config = preprocess_config
        self._photos = _DecodedPhotos(self.samples, preprocess_config)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int, int]:
        return preprocess(self._photos(item), self.preprocess_config), self.samples[item].label, item

"""The training loop: plain functions in the style of torchvision's classification reference.

Loss: cross-entropy with class weights (inverse class frequency, averaging 1 over the samples). Chosen over a
balanced sampler because (1) every sample is still seen exactly once per epoch, so epochs mean the same
thing whatever the imbalance and the curves of two runs compare; (2) a sampler would draw the 4 shirt photos'
copies again and again while never drawing some kurti copies in an epoch, adding sampling noise on a dataset
this small; (3) the same weighted loss works unchanged for the cached-feature and the image paths.

Features are standardized (per-feature mean and std of the training features) before the head while
training: random-init ResNet50 features are in the tens and ImageNet ones near 1, and SGD with one learning
rate copes with both only on a common scale. The standardization is folded into the head's first Linear
layer afterwards (:func:`fold_standardization`), so the saved network is the plain architecture.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader


@dataclass(frozen=True)
class EpochStats:
    loss: float
    accuracy: float


@dataclass
class Evaluation:
    """Loss and accuracy on a split, with each sample's predicted class and softmax probabilities."""

    loss: float
    accuracy: float
    targets: torch.Tensor
    predictions: torch.Tensor
    probabilities: torch.Tensor


@dataclass
class History:
    """Per-epoch train and test loss/accuracy, for the curves."""

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_accuracy: list[float] = field(default_factory=list)

    def add(self, train: EpochStats, test: Evaluation) -> None:
        self.train_loss.append(train.loss)
        self.train_accuracy.append(train.accuracy)
        self.test_loss.append(test.loss)
        self.test_accuracy.append(test.accuracy)

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items()}


def class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Inverse class frequency, scaled so that the weights average 1 over the samples."""
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights


class Standardize(nn.Module):
    """(x - mean) / std with fixed statistics (buffers, not trained)."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    @classmethod
    def fit(cls, features: torch.Tensor) -> Standardize:
        # A floor on std: a feature that is constant on the training set must not blow up on a test photo.
        std = features.std(dim=0).clamp(min=1e-3 * float(features.std()) + 1e-6)
        return cls(features.mean(dim=0), std)


@torch.no_grad()
def fold_standardization(head: nn.Sequential, standardize: Standardize) -> None:
    """Make ``head(x)`` compute what ``head(standardize(x))`` did: W' = W / std, b' = b - W' @ mean."""
    first = head[0]
    first.weight.div_(standardize.std)
    first.bias.sub_(first.weight @ standardize.mean)


def train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                    device: torch.device | str = "cpu") -> EpochStats:
    """One pass over ``loader`` (batches of (inputs, labels, ...)) on ``device``; returns the mean loss and accuracy."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for inputs, labels, *_ in loader:
        inputs, labels = inputs.to(device), labels.to(device)
        logits = model(inputs)
        loss = criterion(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.item() * len(labels)
        correct += int((logits.argmax(dim=1) == labels).sum())
        seen += len(labels)
    return EpochStats(total_loss / max(seen, 1), correct / max(seen, 1))


@torch.inference_mode()
def evaluate(model: nn.Module, criterion: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> Evaluation:
    """Loss, accuracy, predictions and probabilities (on the CPU) over ``loader`` run on ``device``, in its order."""
    model.eval()
    total_loss, seen = 0.0, 0
    targets, probabilities = [], []
    for inputs, labels, *_ in loader:
        logits = model(inputs.to(device))
        total_loss += float(criterion(logits, labels.to(device))) * len(labels)
        seen += len(labels)
        targets.append(labels)
        probabilities.append(torch.softmax(logits.float(), dim=1).cpu())
    targets_t, probabilities_t = torch.cat(targets), torch.cat(probabilities)
    predictions = probabilities_t.argmax(dim=1)
    accuracy = float((predictions == targets_t).float().mean()) if seen else 0.0
    return Evaluation(total_loss / max(seen, 1), accuracy, targets_t, predictions, probabilities_t)

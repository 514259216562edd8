"""The classifier architecture: a torchvision ResNet50 backbone and a small MLP head.

The head is the seed project's 2048 -> 512 -> 64 -> N with ReLU between; N comes from the class names,
so any set of products works.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models

ARCH = "resnet50"
BACKBONE_FEATURES = 2048
DEFAULT_HEAD_SIZES = (512, 64)


class WeightsError(RuntimeError):
    """The backbone weights could not be obtained; the message says what to do."""


@dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to rebuild the network's shape (stored in every checkpoint)."""

    num_classes: int
    arch: str = ARCH
    head_sizes: tuple[int, ...] = DEFAULT_HEAD_SIZES


def build_head(spec: NetworkSpec) -> nn.Sequential:
    sizes = [BACKBONE_FEATURES, *spec.head_sizes]
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(sizes[-1], spec.num_classes))
    return nn.Sequential(*layers)


class ProductNet(nn.Module):
    """ResNet50 features (the fc layer removed) followed by the classification head.

    ``backbone`` maps a normalized N x 3 x 224 x 224 batch to N x 2048 features; ``head`` maps
    features to logits. Keeping them apart lets training cache backbone features.
    """

    def __init__(self, spec: NetworkSpec, backbone: nn.Module | None = None):
        super().__init__()
        if spec.arch != ARCH:
            raise ValueError(f"unsupported architecture {spec.arch!r} (this build knows {ARCH!r})")
        self.spec = spec
        if backbone is None:
            backbone = models.resnet50(weights=None)
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.head = build_head(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def imagenet_weights_file() -> Path:
    """Where torchvision caches the ImageNet ResNet50 weights ($TORCH_HOME/hub/checkpoints/...)."""
    weights = models.ResNet50_Weights.IMAGENET1K_V2
    filename = os.path.basename(weights.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_backbone(weights: str = "none") -> nn.Module:
    """A ResNet50 with ``weights``: ``imagenet`` (torchvision's API, downloaded once and cached),
    a path to a local ``.pth`` state dict, or ``none`` (random init, for tests and offline runs)."""
    if weights in ("none", "", None):
        return models.resnet50(weights=None)
    if weights == "imagenet":
        target = imagenet_weights_file()
        try:
            return models.resnet50(weights=models.ResNet50_Weights.IMAGENET1K_V2)
        except Exception as exc:  # network errors come in many types (URLError, OSError, ...)
            url = models.ResNet50_Weights.IMAGENET1K_V2.url
            raise WeightsError(
                f"could not download the ImageNet ResNet50 weights ({type(exc).__name__}: {exc}). "
                f"On an offline machine, copy {url} to {target} "
                f"(or pass a local file with WEIGHTS=/path/to/resnet50.pth), "
                f"or train without pretrained weights with WEIGHTS=none."
            ) from None
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(
            f"weights file {path} not found; use WEIGHTS=imagenet, WEIGHTS=none or a path to a ResNet50 .pth file"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"weights file {path} could not be read as a state dict: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    backbone = models.resnet50(weights=None)
    try:
        backbone.load_state_dict(state)
    except Exception as exc:
        raise WeightsError(f"weights file {path} is not a torchvision ResNet50 state dict: {str(exc)[:300]}") from None
    return backbone


def build_network(num_classes: int, weights: str = "none", head_sizes=DEFAULT_HEAD_SIZES) -> ProductNet:
    """A fresh network for training: pretrained (or random) backbone, random head."""
    spec = NetworkSpec(num_classes=num_classes, head_sizes=tuple(head_sizes))
    return ProductNet(spec, load_backbone(weights))


def freeze_backbone(network: ProductNet, unfreeze: str = "none") -> None:
    """Freeze every backbone parameter, except ``layer4`` when ``unfreeze == "layer4"``."""
    for name, param in network.backbone.named_parameters():
        param.requires_grad = unfreeze == "layer4" and name.startswith("layer4.")

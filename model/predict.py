"""Prediction: a loaded classifier that turns pictures into class probabilities."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from .checkpoint import Checkpoint, load_checkpoint
from .errors import CheckpointError
from .fold import fold_batch_norms
from .graph import freeze_graph
from .prediction import Prediction
from .preprocess import DEFAULT_MAX_PIXELS, PreprocessConfig, open_image, preprocess


def prediction_from_probabilities(probabilities: torch.Tensor, class_names: Sequence[str], top_k: int = 3,
                                  checkpoint_id: str = "") -> Prediction:
    """One row of probabilities -> :class:`Prediction` (``top_k`` capped at the number of classes)."""
    k = max(1, min(top_k, len(class_names)))
    values, indices = probabilities.topk(k)
    top = tuple((class_names[int(i)], float(v)) for v, i in zip(values, indices))
    return Prediction(label=top[0][0], confidence=top[0][1], top=top, checkpoint_id=checkpoint_id)


@dataclass
class Classifier:
    """A network ready to serve: ``network`` (normalized N x 3 x 224 x 224 -> logits), ``class_names``,
    the preprocessing it was trained with, and ``checkpoint_id`` (the file's sha256, for cache keys).

    ``graph``, once :meth:`use_frozen_graph` made it, is the same network as one TorchScript graph: it
    runs the classification forward pass (see :mod:`model.graph`); ``network`` stays for everything
    that needs the modules (the heat-map explainer) and is the fp32 reference.

    ``runner``, where :func:`model.runtime.prepare_model` set one, runs the classification forward pass
    instead of both (OpenVINO, or torch in bf16: ``precision``); ``device`` is where ``network`` lives."""

    network: torch.nn.Module
    class_names: list[str]
    preprocess_config: PreprocessConfig = field(default_factory=PreprocessConfig)
    checkpoint_id: str = ""
    metadata: dict = field(default_factory=dict)
    graph: torch.jit.ScriptModule | None = None
    runner: Callable[[torch.Tensor], torch.Tensor] | None = None  # batch -> logits
    precision: str = "fp32"  # what ``runner`` computes in (the network itself is always fp32)
    runtime: str = "torch"  # what ``runner`` is: "torch" or "openvino"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # Where int8 classifies, heat maps are computed by another forward pass in another precision (model/int8.py).
    map_runner: Callable[[torch.Tensor], torch.Tensor] | None = None  # None: ``runner``
    map_precision: str | None = None  # None: ``precision``

    def to(self, device: torch.device | str) -> Classifier:
        """Move the network to ``device`` (standard ``.to``); a graph or runner made for the old one is dropped."""
        device = torch.device(device)
        if device != self.device:
            self.network = self.network.to(device)
            self.device = device
            self.serve_eager()
        return self

    def serve_eager(self) -> None:
        """Every pass on the eager fp32 torch network again: no graph, no runner (a new device, a failed preparation)."""
        self.graph, self.runner, self.precision, self.runtime = None, None, "fp32", "torch"
        self.map_runner, self.map_precision = None, None

    def use_frozen_graph(self) -> bool:
        """Trace and freeze the network for :meth:`probabilities` (about half a second); False, and
        the eager network stays in use, where torch cannot (logged)."""
        if self.graph is None:
            self.graph = freeze_graph(self.network, self.preprocess_config.crop)
        return self.graph is not None

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """PIL image -> normalized 3 x 224 x 224 tensor, exactly as in training evaluation."""
        return preprocess(image, self.preprocess_config)

    def open(self, source: bytes | str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
        """Decode bytes or a path with the safety limits, drafting JPEGs down to the size the model needs."""
        return open_image(source, max_pixels=max_pixels, draft_size=self.preprocess_config.resize)

    @torch.inference_mode()
    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities for a normalized N x 3 x H x W batch (the seed's ``torch.exp`` on logits was a bug)."""
        forward = self.runner or (self.graph if self.graph is not None else self.network)
        logits = forward(batch.to(self.device).contiguous(memory_format=torch.channels_last))
        return torch.softmax(logits.float(), dim=1).cpu()

    def predict_tensors(self, tensors: Sequence[torch.Tensor], top_k: int = 3) -> list[Prediction]:
        if not tensors:
            return []
        probabilities = self.probabilities(torch.stack(list(tensors)))
        return [prediction_from_probabilities(row, self.class_names, top_k) for row in probabilities]

    def predict_images(self, images: Sequence[Image.Image], top_k: int = 3) -> list[Prediction]:
        return self.predict_tensors([self.preprocess(image) for image in images], top_k)

    def predict_image(self, image: Image.Image, top_k: int = 3) -> Prediction:
        return self.predict_images([image], top_k)[0]


def classifier_from_checkpoint(checkpoint: Checkpoint) -> Classifier:
    network = fold_batch_norms(checkpoint.network.eval()).to(memory_format=torch.channels_last)
    for param in network.parameters():
        param.requires_grad_(False)
    return Classifier(
        network=network,
        class_names=list(checkpoint.class_names),
        preprocess_config=checkpoint.preprocess,
        checkpoint_id=checkpoint.sha256,
        metadata={
            "training": checkpoint.training,
            "metrics": checkpoint.metrics,
            "created_at": checkpoint.created_at,
            "versions": checkpoint.versions,
            "path": str(checkpoint.path) if checkpoint.path else "",
        },
    )


def load_classifier(path: str | Path) -> Classifier:
    """Load a checkpoint file (safely, ``weights_only=True``) into a :class:`Classifier` on the CPU."""
    return classifier_from_checkpoint(load_checkpoint(path))


def load_checked(path: str | Path) -> Classifier:
    """:func:`load_classifier`, then one probe forward pass that must give valid probabilities: what the bot and
    the replicas serve after a reload or as a canary. Raises :class:`model.CheckpointError`."""
    classifier = load_classifier(path)
    side = classifier.preprocess_config.crop
    try:
        probabilities = classifier.probabilities(torch.zeros(1, 3, side, side))
    except Exception as error:  # a checkpoint that loads but cannot run
        raise CheckpointError(f"the probe forward pass failed: {error}") from None
    if tuple(probabilities.shape) != (1, len(classifier.class_names)) or not bool(torch.isfinite(probabilities).all()):
        raise CheckpointError("the probe forward pass gave no valid probabilities")
    return classifier

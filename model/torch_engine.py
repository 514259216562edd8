"""The torch engine: a :class:`model.predict.Classifier` behind :class:`model.engine.ServingEngine` (NumPy in and
out). Preparing it chooses the forward pass by the bot's rules (:func:`model.runtime.prepare_model`: eager or
the frozen graph, torch or OpenVINO converted from the checkpoint, fp32 or bf16); heat maps run on the torch
network (:class:`model.occlusion.ExplainersBySetting`: coarse and fine maps share one folded copy).

``torch.set_num_threads`` is per OS thread: :meth:`TorchEngine.use_threads` sets it on the calling thread, and
every pass that needs a count sets it first.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from .choices import TorchChoices
from .engine import BetweenBatches
from .occlusion import ExplainersBySetting, OcclusionExplainer
from .occlusion_result import OcclusionResult
from .predict import Classifier
from .preprocess import PreprocessConfig, open_image, preprocess_array
from .runtime import ModelPreparation, prepare_model, runtime_cache_dir, warm_up_pass

log = logging.getLogger(__name__)


class _TorchMapExplainer:
    def __init__(self, explainer: OcclusionExplainer):
        self._explainer = explainer
        self.patch, self.stride = explainer.patch, explainer.stride

    def explain(self, image: np.ndarray, target: int | None = None, *,
                between_batches: BetweenBatches | None = None) -> OcclusionResult:
        return self._explainer.explain(torch.from_numpy(np.ascontiguousarray(image)), target,
                                       between_batches=between_batches)


class TorchEngine:
    """See the module docstring. ``strict``: a failed preparation raises (a replica, a reload); otherwise it is
    logged and the eager fp32 network serves (the bot's first start: answer per request rather than not start)."""

    def __init__(self, classifier: Classifier, choices: TorchChoices = TorchChoices(), strict: bool = False):
        self.classifier = classifier
        self.choices = choices
        self.strict = strict
        self._preparation: ModelPreparation | None = None
        self._explainers: dict[int, ExplainersBySetting] = {}

    @property
    def class_names(self) -> list[str]:
        return self.classifier.class_names

    @property
    def checkpoint_id(self) -> str:
        return self.classifier.checkpoint_id

    @property
    def preprocess_config(self) -> PreprocessConfig:
        return self.classifier.preprocess_config

    @property
    def preparation(self) -> ModelPreparation | None:
        return self._preparation

    def prepare(self, workers: int, threads: int, probe_batch: int) -> ModelPreparation:
        torch.set_num_threads(threads)
        choices = self.choices
        try:
            self._preparation = prepare_model(self.classifier, choices.frozen_graph, probe_batch=probe_batch,
                                              workers=workers, threads=threads, precision=choices.precision,
                                              device=choices.device, runtime=choices.runtime,
                                              cache_dir=runtime_cache_dir(self.classifier))
        except Exception:
            if self.strict:
                raise
            log.exception("preparing the model failed: serving the eager fp32 network")
            self.classifier.to("cpu")
            self.classifier.serve_eager()
            self._preparation = ModelPreparation("eager", "preparing the model failed (see the log)")
        return self._preparation

    def decode(self, data: bytes) -> np.ndarray:
        config = self.classifier.preprocess_config
        return preprocess_array(open_image(data, draft_size=config.resize), config)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return self.classifier.probabilities(torch.from_numpy(np.ascontiguousarray(batch))).numpy()

    def explainer(self, patch: int, stride: int, batch_size: int) -> _TorchMapExplainer:
        if batch_size not in self._explainers:
            self._explainers[batch_size] = ExplainersBySetting(self.classifier, batch_size, self.choices.adaptive)
        return _TorchMapExplainer(self._explainers[batch_size](patch, stride))

    def use_threads(self, threads: int) -> None:
        torch.set_num_threads(threads)

    def warm_up(self, batch: int, threads: int) -> float:
        return warm_up_pass(self.classifier, batch, threads)

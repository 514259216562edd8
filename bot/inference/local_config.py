"""The in-process backend's settings as one value (torch-free: the settings module builds it), split into what the
serving core (:class:`model.serving.compute.ComputeConfig`), the admission (:class:`model.serving.admission.Limits`)
and the torch engine (:class:`model.choices.TorchChoices`) each take."""
from __future__ import annotations

from dataclasses import dataclass

from model.choices import TorchChoices
from model.serving.admission import Limits
from model.serving.compute import ComputeConfig


@dataclass(frozen=True)
class SchedulerConfig:
    """Built from the bot's Settings (:func:`bot.config.Settings.scheduler_config`); no defaults of its own."""

    max_batch: int
    max_batch_wait_s: float
    queue_size: int
    per_chat_queue: int
    why_queue_size: int
    decode_workers: int
    torch_threads: int
    classify_workers: int
    explain_batch_size: int
    explain_cache_size: int
    warm_up_batch: int  # photos in the warm-up passes at start (0: none)
    frozen_graph: bool | None  # None: measure eager against the graph at start and keep the faster
    precision: str = "auto"  # model.runtime.prepare_model's choices: auto (measured at start) or forced
    device: str = "auto"
    runtime: str = "auto"
    adaptive: tuple[int, int] | None = None  # WHY_MODE=adaptive: the fine map's (patch, stride), drilled down
    map_engine: str = "auto"  # MAP_ENGINE (model/openvino_incremental.py)

    def compute(self) -> ComputeConfig:
        return ComputeConfig(self.max_batch, self.max_batch_wait_s, self.decode_workers, self.torch_threads,
                             self.classify_workers, self.explain_batch_size, self.explain_cache_size, self.warm_up_batch)

    def limits(self) -> Limits:
        return Limits(self.queue_size, self.per_chat_queue, self.why_queue_size)

    def choices(self) -> TorchChoices:
        return TorchChoices(self.frozen_graph, self.precision, self.device, self.runtime, self.adaptive, self.map_engine)

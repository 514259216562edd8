"""The values PRECISION/--precision, DEVICE/--device and RUNTIME/--runtime accept, importable without torch
(the serve command and the gateway parse them without loading a model)."""
from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("auto", "fp32", "bf16", "int8")
DEVICES = ("auto", "cpu", "cuda")
RUNTIMES = ("auto", "torch", "openvino")
MAP_ENGINES = ("auto", "batched", "incremental")  # how an OpenVINO export computes heat maps (model/openvino_incremental.py)


@dataclass(frozen=True)
class TorchChoices:
    """How the torch engine (model.torch_engine) is prepared: each ``auto`` (measured at start) or forced."""

    frozen_graph: bool | None = None  # None: measure eager against the graph and keep the faster
    precision: str = "auto"
    device: str = "auto"
    runtime: str = "auto"
    adaptive: tuple[int, int] | None = None  # WHY_MODE=adaptive: the (patch, stride) drilled down (the fine map)
    map_engine: str = "auto"  # MAP_ENGINE: the OpenVINO export's heat maps, batched or incremental


WHY_MODES = ("exact", "adaptive")  # the fine heat map: every position, or the drill-down (model/adaptive_occlusion.py)

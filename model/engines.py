"""Which engine serves a checkpoint (:class:`model.engine.ServingEngine`), and why: the OpenVINO engine on its
export where that can serve, with no torch loaded; otherwise the torch engine, which converts the checkpoint
to OpenVINO at start as before or runs torch itself.

The OpenVINO engine on the export (:mod:`model.openvino_engine`) serves when all hold:

- ``RUNTIME`` is ``auto`` or ``openvino`` and OpenVINO is installed;
- the device is the CPU: ``DEVICE=cpu``, or ``auto`` on a machine without an NVIDIA driver (torch is what
  would find a GPU, so without torch the driver's presence, /proc/driver/nvidia/gpus, stands in for it);
- the export beside the checkpoint is valid for this checkpoint file (:func:`model.export_manifest.read_export`).

Otherwise the torch engine (``model.torch_engine``, imported only then); a missing, stale or damaged export is
logged with its reason. Where torch is not installed either, :class:`model.CheckpointError` says what to do.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from .errors import CheckpointError
from .export_manifest import ExportUnusable, export_dir, file_sha256, read_export, verify_files
from .preprocess import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def _gpu_driver_present(gpus: Path = NVIDIA_GPUS) -> bool:
    try:
        return any(gpus.iterdir())
    except OSError:
        return False


def export_engine_refusal(checkpoint: Path, runtime: str, device: str) -> str | None:
    """Why the export cannot serve with these settings (None: it may, if valid)."""
    if runtime == "torch":
        return "RUNTIME=torch"
    if device == "cuda":
        return "DEVICE=cuda"
    if device == "auto" and _gpu_driver_present():
        return "DEVICE=auto on a machine with an NVIDIA driver (torch decides whether CUDA serves)"
    if importlib.util.find_spec("openvino") is None:
        return "OpenVINO is not installed"
    return None


def load_engine(checkpoint: str | Path, *, runtime: str = "auto", device: str = "auto", precision: str = "auto",
                frozen_graph: bool | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, strict: bool = False,
                adaptive: tuple[int, int] | None = None, map_engine: str = "auto"):
    """(engine, why this one): an engine for ``checkpoint``, not yet prepared (call its ``prepare``). Raises
    :class:`model.CheckpointError` for a checkpoint that cannot be served."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"checkpoint {checkpoint} not found (train one with `make train`)")
    refusal = export_engine_refusal(checkpoint, runtime, device)
    if refusal is None:
        try:
            export = read_export(export_dir(checkpoint), file_sha256(checkpoint))
            verify_files(export)
        except (ExportUnusable, OSError) as error:
            refusal = str(error)
            log.warning("not serving the OpenVINO export: %s; converting once with torch, as before", error)
        else:
            from .openvino_engine import OpenVINOEngine

            engine = OpenVINOEngine(export, precision, max_pixels, map_engine=map_engine)
            return engine, f"the OpenVINO export at {export.folder} (no torch)"
    return (_torch_engine(checkpoint, runtime, device, precision, frozen_graph, strict, refusal, adaptive),
            f"torch: {refusal}")


def probe_engine(engine) -> None:
    """A prepared engine's probe: one blank photo must give one finite probability per class, summing to 1.
    What a reload and a canary check before they serve; raises :class:`model.CheckpointError`."""
    import numpy as np

    side = engine.preprocess_config.crop
    try:
        probabilities = np.asarray(engine.probabilities(np.zeros((1, 3, side, side), dtype=np.float32)))
    except Exception as error:  # a checkpoint or IR that loads but cannot run
        raise CheckpointError(f"the probe forward pass failed: {type(error).__name__}: {str(error)[:200]}") from None
    if probabilities.shape != (1, len(engine.class_names)) or not np.isfinite(probabilities).all() \
            or abs(float(probabilities.sum()) - 1.0) > 1e-3:
        raise CheckpointError("the probe forward pass gave no valid probabilities")


def _torch_engine(checkpoint: Path, runtime: str, device: str, precision: str, frozen_graph: bool | None, strict: bool,
                  refusal: str, adaptive: tuple[int, int] | None = None):
    if importlib.util.find_spec("torch") is None:
        raise CheckpointError(f"{checkpoint} cannot be served here: {refusal}, and torch is not installed. Write the "
                              f"export where torch is (python -m model export --checkpoint {checkpoint}; the train extra) "
                              "and copy the checkpoint's .openvino folder beside it")
    from .predict import load_classifier
    from .torch_engine import TorchChoices, TorchEngine  # h24's adapter (model/torch_engine.py)

    choices = TorchChoices(frozen_graph=frozen_graph, precision=precision, device=device, runtime=runtime, adaptive=adaptive)
    return TorchEngine(load_classifier(checkpoint), choices, strict=strict)

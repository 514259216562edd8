"""How classifications are computed: the device, the runtime (torch or OpenVINO), the precision (fp32
or bf16), and for torch the eager network or its frozen graph; and the warm-up passes.

Each choice is measured on this machine at start where it is ``auto``, the way the bot serves:
``workers`` threads side by side, each running the same probe batch on its share of the torch threads
(eager passes contend for the GIL between layers, the graph's and OpenVINO's do not, so one thread alone
would hide their advantage). In order:

1. the device (:func:`model.precision.resolve_device`; ``auto``: CUDA when torch sees a GPU);
2. torch's forward pass: the frozen TorchScript graph (:mod:`model.graph`) was faster than eager on some
   CPUs and slower on others, so with ``frozen_graph=None`` (``FROZEN_GRAPH=auto``) it is kept only when
   clearly faster;
3. the runtime: ``auto`` takes OpenVINO (:mod:`model.openvino_runtime`) on a CPU where it is installed
   and its fp32 pass beats torch's here; torch otherwise (and always on CUDA);
4. the precision on that runtime (:func:`model.precision.choose_precision`): ``auto`` takes bf16 only on
   native bf16 hardware, when the probe agrees with torch's fp32 network and bf16 is faster.

Whatever serves, ``classifier.network`` stays the fp32 torch network: the reference, and what the heat-map
explainer starts from. Warm-up passes run each batch shape a server will use once before serving: the
first pass at a shape pays for kernel choice, TorchScript's profiling runs and the heap's growth.
"""
from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import precision_probe
from .choices import RUNTIMES
from .openvino_runtime import OpenVINOForward, OpenVINOUnavailable, check_agreement, load_or_convert, openvino_version
from .precision import (
    Capability,
    ProbeResult,
    bf16_capability,
    check_precision,
    compare_outputs,
    resolve_device,
)
from .predict import Classifier

log = logging.getLogger(__name__)

GRAPH_MUST_BE_FASTER = 0.95  # the graph is kept only below this fraction of eager's time (noise margin)
OPENVINO_MUST_BE_FASTER = 0.95  # RUNTIME=auto keeps OpenVINO only below this fraction of torch's fp32 time
PROBE_ROUNDS = 3


def runtime_cache_dir(classifier: Classifier) -> Path | None:
    """Where converted models of ``classifier`` are kept: ``cache/openvino`` beside its checkpoint file
    (training's feature cache is ``cache/`` there too); None for a classifier not loaded from a file."""
    path = classifier.metadata.get("path")
    return Path(path).parent / "cache" / "openvino" if path else None


def check_runtime(requested: str) -> str:
    value = str(requested).strip().lower()
    if value not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)} (got {value!r})")
    return value


@dataclass(frozen=True)
class ModelPreparation:
    forward: str  # torch's forward pass: "graph" or "eager"
    reason: str
    eager_ms: float | None = None  # per photo, best of the probe rounds
    graph_ms: float | None = None
    seconds: float = 0.0  # time spent preparing
    precision: str = "fp32"
    precision_reason: str = ""
    runtime: str = "torch"  # what classifies: "torch" or "openvino"
    runtime_reason: str = ""
    device: str = "cpu"

    def describe(self) -> str:
        timing = ""
        if self.eager_ms is not None and self.graph_ms is not None:
            timing = f" (probe: eager {self.eager_ms:.1f} ms/photo, graph {self.graph_ms:.1f} ms/photo)"
        text = f"{self.forward}: {self.reason}{timing}"
        if self.runtime_reason or self.precision_reason:
            text += (f"; runtime {self.runtime} on {self.device} ({self.runtime_reason or 'as set'}); "
                     f"precision {self.precision} ({self.precision_reason or 'as set'})")
        return text


class TorchForward:
    """The torch network in another dtype (its own copy of the weights): ``forward(batch) -> logits``."""

    def __init__(self, network: torch.nn.Module, dtype: torch.dtype):
        self.dtype = dtype
        self.network = copy.deepcopy(network).to(dtype)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network(batch.to(self.dtype)).float()


def _ms_per_photo(forward, batch: torch.Tensor, workers: int = 1, threads: int = 1) -> float:
    """Wall time per photo of one pass of ``batch`` in each of ``workers`` threads at once."""
    start = threading.Barrier(workers)

    def one_pass() -> None:
        torch.set_num_threads(threads)  # per thread
        with torch.inference_mode():
            start.wait()
            forward(batch)

    passes = [threading.Thread(target=one_pass) for _ in range(workers)]
    started = time.perf_counter()
    for thread in passes:
        thread.start()
    for thread in passes:
        thread.join()
    return 1000 * (time.perf_counter() - started) / (batch.shape[0] * workers)


def _fastest(forwards: list, batch: torch.Tensor, workers: int, threads: int, first_passes: int = 1) -> list[float]:
    """Per forward: its best ms/photo over the probe rounds, interleaved so drift on a shared machine hits all
    alike; ``first_passes`` untimed passes each first (kernel choice, a graph's profiling runs)."""
    for forward in forwards:
        for _ in range(first_passes):
            _ms_per_photo(forward, batch, workers, threads)
    times: list[list[float]] = [[] for _ in forwards]
    for _ in range(PROBE_ROUNDS):
        for index, forward in enumerate(forwards):
            times[index].append(_ms_per_photo(forward, batch, workers, threads))
    return [min(samples) for samples in times]


def _choose_torch_forward(classifier: Classifier, frozen_graph: bool | None, batch: torch.Tensor, workers: int,
                          threads: int) -> ModelPreparation:
    """Set ``classifier.graph`` per ``frozen_graph`` (True: use it, False: never, None: measure)."""
    if frozen_graph is False:
        classifier.graph = None
        return ModelPreparation("eager", "FROZEN_GRAPH=0")
    if classifier.device.type != "cpu":
        classifier.graph = None
        return ModelPreparation("eager", f"the frozen graph is for the CPU, this runs on {classifier.device}")
    if not classifier.use_frozen_graph():
        return ModelPreparation("eager", "torch could not freeze a graph of this network")
    if frozen_graph is True:
        return ModelPreparation("graph", "FROZEN_GRAPH=1")
    eager_ms, graph_ms = _fastest([classifier.network, classifier.graph], batch, workers, threads, first_passes=2)
    if graph_ms < GRAPH_MUST_BE_FASTER * eager_ms:
        return ModelPreparation("graph", "FROZEN_GRAPH=auto, the graph was faster here", eager_ms, graph_ms)
    classifier.graph = None
    return ModelPreparation("eager", "FROZEN_GRAPH=auto, the graph was not faster here", eager_ms, graph_ms)


class _Forwards:
    """The candidate forward passes of one runtime, made on first use (an OpenVINO precision costs a
    conversion or a cache read, and a compilation)."""

    def __init__(self, classifier: Classifier, runtime: str, cache_dir: Path | None, threads: int):
        self.classifier, self.runtime, self.cache_dir, self.threads = classifier, runtime, cache_dir, threads
        self.made: dict[str, object] = {}
        self.sources: list[str] = []
        self.calibration_dir: Path | None = None  # int8's calibration photos (None: the training folder)

    def get(self, precision: str):
        if precision not in self.made:
            self.made[precision] = self._make(precision)
        return self.made[precision]

    def _make(self, precision: str):
        classifier = self.classifier
        if precision == "int8":  # OpenVINO only (model/precision_probe.py); raises model.int8.Int8Unavailable
            from .int8 import int8_forward

            model, source = int8_forward(classifier, self.cache_dir, self.calibration_dir)
            self.sources.append(f"int8 {source}")
            return OpenVINOForward(model, precision, self.threads)
        if self.runtime == "openvino":
            model, source = load_or_convert(classifier.network, classifier.checkpoint_id, precision,
                                            classifier.preprocess_config.crop, self.cache_dir)
            self.sources.append(f"{precision} {source}")
            forward = OpenVINOForward(model, precision, self.threads)
            if precision == "fp32":  # the reference precision serves only once it agrees with torch
                check_agreement(forward, classifier.network, classifier.preprocess_config.crop)
            return forward
        if precision == "fp32":
            return classifier.graph if classifier.graph is not None else classifier.network
        return TorchForward(classifier.network, torch.bfloat16)

    def runner(self, precision: str):
        """What ``classifier.runner`` becomes: None for torch fp32 (the graph or the network serve as they are)."""
        return None if self.runtime == "torch" and precision == "fp32" else self.get(precision)


def _choose_runtime(requested: str, precision: str, classifier: Classifier, batch: torch.Tensor, workers: int,
                    threads: int, cache_dir: Path | None) -> tuple[_Forwards, str]:
    total_threads = max(1, workers * threads)
    torch_forwards = _Forwards(classifier, "torch", cache_dir, total_threads)
    if requested == "torch":
        return torch_forwards, "RUNTIME=torch"
    if classifier.device.type != "cpu":
        return torch_forwards, f"RUNTIME={requested}: OpenVINO serves the CPU only, this runs on {classifier.device}"
    if openvino_version() is None:
        return torch_forwards, f"RUNTIME={requested}, but OpenVINO is not installed (pip install openvino)"
    openvino = _Forwards(classifier, "openvino", cache_dir, total_threads)
    try:  # RUNTIME=auto compares fp32 passes; a forced runtime converts only the precision it needs first
        first = openvino.get("bf16" if requested == "openvino" and precision == "bf16" else "fp32")
    except OpenVINOUnavailable as error:
        log.warning("%s: serving with torch", error)
        return torch_forwards, f"RUNTIME={requested}, but {error}"
    sources = "; ".join(openvino.sources)
    if requested == "openvino" or precision == "int8":  # int8 runs on OpenVINO only
        return openvino, f"RUNTIME={requested}, OpenVINO {openvino_version()} ({sources})"
    torch_ms, openvino_ms = _fastest([torch_forwards.get("fp32"), first], batch, workers, threads)
    timing = f"fp32 probe: torch {torch_ms:.1f} ms/photo, OpenVINO {openvino_ms:.1f} ms/photo"
    if openvino_ms < OPENVINO_MUST_BE_FASTER * torch_ms:
        return openvino, f"auto: OpenVINO {openvino_version()} was faster here ({timing}; {sources})"
    return torch_forwards, f"auto: OpenVINO was not faster here ({timing})"


def _precision_probe(classifier: Classifier, forwards: _Forwards, batch: torch.Tensor, workers: int,
                     threads: int) -> ProbeResult:
    """bf16 on the chosen runtime against the torch fp32 network (the reference) on the probe images, and
    timed against fp32 on the same runtime."""
    fp32, bf16 = forwards.get("fp32"), forwards.get("bf16")
    with torch.inference_mode():
        reference = torch.softmax(classifier.network(batch).float(), dim=1)
        candidate = torch.softmax(bf16(batch).float(), dim=1)
    agree, difference = compare_outputs(reference, candidate)
    fp32_ms, bf16_ms = _fastest([fp32, bf16], batch, workers, threads)
    return ProbeResult(agree, difference, fp32_ms, bf16_ms)


def prepare_model(classifier: Classifier, frozen_graph: bool | None, probe_batch: int = 4, workers: int = 1,
                  threads: int = 1, precision: str = "auto", device: str = "auto", runtime: str = "auto",
                  cache_dir: str | Path | None = None, capability: Capability | None = None,
                  int8_capability: Capability | None = None, calibration_dir: Path | None = None) -> ModelPreparation:
    """Get ``classifier`` ready to serve: on ``device``, its torch forward pass per ``frozen_graph`` (True: the
    graph, False: eager, None: measure), then ``runtime`` and ``precision`` (each ``auto`` or forced; see the
    module docstring). Measurements use ``workers`` threads of ``threads`` torch threads each, as the bot
    will run it, on a probe batch of ``probe_batch`` random images. ``cache_dir`` keeps OpenVINO's converted
    model (None: converted at every call); ``capability`` (default: this machine's) says whether the device
    runs bf16 natively, ``int8_capability`` int8 (:mod:`model.precision_auto`); ``calibration_dir``
    holds int8's calibration photos (default: the checkpoint's training folder, :mod:`model.int8`).
    Raises ValueError for an unknown setting and :class:`model.precision.DeviceUnavailable`."""
    started = time.perf_counter()
    precision, runtime = check_precision(precision), check_runtime(runtime)
    target = resolve_device(device)
    classifier.to(target)
    classifier.serve_eager()
    side = classifier.preprocess_config.crop
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(max(1, probe_batch), 3, side, side, generator=generator).to(target)
    batch = batch.contiguous(memory_format=torch.channels_last)
    torch_forward = _choose_torch_forward(classifier, frozen_graph, batch, workers, threads)
    forwards, runtime_reason = _choose_runtime(runtime, precision, classifier, batch, workers, threads,
                                               Path(cache_dir) if cache_dir is not None else None)
    capability = capability if capability is not None else bf16_capability(target)
    forwards.calibration_dir = calibration_dir
    choice = precision_probe.choose(precision, classifier, forwards, batch, workers, threads, capability, int8_capability)
    classifier.runner, classifier.precision = forwards.runner(choice.precision), choice.precision
    classifier.runtime = forwards.runtime
    if choice.map_precision != choice.precision:  # int8 classifies, maps in bf16/fp32 (model/int8.py INT8_MAPS)
        classifier.map_runner, classifier.map_precision = forwards.runner(choice.map_precision), choice.map_precision
    return ModelPreparation(torch_forward.forward, torch_forward.reason, torch_forward.eager_ms, torch_forward.graph_ms,
                            time.perf_counter() - started, choice.precision, choice.reason, forwards.runtime,
                            runtime_reason, str(target))


def warm_up_pass(classifier: Classifier, batch: int, threads: int) -> float:
    """One blank forward pass of ``batch`` photos on ``threads`` torch threads of the calling thread; seconds."""
    side = classifier.preprocess_config.crop
    torch.set_num_threads(threads)
    started = time.perf_counter()
    classifier.probabilities(torch.zeros(batch, 3, side, side))
    return time.perf_counter() - started

"""The OpenVINO engine on an export: a :class:`model.engine.ServingEngine` that never imports torch.

It serves the IR beside the checkpoint (:mod:`model.export_manifest`): the manifest is checked against the
checkpoint file's sha256, and each IR file's bytes against the manifest's, as they are read (the bytes
hashed are the bytes compiled). Photos decode through :mod:`model.preprocess` (NumPy), classification and
heat maps run on OpenVINO's CPU plugin:

- **Precision.** ``fp32`` and ``bf16`` as asked; ``auto`` by :mod:`model.precision_rule` (native bf16 from
  /proc/cpuinfo's flags, a probe that agrees, bf16 faster). The probe is the manifest's export-time figures:
  bf16's agreement with torch fp32 and both precisions' ms/photo, so only the chosen precision is compiled
  (compiling both was the start-up's memory peak: ~470 MB against ~240 MB). Where the manifest lacks them,
  or with ``trust_export_timing=False``, both are compiled and timed here, and bf16 is checked against
  OpenVINO fp32 on the probe images.
- **Heat maps** (:class:`OpenVINOOcclusion`): batched occluded passes, the occluded copies made in NumPy,
  every class's probability kept (the full grid: "Why not …?" is arithmetic). Two infer requests in an
  AsyncInferQueue: the next batch's copies are made while the current one runs. A map asked in bf16 is computed
  in bf16 or fp32 as decided once before its grid, from a coarser map of the same image or a quadrant probe
  (:mod:`model.map_precision`, as the torch engine does): a map within bf16's noise is never computed twice.
- **Heat maps by incremental inference** (``map_engine``; :mod:`model.openvino_incremental`): only the windows a
  patch changes, from the folded plan the export stores, where it measures faster than batched passes.
- **Threads.** One compiled model per precision, for ``threads`` CPU threads and one stream (the latency
  hint): a lone batch runs on every core it is given. ``infer`` releases the GIL; each calling thread has
  its own infer request. :meth:`use_threads` has nothing to do (OpenVINO keeps its own pool).

The fp32 model is compiled only when fp32 serves, is probed, or a bf16 map has to be redone, and is released
after a probe that chose bf16: on a 1 GB server one ResNet50 in fp32 is ~100 MB.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .engine import BetweenBatches
from .export_manifest import Export, ExportUnusable, IRFiles, read_verified
from .map_precision import CoarseRanges, decide_map, image_digest
from .occlusion_grid import BF16_MAP_NOISE, grid_positions, no_pause, occluded_copies, softmax
from .occlusion_result import OcclusionResult
from .precision_rule import ProbeResult, choose_precision, compare_probabilities, cpu_bf16_capability
from .preprocess import DEFAULT_MAX_PIXELS, PreprocessConfig, open_image, preprocess_array

log = logging.getLogger(__name__)

PROBE_ROUNDS = 3
# Infer requests in flight per map: one computing, the next batch's copies being made. Each holds a batch's
# activations (~15 MB a photo in fp32), so on one core, where the overlap gains little, one.
MAP_REQUESTS = 2


def compile_ir(files: IRFiles, threads: int, precision: str | None = None):
    """The verified IR compiled for the CPU: ``threads`` threads, one stream (ExportUnusable if the bytes do not
    match the manifest, or OpenVINO cannot read them)."""
    import openvino as ov

    xml = read_verified(files.xml, files.xml_sha256)
    weights = read_verified(files.bin, files.bin_sha256)
    core = ov.Core()
    try:
        model = core.read_model(xml.decode("utf-8"), ov.Tensor(np.frombuffer(weights, dtype=np.uint8)))
        hint = {"fp32": "f32", "bf16": "bf16"}.get(precision or files.precision, files.inference_precision)
        return core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                 "INFERENCE_NUM_THREADS": max(1, threads), "PERFORMANCE_HINT": "LATENCY",
                                                 "NUM_STREAMS": 1})
    except Exception as error:  # OpenVINO raises RuntimeError and its own types on a bad graph
        raise ExportUnusable(f"OpenVINO could not load {files.xml.name} ({type(error).__name__}: {str(error)[:200]})") from None


class CompiledForward:
    """``probabilities(batch)`` on one compiled model; each calling thread gets its own infer request."""

    def __init__(self, compiled, precision: str):
        self.compiled, self.precision = compiled, precision
        self._local = threading.local()

    def logits(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        request.infer({0: np.ascontiguousarray(batch, dtype=np.float32)})
        return request.get_output_tensor(0).data.copy()

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return softmax(self.logits(batch))


@dataclass(frozen=True)
class OpenVINOPreparation:
    """How the engine computes, and why (:class:`model.engine.Preparation`)."""

    precision: str
    precision_reason: str
    seconds: float
    source: str
    runtime: str = "openvino"
    device: str = "cpu"
    runtime_reason: str = "an OpenVINO export (no torch)"
    forward: str = "openvino"

    def describe(self) -> str:
        return (f"runtime openvino on cpu ({self.runtime_reason}: {self.source}); "
                f"precision {self.precision} ({self.precision_reason}); ready in {self.seconds:.1f} s")


class OpenVINOEngine:
    """See the module docstring. Make it with a checked :class:`Export`, then :meth:`prepare` once."""

    def __init__(self, export: Export, precision: str = "auto", max_pixels: int = DEFAULT_MAX_PIXELS,
                 capability=None, trust_export_timing: bool = True, map_engine: str = "auto"):
        self.export = export
        self.map_engine = map_engine  # auto, batched or incremental (model/openvino_incremental.py: choose_map_engine)
        self._incremental = None  # the incremental maps' shared runtime, made on the first explainer that uses it
        self.coarse_ranges = CoarseRanges()  # every explainer's maps per image: the next map's precision (map_precision)
        self.class_names = list(export.class_names)
        self.checkpoint_id = export.checkpoint_sha256
        self.preprocess_config: PreprocessConfig = export.preprocess
        self.requested = precision
        self.max_pixels = max_pixels
        self.capability = capability if capability is not None else cpu_bf16_capability()
        self.trust_export_timing = trust_export_timing  # False: time fp32 against bf16 here at prepare()
        self.precision = "fp32"
        self._threads = 1
        self._forwards: dict[str, CompiledForward] = {}
        self._lock = threading.Lock()
        self._preparation: OpenVINOPreparation | None = None

    @property
    def preparation(self) -> OpenVINOPreparation | None:
        return self._preparation

    def forward(self, precision: str) -> CompiledForward:
        """The compiled model of ``precision`` (compiled from the verified IR on first use; a compilation holds
        back only the callers that need that precision, not the classifications already compiled)."""
        made = self._forwards.get(precision)
        if made is not None:
            return made
        with self._lock:
            if precision not in self._forwards:
                if precision not in self.export.ir:
                    raise ExportUnusable(f"the export has no {precision} IR")
                self._forwards[precision] = CompiledForward(compile_ir(self.export.ir[precision], self._threads, precision),
                                                            precision)
            return self._forwards[precision]

    def prepare(self, workers: int = 1, threads: int = 1, probe_batch: int = 4) -> OpenVINOPreparation:
        """Choose the precision (module docstring) and compile it for ``workers * threads`` CPU threads."""
        started = time.perf_counter()
        self._threads = max(1, workers * threads)
        side = self.preprocess_config.crop
        batch = np.random.default_rng(0).standard_normal((max(1, probe_batch), 3, side, side), dtype=np.float32)
        requested = self.requested if "bf16" in self.export.ir or self.requested == "fp32" else "fp32"
        choice = choose_precision(requested, self.capability, lambda: self._probe(batch))
        self.precision = choice.precision
        self.forward(self.precision)
        if self.precision != "fp32":
            with self._lock:
                self._forwards.pop("fp32", None)  # compiled again if a map must be redone in fp32
        files = ", ".join(f"{p} {f.bin.name}" for p, f in self.export.ir.items())
        self._preparation = OpenVINOPreparation(choice.precision, choice.reason, time.perf_counter() - started,
                                                f"{self.export.folder} ({files}; OpenVINO {self.export.openvino_version})")
        return self._preparation

    def _probe(self, batch: np.ndarray) -> ProbeResult:
        recorded, reference = self.export.probe("bf16"), self.export.probe("fp32")
        figures = ("top1_agree", "max_difference", "ms_per_photo")
        if self.trust_export_timing and recorded and reference and all(k in recorded for k in figures) \
                and "ms_per_photo" in reference:
            # The export's own figures (agreement with torch fp32, speed where it was exported): no fp32 model is
            # compiled here, which is the start-up's memory peak (~200 MB less on a 1 GB server).
            return ProbeResult(bool(recorded["top1_agree"]), float(recorded["max_difference"]),
                               float(reference["ms_per_photo"]), float(recorded["ms_per_photo"]))
        fp32, bf16 = self.forward("fp32"), self.forward("bf16")
        if recorded is not None and "top1_agree" in recorded and "max_difference" in recorded:
            agree, difference = bool(recorded["top1_agree"]), float(recorded["max_difference"])
        else:  # no export-time figure: OpenVINO bf16 against OpenVINO fp32
            agree, difference = compare_probabilities(fp32.probabilities(batch), bf16.probabilities(batch))
        for forward in (fp32, bf16):
            forward.logits(batch)  # first pass at this shape: kernel choice
        times: dict[str, list[float]] = {"fp32": [], "bf16": []}
        for _ in range(PROBE_ROUNDS):
            for forward in (fp32, bf16):
                begun = time.perf_counter()
                forward.logits(batch)
                times[forward.precision].append(1000 * (time.perf_counter() - begun) / len(batch))
        return ProbeResult(agree, difference, min(times["fp32"]), min(times["bf16"]))

    def decode(self, data: bytes) -> np.ndarray:
        config = self.preprocess_config
        return preprocess_array(open_image(data, max_pixels=self.max_pixels, draft_size=config.resize), config)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        return self.forward(self.precision).probabilities(batch)

    def explainer(self, patch: int, stride: int, batch_size: int):
        """Batched passes (:class:`OpenVINOOcclusion`) or incremental inference, as ``map_engine`` says (auto: by
        :func:`model.openvino_incremental.choose_map_engine`, logged with its reason)."""
        if self.map_engine != "batched":
            from .openvino_incremental import incremental_explainer

            explainer = incremental_explainer(self, patch, stride, batch_size)
            if explainer is not None:
                return explainer
        return OpenVINOOcclusion(self, patch, stride, batch_size, self.precision, min(MAP_REQUESTS, self._threads))

    def incremental_runtime(self):
        """The incremental maps' runtime (the verified plan; ExportUnusable where the export has none or it fails)."""
        from .openvino_incremental import IncrementalRuntime

        with self._lock:
            if self._incremental is None:
                self._incremental = IncrementalRuntime.from_export(self.export, self._threads)
                self._incremental.coarse_ranges = self.coarse_ranges  # a batched coarse map informs an incremental fine one
            return self._incremental

    def use_threads(self, threads: int) -> None:
        return None  # OpenVINO's pool is its own, set when compiled

    def warm_up(self, batch: int, threads: int) -> float:
        side = self.preprocess_config.crop
        started = time.perf_counter()
        self.probabilities(np.zeros((batch, 3, side, side), dtype=np.float32))
        return time.perf_counter() - started


class OpenVINOOcclusion:
    """One occlusion setting on the engine (:class:`model.engine.MapExplainer`); see :mod:`model.occlusion` for
    the map's definition, which this follows exactly (zeroed patches of the normalized image)."""

    def __init__(self, engine: OpenVINOEngine, patch: int, stride: int, batch_size: int, precision: str,
                 requests: int = MAP_REQUESTS):
        if patch < 1 or stride < 1 or batch_size < 1:
            raise ValueError("patch, stride and batch_size must be positive")
        self.engine, self.patch, self.stride, self.batch_size = engine, patch, stride, batch_size
        self.precision, self.requests = precision, max(1, requests)

    def explain(self, image: np.ndarray, target: int | None = None, *,
                between_batches: BetweenBatches | None = None) -> OcclusionResult:
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.ndim != 3 or image.shape[0] != 3 or image.shape[1] != image.shape[2]:
            raise ValueError(f"expected a normalized 3 x H x H image, got shape {image.shape}")
        precision = self.precision
        if precision != "fp32":  # decided once, before the grid (model/map_precision.py): no map is computed twice
            decision, target = decide_map(self.engine.coarse_ranges, image, target, self.patch, precision,
                                          self.engine.forward(precision).probabilities, BF16_MAP_NOISE)
            log.info("the %dx%d map: %s", self.patch, self.stride, decision.reason)
            precision = decision.precision
        forward = self.engine.forward(precision)
        clean = forward.probabilities(image[None])[0]
        if target is None:
            target = int(clean.argmax())
        if not 0 <= target < len(clean):
            raise ValueError(f"target {target} out of range for {len(clean)} classes")
        grid = self.probability_grid(forward, image, between_batches or no_pause)
        probability = float(clean[target])
        occlusion = (probability - grid[target]).astype(np.float32)
        self.engine.coarse_ranges.record(image_digest(image), target, self.patch, float(np.abs(occlusion).max()))
        return OcclusionResult(occlusion_map=occlusion, target=target, probability=probability, probability_grid=grid,
                               clean_probabilities=clean.astype(np.float32))

    def probability_grid(self, forward: CompiledForward, image: np.ndarray,
                         between_batches: Callable[[int, int], None]) -> np.ndarray:
        """classes x G x G: P(class | image occluded at each position), ``requests`` batches in flight."""
        import openvino as ov

        positions = grid_positions(image.shape[-1], self.patch, self.stride)
        corners = [(top, left) for top in positions for left in positions]
        grid = np.zeros((len(self.engine.class_names), len(corners)), dtype=np.float32)
        queue = ov.AsyncInferQueue(forward.compiled, self.requests)

        def done(request, start: int) -> None:
            logits = request.get_output_tensor(0).data
            grid[:, start : start + len(logits)] = softmax(logits).T

        queue.set_callback(done)
        try:
            for start in range(0, len(corners), self.batch_size):
                between_batches(start, len(corners))
                batch = occluded_copies(image, corners[start : start + self.batch_size], self.patch)
                queue.start_async({0: batch}, start)  # waits for a free request; the callback fills the grid
        finally:
            queue.wait_all()  # also when between_batches raised: no request outlives the map
        return grid.reshape(-1, len(positions), len(positions))

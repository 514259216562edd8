"""Exact incremental occlusion maps on OpenVINO, torch-free (Krypton's idea, as :mod:`model.incremental` does
it for torch), from the folded plan stored in the export (:mod:`model.incremental_store`).

Design:

- **Clean pass once per map**: one compiled model of the whole backbone (batch 1) whose outputs are the
  stem's and every block's activations; they are kept (zero-padded by the next conv's padding).
- **Per batch of patch positions**, only the windows a patch can change are recomputed, piece by piece: the
  stem, then each bottleneck block fused into one compiled model (:mod:`model.openvino_incremental_graphs`).
  Each piece's input is gathered in NumPy from the clean activation with the previous piece's output window
  pasted over it (what :func:`model.incremental.assemble` does in torch), plus a mask of what lies inside the map.
- **Static shapes**: one window size per piece for every position of a setting, and a fixed batch (the last
  batch padded by repeating a position), so each piece compiles once per (setting, precision) and oneDNN's
  kernels are chosen at compile time (:mod:`model.openvino_incremental_geometry`).
- **Precision**: fp32 or bf16 (INFERENCE_PRECISION_HINT), fp32 between pieces; a map asked in bf16 is
  decided once from a coarser level (:mod:`model.map_precision`), as the torch explainer does.
- The pooled features go to the head in NumPy (fp32): a few small matrix products.

Same contract as :class:`model.openvino_engine.OpenVINOOcclusion` (:class:`model.engine.MapExplainer`):
``between_batches`` runs before each batch (it may block, or raise to abandon the map), and the result holds
every class's probability at every position.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict

import numpy as np

from .engine import BetweenBatches
from .incremental_store import StoredPlan, read_plan
from .map_precision import CoarseRanges, decide_map, image_digest
from .occlusion_grid import BF16_MAP_NOISE, no_pause, softmax
from .occlusion_result import OcclusionResult
from .openvino_incremental_geometry import SettingGeometry, Window
from .openvino_incremental_graphs import block_model, clean_model, rest_model, stem_model

log = logging.getLogger(__name__)
HINTS = {"fp32": "f32", "bf16": "bf16"}
# From the first block whose window covers this share of its map, the rest runs on whole maps (measured:
# bench/bench_ov_incremental.py --full-shares).
FULL_SHARE = 0.7
DROP_PAGES_EVERY_S = 0.02




def compile_cpu(model, precision: str, threads: int):
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY",
                                                  "INFERENCE_NUM_THREADS": max(1, threads), "NUM_STREAMS": 1})


class IncrementalRuntime:
    """What an engine's incremental explainers share: the verified plan, the clean-pass models per precision,
    the coarse ranges of maps already made (for the precision decision). Thread-safe."""

    def __init__(self, plan: StoredPlan, side: int, threads: int):
        self.plan, self.side, self.threads = plan, side, threads
        self.coarse_ranges = CoarseRanges()
        self._clean: dict[str, object] = {}
        self._compiled = False  # any model compiled from the plan yet
        self._lock = threading.Lock()

    @classmethod
    def from_export(cls, export, threads: int) -> IncrementalRuntime:
        return cls(read_plan(export), export.preprocess.crop, threads)

    def clean_compiled(self, precision: str):
        with self._lock:
            if precision not in self._clean:
                self.check_weights()
                self._clean[precision] = self.compile(clean_model(self.plan, self.side), precision)
            return self._clean[precision]

    def check_weights(self) -> None:
        """Before compiling more: the mapped plan still matches its manifest (the first compilation follows the
        read's own check)."""
        if self._compiled:
            self.plan.verify_pages()

    def compile(self, model, precision: str):
        """``model`` compiled for the CPU; then the plan's weights leave resident memory (model/mapped_npz.py). The
        pieces compile one by one, so at most one piece's weights are resident beside the compiled models."""
        done = threading.Event()

        def drop_pages() -> None:  # while it compiles: the weights it has read need not stay resident
            while not done.wait(DROP_PAGES_EVERY_S):
                self.plan.release_pages()

        dropper = threading.Thread(target=drop_pages, name="plan-pages", daemon=True)
        dropper.start()
        try:
            compiled = compile_cpu(model, precision, self.threads)
        finally:
            done.set()
            dropper.join()
        self.plan.release_pages()
        self._compiled = True
        return compiled


def _windows(source: np.ndarray, pad: int, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """B x C x size x size windows of ``source`` (1 x C x H x W, already padded by ``pad``) at the given origins."""
    out = np.empty((len(rows), source.shape[1], size, size), dtype=np.float32)
    for item, (top, left) in enumerate(zip(rows + pad, cols + pad)):
        out[item] = source[0, :, top : top + size, left : left + size]
    return out


def _paste(out: np.ndarray, rows: np.ndarray, cols: np.ndarray, values: np.ndarray | None, value_rows: np.ndarray,
           value_cols: np.ndarray, size: int) -> None:
    """``values`` (B x C x size x size at value_rows/value_cols; zeros where None) into ``out``'s windows (at rows/cols)."""
    height = out.shape[-1]
    for item in range(len(out)):
        top, left = value_rows[item] - rows[item], value_cols[item] - cols[item]
        t0, l0, t1, l1 = max(0, top), max(0, left), min(height, top + size), min(height, left + size)
        if t1 <= t0 or l1 <= l0:
            continue
        if values is None:
            out[item, :, t0:t1, l0:l1] = 0.0
        else:
            out[item, :, t0:t1, l0:l1] = values[item, :, t0 - top : t1 - top, l0 - left : l1 - left]


def _mask(window: Window, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    valid = window.valid()
    return (valid[rows][:, :, None] & valid[cols][:, None, :]).astype(np.float32)[:, None]


class SettingPieces:
    """The compiled pieces of one (setting, precision, batch)."""

    def __init__(self, runtime: IncrementalRuntime, geometry: SettingGeometry, precision: str, batch: int):
        plan, self.geometry, self.batch = runtime.plan, geometry, batch
        stem = geometry.stem
        runtime.check_weights()
        self.stem = runtime.compile(stem_model(plan, batch, stem.input.size, geometry.pool_input.size), precision)
        cut = geometry.full_from
        self.blocks = [runtime.compile(block_model(block, batch, stage.channels, stage.input.size, stage.output.size), precision)
                       for block, stage in zip(plan.blocks[:cut], geometry.blocks[:cut])]
        self.rest = None
        if cut < len(plan.blocks):
            stage = geometry.blocks[cut]
            self.rest = runtime.compile(rest_model(plan.blocks[cut:], batch, stage.channels, stage.input.extent), precision)


class OpenVINOIncrementalOcclusion:
    """One occlusion setting (:class:`model.engine.MapExplainer`) by incremental inference; see the module docstring.
    ``forward(precision)`` gives the engine's compiled classifier (for the precision probe when bf16 is asked)."""

    def __init__(self, runtime: IncrementalRuntime, patch: int, stride: int, batch_size: int, precision: str, forward=None,
                 full_share: float = FULL_SHARE):
        if patch < 1 or stride < 1 or batch_size < 1:
            raise ValueError("patch, stride and batch_size must be positive")
        self.runtime, self.patch, self.stride, self.batch_size = runtime, patch, stride, batch_size
        self.precision, self.forward = precision, forward
        self.geometry = SettingGeometry.of(runtime.plan, runtime.side, patch, stride, full_share)
        self.profile: dict[str, float] = defaultdict(float)  # seconds per stage, summed over maps
        self._pieces: dict[str, SettingPieces] = {}
        self._lock = threading.Lock()

    def pieces(self, precision: str) -> SettingPieces:
        with self._lock:
            if precision not in self._pieces:
                self._pieces[precision] = SettingPieces(self.runtime, self.geometry, precision, self.batch_size)
            return self._pieces[precision]

    def explain(self, image: np.ndarray, target: int | None = None, *,
                between_batches: BetweenBatches | None = None) -> OcclusionResult:
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 4 and image.shape[0] == 1:
            image = image[0]
        if image.shape != (3, self.runtime.side, self.runtime.side):
            raise ValueError(f"expected a normalized 3 x {self.runtime.side} x {self.runtime.side} image, got {image.shape}")
        digest = image_digest(image)
        precision = self.precision
        if precision != "fp32":
            precision, target = self._decide(image, target, digest)
        clean, grid = self.probability_grid(image, precision, between_batches or no_pause)
        if target is None:
            target = int(clean.argmax())
        if not 0 <= target < len(clean):
            raise ValueError(f"target {target} out of range for {len(clean)} classes")
        probability = float(clean[target])
        occlusion = (probability - grid[target]).astype(np.float32)
        self.runtime.coarse_ranges.record(digest, target, self.patch, float(np.abs(occlusion).max()))
        return OcclusionResult(occlusion_map=occlusion, target=target, probability=probability, probability_grid=grid,
                               clean_probabilities=clean)

    def _decide(self, image: np.ndarray, target: int | None, digest: str) -> tuple[str, int]:
        """The precision of this map, decided once from a coarser level (:mod:`model.map_precision`)."""
        decision, target = decide_map(self.runtime.coarse_ranges, image, target, self.patch, self.precision,
                                      self.forward(self.precision).probabilities, BF16_MAP_NOISE)
        log.info("the %dx%d map (incremental): %s", self.patch, self.stride, decision.reason)
        return decision.precision, target

    def probability_grid(self, image: np.ndarray, precision: str,
                         between_batches: BetweenBatches = no_pause) -> tuple[np.ndarray, np.ndarray]:
        """(clean probabilities, classes x G x G probabilities at every position) in ``precision``."""
        plan, geometry, profile = self.runtime.plan, self.geometry, self.profile
        pieces = self.pieces(precision)
        started = time.perf_counter()
        request = self.runtime.clean_compiled(precision).create_infer_request()
        request.infer({0: image[None]})
        # Views of the request's outputs; only what the batches read is copied out (the windowed blocks' inputs,
        # padded, and the whole maps the rest and the pool read), then the request and its buffers go: ~45 MB of a
        # 16/8 map's peak on a 1 GB server.
        outputs = [request.get_output_tensor(i).data for i in range(len(plan.blocks) + 1)]
        pads = [block.main[1].padding for block in plan.blocks]
        sources = [np.pad(outputs[i], ((0, 0), (0, 0), (pads[i],) * 2, (pads[i],) * 2)) for i in range(geometry.full_from)]
        final = outputs[-1].copy()
        whole = outputs[geometry.full_from].copy() if pieces.rest is not None else None
        del outputs, request
        clean = softmax(plan.head(final.mean(axis=(2, 3))))[0]
        margin = -int(geometry.stem.input.origins.min())
        far = max(0, int(geometry.stem.input.origins.max()) + geometry.stem.input.size - geometry.side)
        padded_image = np.pad(image[None], ((0, 0), (0, 0), (margin, max(margin, far)), (margin, max(margin, far))))
        started = _lap(profile, "clean pass", started)
        requests = [compiled.create_infer_request() for compiled in [pieces.stem, *pieces.blocks, *[pieces.rest] * bool(pieces.rest)]]
        count, batch = len(geometry.starts), pieces.batch
        order = [(row, col) for row in range(count) for col in range(count)]
        grid = np.zeros((len(clean), len(order)), dtype=np.float32)
        starts = np.array(geometry.starts)
        for first in range(0, len(order), batch):
            between_batches(first, len(order))
            chunk = order[first : first + batch]
            chunk = chunk + [chunk[-1]] * (batch - len(chunk))  # a static batch: the last one padded
            rows, cols = np.array([r for r, _ in chunk]), np.array([c for _, c in chunk])
            started = time.perf_counter()
            stage = geometry.stem
            window_rows, window_cols = stage.input.origins[rows], stage.input.origins[cols]
            x = _windows(padded_image, margin, window_rows, window_cols, stage.input.size)
            _paste(x, window_rows, window_cols, None, starts[rows], starts[cols], self.patch)  # the patch: zeros
            requests[0].infer({0: x, 1: _mask(geometry.pool_input, rows, cols)})
            values = requests[0].get_output_tensor(0).data
            previous = stage.output
            started = _lap(profile, "stem", started)
            for index, stage in enumerate(geometry.blocks[: geometry.full_from]):
                window_rows, window_cols = stage.input.origins[rows], stage.input.origins[cols]
                x = _windows(sources[index], pads[index], window_rows, window_cols, stage.input.size)
                _paste(x, window_rows, window_cols, values, previous.origins[rows], previous.origins[cols], previous.size)
                mask = _mask(stage.input, rows, cols)
                started = _lap(profile, "gather", started)
                requests[index + 1].infer({0: x, 1: mask})
                values, previous = requests[index + 1].get_output_tensor(0).data, stage.output
                started = _lap(profile, plan.blocks[index].name.split(".")[0], started)
            zeros = np.zeros(len(chunk), dtype=int)
            if pieces.rest is not None:  # the rest of the network on whole maps
                x = _windows(whole, 0, zeros, zeros, whole.shape[-1])
                _paste(x, zeros, zeros, values, previous.origins[rows], previous.origins[cols], previous.size)
                started = _lap(profile, "gather", started)
                requests[-1].infer({0: x})
                full = requests[-1].get_output_tensor(0).data
                started = _lap(profile, "rest", started)
            else:
                full = _windows(final, 0, zeros, zeros, final.shape[-1])
                _paste(full, zeros, zeros, values, previous.origins[rows], previous.origins[cols], previous.size)
            logits = plan.head(full.mean(axis=(2, 3)))
            taken = min(batch, len(order) - first)
            grid[:, first : first + taken] = softmax(logits[:taken]).T
            _lap(profile, "pool+head", started)
        return clean, grid.reshape(-1, count, count)


# ``auto`` would use the incremental engine for fp32 maps whose static windows hold at most this share of a whole
# pass's multiply-adds, and batched passes for bf16 ones. Measured on the proxy model (bench/bench_ov_incremental.py,
# 2 cores, Xeon with AMX): 16/8 (54%) fp32 16.1 s incremental vs 24.4 s batched, but 8/4 (53%) fp32 114 s vs 86 s
# (a noisy run, load ~4) and 56/28 (67%) 1.85 s vs 1.44 s; bf16 16/8 7.1 s vs 5.3 s. No share separates them yet,
# so auto stays batched (0): set MAP_ENGINE=incremental for fp32 16/8 maps.
AUTO_SHARE = 0.0
# Where the incremental engine serves, a setting whose windows hold at least this share of a pass runs whole passes
# of the clean-pass model instead of its own pieces (model/openvino_clean_pass.py: the coarse 56/28 level, 67%;
# 16/8 is 54%).
CLEAN_PASS_SHARE = 0.6


def choose_map_engine(map_engine: str, share: float, precision: str = "fp32") -> tuple[bool, str]:
    """(use the incremental engine, why) for a setting whose windows hold ``share`` of a whole pass's multiply-adds,
    for maps asked in ``precision``."""
    if map_engine == "incremental":
        return True, "MAP_ENGINE=incremental"
    if map_engine == "batched":
        return False, "MAP_ENGINE=batched"
    if precision != "fp32":
        return False, f"auto: {precision} maps run faster in batched passes (bench/bench_ov_incremental.py)"
    if share <= AUTO_SHARE:
        return True, f"auto: its windows hold {share:.0%} of a whole pass's multiply-adds (fp32 incremental at most {AUTO_SHARE:.0%})"
    return False, f"auto: its windows hold {share:.0%} of a whole pass's multiply-adds (above {AUTO_SHARE:.0%}: batched)"


def incremental_explainer(engine, patch: int, stride: int, batch_size: int) -> OpenVINOIncrementalOcclusion | None:
    """The incremental explainer of ``engine`` (an OpenVINOEngine) for this setting, or None where batched passes
    serve it (the rule says so, or the export has no valid plan: logged)."""
    from .export_manifest import ExportUnusable
    from .incremental_store import has_plan

    precision = engine.precision if engine.precision in HINTS else "fp32"
    if engine.map_engine == "batched" or (engine.map_engine == "auto" and (precision != "fp32" or AUTO_SHARE <= 0)):
        # Decided without reading the plan: its weights (~100 MB for ResNet50) stay on disk, which a 1 GB server
        # needs (the incremental engine's pieces pushed the bot past 1 GB there: docs/benchmarks.md, small server).
        log.info("%dx%d maps: batched (MAP_ENGINE=%s%s)", patch, stride, engine.map_engine,
                 "" if engine.map_engine == "batched" else ": no setting measured faster incrementally")
        return None
    if not has_plan(engine.export):
        log.info("%dx%d maps: batched (the export has no incremental plan; export it again)", patch, stride)
        return None
    try:
        runtime = engine.incremental_runtime()
    except ExportUnusable as error:
        log.warning("%dx%d maps: batched, not serving the incremental plan: %s", patch, stride, error)
        return None
    explainer = OpenVINOIncrementalOcclusion(runtime, patch, stride, batch_size, precision, engine.forward)
    windowed, full = explainer.geometry.multiply_adds(runtime.plan)
    use, reason = choose_map_engine(engine.map_engine, windowed / full, precision)
    if use and windowed / full >= CLEAN_PASS_SHARE:
        from .openvino_clean_pass import CleanPassOcclusion

        log.info("%dx%d maps: whole passes of the clean-pass model (%s; its windows hold %.0f%% of a pass: pieces "
                 "would cost a copy of the weights for little)", patch, stride, reason, 100 * windowed / full)
        return CleanPassOcclusion(runtime, patch, stride, batch_size, precision, engine.forward)
    log.info("%dx%d maps: %s (%s)", patch, stride, "incremental" if use else "batched", reason)
    return explainer if use else None


def _lap(profile: dict[str, float], stage: str, started: float) -> float:
    now = time.perf_counter()
    profile[stage] += now - started
    return now

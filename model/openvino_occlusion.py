"""Exact occlusion grids on OpenVINO: batched whole-network passes through an async infer queue.

The batched method of :mod:`model.occlusion`, with the host's share of the work (building each batch of
occluded copies, the softmax, writing the grid) overlapped with inference: ``requests`` infer requests in an
:class:`openvino.AsyncInferQueue`, so while one batch runs the next is built. ``streams``: OpenVINO's CPU
streams, each a group of ``threads // streams`` threads running its own request; on 2 cores one stream of
two threads and two streams of one thread were measured (bench/bench_ov_maps.py, docs/benchmarks.md).

NumPy in and out, no torch: an OpenVINO engine on an export (no torch installed) uses it as it is. Every
position's probabilities come from the same compiled model as the clean pass, so the map is the batched
method's map exactly, whatever the batch size, the queue depth or the order in which requests finish.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .occlusion_grid import grid_positions as positions
from .occlusion_grid import no_pause, occluded_copies, softmax  # noqa: F401  (the benches import the last two from here)
from .openvino_engine import CompiledForward

OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
BetweenBatches = Callable[[int, int], None]




class OpenVINOOcclusion:
    """One compiled model (``ov_model`` in ``precision``) for occlusion grids; safe to call from one thread at
    a time per instance (the queue is its own), and ``logits`` from any thread."""

    def __init__(self, ov_model, precision: str, threads: int = 2, streams: int = 1, requests: int = 2):
        import openvino as ov

        self.precision, self.threads, self.streams, self.requests = precision, threads, streams, requests
        self.compiled = ov.Core().compile_model(ov_model, "CPU", {
            "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
            "INFERENCE_NUM_THREADS": max(1, threads),
            "NUM_STREAMS": max(1, streams),
        })
        self._queue = ov.AsyncInferQueue(self.compiled, max(1, requests))
        self._forward = CompiledForward(self.compiled, precision)  # the synchronous passes: a request per thread

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """N x 3 x H x W float32 -> N x classes float32 logits (synchronous; a request per calling thread)."""
        return self._forward.logits(batch)

    def __call__(self, batch):
        """``forward(batch) -> logits`` for a torch tensor (what :class:`model.occlusion.OcclusionExplainer` calls)."""
        import torch

        return torch.from_numpy(self.logits(batch.detach().float().cpu().numpy()))

    def probability_grid(self, image: np.ndarray, patch: int, stride: int, batch_size: int = 16,
                         between_batches: BetweenBatches = no_pause) -> np.ndarray:
        """Every class's probability at every patch position (classes x G x G) of a normalized 3 x H x H
        ``image``; ``between_batches(done, total)`` runs in the calling thread before each batch is queued
        (it may block, or raise to abandon the map: the queued batches finish first)."""
        image = np.ascontiguousarray(image, dtype=np.float32)
        starts = positions(image.shape[-1], patch, stride)
        corners = [(top, left) for top in starts for left in starts]
        rows: list[np.ndarray | None] = [None] * len(corners)

        def done(request, start: int) -> None:  # on OpenVINO's thread: only a slice assignment
            probabilities = softmax(request.get_output_tensor(0).data)
            for offset, row in enumerate(probabilities):
                rows[start + offset] = row

        self._queue.set_callback(done)
        try:
            for start in range(0, len(corners), batch_size):
                between_batches(start, len(corners))
                self._queue.start_async({0: occluded_copies(image, corners[start : start + batch_size], patch)}, start)
        finally:
            self._queue.wait_all()
        grid = np.stack(rows, axis=1)  # classes x positions
        return grid.reshape(-1, len(starts), len(starts))


def queue_settings(threads: int) -> dict:
    """The streams and requests heat maps use on ``threads`` cores (measured: bench/bench_ov_maps.py)."""
    return {"threads": max(1, threads), "streams": 1, "requests": 2}

"""Occlusion maps through the incremental runtime's clean-pass model, one occluded copy at a time: for the
settings whose few positions cover most of the map (the coarse 56/28 level), under ``MAP_ENGINE=incremental``.

Why: the incremental engine compiles one set of pieces per setting, and a second copy of the network's weights
for a level of 49 positions bought nothing on one core (random-init export, 56/28 fp32: 3.5 s incremental and
3.5 s batched, bench/bench_serving_memory.py --map-engine) while it cost ~100 MB of a 1 GB server. The clean-pass
model is compiled anyway (every incremental map starts with it), is the whole network, and on one core a
batch of 1 runs at the speed of a batch of 4 (66.5 against 63.7 ms a pass). So these maps reuse it: no more
weights, exact (the same padded network as a whole pass), and the same contract and precision decision as
:class:`model.openvino_incremental.OpenVINOIncrementalOcclusion`, whose ``explain`` this inherits.
"""
from __future__ import annotations

import numpy as np

from .engine import BetweenBatches
from .occlusion_grid import no_pause, occluded_copies, softmax
from .openvino_incremental import OpenVINOIncrementalOcclusion


class CleanPassOcclusion(OpenVINOIncrementalOcclusion):
    """One setting's map by whole passes of the clean-pass model, a pause point before each pass."""

    def pieces(self, precision: str):
        raise TypeError("a clean-pass map compiles no pieces")

    def probability_grid(self, image: np.ndarray, precision: str,
                         between_batches: BetweenBatches = no_pause) -> tuple[np.ndarray, np.ndarray]:
        plan, starts = self.runtime.plan, self.geometry.starts
        request = self.runtime.clean_compiled(precision).create_infer_request()
        final = len(plan.blocks)  # the clean model's outputs: the stem's, then each block's

        def probabilities(batch: np.ndarray) -> np.ndarray:
            request.infer({0: batch})
            return softmax(plan.head(request.get_output_tensor(final).data.mean(axis=(2, 3))))[0]

        clean = probabilities(image[None])
        corners = [(top, left) for top in starts for left in starts]
        grid = np.zeros((len(clean), len(corners)), dtype=np.float32)
        for index, corner in enumerate(corners):
            between_batches(index, len(corners))
            grid[:, index] = probabilities(occluded_copies(image, [corner], self.patch))
        return clean, grid.reshape(-1, len(starts), len(starts))

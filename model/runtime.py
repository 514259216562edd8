"""Which forward pass serves classifications (the eager network or its frozen graph), and the warm-up passes.

The frozen TorchScript graph (:mod:`model.graph`) was faster than eager on some CPUs and slower on
others, so with ``frozen_graph=None`` (``FROZEN_GRAPH=auto``) the choice is measured on this machine at
start, the way the bot serves: ``workers`` threads side by side, each running the same probe batch on its
share of the torch threads (eager passes contend for the GIL between layers, the graph's do not, so one
thread alone would hide the graph's advantage). The graph is kept only when clearly faster.

Warm-up passes run each batch shape a server will use once before serving: the first pass at a shape
pays for oneDNN's kernel choice, TorchScript's profiling runs and the heap's growth.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import torch

from .predict import Classifier

log = logging.getLogger(__name__)

GRAPH_MUST_BE_FASTER = 0.95  # the graph is kept only below this fraction of eager's time (noise margin)
PROBE_ROUNDS = 3


@dataclass(frozen=True)
class ModelPreparation:
    forward: str  # "graph" or "eager"
    reason: str
    eager_ms: float | None = None  # per photo, best of the probe rounds
    graph_ms: float | None = None
    seconds: float = 0.0  # time spent preparing

    def describe(self) -> str:
        timing = ""
        if self.eager_ms is not None and self.graph_ms is not None:
            timing = f" (probe: eager {self.eager_ms:.1f} ms/photo, graph {self.graph_ms:.1f} ms/photo)"
        return f"{self.forward}: {self.reason}{timing}"


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


def prepare_model(classifier: Classifier, frozen_graph: bool | None, probe_batch: int = 4, workers: int = 1,
                  threads: int = 1) -> ModelPreparation:
    """Set ``classifier.graph`` per ``frozen_graph`` (True: use it, False: never, None: measure with ``workers``
    threads of ``threads`` torch threads each, as the bot will run it)."""
    started = time.perf_counter()
    if frozen_graph is False:
        classifier.graph = None
        return ModelPreparation("eager", "FROZEN_GRAPH=0", seconds=time.perf_counter() - started)
    if not classifier.use_frozen_graph():
        return ModelPreparation("eager", "torch could not freeze a graph of this network",
                                seconds=time.perf_counter() - started)
    if frozen_graph is True:
        return ModelPreparation("graph", "FROZEN_GRAPH=1", seconds=time.perf_counter() - started)
    side = classifier.preprocess_config.crop
    batch = torch.randn(max(1, probe_batch), 3, side, side).contiguous(memory_format=torch.channels_last)
    graph, eager = classifier.graph, classifier.network
    for forward in (eager, graph, graph):  # first passes at this shape (graph: profiling runs) are not timed
        _ms_per_photo(forward, batch, workers, threads)
    eager_times, graph_times = [], []
    for _ in range(PROBE_ROUNDS):  # interleaved, so drift on a shared machine hits both alike
        eager_times.append(_ms_per_photo(eager, batch, workers, threads))
        graph_times.append(_ms_per_photo(graph, batch, workers, threads))
    eager_ms, graph_ms = min(eager_times), min(graph_times)
    if graph_ms < GRAPH_MUST_BE_FASTER * eager_ms:
        choice, reason = "graph", "FROZEN_GRAPH=auto, the graph was faster here"
    else:
        classifier.graph = None
        choice, reason = "eager", "FROZEN_GRAPH=auto, the graph was not faster here"
    return ModelPreparation(choice, reason, eager_ms, graph_ms, time.perf_counter() - started)


def warm_up_pass(classifier: Classifier, batch: int, threads: int) -> float:
    """One blank forward pass of ``batch`` photos on ``threads`` torch threads of the calling thread; seconds."""
    side = classifier.preprocess_config.crop
    torch.set_num_threads(threads)
    started = time.perf_counter()
    classifier.probabilities(torch.zeros(batch, 3, side, side))
    return time.perf_counter() - started

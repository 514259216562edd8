"""What a cluster replica computes, without Ray: the serving core the bot runs in process
(:class:`model.serving.scheduler.Scheduler`: the same batching, coarse-before-fine order, pause points, cache
and level runner), on the replica's engines: each checkpoint's OpenVINO export without torch where it is valid,
else the torch engine (:func:`load_replica_engine`). :mod:`model.serve.deployments` wraps it in Ray Serve.

Models: "main" (``--checkpoint``) and, with ``--canary-checkpoint``, "canary"; the gateway names the model of
each request (it routes chats by their hash, bot.inference.canary), so a replica serves both. A reload
(:meth:`ReplicaWork.load`) prepares the new engines on the calling thread while the old ones serve, then swaps
them in: work in flight finishes on the model it started with.

One compute thread per replica: a second would double the activations on the replica's cores, and the
scheduler's pause points already let a new coarse map run inside a finer one.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from model.engine import ServingEngine
from model.serving.admission import Limits
from model.serving.compute import ComputeConfig
from model.serving.levels import LevelResult
from model.serving.scheduler import MAIN, Scheduler

if TYPE_CHECKING:
    from model.predict import Classifier
    from model.torch_engine import TorchEngine

log = logging.getLogger(__name__)

CANARY = "canary"


def load_replica_engine(path: str | Path, device: str, precision: str, threads: int) -> ServingEngine:
    """The checkpoint at ``path`` as a replica serves it, prepared and probed: its verified OpenVINO export with
    no torch where that can serve (:func:`model.engines.load_engine`, the reason logged), else the torch engine
    (:func:`replica_engine`). Raises :class:`model.CheckpointError`, ValueError, :class:`model.precision.DeviceUnavailable`."""
    from model.engines import load_engine, probe_engine
    from model.errors import CheckpointError
    from model.export_manifest import ExportUnusable
    from model.openvino_engine import OpenVINOEngine

    engine, why = load_engine(path, device=device, precision=precision, strict=True)
    log.info("%s served by %s", path, why)
    if isinstance(engine, OpenVINOEngine):
        try:
            engine.prepare(workers=1, threads=threads, probe_batch=4)
        except ExportUnusable as error:
            raise CheckpointError(str(error)) from None
    else:
        engine = replica_engine(engine.classifier, device, precision, threads)
    probe_engine(engine)
    return engine


def replica_engine(classifier: Classifier, device: str, precision: str, threads: int) -> TorchEngine:
    """``classifier`` prepared once per replica by the single-process bot's rules (:func:`model.runtime.prepare_model`:
    device, runtime and precision, each ``auto`` or forced). Raises ValueError, :class:`model.precision.DeviceUnavailable`."""
    from model.precision import resolve_device
    from model.torch_engine import TorchChoices, TorchEngine

    frozen = None if resolve_device(device).type == "cpu" else False  # the frozen graph is measured on the CPU only
    engine = TorchEngine(classifier, TorchChoices(frozen, precision, device), strict=True)
    engine.prepare(workers=1, threads=threads, probe_batch=4)
    return engine


def prepare_replica_model(classifier: Classifier, device: str, precision: str, threads: int) -> str:
    """:func:`replica_engine`'s preparation, described in one line (for the cluster's info and the gateway's /stats)."""
    return replica_engine(classifier, device, precision, threads).preparation.describe()


def frame_parts(level: LevelResult, class_names: list[str]) -> tuple[dict, dict[str, np.ndarray]]:
    """A map level as the gateway gets it: the OcclusionResult's fields (arrays as arrays), and what it needs to draw it."""
    meta = {"kind": "map", "label": class_names[level.result.target], "patch": level.patch, "stride": level.stride,
            "cached": level.cached, "final": level.final, "checkpoint_id": level.checkpoint_id}
    arrays = {}
    for item in dataclasses.fields(level.result):  # every field travels: new ones too
        value = getattr(level.result, item.name)
        if isinstance(value, np.ndarray):
            arrays[item.name] = value
        else:
            meta[item.name] = value.item() if isinstance(value, np.generic) else value
    return meta, arrays


class ReplicaWork:
    """A replica's models and its serving core (see the module docstring)."""

    def __init__(self, engines: dict[str, ServingEngine], config: ComputeConfig, observer=None):
        # Serve bounds the queue (503); ``observer``: the replica's metrics (model.serve.replica_metrics.ServingObserver)
        self.core = Scheduler(engines[MAIN], config, Limits(None, None, None), observer=observer)
        for name, engine in engines.items():
            if name != MAIN:
                self.core.swap(engine, name)
        self.core.start()

    @property
    def engines(self) -> dict[str, ServingEngine]:
        return self.core.models

    @property
    def pauses(self) -> int:
        return self.core.heatmap_pauses

    def waiting(self) -> int:
        return self.core.maps_waiting() + self.core.waiting_for_batch()

    def load(self, engines: dict[str, ServingEngine | None]) -> None:
        """Serve these prepared engines from the next request on (None: stop serving that model)."""
        for name, engine in engines.items():
            if engine is None:
                self.core.remove(name)
            else:
                self.core.swap(engine, name)

    def model(self, name: str) -> str:
        return name if name in self.core.served else MAIN

    async def classify(self, data: bytes, model: str, deadline_passed) -> tuple[dict, int, str] | None:
        """(prediction, batch size, checkpoint id), or None when ``deadline_passed()`` after the decoding;
        raises :class:`model.ImageError`."""
        model = self.model(model)
        engine = self.core.models[model]
        with self.core.reserve(None, model) as reservation:
            array = await reservation.decode(data)
            if deadline_passed():
                return None
            prediction = await reservation.classify_array(array)
            return prediction.to_dict(), reservation.batch_size, engine.checkpoint_id

    async def explain(self, data: bytes, levels: list[tuple[int, int]], model: str,
                      timeout_s: float) -> AsyncIterator[tuple[dict, dict[str, np.ndarray]]]:
        """Each level's frame parts, coarse to fine; raises ImageError, :class:`model.serving.admission.DeadlinePassed`."""
        model = self.model(model)
        class_names = self.core.models[model].class_names
        async for level in self.core.explain(None, data, levels, model, deadline_s=timeout_s):
            yield frame_parts(level, class_names)

    async def stop(self) -> None:
        await self.core.stop()

"""The in-process inference backend (no INFERENCE_ADDRESS): the serving core (:class:`model.serving.scheduler.Scheduler`,
the same one each cluster replica runs) on this machine's threads, driving a torch engine
(:class:`model.torch_engine.TorchEngine`) or any other :class:`model.engine.ServingEngine`; the maps drawn in
the user's language by :class:`bot.inference.drawing.MapDrawing` (the same as the gateway's).

It implements :class:`bot.inference.contract.InferenceBackend`: the handlers see only that. Models: "main"
(CHECKPOINT_PATH) and, with CANARY_CHECKPOINT, "canary" for CANARY_SHARE of chats (by the chat's hash,
:mod:`bot.inference.canary`); :meth:`InferenceScheduler.reload` reads both files again, checks and prepares them while the
old ones serve, then swaps them in (work in flight finishes on the model it started with). Every file, at start,
for the canary and on a reload, is loaded by :mod:`bot.inference.checkpoints` (its OpenVINO export without torch
where that is valid, else the torch engine, the reason logged).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from typing import TYPE_CHECKING

from bot.config import ConfigError
from bot.inference.canary import serves_canary
from bot.inference.checkpoints import ModelFiles, load_engine_for, prepare_and_probe
from bot.inference.contract import CANARY, MAIN, Busy, Explanation, ReloadResult, Stopping
from bot.inference.drawing import MapDrawing
from bot.inference.local_config import SchedulerConfig
from model.engine import ServingEngine
from model.errors import CheckpointError
from model.prediction import Prediction
from model.serving.admission import Ticket
from model.serving.bridge import Reservation
from model.serving.compute import SchedulerObserver, State
from model.serving.scheduler import Scheduler

if TYPE_CHECKING:
    from model import Classifier

__all__ = ["Busy", "InferenceScheduler", "SchedulerConfig", "State", "Stopping"]

log = logging.getLogger(__name__)


class InferenceScheduler:
    """The local :class:`bot.inference.contract.InferenceBackend` (see the module docstring). ``model``: a Classifier (served
    by the torch engine) or a ready :class:`ServingEngine`."""

    def __init__(self, model: Classifier | ServingEngine, config: SchedulerConfig, clock: Callable[[], float] = time.monotonic,
                 files: ModelFiles = ModelFiles(), observer: SchedulerObserver | None = None):
        self.config = config
        self.files = files
        self.core = Scheduler(self._engine(model), config.compute(), config.limits(), clock, observer)
        self.drawing = MapDrawing()

    @classmethod
    def preflight(cls, settings) -> ServingEngine:
        """Before any network call: CHECKPOINT_PATH loaded into the engine that will serve it (the OpenVINO export,
        verified, with no torch; else the torch engine, and then DEVICE usable here); :class:`ConfigError` otherwise."""
        if not settings.checkpoint_path.is_file():
            raise ConfigError(f"no model checkpoint at {settings.checkpoint_path}: train one with `make train` "
                              "(or set CHECKPOINT_PATH)")
        try:
            engine = load_engine_for(settings.checkpoint_path, settings.scheduler_config().choices())
        except CheckpointError as error:
            raise ConfigError(f"cannot load {settings.checkpoint_path}: {error} (retrain with `make train`)") from None
        if type(engine).__name__ == "TorchEngine":  # torch decides the device; DEVICE=cuda without a GPU stops here
            from model.precision import DeviceUnavailable, resolve_device

            try:
                resolve_device(settings.device)
            except DeviceUnavailable as error:
                raise ConfigError(f"DEVICE={settings.device}: {error}") from None
        return engine

    @classmethod
    def from_settings(cls, settings, model: Classifier | ServingEngine | None = None) -> InferenceScheduler:
        """The backend for these settings, on ``model`` (loaded from CHECKPOINT_PATH when not given)."""
        if model is None:
            model = load_engine_for(settings.checkpoint_path, settings.scheduler_config().choices())
        return cls(model, settings.scheduler_config(), files=ModelFiles.from_settings(settings))

    def _engine(self, model: Classifier | ServingEngine, strict: bool = False) -> ServingEngine:
        if isinstance(model, ServingEngine):
            return model
        from model.torch_engine import TorchEngine  # a Classifier given (tests): torch is loaded already

        return TorchEngine(model, self.config.choices(), strict)

    # ---- what is served ----------------------------------------------------------------------------------
    @property
    def models(self) -> dict[str, ServingEngine]:
        return self.core.models

    @property
    def classifier(self) -> ServingEngine:
        return self.core.models[MAIN]

    @property
    def preparation(self):
        return self.core.preparation

    @property
    def state(self) -> State:
        return self.core.state

    @property
    def batch_sizes(self):
        return self.core.batch_sizes

    @property
    def threads(self):
        return self.core.threads

    @property
    def heatmap_pauses(self) -> int:
        return self.core.heatmap_pauses

    def model_for(self, chat_id: int | None) -> str:
        canary = self.core.served.get(CANARY)
        if canary is None or chat_id is None:
            return MAIN
        return CANARY if serves_canary(chat_id, canary.checkpoint_id, self.files.canary_share) else MAIN

    def queue_length(self) -> int:
        return self.core.queue_length()

    def waiting_for_batch(self) -> int:
        return self.core.waiting_for_batch()

    def queue_depths(self) -> dict[str, int]:
        return {"requests": self.core.queue_length(), "maps": self.core.maps_waiting(),
                "batch": self.core.waiting_for_batch()}

    def maps_cached(self) -> int:
        return sum(len(served.cache) for served in list(self.core.served.values())) + len(self.drawing.grids)

    def stats_lines(self) -> dict[str, object]:
        sizes = list(self.core.batch_sizes)
        preparation = self.core.preparation
        lines: dict[str, object] = {"mean_batch": f"{sum(sizes) / len(sizes):.1f}" if sizes else "n/a",
                                    "forward": preparation.describe() if preparation else "preparing",
                                    "heatmap_pauses": self.core.heatmap_pauses}
        canary = self.core.served.get(CANARY)
        if canary is not None:
            lines["canary"] = (f"checkpoint {canary.checkpoint_id[:12]} for {self.files.canary_share:.0%} of chats "
                               f"(main: {self.classifier.checkpoint_id[:12]})")
        return lines

    def forget(self, chat_id: Hashable) -> None:
        self.core.forget(self.drawing.forget(chat_id))

    # ---- life cycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self.core.start()

    async def ready(self) -> None:
        """The warm-up done, then the canary (CANARY_CHECKPOINT) checked, prepared and served; a bad canary file
        stops the start (:class:`bot.config.ConfigError`)."""
        await self.core.ready()
        if self.files.canary is not None and CANARY not in self.core.served:
            try:
                engine = await asyncio.to_thread(load_engine_for, self.files.canary, self.config.choices())
                await asyncio.to_thread(prepare_and_probe, engine, self.core.prepare_replacement)
            except (CheckpointError, ValueError) as error:
                raise ConfigError(f"CANARY_CHECKPOINT={self.files.canary} cannot be served: {error}") from None
            self.core.swap(engine, CANARY)
            log.info("canary: checkpoint %s (classes %s) serves %.0f%% of chats", engine.checkpoint_id[:12],
                     ",".join(engine.class_names), 100 * self.files.canary_share)

    def begin_stop(self) -> None:
        self.core.begin_stop()

    async def stop(self, timeout: float = 5.0) -> None:
        await self.core.stop(timeout)

    # ---- classification --------------------------------------------------------------------------------
    def reserve(self, chat_id: Hashable, model: str = MAIN) -> Reservation:
        return self.core.reserve(chat_id, model)

    async def classify(self, chat_id: Hashable, data: bytes, model: str = MAIN) -> Prediction:
        return await self.core.classify(chat_id, data, model)

    async def classify_tensor(self, chat_id: Hashable, array, model: str = MAIN) -> Prediction:
        """An already preprocessed 3 x crop x crop image (NumPy, or a CPU tensor)."""
        return await self.core.classify_array(chat_id, array, model)

    # ---- heat maps -------------------------------------------------------------------------------------
    def reserve_explain(self, chat_id: Hashable) -> LocalMapReservation:
        return LocalMapReservation(self, self.core.reserve_map(chat_id))

    async def explain(self, chat_id: Hashable, data: bytes, levels: Sequence[tuple[int, int]], model: str = MAIN,
                      target: int | None = None, language=None) -> AsyncIterator[Explanation]:
        with self.reserve_explain(chat_id) as reservation:
            async for explanation in reservation.explain(data, levels, model, target, language):
                yield explanation

    # ---- reload ----------------------------------------------------------------------------------------
    async def reload(self, reason: str) -> ReloadResult:
        if self.files.main is None:
            return ReloadResult(False, f"reload ({reason}) refused: no checkpoint file to read again")
        results = [await self._reload_one(self.files.main, MAIN, reason)]
        if self.files.canary is not None and results[0].ok:
            results.append(await self._reload_one(self.files.canary, CANARY, reason))
        return ReloadResult(all(r.ok for r in results), "; ".join(r.text for r in results))

    async def _reload_one(self, path, model: str, reason: str) -> ReloadResult:
        started = time.monotonic()
        old = self.models.get(model)
        what = "" if model == MAIN else f"{model} "
        was = old.checkpoint_id[:12] if old else "(none)"
        try:
            engine = await asyncio.to_thread(load_engine_for, path, self.config.choices(), True)
            if old is not None and engine.checkpoint_id == old.checkpoint_id:
                result = ReloadResult(True, f"reload ({reason}): {path} is the {what}checkpoint already served ({was})")
                log.info(result.text)
                return result
            preparation = await asyncio.to_thread(prepare_and_probe, engine, self.core.prepare_replacement)
        except (CheckpointError, ValueError) as error:
            result = ReloadResult(False, f"reload ({reason}) refused: {path}: {error}; still serving {what}checkpoint {was}")
            log.error(result.text)
            return result
        self.core.swap(engine, model)
        result = ReloadResult(True, f"reload ({reason}): now serving {what}checkpoint {engine.checkpoint_id[:12]} "
                                    f"(classes {', '.join(engine.class_names)}; was {was}) after "
                                    f"{time.monotonic() - started:.1f} s; forward pass {preparation.describe()}")
        log.info(result.text)
        return result


class LocalMapReservation:
    """A /why's admitted place (see :class:`bot.inference.contract.MapReservation`)."""

    def __init__(self, backend: InferenceScheduler, ticket: Ticket):
        self._backend, self._ticket = backend, ticket

    def __enter__(self) -> LocalMapReservation:
        return self

    def __exit__(self, *exc_info) -> None:
        self._ticket.release()

    async def explain(self, data: bytes, levels: Sequence[tuple[int, int]], model: str = MAIN, target: int | None = None,
                      language=None) -> AsyncIterator[Explanation]:
        """Drawn from what is kept when the final map is (no inference), else each level as the core computes it."""
        core, levels = self._backend.core, [(int(p), int(s)) for p, s in levels]
        served = core.served.get(model, core.served[MAIN])
        drawing = self._backend.drawing.start(self._ticket.chat_id, bytes(data), served.engine, target, language)
        kept = await drawing.kept(levels[-1])
        if kept is not None:
            self._ticket.release()
            yield kept
            return
        async for level in core.explain(self._ticket.chat_id, drawing.data, levels, model, ticket=self._ticket):
            yield await drawing.draw(level)

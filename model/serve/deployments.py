"""The two Ray Serve deployments, ``Classifier`` and ``Explainer``, each its own application and replicas, so
heat maps never delay classification. HTTP in and out (the protocol is :mod:`model.serve.wire`); the work
itself is :mod:`model.serve.replica` (the bot's own serving core), and a reload :mod:`model.serve.registry`.

Each replica loads the checkpoint once, in ``__init__``, and reads the cluster's token from its own
environment (RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, inherited from the node it runs on), so the token is
never part of a deployment's arguments, which Ray stores in its cluster metadata. torch is imported in the
replicas only (in ``__init__``), not by ``python -m model serve``, which only binds these classes.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import ray
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from model.errors import ImageError

from . import wire
from .wire import DeadlinePassed

log = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class ReplicaOptions:
    """What ``python -m model serve`` tells every replica (no secrets: Ray stores these)."""

    checkpoint: str
    device: str
    precision: str
    threads: int
    max_batch: int
    max_batch_wait_s: float
    explain_batch_size: int
    explain_cache_size: int
    canary_checkpoint: str | None = None  # served as "canary" beside "main"; the gateway routes chats to it


def _timeout(request: Request) -> float:
    return wire.parse_timeout(request.headers.get(wire.TIMEOUT_HEADER))


async def _capped_body(request: Request) -> bytes:
    return await wire.read_capped(request.stream(), request.headers.get("content-length"))


_TOO_LARGE = {"error": f"the body is over {wire.MAX_BODY_BYTES} bytes"}


def _ids(engines: dict) -> str:
    return ", ".join(f"{name} {engine.checkpoint_id[:12]}" for name, engine in sorted(engines.items()))


class _Replica:
    """What both deployments share: the token, the models (loaded, probed, prepared), the info GET, and following
    the registry's generation (see :mod:`model.serve.registry`)."""

    def _start(self, options: ReplicaOptions, deployment: str) -> None:
        from model.serving.compute import ComputeConfig

        from .registry import registry
        from .replica import ReplicaWork
        from .replica_metrics import ReplicaMetrics, ServingObserver

        started = time.monotonic()
        self.options = options
        self.token = wire.inference_token()  # the gateway's token, not Ray's own
        self.registry = registry()
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.generation, _ = ray.get(self.registry.current.remote())
        self._reloading = threading.Lock()
        engines = self._engines()
        self.runtime = engines["main"].preparation.describe()
        config = ComputeConfig(max_batch=options.max_batch, max_batch_wait_s=options.max_batch_wait_s, decode_workers=1,
                               threads=options.threads, classify_workers=1, explain_batch_size=options.explain_batch_size,
                               explain_cache_size=options.explain_cache_size, warm_up_batch=0)
        self.metrics = ReplicaMetrics(deployment)
        self.work = ReplicaWork(engines, config, ServingObserver(self.metrics, lambda: self.work.engines))
        self._record_models()
        self.load_seconds = time.monotonic() - started
        self._stopped = threading.Event()
        threading.Thread(target=self._follow_registry, name="registry", daemon=True).start()

    def _engines(self) -> dict:
        """The checkpoint files read again, each checked and prepared; raises CheckpointError, ValueError."""
        from .replica import CANARY, load_replica_engine

        options = self.options
        files = {"main": options.checkpoint, CANARY: options.canary_checkpoint}
        return {name: load_replica_engine(path, options.device, options.precision, options.threads)
                for name, path in files.items() if path}

    def _follow_registry(self) -> None:
        from .registry import POLL_S

        while not self._stopped.wait(POLL_S):
            try:
                generation, expected = ray.get(self.registry.current.remote(), timeout=10)
            except Exception:  # the registry restarting: ask again at the next poll
                continue
            if generation > self.generation:
                self._follow(generation, expected)

    def _follow(self, generation: int, expected: dict[str, str]) -> None:
        with self._reloading:
            if generation <= self.generation:
                return
            try:
                engines = self._engines()
                got = {name: engine.checkpoint_id for name, engine in engines.items()}
                if got != expected:
                    raise ValueError(f"the files changed since the reload was asked ({got} instead of {expected})")
                self.work.load(engines)
                self._record_models()
                ok, text = True, f"serving {_ids(engines)}"
            except Exception as error:  # the old engines keep serving
                ok, text = False, f"refused ({error}); still serving {_ids(self.work.engines)}"
                log.error("reload to generation %d: %s", generation, text)
            self.generation = generation
            self.registry.ack.remote(self.replica_id, generation, ok, text)

    def _lead_reload(self) -> tuple[int, dict]:
        """The reload this replica was asked for (module docstring of model.serve.registry): (HTTP status, answer)."""
        from model.errors import CheckpointError

        from .registry import ACK_WAIT_S

        with self._reloading:
            before = _ids(self.work.engines)
            try:
                engines = self._engines()
            except (CheckpointError, ValueError, OSError) as error:
                return 422, {"ok": False, "text": f"{error}; still serving {before}"}
            expected = {name: engine.checkpoint_id for name, engine in engines.items()}
            if expected == {name: engine.checkpoint_id for name, engine in self.work.engines.items()}:
                return 200, {"ok": True, "text": f"the checkpoints already served ({before})"}
            generation = ray.get(self.registry.propose.remote(expected))
            self.work.load(engines)
            self._record_models()
            self.generation = generation
            ray.get(self.registry.ack.remote(self.replica_id, generation, True, f"serving {_ids(engines)}"))
        deadline = time.monotonic() + ACK_WAIT_S
        while True:
            acks = ray.get(self.registry.acks_for.remote(generation))
            running = sum(states.get("RUNNING", 0) for states in _replica_states().values())
            if len(acks) >= running or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        refused = [text for ok, text in acks.values() if not ok]
        ok = not refused and len(acks) >= running
        text = (f"now serving {_ids(engines)} (was {before}) on {len(acks)} of {running} replicas"
                + (f"; refused by {len(refused)}: {refused[0]}" if refused else ""))
        return 200, {"ok": ok, "text": text}

    def _record_models(self) -> None:
        for name, engine in self.work.engines.items():
            self.metrics.model(engine, role=name)

    async def __call__(self, request: Request) -> Response:
        """Every request: the token first; GET is the served models and the replicas, POST the deployment's work."""
        if not wire.authorized(request.headers.get("authorization"), self.token):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        if request.method == "GET":
            return JSONResponse(await asyncio.to_thread(self._info))
        if request.headers.get(wire.RELOAD_HEADER):
            status, answer = await asyncio.to_thread(self._lead_reload)
            return JSONResponse(answer, status_code=status)
        return await self._post(request)

    def _info(self) -> dict:
        models = {name: {"class_names": list(engine.class_names), "checkpoint_id": engine.checkpoint_id,
                         "preprocess": engine.preprocess_config.to_dict()} for name, engine in self.work.engines.items()}
        return {**models["main"], "models": models, "runtime": self.runtime, "generation": self.generation,
                "replicas": _replica_states()}

    def __del__(self):
        stopped = getattr(self, "_stopped", None)
        if stopped is not None:
            stopped.set()


def _replica_states() -> dict:
    """Running replicas per deployment, from Serve's controller."""
    states = {}
    for app in serve.status().applications.values():
        for name, deployment in app.deployments.items():
            states[name] = {str(state): count for state, count in deployment.replica_states.items()}
    return states


def _model(request: Request) -> str:
    return request.headers.get(wire.MODEL_HEADER, "main")


@serve.deployment(name="Classifier", max_ongoing_requests=32, graceful_shutdown_timeout_s=2,
                  health_check_period_s=2, health_check_timeout_s=10)
class ClassifierDeployment(_Replica):
    """Classification micro-batches by the serving core's batcher (the bot's: full, or waited ``max_batch_wait_s``)."""

    def __init__(self, options: ReplicaOptions):
        self._start(options, "Classifier")

    async def _post(self, request: Request) -> Response:
        deadline = time.monotonic() + _timeout(request)
        try:
            data = await _capped_body(request)
        except wire.BodyTooLarge:
            return JSONResponse(_TOO_LARGE, status_code=413)
        try:
            answer = await self.work.classify(data, _model(request), lambda: time.monotonic() > deadline)
        except ImageError as error:
            self.metrics.request("refused")
            return JSONResponse({"image_error": str(error)}, status_code=422)
        if answer is None:
            self.metrics.request("deadline")
            return JSONResponse({"error": "deadline passed"}, status_code=504)
        self.metrics.request("answered")
        prediction, batch, checkpoint_id = answer
        return JSONResponse({"prediction": prediction, "batch": batch, "checkpoint_id": checkpoint_id})


@serve.deployment(name="Explainer", max_ongoing_requests=8, graceful_shutdown_timeout_s=2,
                  health_check_period_s=2, health_check_timeout_s=10)
class ExplainerDeployment(_Replica):
    def __init__(self, options: ReplicaOptions):
        self._start(options, "Explainer")

    async def _post(self, request: Request) -> Response:
        try:
            levels = wire.parse_levels(request.headers.get(wire.LEVELS_HEADER, ""))
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        try:
            data = await _capped_body(request)
        except wire.BodyTooLarge:
            return JSONResponse(_TOO_LARGE, status_code=413)
        return StreamingResponse(self._frames(data, levels, _model(request), _timeout(request)),
                                 media_type="application/octet-stream")

    async def _frames(self, data: bytes, levels, model: str, timeout_s: float):
        outcome = "answered"
        try:
            self.metrics.queue_depth("maps", self.work.waiting() + 1)
            async for meta, arrays in self.work.explain(data, levels, model, timeout_s):
                yield wire.encode_frame(meta, arrays)
        except ImageError as error:
            outcome = "refused"
            yield wire.encode_frame({"kind": "image_error", "message": str(error)})
        except DeadlinePassed as error:
            outcome = "deadline"
            yield wire.encode_frame({"kind": "deadline", "message": str(error)})
        finally:
            self.metrics.request(outcome)
            self.metrics.queue_depth("maps", self.work.waiting())

"""The two Ray Serve deployments, ``Classifier`` and ``Explainer``, each its own application and replicas, so
heat maps never delay classification. HTTP in and out (the protocol is :mod:`model.serve.wire`); the work
itself is :mod:`model.serve.replica`.

Each replica loads the checkpoint once, in ``__init__``, and reads the inference token (not Ray's: see
:mod:`model.serve.wire`) from its own environment (INFERENCE_TOKEN or INFERENCE_TOKEN_FILE, inherited from
the node it runs on), so the token is never part of a deployment's arguments, which Ray stores in its
cluster metadata. A body over ``wire.MAX_BODY_BYTES`` gets 413 without being read whole. torch is imported in the
replicas only (in ``__init__``), not by ``python -m model serve``, which only binds these classes.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

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


def _timeout(request: Request) -> float:
    return wire.parse_timeout(request.headers.get(wire.TIMEOUT_HEADER))


async def _capped_body(request: Request) -> bytes:
    return await wire.read_capped(request.stream(), request.headers.get("content-length"))


_TOO_LARGE = {"error": f"the body is over {wire.MAX_BODY_BYTES} bytes"}


class _Replica:
    def _load(self, options: ReplicaOptions):
        from model.predict import load_classifier

        from .replica import prepare_replica_model

        started = time.monotonic()
        self.token = wire.inference_token()
        classifier = load_classifier(options.checkpoint)
        self.runtime = prepare_replica_model(classifier, options.device, options.precision, options.threads)
        self.classifier = classifier
        self.load_seconds = time.monotonic() - started
        return classifier

    async def __call__(self, request: Request) -> Response:
        """Every request: the token first; GET is the served model and the replicas, POST the deployment's work."""
        if not wire.authorized(request.headers.get("authorization"), self.token):
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        if request.method == "GET":
            return JSONResponse(await asyncio.to_thread(self._info))
        return await self._post(request)

    def _info(self) -> dict:
        classifier = self.classifier
        return {"class_names": list(classifier.class_names), "checkpoint_id": classifier.checkpoint_id,
                "preprocess": classifier.preprocess_config.to_dict(), "runtime": self.runtime,
                "replicas": _replica_states()}


def replica_metrics(deployment: str, classifier):
    """The replica's Ray metrics (model.serve.replica_metrics), with the model it serves recorded."""
    from .replica_metrics import ReplicaMetrics

    metrics = ReplicaMetrics(deployment)
    metrics.model(classifier)
    return metrics


def _replica_states() -> dict:
    """Running replicas per deployment, from Serve's controller."""
    states = {}
    for app in serve.status().applications.values():
        for name, deployment in app.deployments.items():
            states[name] = {str(state): count for state, count in deployment.replica_states.items()}
    return states


@serve.deployment(name="Classifier", max_ongoing_requests=32, graceful_shutdown_timeout_s=2,
                  health_check_period_s=2, health_check_timeout_s=10)
class ClassifierDeployment(_Replica):
    def __init__(self, options: ReplicaOptions):
        from .replica import ClassifyWork

        self.work = ClassifyWork(self._load(options), options.threads)
        self.metrics = replica_metrics("Classifier", self.classifier)
        self.work.forward_observer = self.metrics.observe_forward
        self.batch_sizes: list[int] = []
        # @serve.batch's limits are set per instance (they are the replica's settings).
        self._batched.set_max_batch_size(options.max_batch)
        self._batched.set_batch_wait_timeout_s(options.max_batch_wait_s)

    async def _post(self, request: Request) -> Response:
        deadline = time.monotonic() + _timeout(request)
        try:
            data = await _capped_body(request)
        except wire.BodyTooLarge:
            return JSONResponse(_TOO_LARGE, status_code=413)
        try:
            tensor = await asyncio.to_thread(self.work.decode, data)
        except ImageError as error:
            self.metrics.request("refused")
            return JSONResponse({"image_error": str(error)}, status_code=422)
        if time.monotonic() > deadline:
            self.metrics.request("deadline")
            return JSONResponse({"error": "deadline passed"}, status_code=504)
        prediction, batch = await self._batched(tensor)
        self.metrics.request("answered")
        return JSONResponse({"prediction": prediction, "batch": batch, "checkpoint_id": self.classifier.checkpoint_id})

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batched(self, tensors: list) -> list[tuple[dict, int]]:
        predictions = await asyncio.to_thread(self.work.run_batch, tensors)
        return [(prediction, len(tensors)) for prediction in predictions]


@serve.deployment(name="Explainer", max_ongoing_requests=8, graceful_shutdown_timeout_s=2,
                  health_check_period_s=2, health_check_timeout_s=10)
class ExplainerDeployment(_Replica):
    def __init__(self, options: ReplicaOptions):
        from .replica import MapWork

        self.work = MapWork(self._load(options), options.explain_batch_size, options.explain_cache_size,
                            options.threads)
        self.metrics = replica_metrics("Explainer", self.classifier)
        self.work.level_observer = self.metrics.map_level

    def __del__(self):
        self.work.stop()

    async def _post(self, request: Request) -> Response:
        try:
            levels = wire.parse_levels(request.headers.get(wire.LEVELS_HEADER, ""))
        except ValueError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        try:
            data = await _capped_body(request)
        except wire.BodyTooLarge:
            return JSONResponse(_TOO_LARGE, status_code=413)
        return StreamingResponse(self._frames(data, levels, _timeout(request)), media_type="application/octet-stream")

    async def _frames(self, data: bytes, levels, timeout_s: float):
        outcome = "answered"
        try:
            self.metrics.queue_depth("maps", self.work.waiting() + 1)
            async for result in self.work.explain(data, levels, timeout_s):
                yield wire.encode_frame(*result.frame_parts())
        except ImageError as error:
            outcome = "refused"
            yield wire.encode_frame({"kind": "image_error", "message": str(error)})
        except DeadlinePassed as error:
            outcome = "deadline"
            yield wire.encode_frame({"kind": "deadline", "message": str(error)})
        finally:
            self.metrics.request(outcome)
            self.metrics.queue_depth("maps", self.work.waiting())

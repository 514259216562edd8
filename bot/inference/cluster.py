"""The bot as a gateway (INFERENCE_ADDRESS): classifications and heat maps go to a Ray Serve cluster
(``python -m model serve``) over HTTP, with the interface of :class:`bot.inference.local.InferenceScheduler`
(:mod:`bot.inference.contract`), so the handlers do not change. No torch and no Ray in this process.

Why HTTP through Serve's proxy and not a Ray handle in this process: a Ray driver is bound to the cluster it
connected to (one ``ray.init`` per process, and a driver that loses its GCS for long gives up), while the bot
must outlive a cluster restart; and HTTP keeps Ray, like torch, out of the gateway.

On the event loop: admission (the one shared :class:`model.serving.admission.Admission`: QUEUE_SIZE,
PER_CHAT_QUEUE, WHY_QUEUE_SIZE and a chat's fair share of it; :class:`Busy` at once), the HTTP calls (httpx) and
reading the map frames. Off it (``asyncio.to_thread``): decoding the photo a map is drawn on, and drawing it
(:class:`bot.inference.drawing.MapDrawing`, the same as the local backend's, with its kept grids and drawn maps).

Canary and reload: the cluster serves "main" and, with ``--canary-checkpoint``, "canary"; this gateway routes
each chat by its hash (:mod:`bot.inference.canary`, CANARY_SHARE) and sends the model's name (``X-Model``), never the chat.
:meth:`ClusterInference.reload` asks the cluster to read its checkpoints again (``X-Reload``; every replica
reloads, see :mod:`model.serve.registry`). Failures:

- a replica that dies mid-request (a 5xx, or a broken stream): retried once, for the maps not yet received;
  Serve routes the retry to a live replica, or to the one it restarts;
- the cluster unreachable: :class:`Busy` (users get the busy message), one error line per outage, one info
  line when it answers again; nothing to restart;
- every request carries its deadline (INFERENCE_DEADLINE_S, WHY_DEADLINE_S): replicas drop work past it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass, field

import httpx

from bot.config import INFERENCE_TOKEN_HINT, ConfigError
from bot.inference.canary import serves_canary
from bot.inference.contract import CANARY, MAIN, Busy, Explanation, ReloadResult, Stopping
from bot.inference.drawing import Drawing, MapDrawing
from model.errors import ImageError
from model.occlusion_result import OcclusionResult
from model.prediction import Prediction
from model.preprocess import PreprocessConfig
from model.serve import wire
from model.serving.admission import Admission, Limits, Ticket
from model.serving.levels import LevelResult

log = logging.getLogger(__name__)

INFO_REFRESH_S = 10.0  # how often the served model and the replica counts are read again (for /stats)
CONNECT_RETRY_S = 2.0


class _ReplicaFailed(Exception):
    """A 5xx or a broken connection mid-request: worth one retry elsewhere."""


@dataclass(frozen=True)
class RemoteModel:
    """What the handlers read of a model (``class_names``, ``checkpoint_id``), as the cluster serves it."""

    class_names: list[str]
    checkpoint_id: str
    preprocess_config: PreprocessConfig = field(default_factory=PreprocessConfig)
    runtime: str = ""


@dataclass(frozen=True)
class ClusterPreparation:
    runtime: str

    def describe(self) -> str:
        return f"on the cluster ({self.runtime})"


class ClusterInference:
    """The gateway's :class:`bot.inference.contract.InferenceBackend` (see the module docstring)."""

    def __init__(self, address: str, token: str, *, queue_size: int, per_chat_queue: int, why_queue_size: int,
                 deadline_s: float, why_deadline_s: float, canary_share: float = 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self.address = address.rstrip("/")
        self._token = token
        self.admission = Admission(Limits(queue_size, per_chat_queue, why_queue_size))
        self._max_connections = queue_size + 4
        self._deadline_s, self._why_deadline_s = deadline_s, why_deadline_s
        self.canary_share = canary_share
        self.clock = clock
        self.models: dict[str, RemoteModel] = {}
        self.info: dict = {}
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self.retries = 0
        self.reachable = True
        self.drawing = MapDrawing()
        self._stopping = False
        self._client: httpx.AsyncClient | None = None
        self._refresher: asyncio.Task | None = None

    @classmethod
    def preflight(cls, settings) -> None:
        """Nothing to load here: the cluster serves the model (a bad INFERENCE_TOKEN_FILE stopped the start already)."""
        return None

    @classmethod
    def from_settings(cls, settings, classifier=None) -> ClusterInference:
        return cls(settings.inference_address, settings.cluster_token(), queue_size=settings.queue_size,
                   per_chat_queue=settings.per_chat_queue, why_queue_size=settings.why_queue_size,
                   deadline_s=settings.inference_deadline_s, why_deadline_s=settings.why_deadline_s,
                   canary_share=settings.canary_share)

    @property
    def classifier(self) -> RemoteModel:
        return self.models[MAIN]

    @property
    def preparation(self) -> ClusterPreparation | None:
        return ClusterPreparation(self.classifier.runtime) if MAIN in self.models else None

    # ---- life cycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        # Up to the number of requests admitted at once; Serve's proxy keeps them alive between requests.
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=self._max_connections))

    async def ready(self) -> None:
        """Wait until the cluster tells which model it serves (an error line while it does not answer)."""
        while not await self.refresh_info():
            await asyncio.sleep(CONNECT_RETRY_S)
        self._refresher = asyncio.create_task(self._refresh_every(INFO_REFRESH_S))

    def begin_stop(self) -> None:
        self._stopping = True
        self.admission.close()

    async def stop(self, timeout: float = 5.0) -> None:
        self.begin_stop()
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _refresh_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await self.refresh_info()

    async def refresh_info(self) -> bool:
        try:
            response = await self._http().get(self.address + wire.CLASSIFY_ROUTE, headers=self._headers(10.0),
                                               timeout=10.0)
        except httpx.TransportError as error:
            self._lost(error)
            return False
        if response.status_code in (401, 403) and not self.models:  # at the start: a wrong token is not an outage
            raise ConfigError(f"the inference cluster at {self.address} refused the token (HTTP "
                              f"{response.status_code}): {INFERENCE_TOKEN_HINT}")
        if response.status_code != 200:
            self._lost(f"HTTP {response.status_code} {response.text[:200]}")
            return False
        self._back()
        self.info = response.json()
        served = self.info.get("models") or {MAIN: self.info}
        self.models = {name: RemoteModel(list(model["class_names"]), model["checkpoint_id"],
                                         PreprocessConfig.from_dict(model["preprocess"]), self.info.get("runtime", ""))
                       for name, model in served.items()}
        return True

    def _lost(self, error) -> None:
        if self.reachable:
            log.error("inference cluster at %s unreachable (%s): users get the busy message until it answers",
                      self.address, error)
        self.reachable = False

    def _back(self) -> None:
        if not self.reachable:
            log.info("inference cluster at %s answers again", self.address)
        self.reachable = True

    # ---- admission, routing, /stats, /forget ------------------------------------------------------------
    def queue_length(self) -> int:
        return self.admission.queued()

    def queue_depths(self) -> dict[str, int]:
        return {"requests": self.admission.queued(), "maps": self.admission.maps_queued()}

    def maps_cached(self) -> int:
        return len(self.drawing.grids) + len(self.drawing.rendered)

    def model_for(self, chat_id: int | None) -> str:
        canary = self.models.get(CANARY)
        if canary is None or chat_id is None:
            return MAIN
        return CANARY if serves_canary(chat_id, canary.checkpoint_id, self.canary_share) else MAIN

    @property
    def kept_maps(self) -> int:
        """Maps drawn again from a grid kept here, without asking the cluster."""
        return self.drawing.drawn_from_grids

    def stats_lines(self) -> dict[str, object]:
        """Where the work goes, its replicas, and what waits here for them."""
        sizes = list(self.batch_sizes)
        replicas = self.info.get("replicas", {})
        running = ", ".join(f"{name} {states.get('RUNNING', 0)}" + "".join(
            f" ({count} {state.lower()})" for state, count in states.items() if state != "RUNNING")
            for name, states in sorted(replicas.items()))
        lines: dict[str, object] = {
            "mean_batch": f"{sum(sizes) / len(sizes):.1f}" if sizes else "n/a",
            "forward": self.preparation.describe() if self.preparation else "preparing",
            "cluster": f"{self.address} ({'reachable' if self.reachable else 'UNREACHABLE'}); replicas: "
                       f"{running or 'unknown'}; in flight from here: {self.queue_length()} "
                       f"({self.admission.maps_queued()} heat maps); retries after a replica failure: {self.retries}; "
                       f"maps drawn from grids kept here: {self.kept_maps}"}
        canary = self.models.get(CANARY)
        if canary is not None:
            lines["canary"] = (f"checkpoint {canary.checkpoint_id[:12]} for {self.canary_share:.0%} of chats "
                               f"(main: {self.classifier.checkpoint_id[:12]})")
        return lines

    def forget(self, chat_id: Hashable) -> None:
        """The grids and maps kept here (the replicas' caches hold photos' hashes only, and age out)."""
        self.drawing.forget(chat_id)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._stopping:
            raise Stopping("the service is stopping")
        return self._client

    def _headers(self, timeout_s: float, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", wire.TIMEOUT_HEADER: f"{max(0.0, timeout_s):.3f}", **extra}

    # ---- classification --------------------------------------------------------------------------------
    def reserve(self, chat_id: Hashable, model: str = MAIN) -> RemoteReservation:
        return RemoteReservation(self, Ticket(self.admission, chat_id, heat_map=False), model)

    async def classify(self, chat_id: Hashable, data: bytes, model: str = MAIN) -> Prediction:
        with self.reserve(chat_id, model) as reservation:
            return await reservation.classify(data)

    async def _classify(self, data: bytes, model: str) -> Prediction:
        deadline = self.clock() + self._deadline_s
        for attempt in (1, 2):
            try:
                return await self._classify_once(data, model, deadline)
            except _ReplicaFailed as error:
                if attempt == 2:
                    raise RuntimeError(f"classification failed twice on the cluster: {error}") from None
                self.retries += 1
                log.warning("classification failed on a replica (%s); retrying once", error)
        raise AssertionError("unreachable")

    async def _classify_once(self, data: bytes, model: str, deadline: float) -> Prediction:
        remaining = deadline - self.clock()
        try:
            response = await self._http().post(self.address + wire.CLASSIFY_ROUTE, content=data,
                                               headers=self._headers(remaining, **{wire.MODEL_HEADER: model}),
                                               timeout=max(0.1, remaining))
        except httpx.TimeoutException:
            raise Busy("the cluster did not answer before the deadline") from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            self._lost(error)
            raise Busy("the inference cluster is unreachable") from None
        except httpx.TransportError as error:
            raise _ReplicaFailed(repr(error)) from None
        body = self._check(response)
        self.batch_sizes.append(int(body.get("batch", 1)))
        return Prediction.from_dict(body["prediction"], checkpoint_id=body.get("checkpoint_id", ""))

    def _check(self, response: httpx.Response) -> dict:
        """The JSON of a 200; ImageError, Busy or _ReplicaFailed for the rest."""
        self._back()
        status = response.status_code
        if status == 200:
            return response.json()
        if status == 422:
            raise ImageError(response.json().get("image_error", "the image could not be read"))
        if status in (503, 504):
            raise Busy(f"the cluster answered {status}")
        if status >= 500:
            raise _ReplicaFailed(f"HTTP {status}")
        log.error("the inference cluster refused the request: HTTP %d %s", status, response.text[:200])
        raise Busy(f"the cluster refused the request ({status})")

    # ---- heat maps -------------------------------------------------------------------------------------
    def reserve_explain(self, chat_id: Hashable) -> RemoteMapReservation:
        return RemoteMapReservation(self, Ticket(self.admission, chat_id, heat_map=True))

    async def explain(self, chat_id: Hashable, data: bytes, levels: Sequence[tuple[int, int]],
                      model: str = MAIN, target: int | None = None, language=None) -> AsyncIterator[Explanation]:
        with self.reserve_explain(chat_id) as reservation:
            async for explanation in reservation.explain(data, levels, model, target, language):
                yield explanation

    async def _explain(self, drawing: Drawing, levels: list[tuple[int, int]], model: str) -> AsyncIterator[Explanation]:
        """The cluster's maps, drawn here; one retry, for the maps not yet received, after a replica failed."""
        deadline = self.clock() + self._why_deadline_s
        remaining = list(levels)
        for attempt in (1, 2):
            try:
                async for explanation in self._explain_once(drawing, remaining, model, deadline):
                    yield explanation
                    if explanation.final:
                        return
                    remaining.pop(0)
                raise _ReplicaFailed("the map stream ended early")
            except _ReplicaFailed as error:
                if self._stopping:  # the bot is stopping, not the replica failing: the journal keeps it
                    raise Stopping("the service is stopping") from None
                if attempt == 2:
                    raise RuntimeError(f"the heat map failed twice on the cluster: {error}") from None
                self.retries += 1
                log.warning("a heat map failed on a replica (%s); retrying once for %s", error,
                            wire.format_levels(remaining))

    async def _explain_once(self, drawing: Drawing, levels: list[tuple[int, int]], model: str,
                            deadline: float) -> AsyncIterator[Explanation]:
        timeout = deadline - self.clock()
        headers = self._headers(timeout, **{wire.LEVELS_HEADER: wire.format_levels(levels), wire.MODEL_HEADER: model})
        try:
            async with self._http().stream("POST", self.address + wire.EXPLAIN_ROUTE, content=drawing.data,
                                           headers=headers, timeout=httpx.Timeout(max(0.1, timeout))) as response:
                if response.status_code != 200:
                    await response.aread()
                    self._check(response)
                self._back()
                reader = wire.FrameReader()
                async for chunk in response.aiter_bytes():
                    try:
                        frames = reader.feed(chunk)
                    except wire.FrameTooLarge as error:  # a broken stream: not buffered, retried once
                        raise _ReplicaFailed(str(error)) from None
                    for meta, arrays in frames:
                        yield await drawing.draw(_level_of(meta, arrays))
        except httpx.TimeoutException:
            raise Busy("the heat map was not done before the deadline") from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            self._lost(error)
            raise Busy("the inference cluster is unreachable") from None
        except httpx.TransportError as error:
            raise _ReplicaFailed(repr(error)) from None

    # ---- reload ----------------------------------------------------------------------------------------
    async def reload(self, reason: str) -> ReloadResult:
        """Every replica reads its checkpoints again, by the local rules (load, probe, prepare; a bad file is
        refused and the old model keeps serving); the answer says what each model serves now."""
        try:
            response = await self._http().post(self.address + wire.CLASSIFY_ROUTE, content=b"",
                                               headers=self._headers(RELOAD_TIMEOUT_S, **{wire.RELOAD_HEADER: "1"}),
                                               timeout=RELOAD_TIMEOUT_S)
            answer = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        except (httpx.TransportError, ValueError) as error:
            answer, response = {"text": f"the cluster did not answer ({error!r})"}, None
        ok = response is not None and response.status_code == 200 and bool(answer.get("ok"))
        result = ReloadResult(ok, f"reload ({reason}) on the cluster{'' if ok else ' refused'}: "
                                  f"{answer.get('text') or (response.text[:200] if response is not None else '')}")
        (log.info if ok else log.error)(result.text)
        await self.refresh_info()
        return result


RELOAD_TIMEOUT_S = 300.0  # every replica loads and prepares the new checkpoint(s)


def _level_of(meta: dict, arrays: dict) -> LevelResult:
    """A frame from an Explainer replica as the level it computed; the errors it may carry, raised."""
    kind = meta.get("kind")
    if kind == "image_error":
        raise ImageError(meta.get("message", "the image could not be read"))
    if kind == "deadline":
        raise Busy(meta.get("message", "the deadline passed"))
    if kind != "map":
        raise _ReplicaFailed(f"an unknown frame {kind!r}")
    result = OcclusionResult(**{name: arrays[name] if name in arrays else meta.get(name)
                                for name in OcclusionResult.__dataclass_fields__})
    return LevelResult(result, int(meta["patch"]), int(meta["stride"]), bool(meta["cached"]), bool(meta["final"]),
                       "", str(meta.get("checkpoint_id", "")))


class RemoteMapReservation:
    """A /why's admitted place (see :class:`bot.inference.contract.MapReservation`)."""

    def __init__(self, inference: ClusterInference, ticket: Ticket):
        self._inference, self._ticket = inference, ticket

    def __enter__(self) -> RemoteMapReservation:
        return self

    def __exit__(self, *exc_info) -> None:
        self._ticket.release()

    async def explain(self, data: bytes, levels: Sequence[tuple[int, int]], model: str = MAIN, target: int | None = None,
                      language=None) -> AsyncIterator[Explanation]:
        """Heat maps for each (patch, stride) in ``levels``, coarse to fine, drawn here from the cluster's maps, for
        class ``target`` (default: the predicted one) in ``language``. A final map kept here is drawn again
        without the cluster."""
        inference, levels = self._inference, [(int(p), int(s)) for p, s in levels]
        served = inference.models.get(model) or inference.classifier
        drawing = inference.drawing.start(self._ticket.chat_id, bytes(data), served, target, language)
        kept = await drawing.kept(levels[-1])
        if kept is not None:
            yield kept
            return
        async for explanation in inference._explain(drawing, levels, model if model in inference.models else MAIN):
            yield explanation


class RemoteReservation:
    """One admitted classification (see :class:`bot.inference.contract.ClassifyReservation`)."""

    def __init__(self, inference: ClusterInference, ticket: Ticket, model: str):
        self._inference, self._ticket, self._model = inference, ticket, model

    def __enter__(self) -> RemoteReservation:
        return self

    def __exit__(self, *exc_info) -> None:
        self._ticket.release()

    async def classify(self, data: bytes) -> Prediction:
        return await self._inference._classify(data, self._model if self._model in self._inference.models else MAIN)

"""The bot as a gateway (INFERENCE_ADDRESS): classifications and heat maps go to a Ray Serve cluster
(``python -m model serve``) over HTTP, with the interface of :class:`bot.scheduler.InferenceScheduler`
(:mod:`bot.inference`), so the handlers do not change. No torch and no Ray in this process.

Why HTTP through Serve's proxy and not a Ray handle in this process: a Ray driver is bound to the cluster it
connected to (one ``ray.init`` per process, and a driver that loses its GCS for long gives up), while the bot
must outlive a cluster restart; and HTTP keeps Ray, like torch, out of the gateway.

On the event loop: admission (the same limits as the scheduler: QUEUE_SIZE, PER_CHAT_QUEUE, WHY_QUEUE_SIZE;
:class:`Busy` at once), the HTTP calls (httpx) and reading the map frames. Off it (``asyncio.to_thread``):
decoding the photo a map is drawn on, and drawing it. Failures:

- a replica that dies mid-request (a 5xx, or a broken stream): retried once, for the maps not yet received;
  Serve routes the retry to a live replica, or to the one it restarts;
- the cluster unreachable: :class:`Busy` (users get the busy message), one error line per outage, one info
  line when it answers again; nothing to restart;
- every request carries its deadline (INFERENCE_DEADLINE_S, WHY_DEADLINE_S): replicas drop work past it.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import dataclass, field

import httpx

from model.errors import ImageError
from model.occlusion_result import OcclusionResult
from model.prediction import Prediction
from model.preprocess import PreprocessConfig, open_image
from model.serve import wire

from .config import INFERENCE_TOKEN_HINT, ConfigError
from .i18n import ENGLISH
from .inference import MAIN, Busy, Explanation, Stopping, explanation_of

log = logging.getLogger(__name__)

RESULTS_KEPT = 32  # final maps' grids kept here, so a "Why not …?" map is drawn without asking the cluster
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
    def __init__(self, address: str, token: str, *, queue_size: int, per_chat_queue: int, why_queue_size: int,
                 deadline_s: float, why_deadline_s: float, clock: Callable[[], float] = time.monotonic):
        self.address = address.rstrip("/")
        self._token = token
        self._limits = (queue_size, per_chat_queue, why_queue_size)
        self._deadline_s, self._why_deadline_s = deadline_s, why_deadline_s
        self.clock = clock
        self.models: dict[str, RemoteModel] = {}
        self.info: dict = {}
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self.heatmap_pauses = 0  # a replica's business; kept for /stats' shape
        self.retries = 0
        self.reachable = True
        self._results: OrderedDict[tuple, OcclusionResult] = OrderedDict()  # see RESULTS_KEPT
        self.kept_maps = 0  # maps drawn again from a kept grid, without the cluster
        self._admitted: Counter = Counter()
        self._admitted_maps = 0
        self._stopping = False
        self._client: httpx.AsyncClient | None = None
        self._refresher: asyncio.Task | None = None

    @classmethod
    def from_settings(cls, settings) -> ClusterInference:
        return cls(settings.inference_address, settings.cluster_token(), queue_size=settings.queue_size,
                   per_chat_queue=settings.per_chat_queue, why_queue_size=settings.why_queue_size,
                   deadline_s=settings.inference_deadline_s, why_deadline_s=settings.why_deadline_s)

    @property
    def classifier(self) -> RemoteModel:
        return self.models[MAIN]

    @property
    def preparation(self) -> ClusterPreparation | None:
        return ClusterPreparation(self.classifier.runtime) if MAIN in self.models else None

    # ---- life cycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        # Up to the number of requests admitted at once; Serve's proxy keeps them alive between requests.
        self._client = httpx.AsyncClient(limits=httpx.Limits(max_connections=self._limits[0] + 4))

    async def ready(self) -> None:
        """Wait until the cluster tells which model it serves (an error line while it does not answer)."""
        while not await self.refresh_info():
            await asyncio.sleep(CONNECT_RETRY_S)
        self._refresher = asyncio.create_task(self._refresh_every(INFO_REFRESH_S))

    def begin_stop(self) -> None:
        self._stopping = True

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
        self.models[MAIN] = RemoteModel(list(self.info["class_names"]), self.info["checkpoint_id"],
                                        PreprocessConfig.from_dict(self.info["preprocess"]), self.info.get("runtime", ""))
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

    # ---- admission (the scheduler's limits) ------------------------------------------------------------
    def queue_length(self) -> int:
        return sum(self._admitted.values())

    def waiting_for_batch(self) -> int:
        return 0

    def _admit(self, chat_id: Hashable, heatmap: bool = False) -> None:
        queue_size, per_chat, maps = self._limits
        if self._stopping:
            raise Stopping("the service is stopping")
        if self.queue_length() >= queue_size:
            raise Busy(f"{self.queue_length()} requests queued")
        if self._admitted[chat_id] >= per_chat:
            raise Busy(f"chat {chat_id} has {self._admitted[chat_id]} requests queued")
        if heatmap and self._admitted_maps >= maps:
            raise Busy(f"{self._admitted_maps} heat maps queued")
        self._admitted[chat_id] += 1
        self._admitted_maps += heatmap

    def _release(self, chat_id: Hashable, heatmap: bool = False) -> None:
        self._admitted[chat_id] -= 1
        if self._admitted[chat_id] <= 0:
            del self._admitted[chat_id]
        self._admitted_maps -= heatmap

    def _http(self) -> httpx.AsyncClient:
        if self._client is None or self._stopping:
            raise Stopping("the service is stopping")
        return self._client

    def _headers(self, timeout_s: float, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", wire.TIMEOUT_HEADER: f"{max(0.0, timeout_s):.3f}", **extra}

    # ---- classification --------------------------------------------------------------------------------
    def reserve(self, chat_id: Hashable, model: str = MAIN) -> RemoteReservation:
        self._admit(chat_id)
        return RemoteReservation(self, chat_id)

    async def classify(self, chat_id: Hashable, data: bytes, model: str = MAIN) -> Prediction:
        with self.reserve(chat_id, model) as reservation:
            return await reservation.classify(data)

    async def _classify(self, data: bytes) -> Prediction:
        deadline = self.clock() + self._deadline_s
        for attempt in (1, 2):
            try:
                return await self._classify_once(data, deadline)
            except _ReplicaFailed as error:
                if attempt == 2:
                    raise RuntimeError(f"classification failed twice on the cluster: {error}") from None
                self.retries += 1
                log.warning("classification failed on a replica (%s); retrying once", error)
        raise AssertionError("unreachable")

    async def _classify_once(self, data: bytes, deadline: float) -> Prediction:
        remaining = deadline - self.clock()
        try:
            response = await self._http().post(self.address + wire.CLASSIFY_ROUTE, content=data,
                                               headers=self._headers(remaining), timeout=max(0.1, remaining))
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
    async def explain(self, chat_id: Hashable, data: bytes, levels: Sequence[tuple[int, int]],
                      model: str = MAIN, target: int | None = None, language=None) -> AsyncIterator[Explanation]:
        """Heat maps for each (patch, stride) in ``levels``, coarse to fine, drawn here from the cluster's maps,
        for class ``target`` (default: the predicted one) with texts in ``language`` (a bot.i18n.Language).
        A final map whose grid is kept here (:data:`RESULTS_KEPT`) is drawn again without the cluster."""
        self._admit(chat_id, heatmap=True)
        try:
            deadline = self.clock() + self._why_deadline_s
            remaining = [(int(p), int(s)) for p, s in levels]
            served = self.classifier
            drawing = _Drawing(bytes(data), served, target, language or ENGLISH, self._results)
            kept = await drawing.kept(remaining[-1])
            if kept is not None:
                self.kept_maps += 1
                yield kept
                return
            for attempt in (1, 2):
                try:
                    async for explanation in self._explain_once(drawing, remaining, deadline):
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
        finally:
            self._release(chat_id, heatmap=True)

    async def _explain_once(self, drawing: _Drawing, levels: list[tuple[int, int]],
                            deadline: float) -> AsyncIterator[Explanation]:
        timeout = deadline - self.clock()
        headers = self._headers(timeout, **{wire.LEVELS_HEADER: wire.format_levels(levels)})
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
                        yield await drawing.draw(meta, arrays)
        except httpx.TimeoutException:
            raise Busy("the heat map was not done before the deadline") from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            self._lost(error)
            raise Busy("the inference cluster is unreachable") from None
        except httpx.TransportError as error:
            raise _ReplicaFailed(repr(error)) from None

    def cluster_stats(self) -> dict:
        """For /stats: where the work goes, its replicas, and what waits here for them."""
        replicas = self.info.get("replicas", {})
        running = ", ".join(f"{name} {states.get('RUNNING', 0)}" + "".join(
            f" ({count} {state.lower()})" for state, count in states.items() if state != "RUNNING")
            for name, states in sorted(replicas.items()))
        return {"cluster": f"{self.address} ({'reachable' if self.reachable else 'UNREACHABLE'}); replicas: "
                           f"{running or 'unknown'}; in flight from here: {self.queue_length()} "
                           f"({self._admitted_maps} heat maps); retries after a replica failure: {self.retries}; "
                           f"maps drawn from grids kept here: {self.kept_maps}"}


class _Drawing:
    """A /why's photo, decoded once (off the event loop) when its first map arrives, and each map drawn on it."""

    def __init__(self, data: bytes, served: RemoteModel, target: int | None, lang, results: OrderedDict):
        self.data = data
        self._served, self._target, self._lang, self._results = served, target, lang, results
        self._digest = hashlib.sha256(data).hexdigest()
        self._image = None

    def _key(self, patch: int, stride: int) -> tuple:
        return self._served.checkpoint_id, self._digest, int(patch), int(stride)

    async def kept(self, level: tuple[int, int]) -> Explanation | None:
        """The final map drawn from a grid kept here, or None."""
        result = self._results.get(self._key(*level))
        if result is None:
            return None
        self._results.move_to_end(self._key(*level))
        return await self._draw(result, *level, final=True, cached=True)

    async def _draw(self, result: OcclusionResult, patch: int, stride: int, final: bool, cached: bool) -> Explanation:
        config = self._served.preprocess_config
        if self._image is None:
            self._image = await asyncio.to_thread(open_image, self.data, draft_size=config.resize)
        return await asyncio.to_thread(explanation_of, self._image, result, self._target, self._lang,
                                       self._served.class_names, config, patch, stride, final, cached)

    async def draw(self, meta: dict, arrays: dict) -> Explanation:
        kind = meta.get("kind")
        if kind == "image_error":
            raise ImageError(meta.get("message", "the image could not be read"))
        if kind == "deadline":
            raise Busy(meta.get("message", "the deadline passed"))
        if kind != "map":
            raise _ReplicaFailed(f"an unknown frame {kind!r}")
        result = OcclusionResult(**{name: arrays[name] if name in arrays else meta.get(name)
                                    for name in OcclusionResult.__dataclass_fields__})
        patch, stride, final = int(meta["patch"]), int(meta["stride"]), bool(meta["final"])
        if final:
            self._results[self._key(patch, stride)] = result
            while len(self._results) > RESULTS_KEPT:
                self._results.popitem(last=False)
        return await self._draw(result, patch, stride, final, bool(meta["cached"]))


class RemoteReservation:
    """One admitted classification (see :meth:`bot.scheduler.InferenceScheduler.reserve`)."""

    def __init__(self, inference: ClusterInference, chat_id: Hashable):
        self._inference = inference
        self._chat_id = chat_id

    def __enter__(self) -> RemoteReservation:
        return self

    def __exit__(self, *exc_info) -> None:
        self._inference._release(self._chat_id)

    async def classify(self, data: bytes) -> Prediction:
        return await self._inference._classify(data)

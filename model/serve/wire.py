"""The protocol between the bot's gateway and the cluster's deployments: HTTP through Ray Serve's proxy.

- ``GET  /classify``: the served model (class names, checkpoint id, preprocessing) and the replicas.
- ``POST /classify``: photo bytes -> 200 ``{"prediction": ..., "batch": n}``; 422 ``{"image_error": msg}``.
- ``POST /explain`` (header ``X-Levels: 56x28,16x8``): photo bytes -> a stream of frames, one per map,
  coarse to fine (each the map's arrays and its label, probability, patch, stride), or one error frame.

Every request carries ``Authorization: Bearer <token>`` (the *inference* token, anything else gets 401)
and ``X-Timeout-S`` (seconds the caller still waits: work past it is dropped). 503 means the cluster is
full (Serve's ``max_queued_requests``). Nothing here needs torch or Ray, and nothing is unpickled: frames are
``.npz`` archives read with ``allow_pickle=False`` and a JSON header.

Two tokens: Ray's own (RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH) lets its holder run any code on the cluster,
so it stays with the cluster's machines; the gateway holds only the inference token (INFERENCE_TOKEN, or
the file INFERENCE_TOKEN_FILE, by default ``inference_token`` beside Ray's file), which opens these routes
and nothing else. ``python -m model serve`` creates it (mode 0600) on a head.

Caps, on both sides of the wire: a body over :data:`MAX_BODY_BYTES` gets 413 (from its Content-Length,
before it is read); ``X-Timeout-S`` is cut to :data:`MAX_TIMEOUT_S`; levels need a stride of at least 2 and
at most :data:`MAX_POSITIONS` patch positions each; a frame over :data:`MAX_FRAME_BYTES` is a broken stream.
"""
from __future__ import annotations

import hmac
import io
import json
import os
import secrets
import struct
from collections.abc import AsyncIterable, Mapping
from pathlib import Path

import numpy as np

from model.serving.admission import DeadlinePassed  # noqa: F401  (re-exported: the core's, a replica raises it)

CLASSIFY_ROUTE, EXPLAIN_ROUTE = "/classify", "/explain"
TIMEOUT_HEADER, LEVELS_HEADER = "X-Timeout-S", "X-Levels"
MODEL_HEADER = "X-Model"  # "main" or "canary": the gateway routes chats (bot.inference.canary), the replicas serve both
RELOAD_HEADER = "X-Reload"  # on a POST to CLASSIFY_ROUTE: read the checkpoints again (model.serve.registry)
TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"  # Ray's own names: Ray's token
DEFAULT_TOKEN_PATH = Path.home() / ".ray" / "auth_token"  # where Ray looks when neither is set
INFERENCE_TOKEN_ENV, INFERENCE_TOKEN_PATH_ENV = "INFERENCE_TOKEN", "INFERENCE_TOKEN_FILE"  # the bot's names too
INFERENCE_TOKEN_NAME = "inference_token"  # the file's default name, beside Ray's token file
MAX_BODY_BYTES = 20 * 1024 * 1024  # the Bot API's download limit: no photo the bot holds is larger
MAX_TIMEOUT_S = 900.0  # a caller waiting longer (X-Timeout-S) is cut to this
DEFAULT_TIMEOUT_S = 60.0
MAX_LEVELS, MAX_POSITIONS, MIN_STRIDE, MODEL_SIZE = 4, 4096, 2, 224  # a level: at most 64 x 64 patch positions
MAX_FRAME_BYTES = 64 * 1024 * 1024  # a map's arrays are a few MB at most (classes x positions float32)
_LENGTH = struct.Struct(">Q")
_META = "__meta__"


class TokenError(Exception):
    """No usable token, or one in a file others may read; the message says what to do."""


def read_token_file(path: Path) -> str:
    """The token in ``path``, which only its owner may read (mode 0600)."""
    try:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise TokenError(f"{path} may be read by others (mode {mode:o}): chmod 600 {path}")
        token = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise TokenError(f"cannot read the token file {path}: {error.strerror}") from None
    if not token:
        raise TokenError(f"the token file {path} is empty")
    return token


def token_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(TOKEN_PATH_ENV) or DEFAULT_TOKEN_PATH)


def cluster_token(environ: Mapping[str, str] = os.environ) -> str:
    """The cluster's token, found where Ray finds it: RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH
    (default ~/.ray/auth_token)."""
    if environ.get(TOKEN_ENV):
        return environ[TOKEN_ENV].strip()
    return read_token_file(token_path(environ))


def inference_token_path(environ: Mapping[str, str] = os.environ) -> Path:
    """INFERENCE_TOKEN_FILE, else ``inference_token`` beside Ray's token file (default ~/.ray/inference_token)."""
    given = environ.get(INFERENCE_TOKEN_PATH_ENV)
    return Path(given) if given else token_path(environ).with_name(INFERENCE_TOKEN_NAME)


def inference_token(environ: Mapping[str, str] = os.environ) -> str:
    """The token the gateway's requests carry: INFERENCE_TOKEN, else the file :func:`inference_token_path`."""
    if environ.get(INFERENCE_TOKEN_ENV, "").strip():
        return environ[INFERENCE_TOKEN_ENV].strip()
    return read_token_file(inference_token_path(environ))


def ensure_token_file(path: Path) -> bool:
    """Create ``path`` with a new random token (mode 0600) unless it exists; True when it was created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(secrets.token_hex(32))
    return True


def authorized(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``token`` (compared in constant time)."""
    scheme, _, given = (header or "").partition(" ")
    return bool(token) and scheme == "Bearer" and hmac.compare_digest(given.encode(), token.encode())


def format_levels(levels) -> str:
    return ",".join(f"{int(patch)}x{int(stride)}" for patch, stride in levels)


def level_positions(patch: int, stride: int, size: int = MODEL_SIZE) -> int:
    """Patch positions of one level (model.occlusion.grid_positions, squared)."""
    return ((size - patch) // stride + 1) ** 2


def parse_levels(text: str) -> list[tuple[int, int]]:
    """``56x28,16x8`` -> [(56, 28), (16, 8)]; raises ValueError for anything else, and for levels past the caps
    (:data:`MAX_LEVELS`, a stride under :data:`MIN_STRIDE`, over :data:`MAX_POSITIONS` positions)."""
    levels = []
    for part in text.split(",")[:MAX_LEVELS + 1]:
        patch, _, stride = part.strip().partition("x")
        if not (patch.isascii() and patch.isdigit() and stride.isascii() and stride.isdigit()):
            raise ValueError(f"bad levels {text[:40]!r}")
        levels.append((int(patch), int(stride)))
    if not levels or len(levels) > MAX_LEVELS or any(
            not (1 <= p <= MODEL_SIZE and MIN_STRIDE <= s <= MODEL_SIZE) or level_positions(p, s) > MAX_POSITIONS
            for p, s in levels):
        raise ValueError(f"bad levels {text[:40]!r}: at most {MAX_LEVELS}, each a patch of 1 to {MODEL_SIZE} px, "
                         f"a stride of at least {MIN_STRIDE} and at most {MAX_POSITIONS} positions")
    return levels


def parse_timeout(header: str | None) -> float:
    """``X-Timeout-S``: seconds, between 0 and :data:`MAX_TIMEOUT_S` (missing or malformed: the default)."""
    try:
        seconds = float(header) if header is not None else DEFAULT_TIMEOUT_S
    except ValueError:
        return DEFAULT_TIMEOUT_S
    if seconds != seconds:  # NaN
        return DEFAULT_TIMEOUT_S
    return min(max(0.0, seconds), MAX_TIMEOUT_S)


class BodyTooLarge(ValueError):
    """A request body over :data:`MAX_BODY_BYTES` (answered 413)."""


async def read_capped(chunks: AsyncIterable[bytes], content_length: str | None, limit: int = MAX_BODY_BYTES) -> bytes:
    """A request body from its ``chunks``; :class:`BodyTooLarge` from its Content-Length before anything is read,
    or as soon as a body without one passes ``limit``."""
    declared = (content_length or "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"a body of {declared} bytes (at most {limit})")
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"a body over {limit} bytes")
    return bytes(body)


def encode_frame(meta: dict, arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    """One length-prefixed frame: an .npz of ``arrays`` plus ``meta`` as JSON."""
    buffer = io.BytesIO()
    payload = {name: np.asarray(value) for name, value in (arrays or {}).items()}
    payload[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(buffer, **payload)
    body = buffer.getvalue()
    return _LENGTH.pack(len(body)) + body


class FrameTooLarge(ValueError):
    """A frame's length prefix is over :data:`MAX_FRAME_BYTES`: a broken or hostile stream."""


class FrameReader:
    """Frames back out of a byte stream fed in arbitrary chunks; a length over ``max_frame_bytes`` raises
    :class:`FrameTooLarge` before anything more is buffered."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_frame_bytes

    def feed(self, chunk: bytes) -> list[tuple[dict, dict[str, np.ndarray]]]:
        self._buffer += chunk
        frames = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if length > self._max:
                raise FrameTooLarge(f"a frame of {length} bytes (at most {self._max})")
            if len(self._buffer) < _LENGTH.size + length:
                break
            body = bytes(self._buffer[_LENGTH.size:_LENGTH.size + length])
            del self._buffer[:_LENGTH.size + length]
            with np.load(io.BytesIO(body), allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            meta = json.loads(arrays.pop(_META).tobytes().decode())
            frames.append((meta, arrays))
        return frames

"""The protocol between the bot's gateway and the cluster's deployments: HTTP through Ray Serve's proxy.

- ``GET  /classify``: the served model (class names, checkpoint id, preprocessing) and the replicas.
- ``POST /classify``: photo bytes -> 200 ``{"prediction": ..., "batch": n}``; 422 ``{"image_error": msg}``.
- ``POST /explain`` (header ``X-Levels: 56x28,16x8``): photo bytes -> a stream of frames, one per map,
  coarse to fine (each the map's arrays and its label, probability, patch, stride), or one error frame.

Every request carries ``Authorization: Bearer <token>`` (the cluster's Ray token; anything else gets 401)
and ``X-Timeout-S`` (seconds the caller still waits: work past it is dropped). 503 means the cluster is
full (Serve's ``max_queued_requests``). Nothing here needs torch or Ray, and nothing is unpickled: frames are
``.npz`` archives read with ``allow_pickle=False`` and a JSON header.
"""
from __future__ import annotations

import hmac
import io
import json
import os
import secrets
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from model.serving.admission import DeadlinePassed  # noqa: F401  (re-exported: the core's, a replica raises it)

CLASSIFY_ROUTE, EXPLAIN_ROUTE = "/classify", "/explain"
TIMEOUT_HEADER, LEVELS_HEADER = "X-Timeout-S", "X-Levels"
MODEL_HEADER = "X-Model"  # "main" or "canary": the gateway routes chats (bot.canary), the replicas serve both
RELOAD_HEADER = "X-Reload"  # on a POST to CLASSIFY_ROUTE: read the checkpoints again (model.serve.registry)
TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"  # Ray's own names: one token for both
DEFAULT_TOKEN_PATH = Path.home() / ".ray" / "auth_token"  # where Ray looks when neither is set
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


def parse_levels(text: str) -> list[tuple[int, int]]:
    """``56x28,16x8`` -> [(56, 28), (16, 8)]; raises ValueError for anything else."""
    levels = []
    for part in text.split(","):
        patch, _, stride = part.strip().partition("x")
        levels.append((int(patch), int(stride)))
    if not levels or len(levels) > 4 or any(p < 1 or s < 1 or p > 224 for p, s in levels):
        raise ValueError(f"bad levels {text!r}")
    return levels


def encode_frame(meta: dict, arrays: Mapping[str, np.ndarray] | None = None) -> bytes:
    """One length-prefixed frame: an .npz of ``arrays`` plus ``meta`` as JSON."""
    buffer = io.BytesIO()
    payload = {name: np.asarray(value) for name, value in (arrays or {}).items()}
    payload[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(buffer, **payload)
    body = buffer.getvalue()
    return _LENGTH.pack(len(body)) + body


class FrameReader:
    """Frames back out of a byte stream fed in arbitrary chunks."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> list[tuple[dict, dict[str, np.ndarray]]]:
        self._buffer += chunk
        frames = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            if len(self._buffer) < _LENGTH.size + length:
                break
            body = bytes(self._buffer[_LENGTH.size:_LENGTH.size + length])
            del self._buffer[:_LENGTH.size + length]
            with np.load(io.BytesIO(body), allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
            meta = json.loads(arrays.pop(_META).tobytes().decode())
            frames.append((meta, arrays))
        return frames

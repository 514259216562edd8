"""Bot settings: the environment (or a ``.env`` file) parsed once into a frozen dataclass.

Nothing else in ``bot/`` reads ``os.environ``; every tunable arrives through :class:`Settings`.
The real environment wins over ``.env`` so a deployment can override a checked-in file.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from model.choices import DEVICES, PRECISIONS, RUNTIMES, WHY_MODES
from model.threads import available_cores

if TYPE_CHECKING:
    from .scheduler import SchedulerConfig

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API's getFile limit: 20 MB
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


class ConfigError(Exception):
    """A setting is missing or malformed; ``str(error)`` is one line that says what to do."""


def _default_workers() -> int:
    # Decoding threads: PIL releases the GIL while decoding, but more threads than cores only adds contention.
    return min(4, available_cores())


@dataclass(frozen=True)
class Settings:
    """Everything the bot can be told; see the table in the README (env var names in ``ENV_NAMES``)."""

    token: str = field(repr=False)
    api_base_url: str = "https://api.telegram.org/bot"
    file_base_url: str = "https://api.telegram.org/file/bot"
    checkpoint_path: Path = Path("checkpoints/model.pt")
    data_dir: Path = Path("data")
    confidence_threshold: float = 0.6
    unsure_threshold: float = 0.8
    workers: int = field(default_factory=_default_workers)
    torch_threads: int = field(default_factory=available_cores)
    classify_workers: int | None = None  # compute threads running batches side by side; None: one per torch thread
    queue_size: int = 128
    per_chat_queue: int = 20
    max_batch: int = 16
    max_batch_wait_ms: float = 10.0
    warm_up_batch: int | None = None  # photos in the start-up warm-up passes; None: MAX_BATCH; 0: no warm-up
    frozen_graph: bool | None = None  # frozen TorchScript graph (model/graph.py); None: auto, by measurement
    precision: str = "auto"  # fp32, bf16, or auto: bf16 where native, agreeing and faster (model/precision.py)
    device: str = "auto"  # cpu, cuda, or auto: CUDA when torch sees a GPU
    runtime: str = "auto"  # torch, openvino, or auto: OpenVINO on a CPU where installed and faster (model/runtime.py)
    why_patch: int = 16
    why_stride: int = 8
    why_coarse_patch: int = 56
    why_coarse_stride: int = 28
    why_batch_size: int = 16
    why_mode: str = "exact"  # the fine map: exact, or adaptive (an approximate drill-down; model/adaptive_occlusion.py)
    why_queue_size: int = 8
    explain_cache_size: int = 64
    max_file_bytes: int = TELEGRAM_DOWNLOAD_LIMIT
    log_level: str = "INFO"
    webhook_url: str = ""
    webhook_secret: str = field(default="", repr=False)
    webhook_listen: str = "0.0.0.0"
    webhook_port: int = 8443
    admin_user_ids: frozenset[int] = frozenset()
    poll_timeout: float = 10.0
    http_connections: int = 16  # Bot API connections kept open at most (see bot.app.build_application)
    feedback_dir: Path | None = None  # unset: no feedback buttons, nothing stored (see bot/feedback.py)
    feedback_salt: str = field(default="", repr=False)  # unset: made and kept in FEEDBACK_DIR on first use
    retry_after_max_retries: int = 3
    journal_max_age_hours: float = 24.0  # unfinished requests older than this are not resumed after a restart
    canary_checkpoint: Path | None = None  # a candidate model for a share of chats (bot/canary.py)
    canary_share: float = 0.1  # the share of chats it serves, when CANARY_CHECKPOINT is set
    retention_days: float = 30.0  # everything kept about users is deleted at this age (bot/retention.py, /privacy)
    album_wait_s: float = 1.0  # an album is answered this long after its last photo arrived (bot/albums.py)
    inference_address: str = ""  # a Ray Serve cluster's address (python -m model serve); unset: inference in process
    inference_token: str = field(default="", repr=False)  # the cluster's token; or INFERENCE_TOKEN_FILE
    inference_token_file: Path | None = None  # a file (mode 0600) holding the cluster's token
    inference_deadline_s: float = 30.0  # a classification not answered by then is dropped (the user is told busy)
    why_deadline_s: float = 300.0  # a /why's maps not done by then are dropped

    def __post_init__(self) -> None:
        if not self.token:
            raise ConfigError(
                "TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather in Telegram and put its token in .env"
            )
        _check(0.0 <= self.confidence_threshold <= 1.0, "CONFIDENCE_THRESHOLD must be between 0 and 1")
        _check(0.0 <= self.unsure_threshold <= 1.0, "UNSURE_THRESHOLD must be between 0 and 1")
        for name in ("workers", "torch_threads", "queue_size", "per_chat_queue", "max_batch", "why_patch", "why_stride",
                     "why_coarse_patch", "why_coarse_stride", "why_batch_size", "why_queue_size", "explain_cache_size",
                     "http_connections"):
            _check(getattr(self, name) >= 1, f"{ENV_NAMES[name]} must be at least 1")
        _check(self.max_batch_wait_ms >= 0, "MAX_BATCH_WAIT_MS must not be negative")
        _check(self.journal_max_age_hours >= 0, "JOURNAL_MAX_AGE_HOURS must not be negative")
        _check(0.0 <= self.canary_share <= 1.0, "CANARY_SHARE must be between 0 and 1")
        _check(self.retention_days > 0, "RETENTION_DAYS must be positive")
        _check(self.album_wait_s >= 0, "ALBUM_WAIT_S must not be negative")
        _check(self.warm_up_batch is None or self.warm_up_batch >= 0, "WARM_UP_BATCH must not be negative")
        _check(self.classify_workers is None or 1 <= self.classify_workers <= self.torch_threads,
               "CLASSIFY_WORKERS must be between 1 and TORCH_THREADS")
        _check(self.why_patch <= 224 and self.why_coarse_patch <= 224, "WHY_PATCH and WHY_COARSE_PATCH must be at most 224")
        _check(self.precision in PRECISIONS, f"PRECISION must be one of {', '.join(PRECISIONS)}")
        _check(self.device in DEVICES, f"DEVICE must be one of {', '.join(DEVICES)}")
        _check(self.runtime in RUNTIMES, f"RUNTIME must be one of {', '.join(RUNTIMES)}")
        _check(self.why_mode in WHY_MODES, f"WHY_MODE must be one of {', '.join(WHY_MODES)}")
        _check(self.log_level in _LOG_LEVELS, f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
        _check(self.webhook_secret == "" or re.fullmatch(r"[A-Za-z0-9_-]{1,256}", self.webhook_secret) is not None,
               "WEBHOOK_SECRET may only contain A-Z, a-z, 0-9, _ and - (1 to 256 characters)")
        _check(not self.webhook_url or self.webhook_url.startswith("https://"), "WEBHOOK_URL must start with https://")
        _check(not self.inference_address or re.match(r"https?://[^/]+", self.inference_address) is not None,
               "INFERENCE_ADDRESS must be the http://HOST:PORT that python -m model serve printed")
        _check(not (self.inference_address and self.canary_checkpoint), "CANARY_CHECKPOINT needs the model in the "
               "bot's own process: unset it, or unset INFERENCE_ADDRESS")
        _check(self.inference_deadline_s > 0 and self.why_deadline_s > 0,
               "INFERENCE_DEADLINE_S and WHY_DEADLINE_S must be positive")

    def cluster_token(self) -> str:
        """The cluster's token: INFERENCE_TOKEN, else the file INFERENCE_TOKEN_FILE (which only its owner may read)."""
        if self.inference_token or self.inference_token_file is None:
            return self.inference_token
        path = self.inference_token_file
        try:
            mode = path.stat().st_mode
            if mode & 0o077:
                raise ConfigError(f"INFERENCE_TOKEN_FILE {path} may be read by others (mode {mode & 0o777:o}): "
                                  "chmod 600 it")
            return path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"INFERENCE_TOKEN_FILE {path} cannot be read: {error.strerror}") from None

    @property
    def warm_up_photos(self) -> int:
        return self.max_batch if self.warm_up_batch is None else self.warm_up_batch

    @property
    def classify_worker_count(self) -> int:
        return self.torch_threads if self.classify_workers is None else self.classify_workers

    @property
    def max_batch_wait_s(self) -> float:
        return self.max_batch_wait_ms / 1000.0

    def scheduler_config(self) -> SchedulerConfig:
        """The inference scheduler's settings: its only source, so tests and benches run what the bot runs."""
        from .scheduler import SchedulerConfig

        return SchedulerConfig(
            max_batch=self.max_batch, max_batch_wait_s=self.max_batch_wait_s, queue_size=self.queue_size,
            per_chat_queue=self.per_chat_queue, why_queue_size=self.why_queue_size, decode_workers=self.workers,
            torch_threads=self.torch_threads, classify_workers=self.classify_worker_count,
            explain_batch_size=self.why_batch_size, explain_cache_size=self.explain_cache_size,
            warm_up_batch=self.warm_up_photos, frozen_graph=self.frozen_graph, precision=self.precision,
            device=self.device, runtime=self.runtime)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``) over the ``env_file`` (if it exists)."""
        values: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            values.update(parse_env_file(Path(env_file).read_text(encoding="utf-8")))
        values.update(os.environ if environ is None else environ)
        kwargs: dict[str, object] = {}
        for item in fields(cls):
            env_name = ENV_NAMES[item.name]
            raw = values.get(env_name)
            if raw is None or (raw.strip() == "" and item.name != "token"):
                continue
            try:
                kwargs[item.name] = _PARSERS.get(item.name, str)(raw.strip())
            except ValueError:
                raise ConfigError(f"{env_name}={raw!r} is not valid ({_EXPECTED.get(item.name, 'a string')})") from None
        kwargs.setdefault("token", "")
        return cls(**kwargs)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _parse_ids(raw: str) -> frozenset[int]:
    return frozenset(int(part) for part in re.split(r"[,\s]+", raw) if part)


def _parse_level(raw: str) -> str:
    return raw.upper()


def _parse_auto_bool(raw: str) -> bool | None:
    return None if raw.lower() == "auto" else _parse_bool(raw)


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


ENV_NAMES: dict[str, str] = {
    "token": "TELEGRAM_BOT_TOKEN",
    "api_base_url": "TELEGRAM_API_BASE_URL",
    "file_base_url": "TELEGRAM_FILE_BASE_URL",
    "checkpoint_path": "CHECKPOINT_PATH",
    "data_dir": "DATA_DIR",
    "confidence_threshold": "CONFIDENCE_THRESHOLD",
    "unsure_threshold": "UNSURE_THRESHOLD",
    "workers": "WORKERS",
    "torch_threads": "TORCH_THREADS",
    "classify_workers": "CLASSIFY_WORKERS",
    "queue_size": "QUEUE_SIZE",
    "per_chat_queue": "PER_CHAT_QUEUE",
    "max_batch": "MAX_BATCH",
    "max_batch_wait_ms": "MAX_BATCH_WAIT_MS",
    "warm_up_batch": "WARM_UP_BATCH",
    "frozen_graph": "FROZEN_GRAPH",
    "precision": "PRECISION",
    "device": "DEVICE",
    "runtime": "RUNTIME",
    "why_patch": "WHY_PATCH",
    "why_stride": "WHY_STRIDE",
    "why_coarse_patch": "WHY_COARSE_PATCH",
    "why_coarse_stride": "WHY_COARSE_STRIDE",
    "why_batch_size": "WHY_BATCH_SIZE",
    "why_mode": "WHY_MODE",
    "why_queue_size": "WHY_QUEUE_SIZE",
    "explain_cache_size": "EXPLAIN_CACHE_SIZE",
    "max_file_bytes": "MAX_FILE_BYTES",
    "log_level": "LOG_LEVEL",
    "webhook_url": "WEBHOOK_URL",
    "webhook_secret": "WEBHOOK_SECRET",
    "webhook_listen": "WEBHOOK_LISTEN",
    "webhook_port": "WEBHOOK_PORT",
    "admin_user_ids": "ADMIN_USER_IDS",
    "poll_timeout": "POLL_TIMEOUT",
    "http_connections": "HTTP_CONNECTIONS",
    "feedback_dir": "FEEDBACK_DIR",
    "feedback_salt": "FEEDBACK_SALT",
    "retry_after_max_retries": "RETRY_AFTER_MAX_RETRIES",
    "journal_max_age_hours": "JOURNAL_MAX_AGE_HOURS",
    "canary_checkpoint": "CANARY_CHECKPOINT",
    "canary_share": "CANARY_SHARE",
    "retention_days": "RETENTION_DAYS",
    "album_wait_s": "ALBUM_WAIT_S",
    "inference_address": "INFERENCE_ADDRESS",
    "inference_token": "INFERENCE_TOKEN",
    "inference_token_file": "INFERENCE_TOKEN_FILE",
    "inference_deadline_s": "INFERENCE_DEADLINE_S",
    "why_deadline_s": "WHY_DEADLINE_S",
}

_INT_FIELDS = ("workers", "torch_threads", "classify_workers", "queue_size", "per_chat_queue", "max_batch", "warm_up_batch", "why_patch",
               "why_stride", "why_coarse_patch", "why_coarse_stride", "why_batch_size", "why_queue_size", "explain_cache_size",
               "max_file_bytes",
               "webhook_port", "retry_after_max_retries", "http_connections")
_FLOAT_FIELDS = ("confidence_threshold", "unsure_threshold", "max_batch_wait_ms", "poll_timeout", "journal_max_age_hours",
                 "canary_share", "retention_days", "album_wait_s", "inference_deadline_s", "why_deadline_s")
_PARSERS: dict[str, Callable[[str], object]] = {
    **{name: int for name in _INT_FIELDS},
    **{name: float for name in _FLOAT_FIELDS},
    "checkpoint_path": Path,
    "data_dir": Path,
    "feedback_dir": Path,
    "canary_checkpoint": Path,
    "inference_token_file": Path,
    "admin_user_ids": _parse_ids,
    "log_level": _parse_level,
    "precision": str.lower,
    "device": str.lower,
    "runtime": str.lower,
    "why_mode": str.lower,
    "frozen_graph": _parse_auto_bool,
}
_EXPECTED = {
    **{name: "a whole number" for name in _INT_FIELDS},
    **{name: "a number" for name in _FLOAT_FIELDS},
    "admin_user_ids": "comma-separated numeric Telegram user ids",
    "frozen_graph": "auto, 1 or 0",
}

_ENV_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines; blank lines and ``#`` comments skipped; values may be wrapped in ' or " quotes.

    An unquoted value ends at `` #`` (an inline comment); a quoted one is taken literally.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.match(line)
        if match is None:
            raise ConfigError(f".env line {number} is not KEY=value: {line.strip()[:40]!r}")
        key, value = match.groups()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        values[key] = value
    return values

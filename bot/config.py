"""The bot's settings, each declared once (:func:`model.settings.setting`: environment name, default, parser,
bounds, one-line doc), read from the environment over a ``.env`` file into one frozen :class:`Settings`.

The real environment wins over ``.env`` so a deployment can override a checked-in file. ``.env.example`` and the
README's settings table are generated from the declarations (``python -m bot.config --write-docs``; a test
checks they are current). The settings the inference backends share with the cluster's replicas are
:class:`model.settings.ComputeSettings`, which :class:`Settings` extends.
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from model.settings import (
    COMPUTE,  # noqa: F401  (re-exported: a section name of the docs)
    ComputeSettings,
    SettingError,
    check_bounds,
    env_names,
    from_environ,
    parse_ids,
    setting,
)

TELEGRAM_DOWNLOAD_LIMIT = 20 * 1024 * 1024  # the Bot API's getFile limit: 20 MB
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")

ConfigError = SettingError  # a setting is missing or malformed; ``str(error)`` is one line that says what to do

# Where the token is: python -m model serve writes it (model/serve/wire.py: inference_token_path).
INFERENCE_TOKEN_HINT = ("set INFERENCE_TOKEN_FILE to a copy (chmod 600) of the inference token file that "
                        "`python -m model serve` wrote on the cluster's head, and logged: `inference_token` beside "
                        "Ray's token file, by default ~/.ray/inference_token (not Ray's auth_token itself)")

TELEGRAM, MODEL, ANSWERS, WHY, OPERATIONS, FEEDBACK, WEBHOOK, CLUSTER = (
    "Telegram", "Model and data", "Answers", "Heat maps (/why)", "Operations", "Feedback", "Webhook (instead of polling)",
    "A Ray Serve cluster (the bot as its gateway)")


@dataclass(frozen=True)
class Settings(ComputeSettings):
    """Everything the bot can be told (the README's table lists them; ``ENV_NAMES`` maps fields to variables)."""

    token: str = setting("", env="TELEGRAM_BOT_TOKEN", secret=True, section=TELEGRAM, shown_default="(required)",
                         doc="the bot's token from @BotFather (/newbot)")
    api_base_url: str = setting("https://api.telegram.org/bot", env="TELEGRAM_API_BASE_URL", section=TELEGRAM,
                                doc="Bot API base URL (the token is appended); for a local Bot API server")
    file_base_url: str = setting("https://api.telegram.org/file/bot", env="TELEGRAM_FILE_BASE_URL", section=TELEGRAM,
                                 doc="file download base URL of the same server")
    poll_timeout: float = setting(10.0, env="POLL_TIMEOUT", low=0, section=TELEGRAM,
                                  doc="seconds each getUpdates long poll waits")
    http_connections: int = setting(16, env="HTTP_CONNECTIONS", low=1, section=TELEGRAM,
                                    doc="connections to the Bot API kept open at most; more only costs CPU (httpcore "
                                        "checks each one per request)")
    retry_after_max_retries: int = setting(3, env="RETRY_AFTER_MAX_RETRIES", low=0, section=TELEGRAM,
                                           doc="retries of a send answered with 429 (each waits retry_after)")
    checkpoint_path: Path = setting(Path("checkpoints/model.pt"), env="CHECKPOINT_PATH", section=MODEL,
                                    doc="the checkpoint the bot serves (make train builds it)")
    data_dir: Path = setting(Path("data"), env="DATA_DIR", section=MODEL,
                             doc="the bot's state (SQLite: last photo per chat, button keys, the journal of accepted "
                                 "requests), kept across restarts")
    canary_checkpoint: Path | None = setting(None, env="CANARY_CHECKPOINT", parse=Path, expected="a path", section=MODEL,
                                             doc="a candidate checkpoint served to CANARY_SHARE of chats, chosen by a "
                                                 "stable hash of the chat id salted with the candidate's sha256")
    canary_share: float = setting(0.1, env="CANARY_SHARE", low=0, high=1, section=MODEL,
                                  doc="the share of chats the canary serves, when CANARY_CHECKPOINT is set")
    confidence_threshold: float = setting(0.6, env="CONFIDENCE_THRESHOLD", low=0, high=1, section=ANSWERS,
                                          doc="below it: \"I'm not sure this is a ...\" with the guesses")
    unsure_threshold: float = setting(0.8, env="UNSURE_THRESHOLD", low=0, high=1, section=ANSWERS,
                                      doc="below it: the answer plus the runner-up classes")
    max_file_bytes: int = setting(TELEGRAM_DOWNLOAD_LIMIT, env="MAX_FILE_BYTES", low=1, section=ANSWERS,
                                  doc="larger files are refused before downloading (Telegram's 20 MB limit for bots)")
    max_bytes_in_flight: int = setting(64 * 1024 * 1024, env="MAX_BYTES_IN_FLIGHT", low=1, section=ANSWERS,
                                       doc="downloaded and not yet decoded, all chats together (bot/handlers/budget.py): past "
                                           "it a photo is answered busy before its download")
    album_wait_s: float = setting(1.0, env="ALBUM_WAIT_S", low=0, section=ANSWERS,
                                  doc="an album is answered this long after its last photo arrived (Telegram sends "
                                      "no end-of-album marker)")
    why_mode: str = setting("exact", env="WHY_MODE", choices=("exact", "adaptive"), section=WHY,
                            doc="the fine map: exact (every position), or adaptive (an approximate coarse-to-fine "
                                "drill-down, model/adaptive_occlusion.py)")
    why_patch: int = setting(16, env="WHY_PATCH", low=1, high=224, section=WHY,
                             doc="the finer heat map's patch size in pixels of the 224x224 input (8 is the original demo's)")
    why_stride: int = setting(8, env="WHY_STRIDE", low=1, section=WHY,
                              doc="the finer heat map's stride (4 is the original demo's)")
    why_coarse_patch: int = setting(56, env="WHY_COARSE_PATCH", low=1, high=224, section=WHY,
                                    doc="the coarse map sent first and replaced in place (equal to the fine one: one step)")
    why_coarse_stride: int = setting(28, env="WHY_COARSE_STRIDE", low=1, section=WHY,
                                     doc="the coarse map's stride")
    retention_days: float = setting(30.0, env="RETENTION_DAYS", positive=True, section=OPERATIONS, shown_default="`30`",
                                    doc="everything kept about users (last photos, answers, the journal, feedback "
                                        "records and their photos) is deleted at this age: at start, then hourly")
    journal_max_age_hours: float = setting(24.0, env="JOURNAL_MAX_AGE_HOURS", low=0, section=OPERATIONS,
                                           doc="requests accepted but not answered when the bot stopped or crashed "
                                               "are answered at the next start, unless older than this")
    log_level: str = setting("INFO", env="LOG_LEVEL", parse=str.upper, expected=", ".join(LOG_LEVELS), section=OPERATIONS,
                             doc="DEBUG ... CRITICAL; secrets are redacted from every log line")
    admin_user_ids: frozenset[int] = setting(frozenset(), env="ADMIN_USER_IDS", parse=parse_ids,
                                             expected="comma-separated numeric Telegram user ids", section=OPERATIONS,
                                             doc="comma-separated user ids allowed to use /stats and /reload")
    feedback_dir: Path | None = setting(None, env="FEEDBACK_DIR", parse=Path, expected="a path", section=FEEDBACK,
                                        shown_default="(off)",
                                        doc="\"Right / Wrong\" feedback inbox for retraining; unset: no feedback "
                                            "buttons, nothing stored")
    feedback_salt: str = setting("", env="FEEDBACK_SALT", secret=True, section=FEEDBACK, shown_default="(generated)",
                                 doc="secret for hashing chat ids in feedback records (made and kept in FEEDBACK_DIR "
                                     "when unset)")
    metrics_port: int | None = setting(None, env="METRICS_PORT", parse=int, expected="a whole number", low=0, high=65535,
                                       section=OPERATIONS, shown_default="(off)",
                                       doc="serve /metrics, /livez and /readyz on this port (Prometheus, a supervisor)")
    metrics_listen: str = setting("127.0.0.1", env="METRICS_LISTEN", section=OPERATIONS,
                                  doc="the metrics endpoint's address: loopback unless a scraper elsewhere needs it")
    button_secret: str = setting("", env="BUTTON_SECRET", secret=True, section=OPERATIONS, shown_default="(generated)",
                                 doc="signs the buttons' keys, so a button works only in its own chat; unset: made once "
                                     "and kept in DATA_DIR/button_secret (mode 0600); at least 32 characters")
    webhook_url: str = setting("", env="WEBHOOK_URL", section=WEBHOOK, shown_default="(polling)",
                               doc="the https:// URL Telegram posts updates to (pip install -e '.[webhooks]')")
    webhook_secret: str = setting("", env="WEBHOOK_SECRET", secret=True, section=WEBHOOK, shown_default="(random per start)",
                                  doc="the secret Telegram sends with each update (A-Z, a-z, 0-9, _ and -); unset: a new "
                                      "random one at each start, registered with setWebhook; requests without it get 403")
    webhook_listen: str = setting("127.0.0.1", env="WEBHOOK_LISTEN", section=WEBHOOK,
                                  doc="the address the webhook server listens on: loopback, behind the HTTPS proxy that "
                                      "terminates TLS (0.0.0.0: every interface)")
    webhook_port: int = setting(8443, env="WEBHOOK_PORT", low=1, high=65535, section=WEBHOOK,
                                doc="the port the webhook server listens on")
    inference_address: str = setting("", env="INFERENCE_ADDRESS", section=CLUSTER, shown_default="(in process)",
                                     doc="the inference address that python -m model serve printed: classifications "
                                         "and heat maps run on that Ray Serve cluster, and the bot loads no model")
    inference_token: str = setting("", env="INFERENCE_TOKEN", secret=True, section=CLUSTER,
                                   doc="the cluster's inference token (not Ray's own; or INFERENCE_TOKEN_FILE)")
    inference_token_file: Path | None = setting(
        None, env="INFERENCE_TOKEN_FILE", parse=Path, expected="a path", section=CLUSTER,
        doc="a file (mode 0600) with the inference token: a copy of the inference_token file python -m model serve "
            "writes beside Ray's (default ~/.ray/inference_token); INFERENCE_ADDRESS must be https:// unless loopback")
    inference_deadline_s: float = setting(30.0, env="INFERENCE_DEADLINE_S", positive=True, section=CLUSTER, shown_default="`30`",
                                          doc="how long the cluster may take for a photo before the work is dropped")
    why_deadline_s: float = setting(300.0, env="WHY_DEADLINE_S", positive=True, section=CLUSTER, shown_default="`300`",
                                    doc="how long the cluster may take for a /why's maps before they are dropped")

    def __post_init__(self) -> None:
        if not self.token.strip():
            raise ConfigError(
                "TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather in Telegram and put its token in .env"
            )
        super().__post_init__()
        check_bounds(self)
        _check(self.log_level in LOG_LEVELS, f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        _check(self.webhook_secret == "" or re.fullmatch(r"[A-Za-z0-9_-]{1,256}", self.webhook_secret) is not None,
               "WEBHOOK_SECRET may only contain A-Z, a-z, 0-9, _ and - (1 to 256 characters)")
        _check(self.max_bytes_in_flight >= self.max_file_bytes, "MAX_BYTES_IN_FLIGHT must be at least MAX_FILE_BYTES "
               "(one file of the largest size must fit)")
        _check(self.button_secret == "" or len(self.button_secret) >= 32, "BUTTON_SECRET must be at least 32 characters "
               "(or unset it: one is made and kept in DATA_DIR)")
        _check(not self.webhook_url or self.webhook_url.startswith("https://"), "WEBHOOK_URL must start with https://")
        _check(not self.inference_address or re.match(r"https?://[^/]+", self.inference_address) is not None,
               "INFERENCE_ADDRESS must be the http://HOST:PORT that python -m model serve printed")
        _check(not self.inference_address or self.inference_address.startswith("https://")
               or _is_loopback(urlparse(self.inference_address).hostname or ""),
               "INFERENCE_ADDRESS must be https:// (a TLS proxy in front of the cluster) unless the cluster runs on "
               "this machine (http://127.0.0.1:PORT): the token and the users' photos would cross the network in clear")
        if self.inference_address:  # the levels a cluster takes (model/serve/wire.py); numpy, no torch
            from model.serve.wire import MAX_POSITIONS, MIN_STRIDE, level_positions

            _check(min(self.why_stride, self.why_coarse_stride) >= MIN_STRIDE
                   and max(level_positions(self.why_patch, self.why_stride),
                           level_positions(self.why_coarse_patch, self.why_coarse_stride)) <= MAX_POSITIONS,
                   f"with INFERENCE_ADDRESS, WHY_STRIDE and WHY_COARSE_STRIDE must be at least {MIN_STRIDE}, and each "
                   f"heat map at most {MAX_POSITIONS} patch positions (the cluster refuses more)")
        _check(not (self.inference_address and self.canary_checkpoint), "CANARY_CHECKPOINT needs the model in the "
               "bot's own process: unset it, or unset INFERENCE_ADDRESS")

    def cluster_token(self) -> str:
        """The cluster's inference token: INFERENCE_TOKEN, else the file INFERENCE_TOKEN_FILE (which only its owner
        may read); a ConfigError that says where to find it when INFERENCE_ADDRESS is set without one."""
        if self.inference_token or self.inference_token_file is None:
            if self.inference_address and not self.inference_token:
                raise ConfigError(f"INFERENCE_ADDRESS is set without its token: {INFERENCE_TOKEN_HINT}")
            return self.inference_token
        path = self.inference_token_file
        try:
            mode = path.stat().st_mode
            if mode & 0o077:
                raise ConfigError(f"INFERENCE_TOKEN_FILE {path} may be read by others (mode {mode & 0o777:o}): "
                                  "chmod 600 it")
            token = path.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigError(f"INFERENCE_TOKEN_FILE {path} cannot be read ({error.strerror}): "
                              f"{INFERENCE_TOKEN_HINT}") from None
        if not token:
            raise ConfigError(f"INFERENCE_TOKEN_FILE {path} is empty: {INFERENCE_TOKEN_HINT}")
        return token

    @property
    def why_levels(self) -> list[tuple[int, int]]:
        """Coarse first (sent at once), then fine (edited in); one level when both are the same."""
        coarse, fine = (self.why_coarse_patch, self.why_coarse_stride), (self.why_patch, self.why_stride)
        return [fine] if coarse == fine else [coarse, fine]

    def scheduler_config(self):
        """The inference scheduler's settings: its only source, so tests and benches run what the bot runs."""
        from bot.inference.local_config import SchedulerConfig

        return SchedulerConfig(
            max_batch=self.max_batch, max_batch_wait_s=self.max_batch_wait_s, queue_size=self.queue_size,
            per_chat_queue=self.per_chat_queue, why_queue_size=self.why_queue_size, decode_workers=self.workers,
            torch_threads=self.torch_threads, classify_workers=self.classify_worker_count,
            explain_batch_size=self.why_batch_size, explain_cache_size=self.explain_cache_size,
            warm_up_batch=self.warm_up_photos, frozen_graph=self.frozen_graph, precision=self.precision,
            device=self.device, runtime=self.runtime, map_engine=self.map_engine,
            adaptive=(self.why_patch, self.why_stride) if self.why_mode == "adaptive" else None)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: Path | None = Path(".env")) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``) over the ``env_file`` (if it exists)."""
        values: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            values.update(parse_env_file(Path(env_file).read_text(encoding="utf-8")))
        values.update(os.environ if environ is None else environ)
        return from_environ(cls, values)

    def secrets(self) -> list[str]:
        """Every secret value set (for the log redaction)."""
        return [self.token, self.webhook_secret, self.feedback_salt, self.inference_token, self.button_secret]


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


ENV_NAMES: dict[str, str] = env_names(Settings)

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


def main(argv: list[str] | None = None) -> int:
    """``python -m bot.config --write-docs``: .env.example and the README's settings table, from the declarations."""
    parser = argparse.ArgumentParser(prog="python -m bot.config", description=main.__doc__)
    parser.add_argument("--write-docs", action="store_true", help="rewrite .env.example and the README's table")
    args = parser.parse_args(argv)
    from bot.settings_docs import write_docs

    if args.write_docs:
        for path in write_docs(Path(__file__).resolve().parents[1]):
            print(f"wrote {path}")
        return 0
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())

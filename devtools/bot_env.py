"""The environment the bot reads (``Settings.from_env``), pointing at a :class:`~devtools.fake_telegram.FakeTelegram`."""
from __future__ import annotations

from pathlib import Path

# Heat maps small enough for a test: a 2x2 coarse map, then a 3x3 "fine" one.
SMALL_HEAT_MAPS = {"WHY_COARSE_PATCH": "112", "WHY_COARSE_STRIDE": "112", "WHY_PATCH": "112", "WHY_STRIDE": "56"}


def settings_env(fake, checkpoint: Path, data_dir: Path, **extra: str) -> dict[str, str]:
    """The bot's settings for a test against ``fake`` (anything with ``token``, ``api_base_url``, ``file_base_url``).

    Small heat maps, no warm-up pass and the eager network, so that tests are quick and do not depend on
    which bot traced the graph first; ``extra`` (setting name → value) overrides any of them.
    """
    env = {
        "TELEGRAM_BOT_TOKEN": fake.token,
        "TELEGRAM_API_BASE_URL": fake.api_base_url,
        "TELEGRAM_FILE_BASE_URL": fake.file_base_url,
        "CHECKPOINT_PATH": str(checkpoint),
        "DATA_DIR": str(data_dir),
        **SMALL_HEAT_MAPS,
        "LOG_LEVEL": "INFO",
        "WARM_UP_BATCH": "0",  # a second of ResNet50 per bot start, in every test; tested on its own
        # The shared session classifier stays eager, so tests do not depend on which bot traced it first;
        # the graph (the default) is tested end to end on a bot that loads its own model.
        "FROZEN_GRAPH": "0",
        # fp32 on torch, as the session classifier was loaded: no conversion or precision probe per bot start.
        "PRECISION": "fp32",
        "RUNTIME": "torch",
    }
    env.update({key: str(value) for key, value in extra.items()})
    return env

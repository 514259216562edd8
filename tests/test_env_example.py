""".env.example documents every bot setting, each with a comment, and parses into Settings as it is."""
from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ENV_NAMES, Settings, parse_env_file

ENV_EXAMPLE = Path(__file__).resolve().parents[1] / ".env.example"


def test_every_setting_is_listed_with_a_comment():
    lines = ENV_EXAMPLE.read_text().splitlines()
    keys = {}
    for index, line in enumerate(lines):
        if line and not line.startswith("#") and "=" in line:
            keys[line.split("=", 1)[0]] = index
    missing = set(ENV_NAMES.values()) - set(keys)
    assert not missing, f".env.example lacks {sorted(missing)}"
    for key, index in keys.items():
        above = lines[index - 1]
        assert above.startswith("#") or ("=" in above and not above.startswith("#")), key
        # a key right under another key shares that key's comment; walk up to the comment
        while not lines[index - 1].startswith("#"):
            index -= 1
        assert len(lines[index - 1]) > 10, f"{key} has no comment"


def test_the_example_parses_once_a_token_is_given():
    settings = Settings.from_env({"TELEGRAM_BOT_TOKEN": "123:abc"}, env_file=ENV_EXAMPLE)
    assert settings.checkpoint_path == Path("checkpoints/model.pt")
    assert settings.why_patch == 16 and settings.why_coarse_patch == 56
    assert settings.webhook_url == "" and not settings.feedback_dir


DEPLOY_EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "env.example"
# Values deploy/env.example sets on purpose for a server, unlike the defaults.
# The small server's choices (1 GB, one core: deploy/env.example says why), and the metrics endpoint it turns on.
DEPLOYMENT_CHOICES = {"CHECKPOINT_PATH", "DATA_DIR", "TORCH_THREADS", "MAX_BATCH", "WHY_BATCH_SIZE", "METRICS_PORT"}


@pytest.mark.parametrize("example, deliberate", [(ENV_EXAMPLE, set()), (DEPLOY_EXAMPLE, DEPLOYMENT_CHOICES)])
def test_examples_agree_with_the_defaults_in_settings(example, deliberate):
    """A value written in an example is the default it documents: when Settings changes, this fails."""
    defaults = Settings(token="123:abc")
    by_env_name = {env: name for name, env in ENV_NAMES.items()}
    drifted = []
    for key, raw in parse_env_file(example.read_text()).items():
        if key not in by_env_name or key in deliberate or key == "TELEGRAM_BOT_TOKEN" or raw == "":
            continue
        parsed = Settings.from_env({"TELEGRAM_BOT_TOKEN": "123:abc", key: raw}, env_file=None)
        name = by_env_name[key]
        if getattr(parsed, name) != getattr(defaults, name):
            drifted.append(f"{key}={raw} (default {getattr(defaults, name)!r})")
    assert not drifted, f"{example.name} disagrees with Settings: {drifted}"


def test_env_example_and_readme_table_are_generated_from_the_declarations():
    """Both are written by `python -m bot.config --write-docs`; a declaration changed without it fails here."""
    from bot.settings_docs import env_example, readme_with_table

    root = Path(__file__).resolve().parents[1]
    assert ENV_EXAMPLE.read_text() == env_example(), "run python -m bot.config --write-docs"
    readme = (root / "README.md").read_text()
    assert readme == readme_with_table(readme), "run python -m bot.config --write-docs"


def test_every_setting_is_declared_once_with_a_doc():
    from model.settings import declaration, declared_fields

    names = [declaration(item).env for item in declared_fields(Settings)]
    assert len(names) == len(set(names)), "a variable is declared twice"
    assert all(len(declaration(item).doc) > 10 for item in declared_fields(Settings))

"""Settings: environment over .env, parsing of each kind of value, errors that name the variable."""
from pathlib import Path

import pytest

from bot.config import ConfigError, Settings, parse_env_file

TOKEN = "123456:TEST-TOKEN"


def test_env_file_values_and_defaults(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# comment line\n"
        f"TELEGRAM_BOT_TOKEN='{TOKEN}'\n"
        "\n"
        'CHECKPOINT_PATH="models/best model.pt"\n'
        "CONFIDENCE_THRESHOLD=0.5   # inline comment\n"
        "export MAX_BATCH=8\n"
        "ADMIN_USER_IDS=11, 22 33\n"
    )
    settings = Settings.from_env(environ={}, env_file=env_file)
    assert settings.token == TOKEN
    assert settings.checkpoint_path == Path("models/best model.pt")
    assert settings.confidence_threshold == 0.5
    assert settings.max_batch == 8
    assert settings.admin_user_ids == frozenset({11, 22, 33})
    assert settings.why_patch == 16 and settings.why_stride == 8
    assert settings.why_coarse_patch == 56 and settings.why_coarse_stride == 28
    assert settings.api_base_url == "https://api.telegram.org/bot"


def test_real_environment_wins_over_env_file(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("TELEGRAM_BOT_TOKEN=from-file\nQUEUE_SIZE=5\nLOG_LEVEL=debug\n")
    settings = Settings.from_env(environ={"TELEGRAM_BOT_TOKEN": TOKEN, "QUEUE_SIZE": "7"}, env_file=env_file)
    assert settings.token == TOKEN
    assert settings.queue_size == 7
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("yes", True), ("0", False), ("False", False),
                                               ("off", False), ("auto", None), ("AUTO", None)])
def test_frozen_graph_switch(raw, expected):
    # The default: measured at start-up (model/runtime.py), since CPUs disagree on which is faster.
    assert Settings.from_env(environ={"TELEGRAM_BOT_TOKEN": TOKEN}, env_file=None).frozen_graph is None
    assert Settings.from_env(environ={"TELEGRAM_BOT_TOKEN": TOKEN, "FROZEN_GRAPH": raw}, env_file=None).frozen_graph is expected


def test_classify_workers_default_to_one_per_torch_thread():
    def settings(**environ):
        return Settings.from_env(environ={"TELEGRAM_BOT_TOKEN": TOKEN, **environ}, env_file=None)

    assert settings(TORCH_THREADS="2").classify_worker_count == 2
    assert settings(TORCH_THREADS="1").classify_worker_count == 1
    assert settings(TORCH_THREADS="4", CLASSIFY_WORKERS="1").classify_worker_count == 1  # one batch at a time


def test_the_scheduler_config_comes_from_the_settings_alone():
    settings = Settings.from_env(environ={"TELEGRAM_BOT_TOKEN": TOKEN, "TORCH_THREADS": "2", "MAX_BATCH": "12",
                                          "WHY_BATCH_SIZE": "4", "WARM_UP_BATCH": "0"}, env_file=None)
    config = settings.scheduler_config()
    assert (config.torch_threads, config.classify_workers, config.max_batch) == (2, 2, 12)
    assert (config.explain_batch_size, config.warm_up_batch, config.frozen_graph) == (4, 0, None)
    assert config.max_batch_wait_s == settings.max_batch_wait_ms / 1000
    default = Settings(token=TOKEN).scheduler_config()
    assert default.warm_up_batch == default.max_batch == Settings.max_batch  # WARM_UP_BATCH empty: MAX_BATCH


def test_missing_env_file_is_fine():
    settings = Settings.from_env(environ={"TELEGRAM_BOT_TOKEN": TOKEN}, env_file=Path("/nonexistent/.env"))
    assert settings.token == TOKEN


@pytest.mark.parametrize("environ", [{}, {"TELEGRAM_BOT_TOKEN": ""}, {"TELEGRAM_BOT_TOKEN": "   "}])
def test_missing_token_says_botfather(environ):
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN.*BotFather"):
        Settings.from_env(environ=environ, env_file=None)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_BATCH", "many"),
        ("MAX_BATCH", "0"),
        ("CONFIDENCE_THRESHOLD", "1.5"),
        ("CONFIDENCE_THRESHOLD", "high"),
        ("MAX_BATCH_WAIT_MS", "-1"),
        ("ADMIN_USER_IDS", "alice"),
        ("LOG_LEVEL", "LOUD"),
        ("WHY_PATCH", "300"),
        ("WEBHOOK_URL", "http://insecure.example"),
        ("WEBHOOK_SECRET", "has spaces"),
        ("FROZEN_GRAPH", "maybe"),
        ("PRECISION", "fp16"),
        ("DEVICE", "gpu"),
        ("RUNTIME", "onnx"),
        ("CLASSIFY_WORKERS", "0"),
        ("CLASSIFY_WORKERS", "99"),  # more than TORCH_THREADS: each needs a thread of its own
    ],
)
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(environ={"TELEGRAM_BOT_TOKEN": TOKEN, name: value}, env_file=None)


def test_precision_device_runtime_default_to_auto_and_reach_the_scheduler():
    settings = Settings.from_env(environ={"TELEGRAM_BOT_TOKEN": TOKEN, "PRECISION": "BF16", "DEVICE": "cpu"}, env_file=None)
    config = settings.scheduler_config()
    assert (config.precision, config.device, config.runtime) == ("bf16", "cpu", "auto")


def test_token_not_in_repr():
    settings = Settings(token=TOKEN, webhook_secret="s3cret")
    assert TOKEN not in repr(settings)
    assert "s3cret" not in repr(settings)


def test_parse_env_file_rejects_garbage_line():
    with pytest.raises(ConfigError, match="line 2"):
        parse_env_file("A=1\nthis is not a setting\n")


def test_parse_env_file_keeps_hash_inside_quotes():
    assert parse_env_file('A="x # y"\nB=plain # gone\n') == {"A": "x # y", "B": "plain"}


def test_inference_on_a_cluster_is_checked_and_its_token_file_must_be_private(tmp_path):
    base = {"TELEGRAM_BOT_TOKEN": "123:abc"}
    with pytest.raises(ConfigError, match="INFERENCE_ADDRESS"):
        Settings.from_env({**base, "INFERENCE_ADDRESS": "127.0.0.1:8000"}, env_file=None)
    with pytest.raises(ConfigError, match="CANARY_CHECKPOINT"):
        Settings.from_env({**base, "INFERENCE_ADDRESS": "http://127.0.0.1:8000", "CANARY_CHECKPOINT": "c.pt"},
                          env_file=None)
    token = tmp_path / "token"
    token.write_text("secret\n")
    token.chmod(0o600)
    settings = Settings.from_env({**base, "INFERENCE_ADDRESS": "https://10.0.0.1:8000",
                                  "INFERENCE_TOKEN_FILE": str(token)}, env_file=None)
    assert settings.cluster_token() == "secret" and "secret" not in repr(settings)
    token.chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        settings.cluster_token()
    assert Settings.from_env({**base, "INFERENCE_TOKEN": "from-env"}, env_file=None).cluster_token() == "from-env"


def test_a_cluster_address_needs_https_off_this_machine_and_a_token(tmp_path):
    base = {"TELEGRAM_BOT_TOKEN": "123:abc", "INFERENCE_TOKEN": "t"}
    for local in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "https://10.0.0.1:8443"):
        assert Settings.from_env({**base, "INFERENCE_ADDRESS": local}, env_file=None).inference_address == local
    for remote in ("http://10.0.0.1:8000", "http://cluster.example:8000", "http://127.0.0.1.example.com:80"):
        with pytest.raises(ConfigError, match="https://"):
            Settings.from_env({**base, "INFERENCE_ADDRESS": remote}, env_file=None)
    no_token = Settings.from_env({"TELEGRAM_BOT_TOKEN": "123:abc", "INFERENCE_ADDRESS": "http://127.0.0.1:8000"},
                                 env_file=None)
    with pytest.raises(ConfigError, match="python -m model serve") as missing:
        no_token.cluster_token()
    assert "inference_token" in str(missing.value) and "\n" not in str(missing.value)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    empty.chmod(0o600)
    with pytest.raises(ConfigError, match="is empty"):
        Settings.from_env({"TELEGRAM_BOT_TOKEN": "123:abc", "INFERENCE_ADDRESS": "http://127.0.0.1:8000",
                           "INFERENCE_TOKEN_FILE": str(empty)}, env_file=None).cluster_token()


def test_a_cluster_gets_only_the_heat_map_levels_it_takes():
    base = {"TELEGRAM_BOT_TOKEN": "123:abc", "INFERENCE_TOKEN": "t", "INFERENCE_ADDRESS": "http://127.0.0.1:8000"}
    assert Settings.from_env({**base, "WHY_STRIDE": "4"}, env_file=None).why_stride == 4
    for bad in ({"WHY_STRIDE": "1"}, {"WHY_COARSE_STRIDE": "1"}, {"WHY_PATCH": "8", "WHY_STRIDE": "3"}):
        with pytest.raises(ConfigError, match="WHY_STRIDE"):
            Settings.from_env({**base, **bad}, env_file=None)
    assert Settings.from_env({"TELEGRAM_BOT_TOKEN": "123:abc", "WHY_STRIDE": "1"}, env_file=None).why_stride == 1

"""The bot token never reaches a log line: messages, arguments, tracebacks, any logger."""
import io
import logging

import pytest

from bot.logging_setup import REDACTED, configure_logging

TOKEN = "123456:TEST-TOKEN-abcdef"


@pytest.fixture
def log_stream():
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging("DEBUG", [TOKEN], stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved_handlers:
        root.addHandler(handler)
    root.setLevel(saved_level)
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_token_redacted_in_message_args_and_traceback(log_stream):
    url = f"https://api.telegram.org/bot{TOKEN}/getUpdates"
    logging.getLogger("telegram.ext.Updater").warning("HTTP Request: POST %s", url)
    logging.getLogger("some.module").info(f"inline {TOKEN} text")
    try:
        raise ConnectionError(f"failed to reach {url}")
    except ConnectionError:
        logging.getLogger("bot.errors").exception("network down")
    output = log_stream.getvalue()
    assert TOKEN not in output
    assert output.count(REDACTED) == 3
    assert "network down" in output and "ConnectionError" in output


def test_httpx_request_lines_silenced(log_stream):
    logging.getLogger("httpx").info("HTTP Request: POST https://api.telegram.org/bot%s/getMe", TOKEN)
    logging.getLogger("httpx").warning("retrying %s", TOKEN)
    output = log_stream.getvalue()
    assert "getMe" not in output
    assert "retrying <TOKEN>" in output


def test_an_error_line_names_the_update_by_ids_and_kinds_never_its_content():
    from telegram import Bot, Update

    from bot.request_handling import update_summary

    bot = Bot("1:x")
    update = Update.de_json({"update_id": 77, "message": {
        "message_id": 5, "date": 0, "text": "my secret address", "caption": None,
        "chat": {"id": -100, "type": "group", "title": "Family Group"},
        "from": {"id": 42, "is_bot": False, "first_name": "Alice", "username": "alice_w"}}}, bot)
    summary = update_summary(update)
    assert all(part in summary for part in ('"update_id": 77', '"chat": -100', '"user": 42', '"message": 5', "text"))
    assert not any(secret in summary for secret in ("secret address", "Family", "Alice", "alice_w"))
    assert update_summary("not an update") == "str"

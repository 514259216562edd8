"""The bot token never reaches a log line: messages, arguments, tracebacks, any logger."""
import io
import logging

import pytest

from bot.ops.logging_setup import REDACTED, configure_logging

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


def test_tracebacks_that_escape_logging_are_redacted(log_stream):
    """sys.excepthook, threading.excepthook, sys.unraisablehook and the event loop's handler: every secret
    (the token, a webhook secret) is redacted from whatever they print."""
    import asyncio
    import sys
    import threading

    from bot.ops.logging_setup import install_redacting_hooks, redacting_loop_handler

    webhook_secret = "generated-webhook-secret-0123456789"
    saved = sys.excepthook, threading.excepthook, sys.unraisablehook
    out = io.StringIO()
    try:
        install_redacting_hooks([TOKEN, webhook_secret], stream=out)
        try:
            raise RuntimeError(f"The token `{TOKEN}` was rejected; secret {webhook_secret}")
        except RuntimeError:
            sys.excepthook(*sys.exc_info())

        def fail() -> None:
            raise ValueError(f"in a thread: {TOKEN}")

        thread = threading.Thread(target=fail, name="worker")
        thread.start()
        thread.join()
        loop = asyncio.new_event_loop()
        try:
            redacting_loop_handler(loop, {"message": f"task failed {TOKEN}", "exception": OSError(f"lost {TOKEN}")})
        finally:
            loop.close()
    finally:
        sys.excepthook, threading.excepthook, sys.unraisablehook = saved
        logging.captureWarnings(False)
    printed, logged = out.getvalue(), log_stream.getvalue()
    assert TOKEN not in printed + logged and webhook_secret not in printed + logged
    assert "RuntimeError: The token `<TOKEN>` was rejected; secret <TOKEN>" in printed
    assert "Exception in thread worker" in printed and "ValueError: in a thread: <TOKEN>" in printed
    assert "task failed <TOKEN>" in logged and "OSError: lost <TOKEN>" in logged


def test_a_refused_token_is_logged_on_one_line_without_it(log_stream):
    from telegram.error import InvalidToken

    try:
        raise InvalidToken(f"The token `{TOKEN}` was rejected by the server.")
    except InvalidToken:
        logging.getLogger("telegram.ext.Application").exception("Invalid token. Aborting retry loop.")
    lines = log_stream.getvalue().splitlines()
    assert len(lines) == 1 and TOKEN not in lines[0] and "InvalidToken: The token `<TOKEN>`" in lines[0], lines


def test_an_error_line_names_the_update_by_ids_and_kinds_never_its_content():
    from telegram import Bot, Update

    from bot.handlers.request import update_summary

    bot = Bot("1:x")
    update = Update.de_json({"update_id": 77, "message": {
        "message_id": 5, "date": 0, "text": "my secret address", "caption": None,
        "chat": {"id": -100, "type": "group", "title": "Family Group"},
        "from": {"id": 42, "is_bot": False, "first_name": "Alice", "username": "alice_w"}}}, bot)
    summary = update_summary(update)
    assert all(part in summary for part in ('"update_id": 77', '"chat": -100', '"user": 42', '"message": 5', "text"))
    assert not any(secret in summary for secret in ("secret address", "Family", "Alice", "alice_w"))
    assert update_summary("not an update") == "str"

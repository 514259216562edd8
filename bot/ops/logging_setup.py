"""Logging for the bot: one format, quiet HTTP libraries, and the bot token redacted from every line.

httpx logs each request URL at INFO, and Bot API URLs contain the token (``.../bot<TOKEN>/getUpdates``);
tracebacks of network errors can contain it too. The filter sits on the handlers, so it sees every record
that is written, whichever logger made it.

What escapes logging goes through the same redaction (:func:`install_redacting_hooks`): the interpreter's
final traceback (``sys.excepthook``), a thread's (``threading.excepthook``), an exception nobody could
raise (``sys.unraisablehook``), the event loop's handler, and warnings (routed into logging).
"""
from __future__ import annotations

import asyncio
import logging
import sys
import threading
import traceback
from collections.abc import Iterable

REDACTED = "<TOKEN>"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactingFilter(logging.Filter):
    """Replaces each secret by ``<TOKEN>`` in the message, its arguments and any traceback text."""

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._formatter = logging.Formatter()

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is, still redacted
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class RefusedTokenFilter(logging.Filter):
    """PTB logs a refused token (``InvalidToken``) with its traceback, whose last line quotes the token: one
    line instead (still redacted after this filter); ``python -m bot`` then says what to do, and exits 2."""

    def filter(self, record: logging.LogRecord) -> bool:
        exception = record.exc_info[1] if record.exc_info else None
        if exception is not None and type(exception).__name__ == "InvalidToken":
            record.msg, record.args = f"{record.getMessage()} ({type(exception).__name__}: {exception})", None
            record.exc_info = record.exc_text = None
        return True


def configure_logging(level: str, secrets: Iterable[str], stream=None) -> logging.Handler:
    """Root logger at ``level`` writing to ``stream`` (stderr) through the redacting filter."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RefusedTokenFilter())  # first: the redacting filter then sees its message
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Request lines would repeat for every getUpdates; warnings and errors still come through (redacted).
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def install_redacting_hooks(secrets: Iterable[str], stream=None) -> RedactingFilter:
    """Every traceback that would bypass logging is written redacted to ``stream`` (stderr) instead.

    For ``python -m bot`` only (global state): a test process keeps its own hooks."""
    redactor = RedactingFilter(secrets)
    out = stream or sys.stderr

    def write(kind: str, exc_type, exc_value, exc_traceback) -> None:
        text = "".join(traceback.format_exception(exc_type, exc_value, exc_traceback))
        out.write(redactor.redact(f"{kind}{text}"))
        out.flush()

    def excepthook(exc_type, exc_value, exc_traceback) -> None:
        write("", exc_type, exc_value, exc_traceback)

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        write(f"Exception in thread {name}:\n", args.exc_type, args.exc_value, args.exc_traceback)

    def unraisablehook(unraisable) -> None:
        message = unraisable.err_msg or "Exception ignored in"
        write(f"{message}: {unraisable.object!r}\n", unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    sys.unraisablehook = unraisablehook
    logging.captureWarnings(True)
    return redactor


def redacting_loop_handler(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """An event loop's exception handler: what asyncio would print, through the (redacting) log handlers."""
    exception = context.get("exception")
    logging.getLogger("asyncio").error("%s", context.get("message") or "unhandled exception in the event loop",
                                       exc_info=(type(exception), exception, exception.__traceback__)
                                       if exception is not None else None)

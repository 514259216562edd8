"""A fake Telegram Bot API server (aiohttp, 127.0.0.1 only) for driving the real bot end to end.

It speaks the subset of the Bot API that python-telegram-bot 22 uses here, answers like Telegram does
(Message objects, 400/401/404/429 error bodies), checks what real Telegram would reject (empty or long
texts, callback_data over 64 bytes, replies to unknown messages, unparsable entities), records every call
for assertions and can inject faults (429 with retry_after, dropped connections, files over 20 MB).
The tests, tools/transcript.py and the benches push updates; the bot long-polls them with getUpdates, or,
after setWebhook, they are POSTed to its webhook (devtools/fake_telegram_webhook.py).
"""
from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from PIL import Image

from .fake_telegram_checks import BadRequest
from .fake_telegram_methods import DOWNLOAD_LIMIT, BotApiMethods  # noqa: F401  (DOWNLOAD_LIMIT: for tests)
from .fake_telegram_updates import UpdateBuilders
from .fake_telegram_webhook import WebhookDelivery

BOT_ID = 7000001
TOKEN = f"{BOT_ID}:AAH-fake-token-for-tests-only"
PHOTO_SIDES = (90, 320, 800, 1280)  # the sizes Telegram makes of a photo (long side)
# Parameters whose value is a plain string even when it looks like JSON ("42", "true").
TEXT_PARAMS = {"text", "caption", "callback_query_id", "file_id", "parse_mode", "action", "url", "secret_token"}


@dataclass
class Call:
    """One request the bot made: decoded ``params``, uploaded ``files`` (part name → bytes) and the answer."""

    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)
    ok: bool = True
    status: int = 200
    result: Any = None
    description: str = ""
    dropped: bool = False
    at: float = field(default_factory=time.monotonic)

    @property
    def chat_id(self) -> Any:
        return self.params.get("chat_id")

    @property
    def text(self) -> str:
        media = self.params.get("media")
        caption = media.get("caption") if isinstance(media, dict) else None
        return str(self.params.get("text") or self.params.get("caption") or caption or "")

    @property
    def reply_to(self) -> int | None:
        """The message id this call replies to (``reply_parameters`` or the older ``reply_to_message_id``)."""
        reply = self.params.get("reply_parameters")
        if isinstance(reply, dict):
            return reply.get("message_id")
        return self.params.get("reply_to_message_id")

    @property
    def photo_bytes(self) -> bytes | None:
        """The uploaded picture of sendPhoto / editMessageMedia, if it was uploaded (not a file_id)."""
        ref = self.params.get("photo")
        media = self.params.get("media")
        if isinstance(media, dict):
            ref = media.get("media")
        if isinstance(ref, str) and ref.startswith("attach://"):
            return self.files.get(ref[len("attach://"):])
        return self.files.get("photo")

    def __repr__(self) -> str:  # short, for assertion messages
        state = "dropped" if self.dropped else (self.status if not self.ok else "ok")
        return f"<{self.method} {state} chat={self.chat_id} reply_to={self.reply_to} text={self.text[:60]!r}>"


@dataclass
class StoredFile:
    data: bytes
    file_id: str
    unique_id: str
    path: str
    size: int  # what Telegram reports; may be larger than ``data`` to fake big files


class FakeTelegram(WebhookDelivery, UpdateBuilders, BotApiMethods):
    """The server and its state. ``await start()``, point the bot at ``api_base_url``/``file_base_url``."""

    def __init__(self, token: str = TOKEN, username: str = "ProductIdBot") -> None:
        self.token = token
        self.bot_user = {"id": int(token.split(":")[0]), "is_bot": True, "first_name": "Product ID",
                         "username": username, "can_join_groups": True,
                         "can_read_all_group_messages": False, "supports_inline_queries": False}
        self.calls: list[Call] = []
        self.files: dict[str, StoredFile] = {}
        self.chats: dict[int, dict] = {}
        self.messages: dict[tuple[int, int], dict] = {}
        self.commands: list[dict] = []
        self.commands_for: dict[tuple[str, str], list[dict]] = {}  # (scope type, language_code or "") -> menu
        self.user_languages: dict[int, str | None] = {}  # user id -> language_code (default "en"; None: absent)
        self.member_statuses: dict[tuple[int, int], str] = {}  # (chat, user) -> getChatMember status (set_member_status)
        self.polls: list[float] = []  # when each getUpdates arrived (its Call is recorded only when it returns)
        self.port = 0
        self._updates: list[dict] = []
        self._update_ids = itertools.count(1000)
        self._file_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._open_callbacks: set[str] = set()
        self._message_ids: dict[int, itertools.count] = {}
        self._faults: dict[str, list[tuple[str, int, int | None, str]]] = {}
        self._changed: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._downloads_open: asyncio.Event | None = None  # while set to a clear event, file downloads wait

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> FakeTelegram:
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_method)
        app.router.add_route("GET", "/file/bot{token}/{path:.+}", self._handle_file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)  # never any other address
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self._closing = True
        await self._notify()  # release long polls at once
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def file_base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # ---- fault injection -------------------------------------------------------------------------
    def fail_next(self, method: str, status: int = 429, retry_after: int | None = 1, description: str = "") -> None:
        """The next ``method`` call gets a Telegram-style error (default: 429 Too Many Requests)."""
        if not description:
            description = f"Too Many Requests: retry after {retry_after}" if status == 429 else "Internal Server Error"
        self._faults.setdefault(method.lower(), []).append(("fail", status, retry_after, description))

    def hold_downloads(self) -> None:
        """File downloads (after their FILE call is recorded) wait until :meth:`release_downloads`: a bot
        can be caught between accepting a photo and answering it."""
        self._downloads_open = asyncio.Event()

    def release_downloads(self) -> None:
        if self._downloads_open is not None:
            self._downloads_open.set()
            self._downloads_open = None

    def drop_next(self, method: str) -> None:
        """The next ``method`` call has its connection closed without any answer."""
        self._faults.setdefault(method.lower(), []).append(("drop", 0, None, ""))

    # ---- files -----------------------------------------------------------------------------------
    def add_file(self, data: bytes, *, reported_size: int | None = None, kind: str = "documents",
                 suffix: str = "bin") -> tuple[str, str]:
        """Store bytes as a Telegram file; ``reported_size`` fakes a bigger file (e.g. over 20 MB)."""
        number = next(self._file_ids)
        file_id, unique_id = f"FILE{number:04d}-{kind}", f"U{number:04d}"
        path = f"{kind}/file_{number}.{suffix}"
        self.files[file_id] = StoredFile(data, file_id, unique_id, path, len(data) if reported_size is None else reported_size)
        return file_id, unique_id

    def file_bytes(self, file_id: str) -> bytes:
        return self.files[file_id].data

    def _photo_sizes(self, data: bytes, with_variants: bool = True) -> list[dict]:
        """PhotoSize objects for a picture, smallest first, the way Telegram offers several sizes."""
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        blobs = []
        if with_variants:
            for side in PHOTO_SIDES:
                if side < max(width, height):
                    small = image.convert("RGB")
                    small.thumbnail((side, side))
                    buffer = io.BytesIO()
                    small.save(buffer, "JPEG", quality=85)
                    blobs.append((small.size, buffer.getvalue()))
        blobs.append(((width, height), data))
        sizes = []
        for (w, h), blob in blobs:
            file_id, unique_id = self.add_file(blob, kind="photos", suffix="jpg")
            sizes.append({"file_id": file_id, "file_unique_id": unique_id, "width": w, "height": h, "file_size": len(blob)})
        return sizes

    # ---- waiting and looking ---------------------------------------------------------------------
    def mark(self) -> int:
        """An index into ``calls``: pass it as ``after=`` to look only at later calls."""
        return len(self.calls)

    def find_calls(self, method: str | None = None, predicate: Callable[[Call], bool] | None = None,
                   *, after: int = 0, ok: bool | None = True) -> list[Call]:
        return [c for c in self.calls[after:]
                if (method is None or c.method == method) and (ok is None or c.ok == ok)
                and (predicate is None or predicate(c))]

    async def wait_for_calls(self, method: str | None, count: int, predicate: Callable[[Call], bool] | None = None,
                             *, timeout: float = 10, after: int = 0, ok: bool | None = True) -> list[Call]:
        """Wait (event-driven) until ``count`` matching calls were made; AssertionError with the log otherwise."""
        assert self._changed is not None, "start() the server first"

        def found():
            matches = self.find_calls(method, predicate, after=after, ok=ok)
            return matches[:count] if len(matches) >= count else None

        try:
            async with self._changed:
                return await asyncio.wait_for(self._changed.wait_for(found), timeout)
        except TimeoutError:
            seen = [c for c in self.calls[after:] if c.method != "getUpdates"]
            raise AssertionError(f"no {count} x {method} within {timeout}s; calls since: {seen}") from None

    async def wait_for_poll(self, after: int = 0, *, timeout: float = 10) -> float:
        """When the first getUpdates after the first ``after`` ones arrived (``after=len(polls)``: the next one).

        A long poll is recorded in ``calls`` only when it returns, up to ``timeout`` seconds later; this is
        the moment the bot started waiting for updates."""
        assert self._changed is not None, "start() the server first"
        try:
            async with self._changed:
                await asyncio.wait_for(self._changed.wait_for(lambda: len(self.polls) > after), timeout)
        except TimeoutError:
            raise AssertionError(f"no getUpdates within {timeout}s") from None
        return self.polls[after]

    async def wait_for_call(self, method: str | None, predicate: Callable[[Call], bool] | None = None,
                            *, timeout: float = 10, after: int = 0, ok: bool | None = True) -> Call:
        return (await self.wait_for_calls(method, 1, predicate, timeout=timeout, after=after, ok=ok))[0]

    def answers_in(self, chat_id: int, *, after: int = 0) -> list[Call]:
        """Successful messages the bot sent to a chat (text or photo)."""
        return self.find_calls(None, lambda c: c.method in ("sendMessage", "sendPhoto", "sendDocument")
                               and c.chat_id == chat_id, after=after)

    async def wait_for_answer(self, message: dict, *, timeout: float = 10, after: int = 0) -> Call:
        """The bot's reply to a user's ``message`` (sendMessage/sendPhoto replying to it)."""
        chat_id, message_id = message["chat"]["id"], message["message_id"]
        return await self.wait_for_call(None, lambda c: c.method in ("sendMessage", "sendPhoto") and c.chat_id == chat_id
                                        and c.reply_to == message_id, timeout=timeout, after=after)

    async def _notify(self) -> None:
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()

    async def _record(self, call: Call) -> None:
        self.calls.append(call)
        await self._notify()

    # ---- HTTP ------------------------------------------------------------------------------------
    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.Response(status=401, text="Unauthorized")
        path = request.match_info["path"]
        stored = next((f for f in self.files.values() if f.path == path), None)
        await self._record(Call("FILE", {"file_path": path, "file_id": stored.file_id if stored else None}, ok=stored is not None))
        if stored is None:
            return web.Response(status=404, text="Not Found")
        if self._downloads_open is not None:
            await self._downloads_open.wait()
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def _read_params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
        raw: dict[str, Any] = dict(request.query)
        files: dict[str, bytes] = {}
        if request.content_type == "application/json":
            raw.update(await request.json())
            return raw, files
        if request.method == "POST" and request.can_read_body:
            form = await request.post()
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    files[name] = value.file.read()
                else:
                    raw[name] = value
        params = {}
        for name, value in raw.items():
            if isinstance(value, str) and name not in TEXT_PARAMS:
                try:
                    value = json.loads(value)
                except ValueError:
                    pass
            params[name] = value
        return params, files

    async def _handle_method(self, request: web.Request) -> web.StreamResponse:
        method_key = request.match_info["method"].lower()
        handler = self._methods().get(method_key)
        method = handler.__name__[len("api_"):] if handler else request.match_info["method"]
        if request.match_info["token"] != self.token:
            return self._error_response(Call(method, {}), 401, "Unauthorized")
        params, files = await self._read_params(request)
        call = Call(method, params, files)
        fault = self._faults.get(method_key, [])
        if fault:
            kind, status, retry_after, description = fault.pop(0)
            if kind == "drop":
                call.ok, call.status, call.dropped = False, 0, True
                await self._record(call)
                request.transport.close()  # no answer at all: the client sees a dropped connection
                raise ConnectionResetError("dropped by the fake on purpose")
            return await self._fail(call, status, description, retry_after)
        if handler is None:
            return await self._fail(call, 404, "Not Found")
        try:
            call.result = await handler(params, files)
        except BadRequest as error:
            return await self._fail(call, 400, f"Bad Request: {error}")
        await self._record(call)
        return web.json_response({"ok": True, "result": call.result})

    def _error_response(self, call: Call, status: int, description: str, retry_after: int | None = None) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None and status == 429:
            body["parameters"] = {"retry_after": retry_after}
        call.ok, call.status, call.description = False, status, description
        return web.json_response(body, status=status)

    async def _fail(self, call: Call, status: int, description: str, retry_after: int | None = None) -> web.Response:
        response = self._error_response(call, status, description, retry_after)
        await self._record(call)
        return response

    def _methods(self) -> dict[str, Callable]:
        return {name[len("api_"):].lower(): getattr(self, name) for name in dir(self) if name.startswith("api_")}

"""A fake Telegram Bot API server (aiohttp, 127.0.0.1 only) for driving the real bot end to end.

It speaks the subset of the Bot API that python-telegram-bot 22 uses here, answers like Telegram does
(Message objects, 400/401/404/429 error bodies), checks what real Telegram would reject (empty or long
texts, callback_data over 64 bytes, replies to unknown messages, unparsable entities), records every call
for assertions and can inject faults (429 with retry_after, dropped connections, files over 20 MB).
The tests push updates; the bot long-polls them with getUpdates.
"""
from __future__ import annotations

import asyncio
import io
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web
from PIL import Image

from fake_telegram_checks import BadRequest, check_parse_mode, check_reply_markup

DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile refuses bigger files, like the public Bot API
BOT_ID = 7000001
TOKEN = f"{BOT_ID}:AAH-fake-token-for-tests-only"
PHOTO_SIDES = (90, 320, 800, 1280)  # the sizes Telegram makes of a photo (long side)
# Parameters whose value is a plain string even when it looks like JSON ("42", "true").
TEXT_PARAMS = {"text", "caption", "callback_query_id", "file_id", "parse_mode", "action", "url", "secret_token"}


def entities_of(text: str | None) -> list[dict] | None:
    """The entities Telegram attaches: a leading bot_command and every @mention (offsets in UTF-16 units)."""
    if not text:
        return None
    entities = []
    if text.startswith("/"):
        entities.append({"type": "bot_command", "offset": 0, "length": len(text.split()[0])})
    for match in re.finditer(r"(?<![/\w])@\w{5,32}", text):
        entities.append({"type": "mention", "offset": utf16_len(text[: match.start()]), "length": utf16_len(match.group())})
    return entities or None


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


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


class FakeTelegram:
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

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> "FakeTelegram":
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

    # ---- building updates ------------------------------------------------------------------------
    def chat(self, chat_id: int, chat_type: str = "private") -> dict:
        if chat_id not in self.chats:
            if chat_type == "private":
                self.chats[chat_id] = {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"}
            else:
                self.chats[chat_id] = {"id": chat_id, "type": chat_type, "title": f"Group {chat_id}"}
        return self.chats[chat_id]

    def _user_message(self, user_id: int, chat_id: int | None, chat_type: str, reply_to: dict | None, **content) -> dict:
        chat = self.chat(user_id if chat_id is None else chat_id, chat_type)
        user = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "username": f"user{user_id}", "language_code": "en"}
        message = {"message_id": self._next_message_id(chat["id"]), "from": user, "chat": chat, "date": int(time.time())}
        if reply_to is not None:
            message["reply_to_message"] = {k: v for k, v in reply_to.items() if k != "reply_to_message"}
        message.update({k: v for k, v in content.items() if v is not None})
        self.messages[(chat["id"], message["message_id"])] = message
        return message

    def _update(self, **payload) -> dict:
        return {"update_id": next(self._update_ids), **payload}

    def photo_update(self, image: bytes, *, user_id: int = 1001, chat_id: int | None = None, caption: str | None = None,
                     media_group_id: str | None = None, chat_type: str = "private", reply_to: dict | None = None,
                     variants: bool = True) -> dict:
        """A user sends ``image`` as a photo (Telegram's several sizes, unless ``variants=False``)."""
        message = self._user_message(user_id, chat_id, chat_type, reply_to, photo=self._photo_sizes(image, variants),
                                     caption=caption, caption_entities=entities_of(caption), media_group_id=media_group_id)
        return self._update(message=message)

    def document_update(self, data: bytes, *, file_name: str = "file.bin", mime_type: str | None = "application/octet-stream",
                        reported_size: int | None = None, user_id: int = 1001, chat_id: int | None = None,
                        caption: str | None = None, chat_type: str = "private") -> dict:
        """A user sends ``data`` as a file; ``reported_size`` fakes its size (e.g. over the 20 MB limit)."""
        file_id, unique_id = self.add_file(data, reported_size=reported_size, suffix=file_name.rsplit(".", 1)[-1])
        document = {"file_id": file_id, "file_unique_id": unique_id, "file_name": file_name,
                    "file_size": self.files[file_id].size}
        if mime_type:
            document["mime_type"] = mime_type
        message = self._user_message(user_id, chat_id, chat_type, None, document=document, caption=caption,
                                     caption_entities=entities_of(caption))
        return self._update(message=message)

    def text_update(self, text: str, *, user_id: int = 1001, chat_id: int | None = None, chat_type: str = "private",
                    reply_to: dict | None = None) -> dict:
        """A text message; a leading "/command" (or "/command@bot") and @mentions get their entities."""
        message = self._user_message(user_id, chat_id, chat_type, reply_to, text=text, entities=entities_of(text))
        return self._update(message=message)

    def command_update(self, command: str, **kwargs) -> dict:
        return self.text_update(command, **kwargs)

    def callback_update(self, data: str, message: dict, *, user_id: int | None = None) -> dict:
        """A user presses an inline button with ``data`` under the bot's ``message`` (a sent Message dict)."""
        chat = message["chat"]
        user_id = chat["id"] if user_id is None else user_id
        query_id = f"CB{next(self._callback_ids)}"
        self._open_callbacks.add(query_id)
        user = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "username": f"user{user_id}"}
        query = {"id": query_id, "from": user, "message": message, "chat_instance": f"ci{chat['id']}", "data": data}
        return self._update(callback_query=query)

    async def push(self, update: dict) -> dict:
        """Queue an update for the bot's next getUpdates; returns it (its ``message`` is handy for replies)."""
        self._updates.append(update)
        await self._notify()
        return update

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

    # ---- the Bot API methods ---------------------------------------------------------------------
    def _next_message_id(self, chat_id: int) -> int:
        return next(self._message_ids.setdefault(chat_id, itertools.count(1)))

    def _known_chat(self, params: dict) -> dict:
        chat_id = params.get("chat_id")
        if chat_id not in self.chats:
            raise BadRequest("chat not found")
        return self.chats[chat_id]

    def _existing_message(self, params: dict, what: str = "message to edit not found") -> dict:
        chat = self._known_chat(params)
        message = self.messages.get((chat["id"], params.get("message_id")))
        if message is None:
            raise BadRequest(what)
        return message

    def _bot_message(self, params: dict, **content) -> dict:
        chat = self._known_chat(params)
        check_reply_markup(params.get("reply_markup"))
        reply = params.get("reply_parameters") or {}
        reply_id = reply.get("message_id", params.get("reply_to_message_id"))
        message = {"message_id": 0, "from": self.bot_user, "chat": chat, "date": int(time.time())}
        if reply_id is not None:
            target = self.messages.get((chat["id"], reply_id))
            if target is not None:
                message["reply_to_message"] = {k: v for k, v in target.items() if k != "reply_to_message"}
            elif not (reply.get("allow_sending_without_reply") or params.get("allow_sending_without_reply")):
                raise BadRequest("message to be replied not found")
        message.update({k: v for k, v in content.items() if v is not None})
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        message["message_id"] = self._next_message_id(chat["id"])
        self.messages[(chat["id"], message["message_id"])] = message
        return message

    def _caption(self, params: dict) -> str | None:
        caption = params.get("caption")
        if caption is not None:
            if len(caption) > 1024:
                raise BadRequest("message caption is too long")
            check_parse_mode(caption, params.get("parse_mode"))
        return caption

    def _uploaded_photo(self, ref: Any, files: dict[str, bytes], name: str) -> list[dict]:
        if isinstance(ref, str) and ref in self.files:
            return self._photo_sizes(self.files[ref].data, with_variants=False)
        data = files.get(ref[len("attach://"):]) if isinstance(ref, str) and ref.startswith("attach://") else files.get(name)
        if data is None:
            raise BadRequest("wrong remote file identifier specified")
        try:
            return self._photo_sizes(data)
        except Exception:  # what Telegram says for bytes that are not a picture
            raise BadRequest("IMAGE_PROCESS_FAILED") from None

    async def api_getMe(self, params, files):
        return self.bot_user

    async def api_deleteWebhook(self, params, files):
        return True

    async def api_getWebhookInfo(self, params, files):
        return {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)}

    async def api_setMyCommands(self, params, files):
        self.commands = list(params.get("commands") or [])
        return True

    async def api_setMyDescription(self, params, files):
        return True

    async def api_setMyShortDescription(self, params, files):
        return True

    async def api_getUpdates(self, params, files):
        offset, limit = params.get("offset"), int(params.get("limit") or 100)
        if offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]  # confirmed ones go
        assert self._changed is not None
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: self._updates or self._closing),
                                       float(params.get("timeout") or 0))
            except TimeoutError:
                pass
        return self._updates[:limit]

    async def api_sendMessage(self, params, files):
        text = params.get("text")
        if not text or not str(text).strip():
            raise BadRequest("message text is empty")
        if len(text) > 4096:
            raise BadRequest("message is too long")
        check_parse_mode(text, params.get("parse_mode"))
        return self._bot_message(params, text=text)

    async def api_sendPhoto(self, params, files):
        caption = self._caption(params)
        return self._bot_message(params, photo=self._uploaded_photo(params.get("photo"), files, "photo"), caption=caption)

    async def api_sendDocument(self, params, files):
        data = files.get("document", b"")
        file_id, unique_id = self.add_file(data)
        document = {"file_id": file_id, "file_unique_id": unique_id, "file_name": "document", "file_size": len(data)}
        return self._bot_message(params, document=document, caption=self._caption(params))

    async def api_sendChatAction(self, params, files):
        self._known_chat(params)
        if params.get("action") not in {"typing", "upload_photo", "upload_document", "find_location", "record_video",
                                        "upload_video", "record_voice", "upload_voice", "choose_sticker"}:
            raise BadRequest("wrong parameter action in request")
        return True

    async def api_answerCallbackQuery(self, params, files):
        if params.get("callback_query_id") not in self._open_callbacks:
            raise BadRequest("query is too old and response timeout expired or query ID is invalid")
        self._open_callbacks.discard(params["callback_query_id"])
        return True

    async def api_getFile(self, params, files):
        stored = self.files.get(params.get("file_id"))
        if stored is None:
            raise BadRequest("invalid file_id")
        if stored.size > DOWNLOAD_LIMIT:
            raise BadRequest("file is too big")
        return {"file_id": stored.file_id, "file_unique_id": stored.unique_id, "file_size": stored.size, "file_path": stored.path}

    async def api_editMessageText(self, params, files):
        message = self._existing_message(params)
        text = params.get("text") or ""
        if not text.strip():
            raise BadRequest("message text is empty")
        check_parse_mode(text, params.get("parse_mode"))
        check_reply_markup(params.get("reply_markup"))
        if text == message.get("text") and params.get("reply_markup") == message.get("reply_markup"):
            raise BadRequest("message is not modified: specified new message content and reply markup are exactly the same")
        message["text"] = text
        return self._apply_markup(message, params)

    async def api_editMessageCaption(self, params, files):
        message = self._existing_message(params)
        caption = self._caption(params)
        if caption == message.get("caption") and params.get("reply_markup") == message.get("reply_markup"):
            raise BadRequest("message is not modified: specified new message content and reply markup are exactly the same")
        message["caption"] = caption
        return self._apply_markup(message, params)

    async def api_editMessageReplyMarkup(self, params, files):
        message = self._existing_message(params)
        check_reply_markup(params.get("reply_markup"))
        return self._apply_markup(message, params)

    async def api_editMessageMedia(self, params, files):
        message = self._existing_message(params)
        media = params.get("media")
        if not isinstance(media, dict) or media.get("type") != "photo":
            raise BadRequest("can't parse InputMedia: media type is not supported")
        if "photo" not in message:
            raise BadRequest("there is no media in the message to edit")
        caption = media.get("caption")
        if caption is not None and len(caption) > 1024:
            raise BadRequest("message caption is too long")
        check_parse_mode(caption or "", media.get("parse_mode"))
        message["photo"] = self._uploaded_photo(media.get("media"), files, "media")
        message.pop("caption", None)
        if caption:
            message["caption"] = caption
        check_reply_markup(params.get("reply_markup"))
        return self._apply_markup(message, params)

    async def api_deleteMessage(self, params, files):
        message = self._existing_message(params, "message to delete not found")
        del self.messages[(message["chat"]["id"], message["message_id"])]
        return True

    def _apply_markup(self, message: dict, params: dict) -> dict:
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        else:
            message.pop("reply_markup", None)
        message["edit_date"] = int(time.time())
        return message

"""The Bot API methods the fake server implements (mixed into FakeTelegram): Telegram's answers and its 400s."""
from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from .fake_telegram_checks import BadRequest, check_parse_mode, check_reply_markup

DOWNLOAD_LIMIT = 20 * 1024 * 1024  # getFile refuses bigger files, like the public Bot API
CHAT_ACTIONS = {"typing", "upload_photo", "upload_document", "find_location", "record_video", "upload_video",
                "record_voice", "upload_voice", "choose_sticker"}


class BotApiMethods:
    """``api_<method>(params, files)`` returns the ``result`` or raises :class:`BadRequest`."""

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
        """The menu per (scope, language): ``commands`` is the default one; ``commands_for[(scope, code)]`` all."""
        commands = list(params.get("commands") or [])
        scope = (params.get("scope") or {}).get("type", "default")
        code = params.get("language_code") or ""
        if code and len(code) != 2:
            raise BadRequest("language code is invalid")
        self.commands_for[(scope, code)] = commands
        if (scope, code) == ("default", ""):
            self.commands = commands
        return True

    async def api_setMyDescription(self, params, files):
        return True

    async def api_setMyShortDescription(self, params, files):
        return True

    async def api_getUpdates(self, params, files):
        offset, limit = params.get("offset"), int(params.get("limit") or 100)
        if offset:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]  # confirmed ones go
        self.polls.append(time.monotonic())
        await self._notify()
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
        if params.get("action") not in CHAT_ACTIONS:
            raise BadRequest("wrong parameter action in request")
        return True

    async def api_answerCallbackQuery(self, params, files):
        if params.get("callback_query_id") not in self._open_callbacks:
            raise BadRequest("query is too old and response timeout expired or query ID is invalid")
        self._open_callbacks.discard(params["callback_query_id"])
        return True

    async def api_getChatMember(self, params, files):
        """A member's status in a chat: "creator" in a private chat (its user), else what :meth:`set_member_status`
        set ("member" by default), as Telegram answers for anyone who has written in the group."""
        chat = self._known_chat(params)
        user_id = params.get("user_id")
        if not isinstance(user_id, int):
            raise BadRequest("invalid user_id specified")
        status = "creator" if chat["type"] == "private" and chat["id"] == user_id else \
            self.member_statuses.get((chat["id"], user_id), "member")
        member = {"status": status, "user": self.user(user_id)}
        if status == "administrator":
            member.update({"can_be_edited": False, "is_anonymous": False, "can_manage_chat": True,
                           "can_delete_messages": True, "can_manage_video_chats": False, "can_restrict_members": True,
                           "can_promote_members": False, "can_change_info": True, "can_invite_users": True,
                           "can_post_stories": False, "can_edit_stories": False, "can_delete_stories": False})
        elif status == "creator":
            member["is_anonymous"] = False
        return member

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

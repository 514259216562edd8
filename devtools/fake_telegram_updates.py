"""Building the updates a user "sends" to the fake Bot API server (mixed into FakeTelegram)."""
from __future__ import annotations

import re
import time


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


class UpdateBuilders:
    """Photo, document, text, command and button-press updates, shaped like Telegram's, and ``push``."""

    def chat(self, chat_id: int, chat_type: str = "private") -> dict:
        if chat_id not in self.chats:
            if chat_type == "private":
                self.chats[chat_id] = {"id": chat_id, "type": "private", "first_name": f"User{chat_id}"}
            else:
                self.chats[chat_id] = {"id": chat_id, "type": chat_type, "title": f"Group {chat_id}"}
        return self.chats[chat_id]

    def user(self, user_id: int) -> dict:
        """A user as Telegram describes them; ``language_code`` from :meth:`set_language` (default ``en``;
        ``None``: the field is left out, as for users whose app does not send it)."""
        user = {"id": user_id, "is_bot": False, "first_name": f"User{user_id}", "username": f"user{user_id}"}
        code = self.user_languages.get(user_id, "en")
        if code is not None:
            user["language_code"] = code
        return user

    def set_member_status(self, chat_id: int, user_id: int, status: str) -> None:
        """What getChatMember says of the user in the group from now on: "creator", "administrator", "member"..."""
        self.member_statuses[(chat_id, user_id)] = status

    def set_language(self, user_id: int, language_code: str | None) -> None:
        """The language of the user's Telegram app (an IETF tag like ``hi`` or ``pt-br``) in their later updates."""
        self.user_languages[user_id] = language_code

    def _user_message(self, user_id: int, chat_id: int | None, chat_type: str, reply_to: dict | None, **content) -> dict:
        chat = self.chat(user_id if chat_id is None else chat_id, chat_type)
        user = self.user(user_id)
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
        user = self.user(user_id)
        query = {"id": query_id, "from": user, "message": message, "chat_instance": f"ci{chat['id']}", "data": data}
        return self._update(callback_query=query)

    async def push(self, update: dict) -> dict:
        """Queue an update for the bot's next getUpdates; returns it (its ``message`` is handy for replies)."""
        self._updates.append(update)
        await self._notify()
        return update

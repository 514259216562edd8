"""What real Telegram rejects with 400 Bad Request, checked by the fake server so that such bugs show in tests."""
from __future__ import annotations

from html.parser import HTMLParser

MARKDOWN_V2_RESERVED = set("_*[]()~`>#+-=|{}.!")
HTML_TAGS = {"b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "tg-spoiler",
             "span", "blockquote", "tg-emoji"}


class BadRequest(Exception):
    """The text after "Bad Request: " in Telegram's answer."""


def check_reply_markup(markup) -> None:
    """Inline keyboards: every button needs text and one action; callback_data is 1-64 bytes."""
    if not markup or "inline_keyboard" not in markup:
        return
    for row in markup["inline_keyboard"]:
        for button in row:
            if not button.get("text"):
                raise BadRequest("text buttons are unallowed in the inline keyboard")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(data.encode("utf-8")) <= 64:
                raise BadRequest("BUTTON_DATA_INVALID")


def check_parse_mode(text: str, parse_mode: str | None) -> None:
    if not parse_mode:
        return
    mode = parse_mode.lower()
    if mode == "markdownv2":
        _check_markdown_v2(text)
    elif mode == "html":
        _check_html(text)


def _check_markdown_v2(text: str) -> None:
    """Roughly Telegram's rule: outside markup, reserved characters must be escaped with a backslash."""
    i, in_link_url, after_link_text = 0, False, False
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if in_link_url:
            in_link_url = char != ")"
        elif char == "(" and after_link_text:
            in_link_url = True
        elif char == ">" and (i == 0 or text[i - 1] == "\n"):
            pass  # a block quote
        elif char in "_*~|`[]":
            pass  # markup (balance is not checked here)
        elif char in MARKDOWN_V2_RESERVED:
            raise BadRequest(f"can't parse entities: Character '{char}' is reserved and must be escaped with the preceding '\\'")
        after_link_text = char == "]"
        i += 1


class _TagChecker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag not in HTML_TAGS:
            raise BadRequest(f'can\'t parse entities: Unsupported start tag "{tag}"')
        self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            raise BadRequest(f'can\'t parse entities: Unexpected end tag "{tag}"')
        self.stack.pop()


def _check_html(text: str) -> None:
    checker = _TagChecker()
    checker.feed(text)
    checker.close()
    if checker.stack:
        raise BadRequest(f"can't parse entities: Can't find end tag corresponding to start tag \"{checker.stack[-1]}\"")

"""The catalogs: complete, in step with the code, placeholders intact; language choice; a missing or stale
.mo stops the bot with a clear line instead of silent English."""
from __future__ import annotations

import os
import re
import shutil

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bot import messages
from bot.i18n import ENGLISH, LOCALE_DIR, CatalogError, Languages, base_code, compile_catalogs
from model import Prediction

PLACEHOLDER = re.compile(r"\{(\w*)\}")
SHIPPED = ("hi", "es")


def catalog(code: str):
    with (LOCALE_DIR / code / "LC_MESSAGES" / "bot.po").open("rb") as handle:
        return read_po(handle, locale=code)


def test_the_template_has_every_text_the_code_marks():
    in_code = {(context, message if isinstance(message, str) else message[0])
               for _, _, message, _, context in extract_from_dir(str(LOCALE_DIR.parent))}
    with (LOCALE_DIR / "bot.pot").open("rb") as handle:
        template = {(m.context, m.id if isinstance(m.id, str) else m.id[0]) for m in read_po(handle) if m.id}
    assert in_code == template, f"run `make translations`: new {in_code - template}, gone {template - in_code}"


@pytest.mark.parametrize("code", SHIPPED)
def test_every_text_is_translated_with_its_placeholders(code):
    entries = [m for m in catalog(code) if m.id]
    assert len(entries) >= 70
    for message in entries:
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(strings) and not message.fuzzy, f"{code}: untranslated {message.id!r}"
        expected = set(PLACEHOLDER.findall(ids[-1]))
        for string in strings:
            assert set(PLACEHOLDER.findall(string)) == expected, f"{code}: placeholders of {message.id!r}: {string!r}"


def test_language_codes_map_to_the_shipped_catalogs():
    languages = Languages()
    assert set(languages.codes) == {"en", *SHIPPED}
    assert base_code("hi-IN") == "hi" and base_code("pt_BR") == "pt" and base_code(None) == ""
    assert languages.get("hi-IN").code == "hi" and languages.get("ES").code == "es"
    for unknown in ("fr", "", None, "zz"):
        assert languages.get(unknown) is ENGLISH


def test_class_names_come_from_the_catalog_then_the_checkpoint():
    hindi = Languages().get("hi")
    assert hindi.product("saree") == "साड़ी" and hindi.product("t_shirt") == "टी-शर्ट"
    assert hindi.product("anarkali") == "Anarkali"  # not in the catalog: the checkpoint's name
    assert ENGLISH.product("t_shirt") == "T shirt" and ENGLISH.product_lower("t_shirt") == "t shirt"


def test_plural_forms_follow_the_count():
    prediction = Prediction(label="saree", confidence=0.9, top=(("saree", 0.9),))
    line = messages.album_line(1, prediction, 0.6, 0.8)
    assert messages.album_text([line]).startswith("1 photo:") and messages.album_text([line] * 2).startswith("2 photos:")
    spanish = Languages().get("es")
    assert messages.forget_done(1, 2, spanish).endswith("También borré 1 valoración y 2 fotos.")
    assert "30 días" in messages.privacy_text(30, 24, False, spanish)
    assert "1 day old" in messages.privacy_text(1, 24, False)


def copy_catalogs(tmp_path):
    target = tmp_path / "locale"
    shutil.copytree(LOCALE_DIR, target)
    return target


def test_a_missing_or_stale_mo_is_a_clear_error(tmp_path):
    locale = copy_catalogs(tmp_path)
    mo = locale / "hi" / "LC_MESSAGES" / "bot.mo"
    mo.unlink()
    with pytest.raises(CatalogError, match=r"hi catalog .*bot.mo is missing: run `make catalogs`"):
        Languages(locale)
    assert compile_catalogs(locale) == [mo]
    assert Languages(locale).get("hi").gettext("Why?") == "क्यों?"
    po = mo.with_suffix(".po")
    later = mo.stat().st_mtime + 10
    os.utime(po, (later, later))  # the .po edited after the last compile
    with pytest.raises(CatalogError, match="older than bot.po"):
        Languages(locale)


async def test_the_bot_does_not_start_with_a_stale_catalog(running_bot, monkeypatch, tmp_path):
    from bot import i18n
    from bot.config import ConfigError

    locale = copy_catalogs(tmp_path)
    (locale / "es" / "LC_MESSAGES" / "bot.mo").unlink()
    monkeypatch.setattr(i18n.Languages.__init__, "__defaults__", (locale,))
    with pytest.raises(ConfigError, match="es catalog .* is missing"):
        async with running_bot():
            pass

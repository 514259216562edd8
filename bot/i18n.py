"""The user's language: gettext catalogs under bot/locale, chosen by the Telegram user's ``language_code``.

English is the source language (the message ids in :mod:`bot.messages` are the English texts), so it
needs no catalog. Every other language is ``bot/locale/<code>/LC_MESSAGES/bot.po``, compiled to ``bot.mo``
by ``make catalogs`` (part of ``make install``: ``python -m bot.i18n compile``). The bot refuses to start
when a ``.mo`` is missing or older than its ``.po`` (:class:`CatalogError`), rather than answering in
English without saying why.

Class names are translated with the message context ``product`` (``pgettext("product", "saree")``);
a class the catalog does not know is shown by its checkpoint name.

For translators (Babel)::

    make translations   # extract new texts into bot/locale/bot.pot and merge them into every .po
"""
from __future__ import annotations

import argparse
import gettext
import sys
from dataclasses import dataclass
from pathlib import Path

LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "bot"
SOURCE_LANGUAGE = "en"
PRODUCT_CONTEXT = "product"


class CatalogError(Exception):
    """A catalog that cannot be used (missing or stale .mo, unreadable file): an operator's problem."""


def N_(message: str) -> str:
    """Marks a constant for extraction; it is translated where it is shown (``language.gettext(CONSTANT)``)."""
    return message


def display_name(label: str) -> str:
    """``"saree"`` -> ``"Saree"``; ``"t_shirt"`` -> ``"T shirt"`` (a class name as the checkpoint spells it)."""
    text = label.replace("_", " ").strip()
    return text[:1].upper() + text[1:] if text else label


@dataclass(frozen=True)
class Language:
    """One language's translations; ``gettext``/``ngettext``/``pgettext`` are the names Babel extracts."""

    code: str
    translations: gettext.NullTranslations

    def gettext(self, message: str) -> str:
        return self.translations.gettext(message)

    def ngettext(self, singular: str, plural: str, count: int) -> str:
        return self.translations.ngettext(singular, plural, count)

    def pgettext(self, context: str, message: str) -> str:
        return self.translations.pgettext(context, message)

    def product(self, label: str) -> str:
        """A class name to show: the catalog's (context ``product``), else the checkpoint's, capitalised."""
        translated = self.pgettext(PRODUCT_CONTEXT, label)
        return translated if translated != label else display_name(label)

    def product_lower(self, label: str) -> str:
        """A class name inside a sentence ("a saree"): the catalog's, else the checkpoint's with spaces."""
        translated = self.pgettext(PRODUCT_CONTEXT, label)
        return translated if translated != label else label.replace("_", " ")


ENGLISH = Language(SOURCE_LANGUAGE, gettext.NullTranslations())


def base_code(language_code: str | None) -> str:
    """Telegram's IETF tag (``"hi"``, ``"en-US"``, ``"pt-br"``) -> its language (``"hi"``, ``"en"``, ``"pt"``)."""
    return (language_code or "").replace("_", "-").split("-")[0].strip().lower()


class Languages:
    """Every shipped language, loaded once at start; :meth:`get` picks one for a user (English otherwise)."""

    def __init__(self, locale_dir: Path = LOCALE_DIR):
        self.locale_dir = Path(locale_dir)
        self._languages = {SOURCE_LANGUAGE: ENGLISH}
        for po in sorted(self.locale_dir.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
            code = po.parent.parent.name
            mo = po.with_suffix(".mo")
            problem = stale_reason(po, mo)
            if problem:
                raise CatalogError(f"the {code} catalog {mo} is {problem}: run `make catalogs` "
                                   "(or `python -m bot.i18n compile`)")
            try:
                with mo.open("rb") as handle:
                    self._languages[code] = Language(code, gettext.GNUTranslations(handle))
            except (OSError, ValueError) as error:  # a truncated or foreign file
                raise CatalogError(f"cannot read the {code} catalog {mo}: {error}") from None

    @property
    def codes(self) -> list[str]:
        return list(self._languages)

    def get(self, language_code: str | None) -> Language:
        return self._languages.get(base_code(language_code), ENGLISH)

    def for_user(self, user) -> Language:
        """The language of a Telegram user (``None``, or no ``language_code``: English)."""
        return self.get(getattr(user, "language_code", None))


def stale_reason(po: Path, mo: Path) -> str | None:
    if not mo.is_file():
        return "missing"
    if mo.stat().st_mtime < po.stat().st_mtime:
        return f"older than {po.name}"
    return None


def compile_catalogs(locale_dir: Path = LOCALE_DIR, force: bool = False) -> list[Path]:
    """Compile each .po whose .mo is missing or stale (Babel); returns the .mo files written."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    written = []
    for po in sorted(Path(locale_dir).glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
        mo = po.with_suffix(".mo")
        if not force and stale_reason(po, mo) is None:
            continue
        with po.open("rb") as handle:
            catalog = read_po(handle, locale=po.parent.parent.name)
        errors = [(message.id, error) for message, errs in catalog.check() for error in errs]
        if errors:
            raise CatalogError(f"{po}: {errors[0][1]} (message {errors[0][0]!r})")
        temporary = mo.with_suffix(".mo.tmp")
        with temporary.open("wb") as handle:
            write_mo(handle, catalog)
        temporary.replace(mo)
        written.append(mo)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.i18n", description="Compile the bot's translation catalogs.")
    parser.add_argument("command", choices=["compile"])
    parser.add_argument("--force", action="store_true", help="compile every catalog, not only stale ones")
    args = parser.parse_args(argv)
    try:
        written = compile_catalogs(force=args.force)
    except CatalogError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for mo in written:
        print(f"compiled {mo.relative_to(LOCALE_DIR.parent.parent) if mo.is_relative_to(LOCALE_DIR.parent.parent) else mo}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The class names the catalogs translate, marked for extraction (message context ``product``).

Never called: Babel reads these calls when it extracts the texts (``make translations``). A class that is
not listed here (or not translated in a catalog) is shown as the checkpoint names it (bot.i18n).
"""
from __future__ import annotations


def _marked_for_extraction(pgettext) -> None:
    pgettext("product", "kurti")
    pgettext("product", "saree")
    pgettext("product", "shirt")
    pgettext("product", "lehenga")
    pgettext("product", "t_shirt")
    pgettext("product", "dupatta")

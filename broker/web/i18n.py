"""Texts for users in German and English: gettext catalogues
(``locale/<language>/LC_MESSAGES/pforte.po``, read with Babel when the broker starts), the
language chosen by the browser's Accept-Language.

A message's id is a stable key: the API's error codes, and the names the pages and scripts give
their texts. A text that counts something has plural forms (``msgid_plural``): the catalogue
holds one per form of the language's ``Plural-Forms`` (German and English: one, other), and the
console's script picks one with ``Intl.PluralRules``. A translator edits the ``.po`` file;
``tests/test_i18n.py`` checks that every language has every text and form.
"""

from __future__ import annotations

from pathlib import Path

from babel.messages.pofile import read_po

LOCALE = Path(__file__).parent / "locale"
LANGUAGES = ("en", "de")        # the first is the fallback
DOMAIN = "pforte"

Text = str | list[str]          # a plain text, or the plural forms of a counting one


def catalogue(language: str) -> dict[str, Text]:
    """The texts of one language, by message id."""
    with open(LOCALE / language / "LC_MESSAGES" / f"{DOMAIN}.po", "rb") as po:
        messages = read_po(po, locale=language, domain=DOMAIN)
    return {(m.id[0] if m.pluralizable else m.id): (list(m.string) if m.pluralizable
                                                    else m.string)
            for m in messages if m.id}


TEXTS: dict[str, dict[str, Text]] = {language: catalogue(language) for language in LANGUAGES}


def choose_language(accept_language: str | None) -> str:
    """The first supported language in an Accept-Language header, by quality; English otherwise."""
    best, best_q = LANGUAGES[0], -1.0
    for part in (accept_language or "").split(","):
        tag, _, params = part.strip().partition(";")
        lang = tag.strip().lower().split("-")[0]
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if lang in TEXTS and q > best_q:
            best, best_q = lang, q
    return best

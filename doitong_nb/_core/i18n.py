"""Messages in the user's language: the stdlib's gettext, with the catalogs in doitong_nb/locale.

`_()` and `ngettext()` translate into the current language, which the faces set from the `language` setting
(`use()`); `N_()` marks a text for the catalog where it is defined, to be translated with `_()` where it is shown.
Only messages go through here: error classes and codes, option, field and status names and log keys stay as
they are. Importing this module reads nothing; a catalog is read the first time its language is used.
"""

from __future__ import annotations

import functools
import gettext
import re
import unicodedata
from collections.abc import Mapping
from pathlib import Path

DOMAIN = "doitong_nb"
LOCALE_DIR = Path(__file__).resolve().parents[1] / "locale"
LANGUAGES = ("en", "ko")  # English is the source language: no catalog
ENGLISH = "en"
LOCALE_VARIABLES = ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG")  # gettext's order
_current: str | None = None  # None until a face or a client chooses (English meanwhile)


def language_of(text: str) -> str | None:
    """ "ko", "ko_KR.UTF-8", "ko-KR", "KO" -> "ko"; None for one without a catalog ("fr_FR", "C", "POSIX")."""
    language = re.split(r"[_\-.@]", text.strip(), maxsplit=1)[0].lower()
    return language if language in LANGUAGES else None


def locale_language(environ: Mapping[str, str]) -> str | None:
    """The process locale's language, read as gettext reads it: the first of LANGUAGE (a colon-separated list),
    LC_ALL, LC_MESSAGES and LANG that is set; None when that names no language with a catalog."""
    for name in LOCALE_VARIABLES:
        value = environ.get(name, "").strip()
        if value:
            found = (language_of(part) for part in value.split(":")) if name == "LANGUAGE" else [language_of(value)]
            return next((language for language in found if language), None)
    return None


def use(language: str) -> None:
    """Show every later message in `language` (one of LANGUAGES, as the settings checked it)."""
    global _current
    _current = language_of(language) or ENGLISH


def current() -> str:
    return _current or ENGLISH


def chosen() -> bool:
    """Whether a face or a client has set the language yet (a client created first sets it from its settings)."""
    return _current is not None


@functools.cache
def _catalog(language: str) -> gettext.NullTranslations:
    """The compiled catalog of `language` (English: the messages as written); a missing .mo raises, since the
    wheel ships one for every language in LANGUAGES."""
    if language == ENGLISH:
        return gettext.NullTranslations()
    return gettext.translation(DOMAIN, LOCALE_DIR, languages=[language])


def _(message: str) -> str:
    """`message` in the current language."""
    return _catalog(current()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The form for `n` in the current language (Korean has one form; English two)."""
    return _catalog(current()).ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Marks `message` for the catalog where it is defined; `_()` translates it where it is shown."""
    return message


def columns(text: str) -> int:
    """The terminal columns `text` takes: a Hangul syllable (an East Asian wide character) takes two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def padded(text: str, width: int) -> str:
    """`text` filled to `width` terminal columns, so that Korean labels line up in a column as English ones do."""
    return text + " " * (width - columns(text))

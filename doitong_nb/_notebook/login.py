"""`%flux_login` / `%flux_logout` and the warning for a key pasted into a cell (the key's storage is
_runtime/login.py).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from typing import Any

from doitong_nb._core.env import ENV_API_KEY
from doitong_nb._core.i18n import N_, _
from doitong_nb._runtime.login import current, forget_saved, login, logout, save

_NAME = re.escape(ENV_API_KEY)


# A value that looks like a key: long enough, no spaces, not a placeholder ("..."), an expansion ($key) or a name.
_KEY = r"[A-Za-z0-9][A-Za-z0-9_\-.:+/=]{11,}"


_VALUE = rf"(?P<q>['\"]?)(?P<value>{_KEY})(?P=q)"  # %env takes the rest of its line, quoted or not


_QUOTED = rf"(?P<q>['\"])(?P<value>{_KEY})(?P=q)"  # in Python only a string literal is a literal


_FORMS: list[tuple[str, re.Pattern[str]]] = [
    ("%env " + ENV_API_KEY + "=...", re.compile(rf"^\s*%env\s+{_NAME}\s*[=\s]\s*{_VALUE}\s*$", re.M)),
    (
        f'os.environ["{ENV_API_KEY}"] = "..."',
        re.compile(rf"""environ\s*\[\s*['"]{_NAME}['"]\s*\]\s*=\s*{_QUOTED}"""),
    ),
    (
        f'os.environ.setdefault("{ENV_API_KEY}", "...")',
        re.compile(rf"""environ\s*\.\s*setdefault\s*\(\s*['"]{_NAME}['"]\s*,\s*{_QUOTED}"""),
    ),
    (
        f"os.environ.update({ENV_API_KEY}=...)",
        re.compile(rf"""environ\s*\.\s*update\s*\([^)]*?\b{_NAME}['"]?\s*[=:]\s*{_QUOTED}"""),
    ),
    ('Flux(api_key="...")', re.compile(rf"""\bapi_key\s*=\s*{_QUOTED}""")),
]


def key_literals(source: str) -> list[tuple[str, int]]:
    """(form, line number) of each key-shaped literal the cell assigns to the API key; never the literal itself.

    Reads (`os.environ.get(...)`, `os.environ[...]` on the right), `getpass()` and `$variable` expansions are not
    literals and do not match."""
    found = []
    for form, pattern in _FORMS:
        for match in pattern.finditer(source):
            found.append((form, source.count("\n", 0, match.start()) + 1))
    return sorted(found, key=lambda item: item[1])


def warning_for(source: str) -> str | None:
    """The warning for a cell that writes a key into the notebook, or None; it names the form, never the key."""
    found = key_literals(source)
    if not found:
        return None
    where = "; ".join(_("line {line}: {form}").format(line=line, form=form) for form, line in found)
    said = _(
        "doitong_nb: this cell writes an API key into the notebook ({where}). The key is now in the .ipynb source "
        "and goes wherever the notebook goes (git, shares, exports). Instead run %flux_login (a hidden prompt; "
        "--save keeps it in the OS keyring or a private file) or set {variable} outside the notebook; then delete "
        "this line, and rotate the key if the notebook was saved or shared. The cell runs anyway."
    )
    return said.format(where=where, variable=ENV_API_KEY)


def warn_key_literals(info: Any) -> None:
    """IPython's pre_run_cell hook: warn on stderr before the cell runs; the cell still runs."""
    source = getattr(info, "raw_cell", None) or ""
    if ENV_API_KEY not in source and "api_key" not in source:
        return
    message = warning_for(source)
    if message:
        print(message, file=sys.stderr)


_LOGIN_USAGE = N_("usage: %flux_login [--save | --save-to keyring|file]   (the key is asked for with a hidden prompt)")


# The magics' help (`%flux_login?`), marked for the catalog: a docstring is not extracted, so these are set as the
# docstrings in the language of the moment (help_in_language).
_LOGIN_HELP = N_(
    "Ask for the API key with a hidden prompt and keep it in this kernel (never in the notebook).\n\n"
    "`--save` also keeps it for later sessions: in the OS keyring when `keyring` is installed and usable, else in a "
    "0600 file in your config directory; `--save-to keyring|file` chooses. Lookup order: an explicit api_key= > this "
    "login > DOITONG_API_KEY > the saved key."
)
_LOGOUT_HELP = N_("Forget the key given to %flux_login, and delete its saved copy (`--keep-saved` keeps that).")


def help_in_language() -> None:
    """`%flux_login?` and `%flux_logout?` in the language now chosen (the magics call this when it changes)."""
    magics = _magics()
    magics.flux_login.__doc__ = _(_LOGIN_HELP)
    magics.flux_logout.__doc__ = _(_LOGOUT_HELP)


@functools.cache
def _magics() -> Any:
    """The magics' class, made once (IPython is imported only when a shell loads them)."""
    from IPython.core.error import UsageError
    from IPython.core.magic import Magics, line_magic, magics_class

    @magics_class
    class LoginMagics(Magics):
        @line_magic
        def flux_login(self, line: str = "") -> None:
            import getpass

            words = line.split()
            where = None
            if words == ["--save"]:
                where = "auto"
            elif len(words) == 2 and words[0] == "--save-to" and words[1] in ("keyring", "file"):
                where = words[1]
            elif words:
                raise UsageError(_(_LOGIN_USAGE))
            key = getpass.getpass(_("Doitong API key (hidden; Enter to cancel): "))
            from doitong_nb._core.errors import DoitongError

            try:
                login(key)
                if where is not None:
                    place = save(current() or "", where)
            except DoitongError as exc:
                raise UsageError(f"%flux_login: {exc}") from None
            if where is None:
                print(_("Logged in: the key is kept in this kernel only (--save keeps it). The next cell uses it."))
            else:
                said = _("Logged in: the key is kept in this kernel and saved to {place}. The next cell uses it.")
                print(said.format(place=place))

        @line_magic
        def flux_logout(self, line: str = "") -> None:
            words = line.split()
            if words not in ([], ["--keep-saved"]):
                raise UsageError(_("usage: %flux_logout [--keep-saved]"))
            had = current() is not None
            logout()
            removed = [] if words else forget_saved()
            parts = [_("forgot this kernel's key") if had else _("no key was logged in")]
            if removed:
                parts.append(_("deleted the saved key from {places}").format(places=", ".join(removed)))
            if os.environ.get(ENV_API_KEY):
                parts.append(_("{variable} is set in the environment and is used now").format(variable=ENV_API_KEY))
            else:
                parts.append(_("the next cell uses the environment, a saved key, or the sandbox"))
            print(_("Logged out: {what}.").format(what="; ".join(parts)))

    return LoginMagics


def register(ipython: Any) -> None:
    """%flux_login, %flux_logout and the key-literal warning before each cell."""
    ipython.register_magics(_magics())
    help_in_language()
    if warn_key_literals not in ipython.events.callbacks["pre_run_cell"]:  # %reload_ext: once
        ipython.events.register("pre_run_cell", warn_key_literals)

"""Keys that never land in a notebook: `%flux_login`, `%flux_logout`, and a warning for key literals in cells.

Where the API key comes from, first found wins:

1. an explicit argument, `Flux(api_key=...)` (for scripts that read it from their own secret store);
2. the kernel's login, `%flux_login` (a hidden getpass prompt; kept in this process only);
3. the environment, `DOITONG_API_KEY` (set outside the notebook: a shell, a `.env` your launcher reads, CI);
4. the saved key: the OS keyring (`pip install "doitong-nb[keyring]"`), else a 0600 file in the user's config
   directory (platformdirs' `user_config_dir("doitong-nb")/api_key`), written by `%flux_login --save`.

No key anywhere means the bundled offline sandbox. Every key goes through `config.checked_api_key`, which registers
it so that no DoitongError ever shows it; nothing here prints, logs or reprs a key.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

from doitong_nb._core.env import ENV_API_KEY
from doitong_nb._core.i18n import N_, _
from doitong_nb._runtime.config_file import config_dir

SERVICE = "doitong-nb"  # the keyring's service name
_USERNAME = ENV_API_KEY
_login_key: str | None = None
KEYRING = N_("the OS keyring")  # where a key was saved, in words


# --- the kernel's login ----------------------------------------------------------------------------


def login(key: str) -> None:
    """Keep `key` for this process (checked as any key is: stripped, no control characters, scrubbed)."""
    from doitong_nb._core.errors import AuthenticationError
    from doitong_nb._core.keys import checked_api_key

    global _login_key
    checked = checked_api_key(key)
    if checked is None:
        raise AuthenticationError(_("no key was entered; nothing changed"))
    _login_key = checked


def logout() -> None:
    global _login_key
    _login_key = None


def current() -> str | None:
    """The key given to `%flux_login` in this process, if any."""
    return _login_key


# --- the saved key -----------------------------------------------------------------------------------


def key_file() -> Path:
    """The 0600 file a key is saved to when no keyring is available."""
    return config_dir() / "api_key"


def _keyring() -> Any:
    """The keyring module when it is installed and has a usable backend, else None."""
    try:
        import keyring
        from keyring.backends import fail
    except ImportError:
        return None
    with contextlib.suppress(Exception):
        if not isinstance(keyring.get_keyring(), fail.Keyring):
            return keyring
    return None


def save(key: str, where: str = "auto") -> str:
    """Save `key` to the keyring ("keyring"), the 0600 file ("file") or the keyring when usable ("auto").

    Returns where it went, in words, never the key.
    """
    ring = _keyring() if where in ("auto", "keyring") else None
    if where == "keyring" and ring is None:
        from doitong_nb._core.errors import AuthenticationError

        raise AuthenticationError(_('no usable OS keyring: pip install "doitong-nb[keyring]", or save to a file'))
    if ring is not None:
        ring.set_password(SERVICE, _USERNAME, key)
        return _(KEYRING)
    path = key_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return str(path)


def saved() -> str | None:
    """The saved key (keyring first, then the file), or None. A file others can read is refused with a warning."""
    ring = _keyring()
    if ring is not None:
        with contextlib.suppress(Exception):
            value = ring.get_password(SERVICE, _USERNAME)
            if value:
                return value
    path = key_file()
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if os.name == "posix" and mode & 0o077:
        said = _(
            "doitong_nb: {path} is readable by other users, so its key is not used; `chmod 600 {path}` or run "
            "%flux_login --save again"
        )
        print(said.format(path=path), file=sys.stderr)
        return None
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return path.read_text().strip() or None
    return None


def forget_saved() -> list[str]:
    """Delete the saved key wherever it is; returns the places it was removed from."""
    removed = []
    ring = _keyring()
    if ring is not None:
        with contextlib.suppress(Exception):
            ring.delete_password(SERVICE, _USERNAME)
            removed.append(_(KEYRING))
    path = key_file()
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        removed.append(str(path))
    return removed


# --- key literals in a cell ----------------------------------------------------------------------------


# --- the magics ----------------------------------------------------------------------------------------

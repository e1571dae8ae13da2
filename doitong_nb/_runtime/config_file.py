"""The settings file: `config.ini` in the user's config directory (platformdirs' `user_config_dir("doitong-nb")`,
beside the saved key), one more source of settings between `%config Flux.*` and the environment.

    [settings]
    language = ko
    timeout = 120

Why INI: Python 3.10 has no tomllib and no dependency of ours reads TOML, while the stdlib's configparser reads and
writes INI on every Python we support, and a person edits it as easily. It holds every option that has an
environment variable, as the same text that variable takes, and is checked the same way, naming the file; never a
secret (the API key, the webhook secret): `%flux_login --save` keeps a key in the keyring or a 0600 file.
`doitong-nb config NAME VALUE` writes it.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import os
from pathlib import Path

from doitong_nb._core.errors import InvalidRequestError
from doitong_nb._core.i18n import _
from doitong_nb._core.settings import OPTIONS, checked

APP = "doitong-nb"  # the config directory's name
FILE_NAME = "config.ini"
SECTION = "settings"
FILE_SETTINGS = tuple(name for name, option in OPTIONS.items() if option.env and not option.secret)


def config_dir() -> Path:
    """The user's config directory for doitong-nb (the settings file, and the saved key without a keyring)."""
    try:
        from platformdirs import user_config_dir
    except ImportError:  # platformdirs is a dependency of jupyter_core; a bare install still has a sensible place
        base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
        return Path(base) / APP
    return Path(user_config_dir(APP, appauthor=False))


def settings_file() -> Path:
    return config_dir() / FILE_NAME


def contents() -> bytes:
    """The file as it is now (nothing when absent), for the faces to notice a change between cells."""
    with contextlib.suppress(OSError):
        return settings_file().read_bytes()
    return b""


def _parsed(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, configparser.Error) as exc:
        said = _("{path} is not a settings file ({error}); fix or delete it")
        raise InvalidRequestError(said.format(path=path, error=" ".join(str(exc).split()))) from None
    others = [section for section in parser.sections() if section != SECTION]
    if others:
        said = _("{path}: section [{section}] is unknown; settings go under [{expected}]")
        raise InvalidRequestError(said.format(path=path, section=others[0], expected=SECTION))
    return parser


def read() -> dict[str, str]:
    """The settings the file sets (name -> text as written; a blank value sets nothing). An absent or empty file
    sets nothing; a name the file cannot set is refused, naming the file and the names it takes."""
    path = settings_file()
    parser = _parsed(path)
    values = {name: value for name, value in parser.items(SECTION)} if parser.has_section(SECTION) else {}
    unknown = sorted(set(values) - set(FILE_SETTINGS))
    if unknown:
        said = _(
            "{path}: {name} cannot be set in this file (`doitong-nb config {name} --unset` removes it); "
            "it takes: {allowed}"
        )
        raise InvalidRequestError(said.format(path=path, name=unknown[0], allowed=", ".join(FILE_SETTINGS)))
    return values


def settable(name: str) -> None:
    """Refuse a name the file cannot hold, saying which it can (and where a key goes instead)."""
    if name in FILE_SETTINGS:
        return
    said = (
        _("{name} is never written to a file: run %flux_login --save to keep a key")
        if name == "api_key" or (name in OPTIONS and OPTIONS[name].secret)
        else _("{name} cannot be set in {path}; it takes: {allowed}")
    )
    raise InvalidRequestError(said.format(name=name, path=settings_file(), allowed=", ".join(FILE_SETTINGS)))


def write(name: str, value: str | None) -> Path:
    """Set `name` to `value` in the file, checked as the file would be read, or remove it (None); the other settings
    stay (comments do not: configparser writes what it read). Returns the file."""
    path = settings_file()
    if value is not None:  # any name can be removed: a misspelt one, or a key someone wrote there by hand
        settable(name)
    parser = _parsed(path)
    if value is None:
        if parser.has_section(SECTION):
            parser.remove_option(SECTION, name)
    else:
        checked(name, value, str(path))
        if not parser.has_section(SECTION):
            parser.add_section(SECTION)
        parser.set(SECTION, name, value.strip())
    text = io.StringIO()
    parser.write(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text.getvalue(), encoding="utf-8")
    os.replace(partial, path)  # a reader sees the old file or the new one, never half of it
    return path

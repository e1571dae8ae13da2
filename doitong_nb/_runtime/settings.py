"""Settings resolution: every option from the first source that sets it, explicit argument > `%config Flux.*` >
the login (the key only) > the settings file (`config.ini`, _runtime/config_file.py) > the environment
(`DOITONG_*`) > the default (the table is _core/settings.py). The language alone has one more source between the
environment and the default: the process locale (`LANG`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

from doitong_nb import _contract as contract
from doitong_nb._core.env import ENV_API_KEY, ENV_BASE_URL
from doitong_nb._core.errors import AuthenticationError
from doitong_nb._core.i18n import LOCALE_VARIABLES, locale_language
from doitong_nb._core.keys import checked_api_key
from doitong_nb._core.settings import ENVIRONMENT, OPTIONS, Settings, checked, given
from doitong_nb._runtime import config_file
from doitong_nb._store.location import store_location


def value_of(
    name: str, explicit: Any = None, configured: Any = None, from_file: Mapping[str, str] | None = None
) -> Any:
    """One option from the first source that sets it: explicit > `%config` (`configured`) > the settings file
    (`from_file`, read when not given) > environment > default (for the language, the process locale before the
    default: a locale without a catalog is English, not refused)."""
    option = OPTIONS[name]
    for value, where in ((explicit, ""), (configured, f"%config Flux.{name}")):
        if given(value):
            return checked(name, value, where)
    in_file = (config_file.read() if from_file is None else from_file).get(name)
    from_env = os.environ.get(option.env) if option.env else None
    for value, where in ((in_file, str(config_file.settings_file())), (from_env, option.env or "")):
        if given(value):
            return checked(name, value, where)
    if name == "language":
        return locale_language(os.environ) or option.default
    return option.default


def resolve(configured: Mapping[str, Any] | None = None, **explicit: Any) -> Settings:
    """Every setting from the first source that sets it: `explicit` arguments (None: not given) > `configured`
    (the magics' `%config Flux.*`) > the login (the key) > the settings file > the environment > the default; each
    value checked.

    Starts no server: with no key and no base URL the settings name the sandbox, which `connect()` starts.
    """
    from doitong_nb._runtime import login as login

    unknown = set(explicit) - {"api_key", "base_url", *OPTIONS}
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    configured = configured or {}
    in_file = config_file.read()
    values = {name: value_of(name, explicit.get(name), configured.get(name), in_file) for name in OPTIONS}
    key = (
        checked_api_key(explicit.get("api_key"))
        or checked_api_key(login.current())
        or checked_api_key(os.environ.get(ENV_API_KEY))
        or checked_api_key(login.saved())
    )
    url = (explicit.get("base_url") or os.environ.get(ENV_BASE_URL) or "").strip().rstrip("/")
    if key is None and url:
        raise AuthenticationError(f"no API key for {url}: set {ENV_API_KEY}, run %flux_login, or pass api_key=...")
    output_dir, store = store_location(values.pop("output_dir"))
    return Settings(
        api_key=key or "",
        base_url=url or ("" if key is None else contract.PRODUCTION_BASE_URL),
        output_dir=output_dir,
        sandbox=key is None,
        store=store,
        **values,
    )


def fingerprint() -> str:
    """A digest of what `resolve` reads besides its arguments (the settings file, the environment and locale, the
    login; a saved key changes only with a login), so that a face resolves again only when it changed; secrets stay
    inside the digest."""
    from doitong_nb._runtime import login as login

    parts = [*(os.environ.get(name, "") for name in (*ENVIRONMENT, *LOCALE_VARIABLES)), login.current() or ""]
    return hashlib.sha256(config_file.contents() + "\0".join(parts).encode()).hexdigest()

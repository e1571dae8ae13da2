"""Every setting in one place, resolved once in one order.

An option comes from the first source that sets it: an explicit argument (`Flux(timeout=...)`, a cell's
`--timeout`) > `%config Flux.*` > the login (the API key only: `%flux_login`) > the settings file (`config.ini`:
the options with an environment variable, but secrets) > the environment (`DOITONG_*`) > the default. `Settings`
holds the result; each of its option fields carries its environment variable, default and check (`Option`), so
that table is the one the magics' traitlets, the panel and the README follow. A bad value is refused here, naming
where it came from, before any request.

With no key anywhere (and no base URL) the settings name the bundled sandbox; `Settings.connect()` starts it
once per process, says so once, and fills in its address and key.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from doitong_nb import _contract as contract
from doitong_nb._core.env import (
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_LANG,
    ENV_LOCK_FILE,
    ENV_MAX_CREDITS,
    ENV_OUTPUT_DIR,
    ENV_PLAN,
    ENV_SANDBOX_CREDITS,
    ENV_SANDBOX_PLAN,
    ENV_SANDBOX_SPEED,
    ENV_STATUS_QUERY,
    ENV_TIMEOUT,
    ENV_TRANSPORT,
    ENV_WEBHOOK_SECRET,
)
from doitong_nb._core.errors import InvalidRequestError
from doitong_nb._core.i18n import LANGUAGES, N_, _, language_of

HTTP_TIMEOUT = 30.0  # one HTTP exchange
SANDBOX_ORIGIN = "sandbox"


# --- checks: the value as used, or an error that says what to give instead -------------------------
def _bad(name: str, value: Any, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, field=name, value=value)


def _choice(name: str, allowed: Callable[[], tuple[str, ...]]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed():
            said = _("{name} {value!r} is unknown; use one of: {allowed}")
            raise _bad(name, value, said.format(name=name, value=value, allowed=", ".join(allowed())))
        return text

    return check


def _transports() -> tuple[str, ...]:
    return contract.TRANSPORTS


def _plans() -> tuple[str, ...]:
    return tuple(contract.PLANS)


def _positive(name: str, what: str, *, infinite: bool = False) -> Callable[[Any], float]:
    """A positive number (text from the environment too); infinity only where it means "no waiting"."""

    def check(value: Any) -> float:
        try:
            number = math.nan if isinstance(value, bool) else float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not number > 0 or (number == math.inf and not infinite):
            raise _bad(name, value, _("{name} {value!r} must be {what}").format(name=name, value=value, what=_(what)))
        return number

    return check


def _whole(name: str, what: str, low: int = 0, high: float = math.inf) -> Callable[[Any], int]:
    """A whole number in [low, high] (text from the environment too)."""

    def check(value: Any) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _bad(name, value, _("{name} {value!r} must be {what}").format(name=name, value=value, what=_(what)))
        return value

    return check


def _boolean(name: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if not isinstance(value, bool):
            raise _bad(name, value, _("{name} must be True or False, not {value!r}").format(name=name, value=value))
        return value

    return check


def _text(name: str, what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, (str, os.PathLike)) or not os.fspath(value).strip():
            said = _("{name} must be {what}, not {value!r}")
            raise _bad(name, value, said.format(name=name, what=_(what), value=value))
        return os.fspath(value).strip()

    return check


def _size(value: Any) -> str:
    """The size as a request checks it ("width 1000 is not a multiple of 16; try 992 or 1008")."""
    from doitong_nb._core.request import GenerationRequest

    try:
        return GenerationRequest.build("a size", size=str(value).strip()).size
    except InvalidRequestError as exc:
        raise _bad("size", value, str(exc)) from None


_GRAPHQL_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")


def parse_status_query(text: Any) -> tuple[str, str, str, str]:
    """(name, argument, argument type, further arguments) of a status query setting: `getJob(jobId)`,
    `getJob(jobId: String!)`, `generation` (argument `id`), or `job(id, kind: IMAGE)` when the service's query
    takes more required arguments (their values as GraphQL literals); the GraphQL wire format builds its query
    from them."""
    match = re.fullmatch(
        r"\s*(\w+)\s*(?:\(\s*(\w+)\s*(?::\s*([\w!\[\]]+)\s*)?((?:,\s*\w+\s*:\s*[\w\"]+\s*)*)\))?\s*", str(text)
    )
    if not match or not all(_GRAPHQL_NAME.fullmatch(p) for p in match.groups()[:3] if p and not p.endswith(("!", "]"))):
        raise _bad(
            "status_query",
            text,
            f"status query {text!r} is not of the form name(argument), e.g. getJob(jobId), generation(id) or "
            "job(id, kind: IMAGE)",
        )
    name, arg, arg_type, more = match.groups()
    extra = ", ".join(re.sub(r"\s*:\s*", ": ", part.strip()) for part in (more or "").split(",") if part.strip())
    return name, arg or contract.STATUS_QUERY_ARG, arg_type or "ID!", extra


def _statuses(value: Any) -> str:
    """`WORD=meaning, ...`: statuses the service uses that no reading knows, each mapped to one of the contract's."""
    parse_statuses(value)
    return str(value).strip()


def parse_statuses(text: Any) -> dict[str, str]:
    """`"upscaling=processing, 끝=completed"` as {status_key: meaning}; refused with the meanings to choose from."""
    mapping: dict[str, str] = {}
    for part in str(text).split(","):
        word, _, meaning = part.partition("=")
        meaning = meaning.strip().lower()
        if not word.strip() or meaning not in (*contract.PENDING_STATUSES, *contract.FINAL_STATUSES):
            raise _bad(
                "statuses",
                text,
                f"statuses {text!r} must be WORD=meaning pairs separated by commas, each meaning one of "
                f'{", ".join((*contract.PENDING_STATUSES, *contract.FINAL_STATUSES))}, e.g. "upscaling=processing"',
            )
        mapping[contract.status_key(word)] = meaning
    return mapping


def _status_query(value: Any) -> str:
    parse_status_query(value)
    return str(value).strip()


def _mutation(value: Any) -> str:
    if not isinstance(value, str) or not value.isidentifier():
        raise _bad("mutation", value, f"mutation {value!r} must be a GraphQL field name, such as generate")
    return value


def _language(value: Any) -> str:
    """ "ko", "ko_KR.UTF-8" or "ko-KR" as "ko"; a language with no catalog is refused, naming those there are."""
    language = language_of(str(value))
    if language is None:
        said = _("language {value!r} is unknown; use one of: {allowed}")
        raise _bad("language", value, said.format(value=value, allowed=", ".join(LANGUAGES)))
    return language


def _lock_file(value: Any) -> Path:
    return Path(_text("lock_file", N_("a file path"))(value))


# --- the settings --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Option:
    """How one setting is given: `Flux(name=...)` or a cell option, `%config Flux.name` when `configurable`, the
    environment variable `env`, else `default`; `check` turns a given value into the one used, or refuses it."""

    default: Any
    check: Callable[[Any], Any]
    help: str
    env: str | None = None
    configurable: bool = False
    live: bool = False  # a running client takes a change of it; a change of any other setting needs a new client
    secret: bool = False  # kept out of reprs and never written to the settings file


def _option(
    default: Any,
    check: Callable[[Any], Any],
    help: str,
    *,
    env: str | None = None,
    configurable: bool = False,
    live: bool = False,
    positional: bool = False,
    secret: bool = False,
) -> Any:
    """A Settings field that is an option; `positional` ones have no dataclass default (Settings(key, url, ...))."""
    metadata = {"option": Option(default, check, help, env, configurable, live, secret)}
    if positional:
        return field(repr=not secret, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Every setting of a client and of the faces, as `resolve` found them; keys and secrets stay out of the repr."""

    api_key: str = field(repr=False)  # explicit > %flux_login > DOITONG_API_KEY > the saved key (_runtime/login.py)
    base_url: str  # explicit > DOITONG_BASE_URL > the production API; "" until connect() when `sandbox`
    transport: str = _option(
        "graphql",
        _choice("transport", _transports),
        N_("wire protocol: graphql or rest"),
        env=ENV_TRANSPORT,
        configurable=True,
        positional=True,
    )
    output_dir: Path = _option(
        "flux_outputs",
        _text("output_dir", N_("a folder, or a store URL such as s3://bucket/prefix")),
        N_("results folder, or a shared fsspec store such as s3://bucket/prefix"),
        env=ENV_OUTPUT_DIR,
        configurable=True,
        positional=True,
    )
    timeout: float = _option(
        600.0,
        _positive("timeout", N_("a positive number of seconds")),
        N_("seconds to wait for a job before handing back its id"),
        env=ENV_TIMEOUT,
        configurable=True,
        live=True,
        positional=True,
    )
    sandbox: bool  # no key and no base URL anywhere: the bundled sandbox
    store: str | None = None  # the shared fsspec store when output_dir is a URL (output_dir is then a local cache)
    lock_file: Path | None = _option(
        None,
        _lock_file,
        N_("the lock file (unset: beside the output folder, see _store/lockfile.py)"),
        env=ENV_LOCK_FILE,
    )
    replay: bool = _option(
        True,
        _boolean("replay"),
        N_("return stored results for identical requests at 0 credits"),
        configurable=True,
        live=True,
    )
    max_credits: int | None = _option(
        None,
        _whole("max_credits", N_("a whole number of credits, 0 or more")),
        N_("session budget: refuse a job that would cross it"),
        env=ENV_MAX_CREDITS,
        configurable=True,
        live=True,
    )
    on_missing: str = _option(
        "error",
        _choice("on_missing", lambda: ("error", "regenerate")),
        N_("when the lock records a request whose image is nowhere: error, or regenerate (paid)"),
        configurable=True,
        live=True,
    )
    plan: str | None = _option(
        None,
        _choice("plan", _plans),
        N_("your plan, to pace by when the service sends no rate headers"),
        env=ENV_PLAN,
        configurable=True,
    )
    status_query: str | None = _option(
        None,
        _status_query,
        N_("the service's job query, e.g. getJob(jobId), when it is not job(id) and cannot be discovered"),
        env=ENV_STATUS_QUERY,
        configurable=True,
    )
    statuses: str | None = _option(
        None,
        _statuses,
        N_('job statuses the service uses that no reading knows, e.g. "upscaling=processing, DELIVERED=completed"'),
        configurable=True,
        live=True,
    )
    mutation: str = _option("generate", _mutation, N_("the GraphQL mutation that submits a job"))
    webhook_secret: str | None = _option(
        None,
        _text("webhook_secret", N_("the account's webhook signing secret")),
        N_("the account's webhook signing secret, for webhook mode (the sandbox's is known)"),
        env=ENV_WEBHOOK_SECRET,
        live=True,
        secret=True,
    )
    size: str = _option("1024x1024", _size, N_("default image size, WIDTHxHEIGHT"), configurable=True, live=True)
    preview_px: int = _option(
        1024,
        # 0 (the cell's `--preview none`): a link-only card, no image bytes in the notebook
        lambda value: (
            0
            if value == "0" or (value == 0 and not isinstance(value, bool))
            else _whole("preview_px", N_("0 (no image) or a whole number of pixels from 16 to 4096"), 16, 4096)(value)
        ),
        N_("long side of the inline preview, in pixels; 0: a link-only card, no image in the notebook"),
        configurable=True,
        live=True,
    )
    background: bool = _option(
        False,
        _boolean("background"),
        N_("%%flux cells return at once and fill in later, as with --background"),
        configurable=True,
        live=True,
    )
    language: str = _option(
        "en",
        _language,
        N_("language of messages, labels and help: en or ko, else the process locale's (LANG=ko_KR.UTF-8)"),
        env=ENV_LANG,
        configurable=True,
        live=True,
    )
    sandbox_speed: float = _option(
        4.0,
        _positive("sandbox_speed", N_("a positive number (inf: no waiting)"), infinite=True),
        N_("the bundled sandbox's speed factor (1: the real service's timings)"),
        env=ENV_SANDBOX_SPEED,
        live=True,
    )
    sandbox_plan: str = _option(
        "pro", _choice("sandbox_plan", _plans), N_("the bundled sandbox's plan"), env=ENV_SANDBOX_PLAN, live=True
    )
    sandbox_credits: int = _option(
        5000,
        _whole("sandbox_credits", N_("a whole number of credits, 0 or more")),
        N_("the bundled sandbox's starting credits"),
        env=ENV_SANDBOX_CREDITS,
        live=True,
    )

    @property
    def origin(self) -> str:
        """Which service makes this client's images: "sandbox" for the bundled one (whatever its port), else
        the API's scheme://host[:port]. A stored result replays only for the origin that made it."""
        return SANDBOX_ORIGIN if self.sandbox else origin_of(self.base_url)

    def service(self) -> tuple[Any, ...]:
        """What a client is built for (key, address, wire format, folder, plan...): a change of it needs a new
        client, while a running one takes the `live` options (replay, budget, timeout, sizes) as they change."""
        return tuple(getattr(self, f.name) for f in fields(self) if f.name not in _LIVE)


OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in fields(Settings) if "option" in f.metadata}
CONFIGURABLE = tuple(name for name, option in OPTIONS.items() if option.configurable)  # %config Flux.<name>
ENVIRONMENT = (ENV_API_KEY, ENV_BASE_URL, *(option.env for option in OPTIONS.values() if option.env))
_LIVE = frozenset(name for name, option in OPTIONS.items() if option.live)


def given(value: Any) -> bool:
    return value is not None and not (isinstance(value, str) and not value.strip())


def checked(name: str, value: Any, where: str = "") -> Any:
    """`value` as option `name` uses it (None or blank: unset, None), or an InvalidRequestError that says what to
    give instead, naming `where` it was given (`%config Flux.timeout`, `DOITONG_TIMEOUT`)."""
    if not given(value):
        return None
    try:
        return OPTIONS[name].check(value)
    except InvalidRequestError as exc:
        if not where:
            raise
        raise InvalidRequestError(f"{where}: {exc}", field=name, value=value) from None


def help_for(name: str) -> str:
    """An option's help as shown (`%config Flux`, `doitong-nb config`), in the language of that moment: what it
    does, and where it comes from when unset."""
    option = OPTIONS[name]
    default = _("none") if option.default is None else repr(option.default)
    if option.env:
        said = _("{help} (unset: the settings file, then {variable}, else {default})")
        return said.format(help=_(option.help), variable=option.env, default=default)
    return _("{help} (unset: {default})").format(help=_(option.help), default=default)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()

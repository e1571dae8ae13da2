"""Where settings come from: explicit arguments, then the environment, then the bundled sandbox.

With no DOITONG_API_KEY (and no explicit key) the package starts its own sandbox once per process
and says so once, so that every example runs offline and never spends a real credit.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from . import _contract as contract
from ._errors import AuthenticationError, InvalidRequestError, remember_secret

if TYPE_CHECKING:
    from .sandbox import Sandbox

ENV_TRANSPORT = "DOITONG_TRANSPORT"
ENV_OUTPUT_DIR = "DOITONG_OUTPUT_DIR"
ENV_LOCK_FILE = "DOITONG_LOCK_FILE"
ENV_SANDBOX_SPEED = "DOITONG_SANDBOX_SPEED"
ENV_SANDBOX_PLAN = "DOITONG_SANDBOX_PLAN"
ENV_SANDBOX_CREDITS = "DOITONG_SANDBOX_CREDITS"
DEFAULT_OUTPUT_DIR = "flux_outputs"
DEFAULT_TIMEOUT = 600.0  # seconds to wait for one job before handing back its id
DEFAULT_SANDBOX_SPEED = 4.0  # brisk demos; DOITONG_SANDBOX_SPEED=1 gives the real service's timings
DEFAULT_SANDBOX_PLAN = "pro"
DEFAULT_SANDBOX_CREDITS = 5000
HTTP_TIMEOUT = 30.0  # one HTTP exchange
SANDBOX_ORIGIN = "sandbox"


@dataclass(frozen=True)
class Settings:
    """Resolved connection settings; the key never appears in the repr."""

    api_key: str = field(repr=False)
    base_url: str
    transport: str
    output_dir: Path
    timeout: float
    sandbox: bool
    store: str | None = None  # the shared fsspec store when output_dir is a URL (output_dir is then a local cache)
    lock_file: Path | None = None  # None: beside the output folder, or named after the store (lockfile.py)

    @property
    def origin(self) -> str:
        """Which service makes this client's images: "sandbox" for the bundled one (whatever its port), else
        the API's scheme://host[:port]. A stored result replays only for the origin that made it."""
        return SANDBOX_ORIGIN if self.sandbox else origin_of(self.base_url)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


_sandbox: Sandbox | None = None
_sandbox_lock = threading.Lock()


def shared_sandbox() -> Sandbox:
    """The process's bundled sandbox, started on first use and announced once on stderr."""
    global _sandbox
    with _sandbox_lock:
        if _sandbox is None:
            from .sandbox import Sandbox

            speed = float(os.environ.get(ENV_SANDBOX_SPEED, DEFAULT_SANDBOX_SPEED))
            _sandbox = Sandbox(
                plan=os.environ.get(ENV_SANDBOX_PLAN, DEFAULT_SANDBOX_PLAN),
                credits=int(os.environ.get(ENV_SANDBOX_CREDITS, DEFAULT_SANDBOX_CREDITS)),
                speed=speed,
            )
            _sandbox.start()
            print(
                f"doitong_nb: no {contract.ENV_API_KEY} set, so images come from the bundled offline sandbox "
                f"at {_sandbox.base_url} (procedural, marked SANDBOX, {speed:g}x the real speed, no real credits).",
                file=sys.stderr,
            )
        return _sandbox


def checked_api_key(key: str | None) -> str | None:
    """The key without surrounding whitespace (a pasted `.env` line ends in a newline), None when empty.

    A key with a character an HTTP header cannot carry is refused before any request, by position, never
    by showing it: httpx would put the whole key, escaped, into its error message.
    """
    if key is None:
        return None
    if not isinstance(key, str):
        raise AuthenticationError(f"the API key must be text, not {type(key).__name__}")
    key = key.strip()
    for position, char in enumerate(key, start=1):
        if not "\x21" <= char <= "\x7e":
            remember_secret(key)
            raise AuthenticationError(
                f"the API key has a character an HTTP header cannot carry ({_describe(char)}) at position "
                f"{position} of {len(key)}; copy the key again, without spaces or line breaks, into "
                f"{contract.ENV_API_KEY} or api_key=..."
            )
    if key:
        remember_secret(key)
    return key or None


def _describe(char: str) -> str:
    return "a space" if char == " " else f"U+{ord(char):04X}"


def resolve(
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    transport: str | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> Settings:
    """Explicit arguments win; the key is looked up argument > %flux_login > environment > saved key (login.py);
    no key anywhere means the sandbox."""
    from . import _login as login

    key = (
        checked_api_key(api_key)
        or checked_api_key(login.current())
        or checked_api_key(os.environ.get(contract.ENV_API_KEY))
        or checked_api_key(login.saved())
    )
    url = base_url or os.environ.get(contract.ENV_BASE_URL) or None
    use_sandbox = key is None and url is None
    if use_sandbox:
        box = shared_sandbox()
        key, url = box.api_key, box.base_url
    elif key is None:
        raise AuthenticationError(f"no API key for {url}: set {contract.ENV_API_KEY} or pass api_key=...")
    transport = transport or os.environ.get(ENV_TRANSPORT) or "graphql"
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    if timeout <= 0:
        raise InvalidRequestError(
            f"timeout {timeout} must be a positive number of seconds", field="timeout", value=timeout
        )
    output, store = _output(output_dir or os.environ.get(ENV_OUTPUT_DIR) or DEFAULT_OUTPUT_DIR)
    lock_file = os.environ.get(ENV_LOCK_FILE)
    return Settings(
        api_key=key,
        base_url=(url or contract.PRODUCTION_BASE_URL).rstrip("/"),
        transport=transport,
        output_dir=output,
        timeout=timeout,
        sandbox=use_sandbox,
        store=store,
        lock_file=Path(lock_file) if lock_file else None,
    )


def _output(value: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """(the local working folder, the shared store's URL or None) for an output_dir setting.

    A local folder (or `file://` URL) is used as it is. An fsspec URL (`s3://bucket/prefix`, `memory://x`...)
    is the shared store; the journal, sidecars and working copies then live in a per-machine folder of the
    user's cache directory named after the URL.
    """
    from ._stores import is_url

    text = os.fspath(value)
    if not is_url(text):
        return Path(text.removeprefix("file://")), None
    import hashlib
    import re

    import platformdirs

    url = text.rstrip("/")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", url.split("://", 1)[1].rsplit("@", 1)[-1]).strip("-")[:60]
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return platformdirs.user_cache_path("doitong-nb") / "stores" / f"{slug}-{digest}", url

"""API key checks, before any request: a key an HTTP header cannot carry is refused by position, never shown."""

from __future__ import annotations

from doitong_nb._core.env import ENV_API_KEY
from doitong_nb._core.errors import AuthenticationError
from doitong_nb._core.redaction import remember_secret


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
                f"{ENV_API_KEY} or api_key=..."
            )
    if key:
        remember_secret(key)
    return key or None


def _describe(char: str) -> str:
    return "a space" if char == " " else f"U+{ord(char):04X}"

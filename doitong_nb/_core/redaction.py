"""Redaction: every key this process used is scrubbed, in each of its encodings, from the errors it builds."""

from __future__ import annotations

import base64
import functools
from urllib.parse import quote, quote_plus

_SECRETS: set[str] = set()  # every key this process has used: no DoitongError message ever carries one


def remember_secret(secret: str) -> None:
    """Register a key so that every DoitongError built from now on is scrubbed of it, in any encoding."""
    if secret and len(secret) >= 4:
        _SECRETS.add(secret)


@functools.cache
def _encodings(secret: str) -> list[str]:
    """The forms a key takes in text that picked it up: raw, escaped (a header's or a bytes repr), base64 and
    percent-encoded, alone or inside an Authorization value; longest first, so no form is half replaced."""
    forms = {secret, secret.encode("unicode_escape").decode("ascii"), repr(secret.encode())[2:-1]}
    for plain in (secret, f"Bearer {secret}"):
        raw = plain.encode()
        forms |= {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
        forms |= {b.rstrip("=") for b in (base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode())}
    forms |= {quote(secret, safe=""), quote_plus(secret)}
    return sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)


def redact(text: str, secret: str | None = None) -> str:
    """Remove `secret` and every remembered key, in each of their encodings, from text that may hold one."""
    for key in ({secret} if secret else set()) | _SECRETS:
        if len(key) >= 4:
            for form in _encodings(key):
                text = text.replace(form, "<redacted>")
    return text

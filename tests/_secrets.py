"""One search for an API key in everything a session leaves behind, in every form it could take there.

A key can leak encoded: UTF-16 in a Windows-written file, base64 in a Basic/Bearer header or a data: URL,
percent-encoded in a URL's query, escaped in a repr or JSON string. Searching only the raw bytes misses those.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus


def _base64_cores(data: bytes) -> dict[str, bytes]:
    """The part of `data`'s base64 (std and urlsafe) that does not depend on what comes before or after it,
    for each of the three alignments it can have inside a longer encoded blob."""
    cores = {}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data)
        first, last = -(-shift // 3), (shift + len(data)) // 3  # whole 3-byte groups made of `data` only
        core = encoded[4 * first : 4 * last]
        cores[f"base64+{shift}"] = core
        cores[f"urlsafe-base64+{shift}"] = core.replace(b"+", b"-").replace(b"/", b"_")
    return cores


def encoded_forms(secret: str) -> dict[str, bytes]:
    """Every form searched for, named; for the key alone and as `Bearer <key>`."""
    forms: dict[str, bytes] = {}
    for label, text in (("key", secret), ("bearer", f"Bearer {secret}")):
        raw = text.encode()
        forms |= {
            f"{label} utf-8": raw,
            f"{label} utf-16-le": text.encode("utf-16-le"),
            f"{label} utf-16-be": text.encode("utf-16-be"),
            f"{label} percent": quote(text, safe="").encode(),
            f"{label} percent-plus": quote_plus(text).encode(),
            f"{label} repr": repr(text)[1:-1].encode(),
            f"{label} json": json.dumps(text)[1:-1].encode(),
            f"{label} unicode-escape": text.encode("unicode_escape"),
        }
        forms |= {f"{label} {name}": core for name, core in _base64_cores(raw).items()}
    return forms


def files_under(*roots: Path) -> dict[str, bytes]:
    """Every file below `roots` (a SQLite database, its WAL and journal included), by path."""
    return {str(p): p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


def secret_leaks(secret: str, places: Mapping[str, bytes | str] | Iterable[tuple[str, bytes | str]]) -> list[str]:
    """`"<place>: <form>"` for every place that holds the secret in any of its forms; [] when none does."""
    forms = encoded_forms(secret)
    items = places.items() if isinstance(places, Mapping) else places
    found = []
    for place, content in items:
        data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
        found += [f"{place}: {name}" for name, form in forms.items() if form in data]
    return found

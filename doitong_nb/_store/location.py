"""Where results live for an output_dir setting: a local folder, or for a store URL a per-machine working copy."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def store_location(value: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """(the local working folder, the shared store's URL or None) for an output_dir setting.

    A local folder (or `file://` URL) is used as it is. An fsspec URL (`s3://bucket/prefix`, `memory://x`...)
    is the shared store; the journal, sidecars and working copies then live in a per-machine folder of the
    user's cache directory named after the URL.
    """
    from doitong_nb._store.remote import is_url

    text = os.fspath(value)
    if not is_url(text):
        return Path(text.removeprefix("file://")), None
    import re

    import platformdirs

    url = text.rstrip("/")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", url.split("://", 1)[1].rsplit("@", 1)[-1]).strip("-")[:60]
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return platformdirs.user_cache_path("doitong-nb") / "stores" / f"{slug}-{digest}", url

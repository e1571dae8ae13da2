"""The image bytes as the CDN served them: a stored file minus the provenance our store embedded.

Written apart from _store/provenance.py on purpose: a test that compares a stored file with the CDN's own hash must not
trust the code under test to undo what it did.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_JPEG_MARKER = b"\xff\xfe"  # COM
_JPEG_PROVENANCE = b"doitong-provenance:"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEYWORD = b"doitong:provenance\0"


def served_bytes(path: Path) -> bytes:
    """`path`'s bytes without our provenance segments (JPEG COM) or chunk (PNG iTXt)."""
    data = path.read_bytes()
    if data.startswith(_PNG_SIGNATURE):
        return _png_without(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_without(data)
    raise ValueError(f"{path} is neither JPEG nor PNG")


def served_sha256(path: Path) -> str:
    return hashlib.sha256(served_bytes(path)).hexdigest()


def _jpeg_without(data: bytes) -> bytes:
    kept, at = [data[:2]], 2
    while data[at] == 0xFF and data[at + 1] not in (0xDA, 0xD9):  # segments up to the scan
        end = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        segment = data[at:end]
        if not (segment[:2] == _JPEG_MARKER and segment[4:].startswith(_JPEG_PROVENANCE)):
            kept.append(segment)
        at = end
    return b"".join([*kept, data[at:]])


def _png_without(data: bytes) -> bytes:
    kept, at = [data[:8]], 8
    while at < len(data):
        end = at + 12 + int.from_bytes(data[at : at + 4], "big")
        chunk = data[at:end]
        if not (chunk[4:8] == b"iTXt" and chunk[8:].startswith(_PNG_KEYWORD)):
            kept.append(chunk)
        at = end
    return b"".join(kept)

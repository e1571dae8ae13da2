"""Provenance inside the image itself: a JPEG COM segment or a PNG iTXt chunk written while the file is
copied, and read back by `doitong_nb.read_provenance`.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path
from typing import IO, Any

from doitong_nb._core.errors import DownloadError
from doitong_nb._core.i18n import _

CHUNK = 1 << 20


JPEG_SOI = b"\xff\xd8"


_JPEG_COM = b"\xff\xfe"


_JPEG_MARKER = b"doitong-provenance:"


_JPEG_MAX_SEGMENT = 0xFFFF - 2  # a segment's length field counts itself


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


_PNG_KEYWORD = b"doitong:provenance"


def copy_jpeg_with(src: IO[bytes], dst: Any, payload: bytes) -> None:
    dst.write(src.read(2))
    head = src.read(4)
    while len(head) == 4 and head[0] == 0xFF and 0xE0 <= head[1] <= 0xEF:
        dst.write(head)
        copy_exact(src, dst, int.from_bytes(head[2:], "big") - 2)
        head = src.read(4)
    room = _JPEG_MAX_SEGMENT - len(_JPEG_MARKER)
    for start in range(0, len(payload), room):
        piece = _JPEG_MARKER + payload[start : start + room]
        dst.write(_JPEG_COM + (len(piece) + 2).to_bytes(2, "big") + piece)
    dst.write(head)
    shutil.copyfileobj(src, dst, CHUNK)


def _jpeg_provenance(f: IO[bytes]) -> bytes | None:
    """Our COM segments, joined (long provenance spans several); segments end at the scan (SOS)."""
    f.seek(2)
    pieces = []
    while (head := f.read(4)) and len(head) == 4 and head[0] == 0xFF and head[1] not in (0xDA, 0xD9):
        body_size = int.from_bytes(head[2:], "big") - 2
        if head[:2] == _JPEG_COM:
            body = f.read(body_size)
            if body.startswith(_JPEG_MARKER):
                pieces.append(body[len(_JPEG_MARKER) :])
        else:
            f.seek(body_size, os.SEEK_CUR)
    return b"".join(pieces) if pieces else None


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")


def copy_png_with(src: IO[bytes], dst: Any, payload: bytes) -> None:
    dst.write(src.read(8))
    while len(head := src.read(8)) == 8:
        if head[4:] == b"IEND":
            # keyword, compression flag and method, empty language tag and translated keyword, text
            dst.write(_png_chunk(b"iTXt", _PNG_KEYWORD + b"\0\0\0\0\0" + payload))
            dst.write(head)
            shutil.copyfileobj(src, dst, CHUNK)
            return
        dst.write(head)
        copy_exact(src, dst, int.from_bytes(head[:4], "big") + 4)
    raise DownloadError(_("the downloaded PNG has no IEND chunk"))


def _png_provenance(f: IO[bytes]) -> bytes | None:
    f.seek(8)
    while len(head := f.read(8)) == 8 and head[4:] != b"IEND":
        size = int.from_bytes(head[:4], "big")
        if head[4:] != b"iTXt":
            f.seek(size + 4, os.SEEK_CUR)
            continue
        keyword, _, rest = f.read(size).partition(b"\0")
        f.seek(4, os.SEEK_CUR)
        if keyword == _PNG_KEYWORD:
            text = rest[2:].split(b"\0", 2)[2]
            return zlib.decompress(text) if rest[0] else text
    return None


def read_embedded_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance a stored JPEG or PNG carries in its own metadata; None if it has none."""
    path = Path(path)
    kind = image_format(path)
    if kind is None:
        return None
    with open(path, "rb") as f:
        raw = _jpeg_provenance(f) if kind == "jpg" else _png_provenance(f)
    return json.loads(raw.decode("utf-8")) if raw is not None else None


def image_format(path: Path) -> str | None:
    """'jpg' or 'png' from the file's first bytes (never from a URL or a name the server chose)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(JPEG_SOI + b"\xff"):
        return "jpg"
    if head == PNG_SIGNATURE:
        return "png"
    return None


def copy_exact(src: IO[bytes], dst: Any, size: int) -> None:
    while size > 0:
        block = src.read(min(size, CHUNK))
        if not block:
            raise DownloadError(_("the downloaded image ends in the middle of a segment"))
        dst.write(block)
        size -= len(block)

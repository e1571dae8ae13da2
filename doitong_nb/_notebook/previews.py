"""Inline previews: a result's full-resolution file as a small sRGB JPEG or WebP, within a byte budget, cached
by file identity so a re-display costs nothing.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

from PIL import Image, ImageCms, ImageOps

# Raw preview bytes we aim for. A card carries them once, base64 in its HTML (display.py says why): 70 KB is
# ~94 KB encoded, so a card with its caption stays within 100 KB of notebook whatever the image's size.
_PREVIEW_BUDGET = 70_000


_QUALITIES = (82, 72, 62, 50)


_SRGB = ImageCms.createProfile("sRGB")


def fit(width: int, height: int, max_px: int) -> tuple[int, int]:
    """The size with the long side at most max_px, aspect kept, never upscaled."""
    scale = min(1.0, max_px / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_srgb(im: Image.Image) -> Image.Image:
    """Bake a non-sRGB ICC profile into the pixels, because the preview carries no profile."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA"):
        return im
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(im, source, _SRGB, outputMode=im.mode)
    except (ImageCms.PyCMSError, OSError):
        return im


def _encode(im: Image.Image, fmt: str, quality: int = 0) -> bytes:
    # Explicit empty metadata: `im` is fresh, but say so anyway so no Pillow default can sneak any in.
    buffer = io.BytesIO()
    if fmt == "JPEG":
        im.save(buffer, fmt, quality=quality, exif=b"", icc_profile=None, optimize=True, progressive=True, comment=b"")
    else:  # PNG: lossless, for images with alpha
        im.save(buffer, fmt, optimize=True)
    return buffer.getvalue()


def choose_encoding(im: Image.Image) -> tuple[bytes, str]:
    """JPEG at the highest quality within budget; PNG for an image with alpha (halved until within budget).

    Both are types every browser and exporter understands (nbconvert, Quarto, GitHub's viewer).
    """
    if im.mode == "RGBA":
        data = _encode(im, "PNG")
        while len(data) > _PREVIEW_BUDGET and min(im.size) > 64:
            im = im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS)
            data = _encode(im, "PNG")
        return data, "image/png"
    for quality in _QUALITIES:
        data = _encode(im, "JPEG", quality)
        if len(data) <= _PREVIEW_BUDGET:
            break
    return data, "image/jpeg"


@functools.lru_cache(maxsize=32)
def cached_preview(path: str, mtime_ns: int, size: int, max_px: int) -> tuple[bytes, str, tuple[int, int]]:
    """The preview, its mime type and pixel size; mtime_ns and size are in the key so an edited file is re-read."""
    with Image.open(path) as im:
        target = fit(*im.size, max_px)
        if im.format == "JPEG":  # decode at a reduced DCT scale, leaving 2x for a clean resample
            im.draft("RGB", (target[0] * 2, target[1] * 2))
        has_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
        work = im.convert("RGBA" if has_alpha else "RGB")
    if work.size != target:
        work = work.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)  # box-reduce big PNGs first
    work = _to_srgb(ImageOps.exif_transpose(work))  # in this order: the colour transform drops EXIF
    # A fresh image: no comment, EXIF, ICC or text chunk of the original can reach the preview.
    clean = Image.frombytes(work.mode, work.size, work.tobytes())
    data, mime = choose_encoding(clean)
    if mime == "image/png":  # a halved PNG: its own size
        with Image.open(io.BytesIO(data)) as encoded:
            return data, mime, encoded.size
    return data, mime, clean.size


def preview_of(path: Path, max_px: int) -> tuple[bytes, str, tuple[int, int]]:
    stat = os.stat(path)
    return cached_preview(os.path.abspath(path), stat.st_mtime_ns, stat.st_size, max_px)


def make_preview(path: Path, max_px: int = 1024) -> tuple[bytes, str]:
    """A small metadata-free preview (bytes, mime) of the image at path; cached per file version."""
    data, mime, _ = preview_of(path, max_px)
    return data, mime

"""Procedural stand-in for Flux images, painted by the Doitong sandbox.

The sandbox has no model, yet notebooks built against it should show images that react to the
prompt, change with the seed, replay byte for byte, and can never be mistaken for real output.
So a scene is assembled from the prompt's words, English or Korean (palette and composition, read by
`prompt_words`), painted with numpy noise and shapes on a canvas of at most `WORK_SIDE` pixels,
upscaled, grained at full size, stamped with a visible banner and labelled in the file's own metadata.
The prompt itself is never drawn, so a Hangul prompt can never show as boxes: the only text is the
banner's, in Latin letters that Pillow's built-in font has.
"""

from __future__ import annotations

import colorsys
import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFont
from PIL.PngImagePlugin import PngInfo

from doitong_nb._contract import MAX_SIDE, MIN_SIDE, OUTPUT_FORMATS
from doitong_sandbox.prompt_words import PromptReading, read_prompt

WATERMARK_LINES = ("DOITONG SANDBOX", "not a real Flux image")
WATERMARK_TEXT = " - ".join(WATERMARK_LINES)  # the built-in font has no em dash glyph
METADATA_TEXT = "Doitong sandbox output"
SOFTWARE = "doitong-nb sandbox renderer"
JPEG_QUALITY = 90
PNG_COMPRESS_LEVEL = 3  # a fast zlib level: the sandbox favours speed over file size
WORK_SIDE = 768  # longest side of the painted canvas; larger outputs are upscaled from it
WORK_FRACTION = 0.625  # up to 1024 px the canvas is this fraction of the output (but >= 512 px)
GRAIN_TILE = 256  # the full-size grain is one random tile repeated; noise shows no seam or pattern

_EXIF_IMAGE_DESCRIPTION, _EXIF_SOFTWARE = 0x010E, 0x0131
_WHITE = np.ones((3, 1, 1), np.float32)
_RGB = tuple[int, int, int]

# Palette roles: sky top, sky middle, horizon, ground, accent, light.
_PALETTES: dict[str, tuple[_RGB, ...]] = {
    "neon": ((8, 5, 28), (52, 12, 88), (200, 40, 160), (14, 10, 30), (0, 225, 255), (255, 70, 210)),
    "sunset": (
        (48, 22, 78),
        (205, 74, 70),
        (255, 172, 72),
        (52, 22, 30),
        (255, 112, 34),
        (255, 226, 150),
    ),
    "forest": (
        (96, 150, 140),
        (170, 205, 165),
        (222, 232, 184),
        (22, 62, 32),
        (70, 140, 60),
        (236, 242, 176),
    ),
    "ocean": (
        (22, 70, 140),
        (86, 150, 212),
        (192, 226, 242),
        (10, 52, 96),
        (24, 130, 190),
        (242, 250, 255),
    ),
    "snow": (
        (130, 165, 210),
        (196, 218, 240),
        (240, 246, 252),
        (222, 232, 244),
        (110, 150, 205),
        (255, 255, 255),
    ),
    "desert": (
        (80, 135, 200),
        (196, 182, 156),
        (246, 218, 164),
        (192, 130, 62),
        (222, 160, 80),
        (255, 236, 192),
    ),
    "cosmic": ((2, 2, 12), (18, 10, 46), (70, 34, 104), (10, 8, 24), (130, 86, 255), (255, 236, 250)),
}

_GROUND_CUES = frozenset({"city", "mountain", "ocean", "forest", "dunes", "hills"})


@dataclass(frozen=True)
class _Palette:
    sky_top: np.ndarray
    sky_mid: np.ndarray
    horizon: np.ndarray
    ground: np.ndarray
    accent: np.ndarray
    light: np.ndarray

    @property
    def dark(self) -> bool:
        """Night-like palettes get stars and neon-lit clouds."""
        return float(self.sky_top.mean()) < 0.15


@dataclass
class _Scene:
    """The canvas being painted and everything the layers share."""

    img: np.ndarray  # (3, h, w) float32 in 0..1: planes broadcast far faster than pixels
    pal: _Palette
    cues: frozenset[str]
    key: bytes
    horizon: float
    glow: tuple[float, float]

    @property
    def h(self) -> int:
        return self.img.shape[1]

    @property
    def w(self) -> int:
        return self.img.shape[2]

    @property
    def s(self) -> int:
        return min(self.w, self.h)

    @property
    def u(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.w, dtype=np.float32)[None, :]

    @property
    def v(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.h, dtype=np.float32)[:, None]

    def rng(self, layer: str) -> np.random.Generator:
        """One stream per layer, so a layer's shapes do not shift when another layer changes."""
        return _rng(self.key, layer)


def render(
    prompt: str,
    width: int,
    height: int,
    seed: int,
    *,
    raw: bool = False,
    output_format: str = "jpeg",
) -> bytes:
    """Encoded sandbox image for a request; identical arguments give identical bytes."""
    fmt = output_format.lower()
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, not {output_format!r}")
    for name, side in (("width", width), ("height", height)):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise ValueError(f"{name} must be in {MIN_SIDE}..{MAX_SIDE}, not {side}")
    image = _paint(prompt, width, height, seed, raw)
    _stamp_watermark(image)
    return _encode(image, fmt)


def _paint(prompt: str, width: int, height: int, seed: int, raw: bool) -> Image.Image:
    """Paint the scene on a small canvas, then bring it to full size with full-size grain."""
    key = hashlib.sha256(f"doitong-sandbox\0{seed}\0{prompt}".encode()).digest()
    long_side = max(width, height)
    scale = min(1.0, WORK_SIDE / long_side, max(512 / long_side, WORK_FRACTION))
    w, h = max(8, round(width * scale)), max(8, round(height * scale))
    scene = _compose(read_prompt(prompt), key, w, h)
    image = _finish(scene, raw)
    if (w, h) != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    return _add_grain(image, key, raw)


def _compose(reading: PromptReading, key: bytes, w: int, h: int) -> _Scene:
    """Lay the layers the prompt asks for, back to front."""
    cues = reading.cues
    pal = _palette(reading.palettes, key)
    rng = _rng(key, "layout")
    if "ocean" in cues:
        horizon = rng.uniform(0.52, 0.62)
    elif "city" in cues:
        horizon = rng.uniform(0.8, 0.88)
    elif cues & _GROUND_CUES:
        horizon = rng.uniform(0.6, 0.7)
    elif "space" in cues:
        horizon = 1.0
    else:
        horizon = rng.uniform(0.62, 0.75)
    glow = (rng.uniform(0.2, 0.8), horizon - rng.uniform(0.08, 0.22))
    scene = _Scene(np.zeros((3, h, w), np.float32), pal, cues, key, horizon, glow)
    if cues & _GROUND_CUES or "space" in cues:
        _sky(scene)
    else:
        _abstract(scene)
    if "space" in cues:
        _galaxy(scene)
    if "space" in cues or pal.dark:
        _stars(scene, 0.0025 if "space" in cues else 0.0006)
    if "space" in cues and not cues & _GROUND_CUES:
        _planet(scene)
    else:
        _glow(scene)
    if cues & _GROUND_CUES:
        _clouds(scene)
    if "mountain" in cues:
        _mountains(scene)
    if "hills" in cues:
        _rolling(scene, "hills", dunes=False)
    if "dunes" in cues:
        _rolling(scene, "dunes", dunes=True)
    if "forest" in cues:
        _forest(scene)
    if "city" in cues:
        _city(scene)
    if "ocean" in cues:
        _ocean(scene)
    if "flying" in cues:
        _flyers(scene)
    if "figure" in cues:
        _figure(scene)
    if "snowfall" in cues:
        _snowfall(scene)
    return scene


# --- palette -------------------------------------------------------------------------------


def _palette(ranked: tuple[str, ...], key: bytes) -> _Palette:
    """The best-scoring palette sets the sky; a runner-up lends its ground and accent."""
    if ranked:
        colours = list(_PALETTES[ranked[0]])
        if len(ranked) > 1:
            second = _PALETTES[ranked[1]]
            colours[3], colours[4] = second[3], second[4]
    else:
        colours = _hashed_palette(key)
    rng = _rng(key, "palette")
    jittered = [_jitter(c, rng.uniform(-0.025, 0.025), rng.uniform(0.92, 1.08)) for c in colours]
    return _Palette(*jittered)


def _hashed_palette(key: bytes) -> list[_RGB]:
    """A harmonious palette around a hue taken from the hash, for prompts with no colour words."""
    hue = key[0] / 256.0
    spec = (
        (0.0, 0.6, 0.25),
        (0.05, 0.5, 0.6),
        (0.12, 0.35, 0.92),
        (-0.08, 0.5, 0.2),
        (0.5, 0.75, 0.95),
        (0.15, 0.15, 1.0),
    )
    out: list[_RGB] = []
    for dh, sat, val in spec:
        r, g, b = colorsys.hsv_to_rgb((hue + dh) % 1.0, sat, val)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


def _jitter(colour: _RGB, hue_shift: float, value_scale: float) -> np.ndarray:
    """Nudge a colour so that seeds of one prompt differ slightly in tone too."""
    hue, sat, val = colorsys.rgb_to_hsv(*(c / 255.0 for c in colour))
    rgb = colorsys.hsv_to_rgb((hue + hue_shift) % 1.0, sat, min(1.0, val * value_scale))
    return np.array(rgb, np.float32).reshape(3, 1, 1)


# --- primitives ----------------------------------------------------------------------------


def _rng(key: bytes, name: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key + name.encode()).digest()[:16], "big"))


def _resize(a: np.ndarray, w: int, h: int) -> np.ndarray:
    """Smooth float resampling through Pillow's C code, much faster than doing it in numpy."""
    return np.array(Image.fromarray(a).resize((w, h), Image.Resampling.BICUBIC))


def _fbm(
    rng: np.random.Generator,
    w: int,
    h: int,
    cells: float,
    octaves: int,
    gain: float = 0.5,
    stretch: tuple[float, float] = (1.0, 1.0),
    unit: int = 0,
) -> np.ndarray:
    """Fractal value noise in 0..1, mean 0.5, `cells` per `unit` pixels (default: the shorter side).

    Octaves accumulate on a doubling pyramid, so the cost is about one full-size resize.
    """
    unit = unit or min(w, h)
    gx = max(2, round(cells * stretch[0] * w / unit))
    gy = max(2, round(cells * stretch[1] * h / unit))
    acc = rng.random((gy, gx), dtype=np.float32)
    amp = 1.0
    for _ in range(octaves - 1):
        gx, gy = min(2 * gx, w), min(2 * gy, h)
        acc = _resize(acc, gx, gy)
        amp *= gain
        acc += amp * rng.random((gy, gx), dtype=np.float32)
    gain_to_std = 0.17 / (float(acc.std()) + 1e-6)  # the small grid has the field's statistics
    acc = (acc - float(acc.mean())) * gain_to_std + 0.5
    return np.clip(_resize(acc, w, h), 0.0, 1.0)


def _noise1d(rng: np.random.Generator, n: int, cells: int, octaves: int, gain: float) -> np.ndarray:
    """Smooth 1-D fractal noise in 0..1 for skylines of ridges, dunes and hills."""
    acc = np.zeros(n, np.float32)
    amp = 1.0
    for octave in range(octaves):
        grid = rng.random(cells * 2**octave + 1, dtype=np.float32)[None, :]
        acc += amp * _resize(grid, n, 1)[0]
        amp *= gain
    acc -= acc.min()
    return acc / (float(acc.max()) + 1e-6)


def _smooth(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _ramp(t: np.ndarray, stops: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """Map 0..1 values through a colour gradient (a 256-entry lookup table)."""
    pos = np.array([p for p, _ in stops], np.float32)
    cols = np.stack([c.ravel() for _, c in stops])
    grid = np.linspace(0.0, 1.0, 256, dtype=np.float32)
    idx = (np.clip(t, 0.0, 1.0) * 255.0).astype(np.intp)
    planes = [np.take(np.interp(grid, pos, cols[:, k]).astype(np.float32), idx) for k in range(3)]
    return np.stack(planes)


def _over(img: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> None:
    """Blend colour over img in place with per-pixel alpha, a plane at a time (half the memory traffic)."""
    for plane, c in zip(img, colour, strict=True):
        plane += (c - plane) * alpha


def _span(centre: float, radius: float, n: int) -> tuple[int, int]:
    """Pixel range [lo, hi) covering centre (0..1 of n) +- radius pixels, clamped to the canvas."""
    return max(0, int(centre * n - radius) - 1), min(n, int(centre * n + radius) + 2)


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return a + (b - a) * t


def _hash01(*parts: np.ndarray) -> np.ndarray:
    """Stateless integer hash to 0..1, to decide per window or per flake without a big table."""
    h = np.uint32(0x9E3779B9)
    for i, part in enumerate(parts):
        h = (h ^ (part.astype(np.uint32) * np.uint32(0x85EBCA77 + 2 * i))) * np.uint32(0xC2B2AE3D)
        h ^= h >> np.uint32(15)
    return (h & np.uint32(0xFFFF)).astype(np.float32) / 65536.0


# --- layers --------------------------------------------------------------------------------


def _sky(sc: _Scene) -> None:
    """Vertical gradient from zenith to horizon, then into the ground's dark (if any)."""
    p, hz = sc.pal, sc.horizon
    stops = [
        (0.0, p.sky_top),
        (0.6 * hz, p.sky_mid),
        (hz, p.horizon),
        (min(hz + 0.02, 0.999), _mix(p.horizon, p.ground, 0.6)),
        (1.0, p.ground * 0.6),
    ]
    if hz >= 0.999:
        stops = stops[:3]
    pos = np.array([q for q, _ in stops], np.float32)
    cols = np.stack([c.ravel() for _, c in stops])
    sc.img[:] = np.stack([np.interp(sc.v, pos, cols[:, k]) for k in range(3)]).astype(np.float32)
    y0 = int(hz * sc.h)
    if y0 < sc.h:
        sc.img[:, y0:] *= 0.75 + 0.5 * _fbm(sc.rng("ground"), sc.w, sc.h - y0, 3, 6, unit=sc.s)


def _abstract(sc: _Scene) -> None:
    """No scene words: marbled bands of the palette, warped by noise, with engraved contours."""
    p, rng = sc.pal, sc.rng("abstract")
    a = _fbm(rng, sc.w, sc.h, 2.5, 6)
    b = _fbm(rng, sc.w, sc.h, 1.5, 4)
    angle = rng.uniform(0, np.pi)
    flow = 0.5 + 0.5 * np.sin(6.0 * (2.0 * b + np.cos(angle) * sc.u + np.sin(angle) * sc.v))
    t = 0.55 * a + 0.45 * flow
    stops = [
        (0.0, p.ground),
        (0.25, p.sky_top),
        (0.5, p.sky_mid),
        (0.72, p.horizon),
        (0.88, p.accent),
        (1.0, p.light),
    ]
    sc.img[:] = _ramp(t, stops)
    contours = _smooth(0.9, 1.0, np.abs(np.sin(t * np.pi * 14.0)))
    sc.img *= 1.0 - 0.18 * contours


def _glow(sc: _Scene) -> None:
    """Sun or moon with its halo; sunsets burn large, nights get a pale moon."""
    p, (gx, gy) = sc.pal, sc.glow
    dx, dy = (sc.u - gx) * (sc.w / sc.s), (sc.v - gy) * (sc.h / sc.s)
    if "sun" in sc.cues:
        strength, radius, disc, colour = 0.9, 0.35, 0.06, _mix(p.accent, p.light, 0.5)
    elif "moon" in sc.cues or p.dark:
        strength, radius, disc, colour = 0.45, 0.25, 0.035, _mix(p.light, _WHITE, 0.6)
    else:
        strength, radius, disc, colour = 0.35, 0.45, 0.0, p.light
    halo = np.exp(-dy * dy / (radius * radius)) * np.exp(-dx * dx / (radius * radius))  # separable
    sc.img += (colour * strength) * halo
    if disc:
        y0, y1 = _span(gy, disc * sc.s, sc.h)
        x0, x1 = _span(gx, disc * sc.s, sc.w)
        if y1 > y0 and x1 > x0:
            d = np.sqrt(dx[:, x0:x1] ** 2 + dy[y0:y1] ** 2)
            _over(sc.img[:, y0:y1, x0:x1], _mix(colour, _WHITE, 0.5), np.clip((disc - d) * sc.s, 0.0, 1.0))


def _clouds(sc: _Scene) -> None:
    """Horizontal cloud banks; lit by neon from below on dark palettes."""
    p, hz = sc.pal, sc.horizon
    y1 = int(hz * sc.h)
    n = _fbm(sc.rng("clouds"), sc.w, y1, 2.0, 6, stretch=(0.5, 2.0), unit=sc.s)
    v = sc.v[:y1]
    fade = np.clip((hz - v) * 4.0, 0.0, 1.0) * np.clip(v * 3.0, 0.2, 1.0) * (0.45 if p.dark else 0.7)
    colour = _mix(p.sky_mid, p.accent, 0.55) if p.dark else _mix(p.light, p.horizon, 0.3)
    _over(sc.img[:, :y1], colour * (0.75 + 0.5 * n), _smooth(0.55, 0.82, n) * fade)


def _stars(sc: _Scene, density: float) -> None:
    """Points of power-law brightness; the brightest get a small cross."""
    rng = sc.rng("stars")
    count = int(density * sc.w * sc.h)
    xs = rng.integers(1, sc.w - 1, count)
    ys = rng.integers(1, sc.h - 1, count)
    bright = (rng.random(count, dtype=np.float32) ** 4) * 1.2 + 0.15
    idx = ys * sc.w + xs
    layer = np.zeros(sc.w * sc.h, np.float32)
    np.add.at(layer, idx, bright)
    big = bright > 0.7
    for off in (1, -1, sc.w, -sc.w):
        np.add.at(layer, idx[big] + off, bright[big] * 0.35)
    y1 = min(sc.h, int(sc.horizon * sc.h))
    layer = layer.reshape(sc.h, sc.w)[:y1] * np.clip((sc.horizon - sc.v[:y1]) * 8.0, 0.0, 1.0)
    sc.img[:, :y1] += layer * _mix(sc.pal.light, _WHITE, 0.7)


def _galaxy(sc: _Scene) -> None:
    """A nebulous band across the sky, with dark dust lanes."""
    p, rng = sc.pal, sc.rng("galaxy")
    neb = _fbm(rng, sc.w, sc.h, 3.0, 7)
    dust = _fbm(rng, sc.w, sc.h, 5.0, 5)
    angle = rng.uniform(-0.9, 0.9)
    cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.6)
    dist = (sc.u - cx) * (sc.w / sc.s) * np.sin(angle) - (sc.v - cy) * (sc.h / sc.s) * np.cos(angle)
    band = np.exp(-((dist / 0.22) ** 2))
    colour = _ramp(neb, [(0.0, p.sky_mid), (0.5, p.accent), (1.0, p.light)])
    sc.img += colour * (band * _smooth(0.3, 0.85, neb) * 0.75)
    sc.img *= 1.0 - 0.6 * band * _smooth(0.5, 0.72, dust)


def _planet(sc: _Scene) -> None:
    """A banded planet lit from one side, with a thin bright atmosphere."""
    p, rng = sc.pal, sc.rng("planet")
    r = rng.uniform(0.14, 0.26)
    cx, cy = rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.7)
    dx, dy = (sc.u - cx) * (sc.w / sc.s) / r, (sc.v - cy) * (sc.h / sc.s) / r
    rr = dx * dx + dy * dy
    nz = np.sqrt(np.clip(1.0 - rr, 0.0, 1.0))
    sun = rng.uniform(0, 2 * np.pi)
    lx, ly = np.cos(sun), np.sin(sun)
    lit = np.clip(0.8 * (dx * lx + dy * ly) + 0.6 * nz, 0.0, 1.0)
    bands = _fbm(rng, sc.w, sc.h, 1.5, 5, stretch=(0.3, 4.0))
    surface = _ramp(0.5 + 0.5 * np.sin(dy * 7.0 + bands * 9.0), [(0, p.ground), (0.5, p.accent), (1, p.horizon)])
    inside = np.clip((1.0 - np.sqrt(rr)) * r * sc.s, 0.0, 1.0)
    _over(sc.img, surface * (0.06 + lit), inside)
    rim = np.exp(-(((np.sqrt(rr) - 1.0) * r * 40.0) ** 2)) * np.clip(dx * lx + dy * ly + 0.3, 0.0, 1.0)
    sc.img += p.light * (0.8 * rim)


def _mountains(sc: _Scene) -> None:
    """Three ridged ranges fading into the haze of the horizon, snow-capped when cold."""
    p, rng, hz = sc.pal, sc.rng("mountains"), sc.horizon
    rock = _fbm(rng, sc.w, sc.h, 6.0, 6, gain=0.6)
    cold = "snowfall" in sc.cues or float(p.ground.mean()) > 0.7
    for i, (amp, base) in enumerate(((0.36, 0.0), (0.26, 0.03), (0.17, 0.08))):
        prof = _noise1d(rng, sc.w, 3 + 2 * i, 6, 0.5)
        ridged = 1.0 - np.abs(2.0 * _noise1d(rng, sc.w, 2 + i, 5, 0.55) - 1.0)
        height = 0.55 * prof + 0.45 * ridged
        top = hz + base - amp * height
        y0 = max(0, int(top.min() * sc.h) - 1)
        below = sc.v[y0:] - top[None, :]
        depth = 1.0 - i / 2.0
        facing = _facing(sc, top, below, spread=0.8)
        shade = 0.62 + 0.5 * (rock[y0:] - 0.5) + 0.45 * facing
        colour = _mix(p.ground, p.horizon, 0.7 * depth) * shade
        haze = np.clip(below / 0.25, 0.0, 1.0) * (0.15 + 0.35 * depth)
        colour += (p.horizon - colour) * haze
        if cold or depth > 0.9:
            cap = _smooth(0.0, 0.02, amp * 0.25 * rock[y0:] * height - below) * (height > 0.45)
            colour += (p.light * (0.75 + 0.25 * facing) - colour) * cap
        _over(sc.img[:, y0:], colour, np.clip(below * sc.h, 0.0, 1.0))


def _rolling(sc: _Scene, layer: str, *, dunes: bool) -> None:
    """Rolling hills or wind-shaped dunes: lit by slope, textured by grass or by ripples."""
    p, rng, hz = sc.pal, sc.rng(layer), sc.horizon
    texture = _fbm(rng, sc.w, sc.h, 8.0, 5, stretch=(0.5, 3.0))
    for i, (amp, base) in enumerate(((0.08, 0.0), (0.1, 0.08), (0.12, 0.2))):
        prof = _noise1d(rng, sc.w, 2 + i, 3, 0.35)
        top = hz + base - amp * prof
        y0 = max(0, int(top.min() * sc.h) - 1)
        below = sc.v[y0:] - top[None, :]
        depth = 1.0 - i / 2.0
        facing = _facing(sc, top, below, spread=1.2 if dunes else 2.0)
        if dunes:
            shade = (0.55 + 0.5 * facing) * (0.94 + 0.06 * np.sin(below * sc.h + texture[y0:] * 30.0))
        else:
            shade = (0.75 + 0.25 * facing) * (0.85 + 0.3 * texture[y0:])
        colour = p.ground * shade
        colour += (p.horizon - colour) * (0.55 * depth)
        _over(sc.img[:, y0:], colour, np.clip(below * sc.h, 0.0, 1.0))


def _facing(sc: _Scene, top: np.ndarray, below: np.ndarray, spread: float) -> np.ndarray:
    """0..1, how much the ground under a ridge line faces the light.

    The ridge's lit columns are averaged over a window that widens with depth below the ridge, so
    lit and shaded faces run down and soften like real slopes instead of vertical stripes.
    """
    side = 1.0 if sc.glow[0] > 0.5 else -1.0
    lit = (np.gradient(top) * side > 0).astype(np.float32)
    sums = np.concatenate(([0.0], np.cumsum(lit)))
    x = np.arange(sc.w)
    half = 1 + (np.maximum(below, 0.0) * (spread * sc.h)).astype(np.intp)
    lo, hi = np.maximum(x - half, 0), np.minimum(x + half, sc.w)
    return ((sums[hi] - sums[lo]) / (hi - lo)).astype(np.float32)


def _forest(sc: _Scene) -> None:
    """Two rows of conifers, the far one paler; each tree is a jagged triangle."""
    p, rng, hz = sc.pal, sc.rng("forest"), sc.horizon
    x = np.arange(sc.w, dtype=np.float32)
    for row, (base, size) in enumerate(((0.01, 0.1), (0.09, 0.2))):
        spacing = size * sc.s * 0.28
        n = int(sc.w / spacing) + 3
        cx = (np.arange(n, dtype=np.float32) - 1 + rng.uniform(-0.4, 0.4, n)) * spacing
        height = size * sc.h * rng.uniform(0.55, 1.0, n)
        dx = np.abs(x[None, :] - cx[:, None])
        jag = 1.0 + 0.35 * np.abs(((dx / (spacing * 0.18)) % 1.0) - 0.5)
        top = ((hz + base) * sc.h - height[:, None] + dx * 2.6 * jag).min(axis=0) / sc.h
        y0 = max(0, int(top.min() * sc.h) - 1)
        below = sc.v[y0:] - top[None, :]
        colour = _mix(p.ground * 0.7, p.horizon, 0.45 if row == 0 else 0.0)
        shade = 0.85 + 0.3 * np.clip(1.0 - below * 6.0, 0.0, 1.0)
        _over(sc.img[:, y0:], colour * shade, np.clip(below * sc.h, 0.0, 1.0))


def _city(sc: _Scene) -> None:
    """A far and a near skyline of blocks with a grid of windows, some lit, some neon-edged."""
    p, rng = sc.pal, sc.rng("city")
    base = int(sc.horizon * sc.h)
    cols = np.arange(sc.w)
    for near, (wmin, wmax, hmin, hmax) in enumerate(((0.03, 0.07, 0.1, 0.34), (0.05, 0.11, 0.08, 0.55))):
        widths = rng.integers(int(wmin * sc.s) + 2, int(wmax * sc.s) + 3, sc.w // 2 + 2)
        edges = np.concatenate(([0], np.cumsum(widths))) - rng.integers(0, widths[0])
        heights = (rng.uniform(hmin, hmax, len(widths)) ** 1.4 / hmax**0.4 * sc.h).astype(int) + 4
        bid = np.searchsorted(edges, cols, side="right") - 1
        top = base - heights[bid]
        y0 = max(0, int(top.min()))
        ly = np.arange(y0, base, dtype=np.int32)[:, None] - top.astype(np.int32)[None, :]
        lx = cols - edges[bid]
        period = max(3, int(sc.s * (0.014 if near else 0.009)))
        pane_x = (lx % period < period * 0.55) & (lx >= period // 2) & (lx < widths[bid] - period // 2)
        pane_y = (ly % period < period * 0.55) & (ly >= period)
        column = (bid * 4096 + lx // period) * 2 + near  # one key per window column, hashed with the row
        roll = _hash01(column[None, :], ly // period)
        lit = pane_x & pane_y & (roll < (0.42 if near else 0.3))
        tint = _hash01(bid)
        body = _mix(p.ground * (0.55 if near else 1.0), p.horizon, 0.0 if near else 0.35) * (0.8 + 0.4 * tint)
        window = np.where(roll < 0.12, p.light, _mix(p.light, p.accent, 0.6)) * (0.55 + roll)
        colour = np.where(lit, window, body)
        if near:
            colour = np.where((ly >= 0) & (ly < max(1, period // 3)) & (tint > 0.6), p.accent, colour)
        region = sc.img[:, y0:base]
        region[:] = np.where(ly >= 0, colour, region)


def _ocean(sc: _Scene) -> None:
    """Waves crowding toward the horizon, reflecting sky and the sun's column of light."""
    p, rng, hz = sc.pal, sc.rng("ocean"), sc.horizon
    y0 = int(hz * sc.h)
    v = sc.v[y0:]
    d = np.clip((v - hz) / (1.0 - hz), 0.0, 1.0)
    streak = _fbm(rng, sc.w, sc.h - y0, 6.0, 5, stretch=(0.25, 3.0), unit=sc.s)
    waves = 0.5 + 0.5 * np.sin(2.5 / (d + 0.04) + streak * 9.0 + sc.u * 3.0)
    water = p.horizon + (p.ground - p.horizon) * np.sqrt(d)
    water = water * (0.8 + 0.35 * waves * streak)
    spark = _smooth(0.62, 0.9, 0.55 * streak + 0.45 * waves)
    column = np.exp(-(((sc.u - sc.glow[0]) * (sc.w / sc.s) / (0.06 + 0.3 * d)) ** 2))
    water += p.light * (spark * (0.15 + 0.8 * column))
    rows = np.clip(2 * y0 - np.arange(y0, sc.h), 0, y0 - 1)  # the scene above, mirrored in the water
    wobble = (np.sin(5.0 / (d[:, 0] + 0.04)) * (1.0 + 6.0 * d[:, 0]) * sc.s / 900).astype(np.intp)  # per wave band
    cols = np.clip(np.arange(sc.w)[None, :] + wobble[:, None], 0, sc.w - 1)
    _over(water, sc.img[:, rows[:, None], cols], 0.45 * (1.0 - d) * (0.6 + 0.4 * waves))
    sc.img[:, y0:] = water


def _flyers(sc: _Scene) -> None:
    """Small craft in the sky, each with a glowing underside and a light trail."""
    p, rng = sc.pal, sc.rng("flyers")
    for _ in range(int(rng.integers(5, 13))):
        cy = rng.uniform(0.12, max(0.2, sc.horizon - 0.25))
        cx = rng.uniform(0.05, 0.95)
        size = sc.s * rng.uniform(0.012, 0.03) * (0.5 + cy)
        heading = 1.0 if rng.random() < 0.5 else -1.0
        rx, ry = size * 1.6, size * 0.45
        trail = size * rng.uniform(4.0, 9.0)
        x0 = int(max(0, cx * sc.w - rx - (trail if heading > 0 else 0) - 2))
        x1 = int(min(sc.w, cx * sc.w + rx + (trail if heading < 0 else 0) + 2))
        y0, y1 = int(max(0, cy * sc.h - 3 * ry - 2)), int(min(sc.h, cy * sc.h + 3 * ry + 2))
        if x1 <= x0 or y1 <= y0:
            continue
        x = np.arange(x0, x1, dtype=np.float32)[None, :] - cx * sc.w
        y = np.arange(y0, y1, dtype=np.float32)[:, None] - cy * sc.h
        patch = sc.img[:, y0:y1, x0:x1]
        behind = np.clip(-heading * x / trail, 0.0, 1.0) * (-heading * x > 0)
        streak = np.exp(-((y / (ry * 0.5)) ** 2)) * behind * (1.0 - behind)
        patch += p.accent * (1.4 * streak)
        body = np.clip((1.0 - (x / rx) ** 2 - (y / ry) ** 2) * ry, 0.0, 1.0)
        _over(patch, p.ground * 0.5, body)
        under = np.exp(-((x / rx) ** 2) - ((y - ry * 0.8) / (ry * 0.5)) ** 2)
        patch += p.light * (0.9 * under)


def _figure(sc: _Scene) -> None:
    """A head-and-shoulders silhouette in the centre, rim-lit from the glow's side."""
    p, rng = sc.pal, sc.rng("figure")
    cx = rng.uniform(0.46, 0.54) * sc.w
    rh = sc.s * rng.uniform(0.12, 0.15)
    hy = sc.h * 0.46 - rh * 0.5
    sy = hy + rh * 1.35
    y0 = max(0, int(hy - 2.5 * rh))
    x = np.arange(sc.w, dtype=np.float32)[None, :]
    y = np.arange(y0, sc.h, dtype=np.float32)[:, None]
    side = -1.0 if sc.glow[0] < 0.5 else 1.0

    def mask(shift: float) -> np.ndarray:
        xs = np.abs(x - cx - shift)
        head = (1.0 - (xs / (rh * 0.78)) ** 2 - ((y - hy) / rh) ** 2) * rh * 0.5
        neck = np.minimum(rh * 0.36 + np.maximum(y - sy + rh * 0.3, 0.0) * 0.8 - xs, y - hy)
        ty = sy + rh * 1.3  # torso: a superellipse on top (rounded shoulders), then straight down
        torso = np.where(
            y < ty,
            (1.0 - (xs / (rh * 2.0)) ** 4 - ((y - ty) / (rh * 1.3)) ** 2) * rh * 0.5,
            rh * 2.0 + (y - ty) * 0.15 - xs,
        )
        return np.clip(np.maximum(np.maximum(head, neck), torso), 0.0, 1.0)

    region = sc.img[:, y0:]
    halo = np.exp(-(((x - cx) ** 2 + (y - hy) ** 2) / (rh * 2.2) ** 2))
    region += p.accent * (0.35 * halo)
    body = mask(0.0)
    rim = body * (1.0 - mask(-side * rh * 0.07))
    shade = 0.35 + 0.3 * np.clip((y - hy) / (sc.h - hy), 0.0, 1.0)
    _over(region, p.ground * shade, body)
    _over(region, _mix(p.light, p.accent, 0.3), rim * 0.9)


def _snowfall(sc: _Scene) -> None:
    """Falling flakes in two depths: fine sharp ones, and large soft ones drawn small and upscaled."""
    rng = sc.rng("snowfall")
    fine = np.zeros(sc.h * sc.w, np.float32)
    count = int(0.003 * sc.w * sc.h)
    np.add.at(fine, rng.integers(0, sc.h * sc.w, count), rng.uniform(0.3, 0.8, count).astype(np.float32))
    bw, bh = max(2, sc.w // 4), max(2, sc.h // 4)
    big = np.zeros(bh * bw, np.float32)
    count = int(0.004 * bw * bh)
    np.add.at(big, rng.integers(0, bh * bw, count), rng.uniform(0.5, 1.0, count).astype(np.float32))
    alpha = fine.reshape(sc.h, sc.w) + _resize(big.reshape(bh, bw), sc.w, sc.h)
    _over(sc.img, sc.pal.light, np.clip(alpha, 0.0, 1.0))


# --- finishing -----------------------------------------------------------------------------


def _finish(sc: _Scene, raw: bool) -> Image.Image:
    """Grade the picture: punchy and saturated, or for raw a flatter, warmer, film-like rendition."""
    k = 0.1 if raw else 0.22
    sc.img *= (255.0 - 255.0 * k * (sc.v * 2.0 - 1.0) ** 2) * (1.0 - k * (sc.u * 2.0 - 1.0) ** 2)
    planes = np.clip(sc.img, 0.0, 255.0, out=sc.img).astype(np.uint8)
    image = Image.merge("RGB", [Image.fromarray(plane) for plane in planes])
    image = ImageEnhance.Color(image).enhance(0.72 if raw else 1.15)
    x = np.linspace(0.0, 1.0, 256)
    if raw:
        curves = [(0.06 + 0.86 * (0.5 + (x - 0.5) * 0.8)) * cast for cast in (1.03, 1.0, 0.95)]
    else:
        curves = [x + (x * x * (3.0 - 2.0 * x) - x) * 0.35] * 3
    lut = np.clip(np.concatenate(curves) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image.point(lut.tolist())


def _add_grain(image: Image.Image, key: bytes, raw: bool) -> Image.Image:
    """Full-size grain, so large images keep detail at pixel level after the upscale."""
    rng = _rng(key, "grain")
    sigma = 9.0 if raw else 3.5
    mono = rng.normal(0.0, sigma, (GRAIN_TILE, GRAIN_TILE, 1)).astype(np.float32)
    chroma = rng.normal(0.0, sigma * (0.5 if raw else 0.2), (GRAIN_TILE, GRAIN_TILE, 3))
    tile = Image.fromarray(np.clip(128.0 + mono + chroma, 0, 255).astype(np.uint8))
    grain = Image.new("RGB", image.size)
    for y in range(0, image.height, GRAIN_TILE):
        for x in range(0, image.width, GRAIN_TILE):
            grain.paste(tile, (x, y))
    return ImageChops.add(image, grain, scale=1.0, offset=-128)


# --- marking -------------------------------------------------------------------------------


def _stamp_watermark(image: Image.Image) -> None:
    """A translucent banner along the bottom, sized to stay legible from 256 to 4096 px."""
    w, h = image.size
    size = max(13, round(min(w, h) * 0.034))
    lines: tuple[str, ...] = (WATERMARK_TEXT,)
    font = ImageFont.load_default(size=size)
    if font.getlength(WATERMARK_TEXT) > 0.9 * w:
        lines = WATERMARK_LINES
    widest = max(font.getlength(line) for line in lines)
    if widest > 0.9 * w:
        size = max(8, int(size * 0.9 * w / widest))
        font = ImageFont.load_default(size=size)
    line_h = round(size * 1.25)
    pad = round(size * 0.45)
    tape = max(3, round(size * 0.22))
    banner_h = tape + 2 * pad + line_h * len(lines)
    top = h - banner_h
    region = image.crop((0, top, w, h)).convert("RGBA")
    overlay = Image.new("RGBA", region.size, (0, 0, 0, 150))
    draw = ImageDraw.Draw(overlay)
    for x in range(-tape * 2, w + tape * 2, tape * 4):  # hazard-tape stripes along the top edge
        draw.polygon([(x, tape), (x + tape * 2, 0), (x + tape * 4, 0), (x + tape * 2, tape)], (250, 200, 0, 230))
    stroke = max(0, size // 28)
    for i, line in enumerate(lines):
        y = tape + pad + i * line_h + line_h // 2
        draw.text(
            (w / 2, y),
            line,
            font=font,
            fill=(255, 255, 255, 240),
            anchor="mm",
            stroke_width=stroke,
            stroke_fill=(255, 255, 255, 240),
        )
    image.paste(Image.alpha_composite(region, overlay).convert("RGB"), (0, top))


def _encode(image: Image.Image, fmt: str) -> bytes:
    """Encode with the sandbox label in the file's own metadata."""
    exif = Image.Exif()
    exif[_EXIF_IMAGE_DESCRIPTION] = METADATA_TEXT
    exif[_EXIF_SOFTWARE] = SOFTWARE
    buf = io.BytesIO()
    if fmt == "png":
        info = PngInfo()
        info.add_text("Software", SOFTWARE)
        info.add_text("Comment", METADATA_TEXT)
        image.save(buf, "PNG", pnginfo=info, exif=exif, compress_level=PNG_COMPRESS_LEVEL)
    else:
        image.save(buf, "JPEG", quality=JPEG_QUALITY, comment=METADATA_TEXT, exif=exif)
    return buf.getvalue()

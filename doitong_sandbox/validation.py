"""Turn a submission, in any of its three wire shapes, into a checked `Spec` (CONTRACT.md limits).

Every refusal is a 400 BAD_USER_INPUT whose `field` is the name the caller used on the wire, and whose
message names the value and what is allowed, so a client can show it to its user unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from doitong_nb import _contract as c
from doitong_sandbox.errors import ApiError

_TYPES: dict[str, type] = {
    "service": str,
    "prompt": str,
    "width": int,
    "height": int,
    "version": str,
    "webhookUrl": str,
    "quality": str,
    "seed": int,
    "raw": bool,
    "aspectRatio": str,
    "outputFormat": str,
    "safetyTolerance": int,
    "promptUpsampling": bool,
}
_OPTIONS = tuple(name for name in _TYPES if name not in ("service", "prompt"))


@dataclass(frozen=True)
class Spec:
    """A valid image request; `seed` None means the engine picks one at submission."""

    prompt: str
    width: int
    height: int
    version: str = c.DEFAULT_VERSION
    quality: str = "standard"
    seed: int | None = None
    raw: bool = False
    output_format: str = "jpeg"
    safety_tolerance: int = 2
    prompt_upsampling: bool = False
    webhook_url: str | None = None


def from_image_input(params: Any) -> Spec:
    """`generateImage(input:)` and the REST body: the parameter table's flat names."""
    if not isinstance(params, dict):
        raise _bad("body", f"the request body must be a JSON object, got {type(params).__name__}")
    for name in params:
        if name not in _TYPES:
            raise _bad(name, f"unknown parameter {name!r}; allowed: {', '.join(_TYPES)}")
    return _spec(params, {"service": "service", "prompt": "prompt"})


def from_generate_input(params: dict[str, Any]) -> Spec:
    """`generate(input:)`: `{type, provider, input: {text}, options: {...}, webhookUrl}`."""
    if params.get("type") != "IMAGE":
        raise _bad("type", f"type {params.get('type')!r} is not supported; allowed: 'IMAGE'")
    options = dict(params.get("options") or {})
    if options.get("webhookUrl") is None:
        options["webhookUrl"] = params.get("webhookUrl")
    flat = {
        "service": params.get("provider"),
        "prompt": (params.get("input") or {}).get("text"),
        **options,
    }
    return _spec(flat, {"service": "provider", "prompt": "text"})


def _spec(p: dict[str, Any], names: dict[str, str]) -> Spec:
    def field(name: str) -> str:
        return names.get(name, name)

    for name, kind in _TYPES.items():
        value = p.get(name)
        if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise _bad(field(name), f"{field(name)} {value!r} must be of type {kind.__name__}")
    if p.get("service") != c.SERVICE:
        raise _bad(
            field("service"), f"{field('service')} {p.get('service')!r} is not supported; allowed: {c.SERVICE!r}"
        )
    prompt = (p.get("prompt") or "").strip()
    if not 1 <= len(prompt) <= c.MAX_PROMPT_CHARS:
        raise _bad(
            field("prompt"),
            f"{field('prompt')} has {len(prompt)} characters after trimming; allowed: 1 to {c.MAX_PROMPT_CHARS}",
        )
    width, height = _size(p)
    seed = p.get("seed")
    if seed is not None and not 0 <= seed <= c.MAX_SEED:
        raise _bad("seed", f"seed {seed} is out of range; allowed: 0 to {c.MAX_SEED}")
    tolerance = p.get("safetyTolerance")
    low, high = c.SAFETY_TOLERANCE_RANGE
    if tolerance is not None and not low <= tolerance <= high:
        raise _bad("safetyTolerance", f"safetyTolerance {tolerance} is out of range; allowed: {low} to {high}")
    return Spec(
        prompt=prompt,
        width=width,
        height=height,
        version=_one_of(p, "version", c.VERSIONS, c.DEFAULT_VERSION),
        quality=_one_of(p, "quality", c.QUALITIES, "standard"),
        seed=seed,
        raw=bool(p.get("raw")),
        output_format=_one_of(p, "outputFormat", c.OUTPUT_FORMATS, "jpeg"),
        safety_tolerance=2 if tolerance is None else tolerance,
        prompt_upsampling=bool(p.get("promptUpsampling")),
        webhook_url=_webhook_url(p.get("webhookUrl")),
    )


def _size(p: dict[str, Any]) -> tuple[int, int]:
    ratio, width, height = p.get("aspectRatio"), p.get("width"), p.get("height")
    if ratio is not None:
        if width is not None or height is not None:
            raise _bad(
                "aspectRatio", f"aspectRatio {ratio!r} cannot be combined with width or height; send one or the other"
            )
        try:
            return c.size_for_aspect_ratio(ratio)
        except ValueError as exc:
            raise _bad("aspectRatio", f"aspectRatio: {exc}") from None
    width = c.DEFAULT_SIZE if width is None else width
    height = c.DEFAULT_SIZE if height is None else height
    for name, side in (("width", width), ("height", height)):
        if not c.MIN_SIDE <= side <= c.MAX_SIDE or side % c.SIDE_STEP:
            raise _bad(
                name,
                f"{name} {side} is not allowed; allowed: a multiple of {c.SIDE_STEP} from {c.MIN_SIDE} to {c.MAX_SIDE}",
            )
    if width * height > c.MAX_PIXELS:
        raise _bad("width", f"{width}x{height} has {width * height} pixels; allowed: at most {c.MAX_PIXELS}")
    return width, height


def _one_of(p: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = p.get(name)
    if value is None:
        return default
    if value not in allowed:
        raise _bad(name, f"{name} {value!r} is not supported; allowed: {', '.join(map(repr, allowed))}")
    return value


def _webhook_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad("webhookUrl", f"webhookUrl {url!r} is not an absolute http(s) URL")
    return url


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, c.BAD_USER_INPUT, message, field=field)

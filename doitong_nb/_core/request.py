"""GenerationRequest: every parameter of the contract, checked before anything is sent.

A request is immutable and has one canonical form; its sha256 is the replay key, so two requests
that would produce the same image share a key and a re-run costs nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from doitong_nb import _contract as contract
from doitong_nb._core.errors import InvalidRequestError
from doitong_nb._core.i18n import N_, _

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX×*,]\s*(\d+)\s*$")
MAX_SEED = contract.MAX_SEED


def _bad(field_name: str, value: Any, message: str) -> InvalidRequestError:
    return InvalidRequestError(message, field=field_name, value=value)


def parse_size(text: str) -> tuple[int, int]:
    """'2048x2048' -> (2048, 2048); a clear error for anything else."""
    match = _SIZE_RE.match(str(text))
    if not match:
        said = _("size {text!r} is not of the form WIDTHxHEIGHT, e.g. 1024x1024 or 3840x2160").format(text=text)
        raise _bad("size", text, said)
    return int(match.group(1)), int(match.group(2))


def _nearest_multiples(value: int) -> str:
    low = max(contract.MIN_SIDE, value // contract.SIDE_STEP * contract.SIDE_STEP)
    high = min(contract.MAX_SIDE, low + contract.SIDE_STEP)
    return _("{low} or {high}").format(low=low, high=high) if low != high else str(low)


def _check_side(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(
            name, value, _("{name} {value!r} is not an integer number of pixels").format(name=_(name), value=value)
        )
    if not contract.MIN_SIDE <= value <= contract.MAX_SIDE:
        said = _("{name} {value} is out of range; use {low} to {high} pixels")
        raise _bad(name, value, said.format(name=_(name), value=value, low=contract.MIN_SIDE, high=contract.MAX_SIDE))
    if value % contract.SIDE_STEP:
        said = _("{name} {value} is not a multiple of {step}; try {nearest}")
        raise _bad(
            name,
            value,
            said.format(name=_(name), value=value, step=contract.SIDE_STEP, nearest=_nearest_multiples(value)),
        )


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        said = _("{name} {value!r} is not supported; use one of: {allowed}")
        raise _bad(name, value, said.format(name=_(name), value=value, allowed=", ".join(allowed)))


@dataclass(frozen=True)
class GenerationRequest:
    """One Flux Ultra image, as the user asked for it (validated on construction)."""

    prompt: str
    width: int = contract.DEFAULT_SIZE
    height: int = contract.DEFAULT_SIZE
    aspect_ratio: str | None = None
    seed: int | None = None
    raw: bool = False
    version: str = contract.DEFAULT_VERSION
    quality: str | None = None
    output_format: str = "jpeg"
    safety_tolerance: int | None = None
    prompt_upsampling: bool = False
    webhook_url: str | None = field(default=None, compare=False)

    @classmethod
    def build(
        cls,
        prompt: str,
        *,
        size: str | tuple[int, int] | None = None,
        aspect_ratio: str | None = None,
        width: int | None = None,
        height: int | None = None,
        **options: Any,
    ) -> GenerationRequest:
        """Build from user-facing options: `size="2048x2048"` or `aspect_ratio="16:9"` or width/height."""
        if size is not None and (width is not None or height is not None):
            raise _bad("size", size, _("give either size or width/height, not both"))
        if isinstance(size, str):
            width, height = parse_size(size)
        elif size is not None:
            width, height = size
        if aspect_ratio is not None:
            if width is not None or height is not None:
                raise _bad("aspect_ratio", aspect_ratio, _("give either an aspect ratio or a size, not both"))
            try:
                width, height = contract.size_for_aspect_ratio(aspect_ratio)
            except ValueError as exc:
                raise _bad("aspect_ratio", aspect_ratio, str(exc)) from None
        unknown = set(options) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise _bad(
                sorted(unknown)[0], None, _("unknown option(s) {names}").format(names=", ".join(sorted(unknown)))
            )
        return cls(
            prompt,
            width=contract.DEFAULT_SIZE if width is None else width,
            height=contract.DEFAULT_SIZE if height is None else height,
            aspect_ratio=aspect_ratio,
            **options,
        )

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise _bad("prompt", self.prompt, _("prompt must be text"))
        prompt = self.prompt.strip()
        if not prompt:
            raise _bad("prompt", self.prompt, _("prompt is empty; describe the image you want"))
        if len(prompt) > contract.MAX_PROMPT_CHARS:
            raise _bad(
                "prompt",
                f"<{len(prompt)} characters>",
                _("prompt has {n} characters; the limit is {limit}").format(
                    n=len(prompt), limit=contract.MAX_PROMPT_CHARS
                ),
            )
        object.__setattr__(self, "prompt", prompt)
        _check_side(N_("width"), self.width)
        _check_side(N_("height"), self.height)
        if self.width * self.height > contract.MAX_PIXELS:
            raise _bad("size", f"{self.width}x{self.height}", _("at most 4096x4096 pixels in all"))
        if self.aspect_ratio is not None and (self.width, self.height) != contract.size_for_aspect_ratio(
            self.aspect_ratio
        ):
            said = _("aspect ratio and width/height disagree; give one of them")
            raise _bad("aspect_ratio", self.aspect_ratio, said)
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED
        ):
            said = _("seed {seed!r} must be an integer from 0 to {limit}").format(seed=self.seed, limit=MAX_SEED)
            raise _bad("seed", self.seed, said)
        for name in ("raw", "prompt_upsampling"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, getattr(self, name), _("{name} must be True or False").format(name=name))
        _check_choice(N_("version"), self.version, contract.VERSIONS)
        if self.quality is not None:
            _check_choice(N_("quality"), self.quality, contract.QUALITIES)
        _check_choice(N_("output_format"), self.output_format, contract.OUTPUT_FORMATS)
        low, high = contract.SAFETY_TOLERANCE_RANGE
        if self.safety_tolerance is not None and (
            isinstance(self.safety_tolerance, bool) or self.safety_tolerance not in range(low, high + 1)
        ):
            said = _("safety_tolerance must be an integer {low}..{high}").format(low=low, high=high)
            raise _bad("safety_tolerance", self.safety_tolerance, said)
        if self.webhook_url is not None:
            parts = urlsplit(str(self.webhook_url))
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise _bad(
                    "webhook_url",
                    self.webhook_url,
                    _("webhook_url must be an http(s) URL, e.g. https://example.com/hook"),
                )

    @property
    def size(self) -> str:
        return f"{self.width}x{self.height}"

    @property
    def estimated_credits(self) -> int:
        """What the price table says this image costs."""
        return contract.credit_cost(self.width, self.height)

    def canonical(self) -> dict[str, Any]:
        """The parameters that decide the image (not where it is announced), in a stable form."""
        data = asdict(self)
        data.pop("webhook_url")
        data["service"] = contract.SERVICE
        return data

    def key(self, variant: int = 0) -> str:
        """sha256 of the canonical form; `variant` tells apart n unseeded images of one request."""
        data = self.canonical()
        if variant:
            data["variant"] = variant
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def with_seed(self, seed: int | None) -> GenerationRequest:
        return replace(self, seed=seed)

    def options(self) -> dict[str, Any]:
        """Wire options in the contract's camelCase, without the prompt, defaults left out."""
        out: dict[str, Any] = {}
        if self.aspect_ratio is not None:
            out["aspectRatio"] = self.aspect_ratio
        else:
            out["width"], out["height"] = self.width, self.height
        out["version"] = self.version
        for name, wire in (("quality", "quality"), ("seed", "seed"), ("safety_tolerance", "safetyTolerance")):
            if getattr(self, name) is not None:
                out[wire] = getattr(self, name)
        if self.raw:
            out["raw"] = True
        if self.prompt_upsampling:
            out["promptUpsampling"] = True
        if self.output_format != "jpeg":
            out["outputFormat"] = self.output_format
        return out


def as_request(prompt: str | GenerationRequest, options: dict[str, Any]) -> GenerationRequest:
    """A prompt with keyword options, or a ready GenerationRequest (then without options)."""
    if isinstance(prompt, GenerationRequest):
        if options:
            raise TypeError("pass options either in the GenerationRequest or as keywords, not both")
        return prompt
    return GenerationRequest.build(prompt, **options)


def per_image(base: GenerationRequest, count: int) -> list[tuple[GenerationRequest, int]]:
    """(request, variant) for `count` images: seeds N, N+1, ... when seeded, else unseeded variants 0, 1, ..."""
    if base.seed is None:
        return [(base, i) for i in range(count)]
    return [(base.with_seed(base.seed + i), 0) for i in range(count)]

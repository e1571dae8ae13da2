"""The sandbox renderer: deterministic, prompt-shaped, correctly sized, and always marked as sandbox."""

from __future__ import annotations

import colorsys
import hashlib
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from doitong_sandbox.render import METADATA_TEXT, SOFTWARE, render

ROOT = Path(__file__).resolve().parents[1]


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(_decode(data).convert("RGB"), dtype=np.float32)


def test_same_arguments_give_identical_bytes() -> None:
    assert render("neon city at night", 256, 256, 7) == render("neon city at night", 256, 256, 7)


@pytest.mark.integration
def test_a_fresh_process_renders_the_same_bytes() -> None:
    here = hashlib.sha256(render("snowy mountains", 320, 256, 42, raw=True)).hexdigest()
    code = (
        "import hashlib; from doitong_sandbox.render import render; "
        "print(hashlib.sha256(render('snowy mountains', 320, 256, 42, raw=True)).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == here


@pytest.mark.parametrize(("a", "b"), [(("ocean waves", 1), ("ocean waves", 2)), (("ocean waves", 1), ("a red car", 1))])
def test_another_seed_or_prompt_gives_a_visibly_different_image(a: tuple[str, int], b: tuple[str, int]) -> None:
    first, second = (_pixels(render(prompt, 256, 256, seed)) for prompt, seed in (a, b))
    assert np.abs(first - second).mean() > 10.0


def test_raw_is_flatter_than_the_default_look() -> None:
    default, raw = (_pixels(render("sunset over the sea", 256, 256, 3, raw=flag)) for flag in (False, True))
    assert raw.std() < default.std()


@pytest.mark.parametrize(
    ("width", "height"), [(256, 256), pytest.param(3840, 2160, marks=pytest.mark.slow), (256, 4096)]
)
def test_exact_size_as_jpeg(width: int, height: int) -> None:
    image = _decode(render("city skyline", width, height, 1))
    assert (image.format, image.size, image.mode) == ("JPEG", (width, height), "RGB")


def test_png_on_request() -> None:
    image = _decode(render("forest", 384, 256, 1, output_format="png"))
    assert (image.format, image.size) == ("PNG", (384, 256))


@pytest.mark.parametrize(("kwargs", "error"), [({"width": 255}, "width"), ({"height": 4097}, "height")])
def test_sizes_outside_the_contract_are_refused(kwargs: dict[str, int], error: str) -> None:
    args = {"width": 256, "height": 256, **kwargs}
    with pytest.raises(ValueError, match=error):
        render("x", args["width"], args["height"], 0)


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="output_format"):
        render("x", 256, 256, 0, output_format="gif")


def test_jpeg_metadata_says_sandbox() -> None:
    image = _decode(render("portrait", 256, 256, 1))
    assert image.info["comment"] == METADATA_TEXT.encode()
    exif = image.getexif()
    assert exif[0x010E] == METADATA_TEXT
    assert exif[0x0131] == SOFTWARE


def test_png_metadata_says_sandbox() -> None:
    image = _decode(render("portrait", 256, 256, 1, output_format="png"))
    assert image.text["Comment"] == METADATA_TEXT
    assert image.text["Software"] == SOFTWARE


def test_the_banner_darkens_the_bottom_and_carries_light_text() -> None:
    pixels = _pixels(render("snowy winter field", 512, 512, 1)).mean(axis=2)
    banner, above = pixels[-14:-4], pixels[-60:-40]
    assert banner.mean() < above.mean()
    assert banner.max() > 200  # the white lettering


def _mean_hsv(data: bytes) -> tuple[float, float]:
    """Mean hue angle (degrees, circular) and mean brightness of the picture above the banner."""
    pixels = _pixels(data)[:-64] / 255.0
    r, g, b = (pixels[..., k].ravel()[::7] for k in range(3))
    hsv = np.array([colorsys.rgb_to_hsv(*px) for px in zip(r, g, b, strict=True)])
    weights = hsv[:, 1] + 1e-6  # grey pixels have no hue to speak of
    angle = np.angle(np.sum(weights * np.exp(2j * np.pi * hsv[:, 0])), deg=True) % 360
    return float(angle), float(hsv[:, 2].mean())


def test_palette_follows_the_words() -> None:
    neon_hue, neon_value = _mean_hsv(render("neon city at night", 256, 256, 5))
    snow_hue, snow_value = _mean_hsv(render("snowy winter field", 256, 256, 5))
    sunset_hue, _ = _mean_hsv(render("sunset fire", 256, 256, 5))
    assert neon_value < 0.4 < snow_value  # dark night against bright snow
    assert 250 <= neon_hue <= 340  # magenta / violet
    assert 180 <= snow_hue <= 250  # pale blue
    assert sunset_hue <= 50 or sunset_hue >= 340  # reds and oranges


def test_forest_is_greener_and_ocean_bluer() -> None:
    forest = _pixels(render("green forest", 256, 256, 2))
    ocean = _pixels(render("ocean water", 256, 256, 2))
    assert forest[..., 1].mean() - forest[..., 2].mean() > ocean[..., 1].mean() - ocean[..., 2].mean()
    assert ocean[..., 2].mean() > ocean[..., 0].mean()


def test_a_korean_prompt_paints_the_palette_of_its_english_counterpart() -> None:
    """Hangul was once no word at all: "네온 도시의 밤" drew an abstract picture in a colour from the hash."""
    korean_hue, korean_value = _mean_hsv(render("네온 도시의 밤", 256, 256, 5))
    english_hue, english_value = _mean_hsv(render("neon city at night", 256, 256, 5))
    assert korean_value < 0.4 and english_value < 0.4
    assert 250 <= korean_hue <= 340 and 250 <= english_hue <= 340


def _glyph(font: ImageFont.FreeTypeFont, character: str) -> bytes:
    image = Image.new("L", (4 * font.size, 2 * font.size))
    ImageDraw.Draw(image).text((font.size, 0), character, font=font, fill=255)
    return image.tobytes()


def test_every_character_the_renderer_draws_has_a_glyph_in_its_font(monkeypatch: pytest.MonkeyPatch) -> None:
    """No boxes (tofu) in an image: a caption of the prompt in Pillow's built-in font would draw Hangul as the
    font's missing-glyph box, the same box as a code point no font has."""
    drawn: list[tuple[str, ImageFont.FreeTypeFont]] = []
    draw_text = ImageDraw.ImageDraw.text

    def recording(self: ImageDraw.ImageDraw, xy: object, text: str, *args: object, **kwargs: object) -> None:
        drawn.append((text, kwargs.get("font") or self.getfont()))  # type: ignore[arg-type]
        draw_text(self, xy, text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", recording)
    for width in (256, 1024):  # the banner on two lines, then on one
        render("네온 불빛의 미래 도시", width, 256, 1)
    monkeypatch.undo()
    assert len(drawn) == 3
    for text, font in drawn:
        missing = _glyph(font, "\uffff")
        assert _glyph(font, "가") == missing  # the check sees a glyph the font lacks
        assert [c for c in text if _glyph(font, c) == missing] == [], text

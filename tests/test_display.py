"""display.py: previews, HTML and text rendering, the progress line."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from statistics import NormalDist

import pytest
from PIL import Image, ImageDraw, PngImagePlugin

from doitong_nb._core.errors import InsufficientCreditsError
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import ImageResult
from doitong_nb._notebook import display, previews


def picture(width: int, height: int, seed: int = 7) -> Image.Image:
    """Something like a generated image: soft shapes plus fine grain, so encoders have real work to do."""
    rng = random.Random(seed)
    small = Image.new("RGB", (256, 256 * height // width), (40, 60, 90))
    draw = ImageDraw.Draw(small)
    for _ in range(40):
        x, y, s = rng.randrange(256), rng.randrange(small.height), rng.randrange(8, 80)
        draw.ellipse((x, y, x + s, y + s), fill=tuple(rng.randrange(256) for _ in range(3)))
    return Image.blend(small.resize((width, height), Image.Resampling.BICUBIC), grain(width, height, 24, seed), 0.1)


def grain(width: int, height: int, sigma: float, seed: int = 0) -> Image.Image:
    """Gaussian grain around mid-grey, as `Image.effect_noise(size, sigma)` makes (the same spread, the same
    JPEG sizes within a fraction of a percent), but reproducible and ten times faster: random bytes mapped through
    the normal distribution's inverse CDF. Seeded by seed and sigma, so a picture's own grain and a coarser grain
    blended over it are independent."""
    normal = NormalDist(128, sigma)
    table = [min(255, max(0, round(normal.inv_cdf((i + 0.5) / 256)))) for i in range(256)]
    noise = Image.frombytes("L", (width, height), random.Random(f"{seed}/{sigma}").randbytes(width * height))
    return noise.point(table).convert("RGB")


def exif_with(text: str) -> Image.Exif:
    exif = Image.Exif()
    exif[0x010E] = text  # ImageDescription
    return exif


def save_as_result(pixels: Image.Image, path: Path) -> Path:
    """As the store keeps an image: JPEG with provenance in its COM and EXIF segments."""
    pixels.save(path, quality=92, comment=b'{"job_id": "job_abc123"}', exif=exif_with("job_abc123"))
    return path


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 4096x4096 file, shared so its preview is cached. Plain pixels: the cards need its size, not its detail
    (a detailed 4096 picture costs half a second; the preview's size budget is tested on one, below)."""
    path = tmp_path_factory.mktemp("outputs") / "job_abc123.jpg"
    return save_as_result(Image.new("RGB", (4096, 4096), (40, 60, 90)), path)


def make_result(path: Path, **changes) -> ImageResult:
    with Image.open(path) as im:
        width, height = im.size
    fields = dict(
        request=GenerationRequest.build("a red fox in snow", width=width, height=height, seed=7),
        job_id="job_abc123",
        path=path,
        sha256="0" * 64,
        width=width,
        height=height,
        seed=7,
        version="flux-pro-1.1-ultra",
        duration=9.84,
        credit_cost=30,
        created_at="2026-11-24T10:00:00Z",
        credits=30,
        session_credits=60,
        balance=940,
    )
    fields.update(changes)
    return ImageResult(**fields)


def preview_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


# --- previews ------------------------------------------------------------------------------------


def test_preview_long_side_is_capped_and_aspect_kept(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    picture(1024, 512).save(path, compress_level=0)
    data, mime = previews.make_preview(path, max_px=512)
    assert mime == "image/jpeg"
    assert preview_size(data) == (512, 256)


def test_preview_never_upscales_small_images(tmp_path: Path) -> None:
    path = tmp_path / "small.jpg"
    picture(320, 240).save(path)
    data, _ = previews.make_preview(path, max_px=1024)
    assert preview_size(data) == (320, 240)


@pytest.mark.slow
def test_preview_of_4096_jpeg_is_1024_and_well_under_300kb_base64(tmp_path: Path) -> None:
    data, _ = previews.make_preview(save_as_result(picture(4096, 4096), tmp_path / "job_abc123.jpg"))
    assert preview_size(data) == (1024, 1024)
    assert len(base64.b64encode(data)) < 300_000


def test_preview_bytes_ignore_embedded_metadata(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jpg", tmp_path / "b.jpg"
    pixels = picture(1280, 960)  # larger than the preview, so it is resized too
    pixels.save(first, quality=92, comment=b"job_one 2026-11-24T10:00:00Z", exif=exif_with("job_one"))
    pixels.save(second, quality=92, comment=b"job_two 2026-11-25T11:11:11Z", exif=exif_with("job_two"))
    assert first.read_bytes() != second.read_bytes()
    preview, _ = previews.make_preview(first)
    assert preview == previews.make_preview(second)[0]
    assert b"job_one" not in preview and b"Exif" not in preview


def test_preview_bytes_ignore_png_text_chunks(tmp_path: Path) -> None:
    pixels = picture(1200, 800)
    paths = []
    for job in ("job_one", "job_two"):
        info = PngImagePlugin.PngInfo()
        info.add_text("doitong", f'{{"job_id": "{job}"}}')
        paths.append(tmp_path / f"{job}.png")
        pixels.save(paths[-1], pnginfo=info, compress_level=0)
    assert previews.make_preview(paths[0]) == previews.make_preview(paths[1])


def test_preview_bytes_follow_the_pixels(tmp_path: Path) -> None:
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    picture(600, 400, seed=1).save(first, compress_level=0)
    picture(600, 400, seed=2).save(second, compress_level=0)
    assert previews.make_preview(first) != previews.make_preview(second)


def test_preview_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "img.png"
    picture(600, 400, seed=1).save(path, compress_level=0)
    first = previews.make_preview(path)
    hits = previews.cached_preview.cache_info().hits
    assert previews.make_preview(path) == first
    assert previews.cached_preview.cache_info().hits == hits + 1
    picture(600, 400, seed=2).save(path, compress_level=0)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert previews.make_preview(path) != first


def test_preview_applies_exif_orientation(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = exif_with("job_x")
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    picture(400, 200).save(path, exif=exif)
    data, _ = previews.make_preview(path)
    assert preview_size(data) == (200, 400)


def test_preview_keeps_alpha_as_png(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (300, 200), (255, 0, 0, 128)).save(path, compress_level=0)
    data, mime = previews.make_preview(path)
    assert mime == "image/png"
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGBA"


# --- HTML ----------------------------------------------------------------------------------------


def test_html_escapes_the_prompt(big_jpeg: Path) -> None:
    request = GenerationRequest.build('<script>alert("x")</script> & a fox', size="4096x4096")
    page = display.result_bundle([make_result(big_jpeg, request=request)])["text/html"]
    assert "<script" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; a fox" in page


def test_html_card_shows_provenance_credits_and_link(big_jpeg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(big_jpeg.parent.parent)
    page = display.result_bundle([make_result(big_jpeg)])["text/html"]
    assert page.count("<img ") == 1
    assert 'src="data:image/' in page and 'alt="a red fox in snow"' in page
    facts = (
        "job_abc123",
        "4096×4096",
        "seed 7",
        "flux-pro-1.1-ultra",
        "made in 9.8 s",
        "30 credits",
        "session 60",
        "balance 940",
    )
    assert [fact for fact in facts if fact not in page] == []
    assert f'href="{big_jpeg.parent.name}/job_abc123.jpg" target="_blank"' in page
    assert "replayed" not in page and "sandbox" not in page


def test_html_leaves_out_unknown_account_figures(big_jpeg: Path) -> None:
    page = display.result_bundle([make_result(big_jpeg, session_credits=None, balance=None)])["text/html"]
    assert "30 credits" in page
    assert "session" not in page and "balance" not in page


def test_html_link_outside_the_working_directory_is_a_file_uri(
    tmp_path: Path, big_jpeg: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    page = display.result_bundle([make_result(big_jpeg)])["text/html"]
    assert f'href="{big_jpeg.as_uri()}"' in page


def test_html_replayed_badge_says_date_and_zero_credits(big_jpeg: Path) -> None:
    page = display.result_bundle([make_result(big_jpeg, replayed=True, credits=0)])["text/html"]
    assert "replayed · 2026-11-24 · 0 credits" in page
    assert "<b>0 credits</b>" in page and "30 credits" not in page


def test_replayed_card_says_how_to_get_a_new_image(big_jpeg: Path) -> None:
    """Without a seed a re-run replays the same image by design; the card says how to get another one."""
    unseeded = GenerationRequest.build("a red fox in snow", size="4096x4096")
    result = make_result(big_jpeg, request=unseeded, replayed=True, credits=0)
    assert "re-run with --refresh for a new one" in display.result_bundle([result])["text/html"]
    assert "re-run with --refresh for a new one" in display.result_text(result)
    seeded = display.result_bundle([make_result(big_jpeg, replayed=True, credits=0)])["text/html"]
    assert "change --seed for a new one" in seeded  # a seeded request makes the same pixels again


def test_picked_up_card_says_already_paid_not_its_cost(big_jpeg: Path) -> None:
    """A job resumed from the journal was charged when it was submitted; "50 credits" read like a second charge."""
    result = make_result(big_jpeg, resumed=True, credits=0)
    page = display.result_bundle([result])["text/html"]
    assert "<b>picked up, already paid</b>" in page and "30 credits" not in page and "0 credits" not in page
    assert "picked up, already paid" in display.result_text(result)


def test_html_sandbox_badge_only_for_sandbox_results(big_jpeg: Path) -> None:
    sandboxed = display.result_bundle([make_result(big_jpeg, metadata={"sandbox": True})])["text/html"]
    real = display.result_bundle([make_result(big_jpeg, metadata={"sandbox": False})])["text/html"]
    assert ">sandbox</span>" in sandboxed
    assert ">sandbox</span>" not in real


def test_html_grid_of_three_has_three_images(tmp_path: Path) -> None:
    results = []
    for i in range(3):
        path = tmp_path / f"job_{i}.jpg"
        picture(512, 384, seed=i).save(path)
        results.append(make_result(path, job_id=f"job_{i}"))
    bundle = display.result_bundle(results)
    assert bundle["text/html"].count("<img ") == 3
    assert "repeat(auto-fill" in bundle["text/html"]
    assert len(bundle["text/plain"].splitlines()) == 3


@pytest.mark.slow
def test_html_grid_of_four_1024px_images_stays_under_300kb(tmp_path: Path) -> None:
    """Shown at about 220-300 px, a grid's previews need not be 1024 px (issue 15: 790 KB for `-n 4`)."""
    results = []
    for i in range(4):
        path = tmp_path / f"job_{i}.jpg"
        detail = grain(1024, 1024, 64, seed=i)  # as detailed as the sandbox's images
        Image.blend(picture(1024, 1024, seed=i), detail, 0.3).save(path, quality=92)
        results.append(make_result(path, job_id=f"job_{i}"))
    page = display.result_bundle(results, preview_px=1024)["text/html"]
    assert page.count("<img ") == 4 and len(page.encode()) < 300_000
    lone = display.result_bundle(results[:1], preview_px=1024)["text/html"]
    assert 'width="1024"' in lone  # a lone card keeps its large preview


def test_html_grid_cards_show_their_own_cost_and_the_session_total_once(tmp_path: Path) -> None:
    """Cards finish in any order: totals taken as each finished read 10, 80, 20 (issue 15)."""
    results = []
    for i, (cost, session) in enumerate(((10, 10), (30, 80), (20, 20))):
        path = tmp_path / f"job_{i}.jpg"
        picture(512, 512, seed=i).save(path)
        results.append(make_result(path, job_id=f"job_{i}", credits=cost, session_credits=session, balance=1000))
    bundle = display.result_bundle(results, session_credits=60, balance=940)
    page, text = bundle["text/html"], bundle["text/plain"]
    assert [f"<b>{n} credits</b>" in page for n in (10, 30, 20)] == [True, True, True]
    assert page.count("session ") == 1 and "session total 60 credits · balance 940" in page and "total 80" not in page
    assert text.splitlines()[-1] == "session total 60 credits, balance 940" and text.count("session") == 1


def test_html_survives_a_missing_file(tmp_path: Path, big_jpeg: Path) -> None:
    result = make_result(big_jpeg)
    result.path = tmp_path / "gone.jpg"
    page = display.result_bundle([result])["text/html"]
    assert "<img " not in page
    assert "no preview" in page and "job_abc123" in page


def test_html_has_no_script_or_external_resources(big_jpeg: Path) -> None:
    page = display.result_bundle([make_result(big_jpeg)])["text/html"]
    assert "<script" not in page and "<link" not in page and "<style" not in page
    assert "http://" not in page and "https://" not in page


class AttributeNames(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.names.update(name for name, _ in attrs)


def test_html_attributes_are_well_quoted(big_jpeg: Path) -> None:
    """A stray quote inside a style value would end the attribute and spill junk attribute names."""
    parser = AttributeNames()
    parser.feed(display.result_bundle([make_result(big_jpeg, replayed=True, metadata={"sandbox": True})])["text/html"])
    assert parser.names == {"style", "href", "target", "title", "src", "alt", "width", "height"}


def test_result_repr_mimebundle_uses_display(big_jpeg: Path) -> None:
    result = make_result(big_jpeg)
    assert set(result._repr_mimebundle_()[0]) == {"text/plain", "text/html"}
    assert repr(result) == display.result_text(result)


@pytest.mark.slow
def test_a_detailed_4096_card_is_stored_once_within_100kb(tmp_path: Path) -> None:
    """Issue 24: the preview was in the bundle twice (data URI and image/jpeg), 212-264 KB a 4096x4096 card."""
    path = tmp_path / "job_4k.jpg"
    Image.blend(picture(4096, 4096), grain(4096, 4096, 64), 0.3).save(path, quality=92)  # as detailed as the sandbox's
    data, metadata = display.result_display([make_result(path)])
    assert set(data) == {"text/plain", "text/html"} and metadata == {}
    assert data["text/html"].count("base64,") == 1
    assert len(json.dumps(data).encode()) <= 100_000


def test_preview_zero_is_a_link_only_card_with_no_image_bytes(big_jpeg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(big_jpeg.parent.parent)
    for results in ([make_result(big_jpeg)], [make_result(big_jpeg), make_result(big_jpeg, job_id="job_two")]):
        data, _ = display.result_display(results, 0)
        assert "<img" not in data["text/html"] and "base64" not in data["text/html"]
        links = data["text/html"].count(f'href="{big_jpeg.parent.name}/job_abc123.jpg"')
        assert links == 2 * len(results)  # each card: its placeholder and its path
        assert len(json.dumps(data).encode()) < 2_500 * len(results)


def test_card_text_is_left_aligned_inside_a_grid_table(big_jpeg: Path) -> None:
    """Lab and Notebook 7 right-align table cells; a --grid's cards are in a table, and said right-aligned text."""
    from doitong_nb._core.grid import GridView

    page = GridView([("seed", [1, 2])], [make_result(big_jpeg), make_result(big_jpeg)])._repr_mimebundle_()[0]
    figures = re.findall(r'<figure style="([^"]*)"', page["text/html"])
    assert len(figures) == 2 and all("text-align:left" in style for style in figures)


def test_replay_card_spaces_its_badges_and_says_the_time_was_the_original_jobs(big_jpeg: Path) -> None:
    result = make_result(big_jpeg, replayed=True, credits=0, metadata={"sandbox": True})
    page = display.result_bundle([result])["text/html"]
    row = re.search(r'<div style="([^"]*)"><span[^>]*>replayed', page)
    assert row is not None and "gap:" in row.group(1) and "flex-wrap:wrap" in row.group(1)
    assert "made in 9.8 s originally" in page and "made in 9.8 s originally" in display.result_text(result)
    fresh = make_result(big_jpeg)
    assert "made in 9.8 s" in display.result_text(fresh) and "originally" not in display.result_text(fresh)


# --- text ----------------------------------------------------------------------------------------


def test_text_repr_is_one_readable_line(big_jpeg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(big_jpeg.parent)
    text = display.result_text(make_result(big_jpeg))
    assert text == (
        "<ImageResult job_abc123 4096x4096 seed=7 flux-pro-1.1-ultra made in 9.8 s 30 credits (session 60, balance 940)"
        " -> job_abc123.jpg>"
    )


def test_text_repr_of_replay_says_when_and_zero_credits(big_jpeg: Path) -> None:
    text = display.result_text(make_result(big_jpeg, replayed=True, credits=0, session_credits=None, balance=None))
    assert "replayed from 2026-11-24, 0 credits" in text
    assert "30 credits" not in text and "session" not in text


def test_text_repr_shortens_long_job_ids(big_jpeg: Path) -> None:
    text = display.result_text(make_result(big_jpeg, job_id="job_0123456789abcdef0123"))
    assert "job_01234567… " in text


def test_error_text_is_one_line_for_doitong_errors() -> None:
    exc = InsufficientCreditsError("this image costs 50 credits;\nyou have 20", job_id="job_x")
    assert display.error_text(exc) == "Flux error: this image costs 50 credits; you have 20 (job job_x)"
    assert display.error_text(ValueError("bad")) == "ValueError: bad"


# --- progress ------------------------------------------------------------------------------------


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ticker_running() -> bool:
    return any(t.name == "flux-progress" for t in threading.enumerate())


def test_progress_line_without_kernel_or_terminal_is_silent(capsys: pytest.CaptureFixture[str]) -> None:
    line = display.ProgressLine("flux job_abc")
    line.update("queued")
    line.update("processing", "step 3/10")
    line.close()
    assert capsys.readouterr() == ("", "")
    assert not ticker_running()


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_in_a_terminal_rewrites_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    tty = FakeTty()
    monkeypatch.setattr(sys, "stderr", tty)
    clock = Clock()
    line = display.ProgressLine("flux", clock=clock)
    line.tick = 3600.0  # this test is about updates; the clock's own repaints are tested below
    clock.now += 1.0
    line.update("processing")
    clock.now += 0.1
    line.update("processing")  # within the throttle interval: dropped
    clock.now += 0.1
    line.update("completed")  # a new status always shows
    line.close()
    out = tty.getvalue()
    assert out.endswith("\r") and "\n" not in out
    assert out.count("\r") == 4 and "1.1 s" not in out and "completed · 1.2 s" in out


def test_progress_line_clock_ticks_between_updates_and_stops_at_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine reports only around its requests; the elapsed time must move anyway (issue 15)."""
    tty = FakeTty()
    monkeypatch.setattr(sys, "stderr", tty)
    clock = Clock()
    line = display.ProgressLine("flux", clock=clock)
    line.tick = 0.01
    line.update("waiting for the plan's rate limit")
    clock.now += 3.0  # no update from the engine: only the ticker can show this
    for _ in range(5000):
        if "waiting for the plan's rate limit · 3.0 s" in tty.getvalue():
            break
        threading.Event().wait(0.002)
    assert "waiting for the plan's rate limit · 3.0 s" in tty.getvalue()
    line.close()
    assert not ticker_running()
    painted = tty.getvalue()
    assert painted.endswith("\r")
    line.update("processing")  # a closed line paints nothing more
    assert tty.getvalue() == painted


class FakeHandle:
    def __init__(self) -> None:
        self.updates: list = []

    def update(self, obj, **kwargs) -> None:
        self.updates.append(obj)


def test_progress_line_in_a_kernel_updates_one_display(monkeypatch: pytest.MonkeyPatch, big_jpeg: Path) -> None:
    import IPython.display

    handle, shown = FakeHandle(), []

    def fake_display(obj, **kwargs):
        shown.append(obj)
        return handle if kwargs.get("display_id") else None

    monkeypatch.setattr(IPython.display, "display", fake_display)
    monkeypatch.setattr(display, "_frontend", lambda: "kernel")
    clock = Clock()
    line = display.ProgressLine("flux <job>", clock=clock)
    line.tick = 3600.0
    line.update("queued")
    clock.now += 0.1
    line.update("queued")
    clock.now += 1.9
    line.update("processing")
    result = make_result(big_jpeg)
    line.replace_with(result)
    assert shown == [{"text/plain": ""}]  # one display: the line becomes the card in place (issue 12)
    assert "&lt;job&gt;" in handle.updates[0]["text/html"]
    assert handle.updates[1]["text/plain"] == "flux <job> · processing · 2.0 s"
    assert handle.updates[-1] is result


def test_progress_line_with_nothing_to_show_ends_on_its_last_status(monkeypatch: pytest.MonkeyPatch) -> None:
    """Never an empty output left in the saved notebook (issue 12): an interrupted line keeps what it was doing."""
    import IPython.display

    handle = FakeHandle()
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kwargs: handle)
    monkeypatch.setattr(display, "_frontend", lambda: "kernel")
    line = display.ProgressLine("512x512 × 3", clock=Clock())
    line.tick = 3600.0
    line.update("1/3 done, processing")
    line.close()
    assert handle.updates[-1] == {"text/plain": "512x512 × 3 · 1/3 done, processing"}


# --- account ---------------------------------------------------------------------------------------


class _Account:
    plan, credits = "pro", 940


def test_account_names_its_host_and_says_sandbox() -> None:
    """`%flux_account` on the bundled sandbox read like a real account (issue 15)."""
    from doitong_nb import _contract as contract

    view = display.AccountView(_Account(), contract.PLANS["pro"], 60, "http://127.0.0.1:8787", sandbox=True)
    assert repr(view).splitlines()[0] == "service: 127.0.0.1:8787 (sandbox: no real credits)"
    assert ">sandbox</span>" in view._repr_html_()
    real = display.AccountView(_Account(), None, 0, "https://api.doitong.com", sandbox=False)
    assert repr(real).splitlines()[0] == "service: api.doitong.com" and "sandbox" not in real._repr_html_()

"""Issue 12: a result renders everywhere, not only where HTML is shown.

The bundle carries the preview as image/jpeg (image/png with alpha) with its width, beside the HTML card and a
useful text/plain; nbconvert's Markdown and LaTeX exports of a notebook contain the images.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from doitong_nb._notebook import display, previews
from tests.test_display import grain, make_result, picture

REPO = Path(__file__).resolve().parents[1]


def _cells(notebook: Path) -> list[dict]:
    """A committed notebook's cells as nbformat.read gives them (each output's lines joined into one string), read
    as JSON: importing nbformat takes a second (its schema validator), more than these tests."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    for output in (o for cell in cells for o in cell.get("outputs", [])):
        data = output.get("data", {})
        data.update({mime: "".join(value) for mime, value in data.items() if isinstance(value, list)})
    return cells


def _grainy(path: Path, size: int, seed: int = 1) -> Path:
    Image.blend(picture(size, size, seed=seed), grain(size, size, 64, seed), 0.3).save(path, quality=92)
    return path


def test_a_lone_result_carries_its_preview_as_a_plain_jpeg_with_width(tmp_path: Path) -> None:
    result = make_result(_grainy(tmp_path / "job_a.jpg", 1024))
    data, metadata = display.result_display([result])
    assert set(data) == {"text/plain", "text/html", "image/jpeg"}
    jpeg = base64.b64decode(data["image/jpeg"])
    assert jpeg.startswith(b"\xff\xd8")
    assert data["image/jpeg"] in data["text/html"]  # the card's own bytes, not a second encoding
    assert metadata["image/jpeg"] == {"width": 640, "height": 640}
    assert data["text/plain"].startswith("<ImageResult job_abc123 1024x1024 seed=7")


def test_the_image_result_repr_is_the_same_bundle(tmp_path: Path) -> None:
    result = make_result(_grainy(tmp_path / "job_a.jpg", 512))
    data, metadata = result._repr_mimebundle_()
    assert "image/jpeg" in data and metadata["image/jpeg"]["width"] == 512


@pytest.mark.slow
def test_a_4k_result_stays_within_300kb_of_notebook(tmp_path: Path) -> None:
    """The preview is in the bundle twice (HTML data URI and image/jpeg): both together stay under 300 KB."""
    result = make_result(_grainy(tmp_path / "job_4k.jpg", 4096))
    data, _ = display.result_display([result])
    assert len(json.dumps(data).encode()) < 300_000


def test_a_grid_carries_one_contact_sheet(tmp_path: Path) -> None:
    results = [make_result(_grainy(tmp_path / f"job_{i}.jpg", 512, seed=i), job_id=f"job_{i}") for i in range(3)]
    data, metadata = display.result_display(results, session_credits=90, balance=910)
    with Image.open(io.BytesIO(base64.b64decode(data["image/jpeg"]))) as sheet:
        assert sheet.size == (3 * 262 + 6, 262 + 6)
    assert metadata["image/jpeg"]["width"] == 3 * 262 + 6
    assert len(data["text/plain"].splitlines()) == 4  # three results and the session line


def test_an_unreadable_file_still_renders_text_and_html(tmp_path: Path) -> None:
    result = make_result(_grainy(tmp_path / "job_gone.jpg", 256))
    previews.cached_preview.cache_clear()
    result.path.unlink()
    data, metadata = display.result_display([result])
    assert set(data) == {"text/plain", "text/html"} and metadata == {}


def _export(notebook: Path, to: str, out: Path, *options: str) -> Path:
    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", to, str(notebook), "--output-dir", str(out), *options],
        check=True,
        capture_output=True,
        timeout=240,
    )
    return out


def _results_in(notebook: Path) -> int:
    """How many outputs of the committed notebook are result cards (images or grids)."""
    return sum(
        1
        for cell in _cells(notebook)
        for output in cell.get("outputs", [])
        if "<figure" in output.get("data", {}).get("text/html", "")
    )


@pytest.mark.integration  # nbconvert runs in a process of its own
def test_markdown_export_of_the_quickstart_has_one_image_file_per_result(tmp_path: Path) -> None:
    notebook = REPO / "notebooks" / "quickstart.ipynb"
    out = _export(notebook, "markdown", tmp_path)
    files = sorted((out / "quickstart_files").glob("*.jpg"))
    assert _results_in(notebook) >= 4
    assert len(files) == _results_in(notebook)
    for file in files:
        with Image.open(file) as im:
            assert im.format == "JPEG"


@pytest.mark.integration  # nbconvert runs in a process of its own
def test_markdown_export_for_html_free_viewers_links_each_image_file(tmp_path: Path) -> None:
    """By default nbconvert's Markdown keeps the HTML card (its image inline); preferring images links the files."""
    notebook = REPO / "notebooks" / "quickstart.ipynb"
    priority = '--NbConvertBase.display_data_priority=["image/png","image/jpeg","text/markdown","text/plain"]'
    out = _export(notebook, "markdown", tmp_path, priority)
    markdown = (out / "quickstart.md").read_text()
    links = re.findall(r"!\[jpeg\]\((quickstart_files/[^)]+\.jpg)\)", markdown)
    assert len(links) == _results_in(notebook) and all((out / link).exists() for link in links)
    assert "<figure" not in markdown and "data:image" not in markdown


@pytest.mark.integration  # nbconvert runs in a process of its own
def test_latex_export_of_the_quickstart_includes_the_images(tmp_path: Path) -> None:
    """LaTeX (and PDF) exports: the markdown cells are left out here because nbconvert needs pandoc for them, which
    has nothing to do with how results export; the code cells and their outputs go through as they are."""
    import nbformat

    notebook = REPO / "notebooks" / "quickstart.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code"]
    copy = tmp_path / "quickstart.ipynb"
    nbformat.write(nb, copy)
    out = _export(copy, "latex", tmp_path / "tex")
    tex = (out / "quickstart.tex").read_text()
    included = [line for line in tex.splitlines() if "\\adjustimage" in line and "quickstart_files" in line]
    assert len(included) == _results_in(notebook)
    assert all((out / line.split("{")[-1].rstrip("}")).exists() for line in included)


@pytest.mark.parametrize("to", ["markdown"])
def test_an_export_never_carries_an_empty_output(tmp_path: Path, to: str) -> None:
    """The progress line leaves nothing behind (it becomes the card; see issue 12)."""
    empty = [
        o
        for cell in _cells(REPO / "notebooks" / "quickstart.ipynb")
        for o in cell.get("outputs", [])
        if o.get("output_type") == "display_data" and not any(v for v in o.get("data", {}).values())
    ]
    assert empty == []

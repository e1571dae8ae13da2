"""Issues 12 and 24: a result renders in every front end and export, its image stored once.

The bundle is one HTML card with the preview inlined, and a useful text/plain (display.py says why): nbconvert's
Markdown export carries the card with its image and writes no image file it would not link; LaTeX shows the text.
"""

from __future__ import annotations

import base64
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


def test_a_lone_result_carries_its_preview_once_in_the_card(tmp_path: Path) -> None:
    result = make_result(_grainy(tmp_path / "job_a.jpg", 1024))
    data, metadata = display.result_display([result])
    assert set(data) == {"text/plain", "text/html"} and metadata == {}
    (uri,) = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', data["text/html"])
    assert base64.b64decode(uri).startswith(b"\xff\xd8")
    assert data["text/plain"].startswith("<ImageResult job_abc123 1024x1024 seed=7")


def test_the_image_result_repr_is_the_same_bundle(tmp_path: Path) -> None:
    result = make_result(_grainy(tmp_path / "job_a.jpg", 512))
    assert result._repr_mimebundle_() == display.result_display([result])


def test_a_grid_carries_each_preview_once(tmp_path: Path) -> None:
    results = [make_result(_grainy(tmp_path / f"job_{i}.jpg", 512, seed=i), job_id=f"job_{i}") for i in range(3)]
    data, metadata = display.result_display(results, session_credits=90, balance=910)
    assert set(data) == {"text/plain", "text/html"} and metadata == {}
    assert data["text/html"].count("base64,") == 3
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


def _images_in(notebook: Path) -> int:
    """How many inline previews the committed notebook's outputs hold."""
    return sum(
        output.get("data", {}).get("text/html", "").count('src="data:image/')
        for cell in _cells(notebook)
        for output in cell.get("outputs", [])
    )


@pytest.mark.integration  # nbconvert runs in a process of its own
def test_markdown_export_of_the_quickstart_carries_each_image_once_and_no_unlinked_file(tmp_path: Path) -> None:
    """Issue 24: the Markdown held each image as base64 and wrote it again as a file it never linked."""
    notebook = REPO / "notebooks" / "quickstart.ipynb"
    out = _export(notebook, "markdown", tmp_path)
    markdown = (out / "quickstart.md").read_text()
    assert _results_in(notebook) >= 4
    assert markdown.count('src="data:image/') == _images_in(notebook) >= _results_in(notebook)
    written = {f.relative_to(out).as_posix() for f in out.rglob("*") if f.is_file() and f.suffix != ".md"}
    assert written <= set(re.findall(r"\]\(([^)]+)\)", markdown))  # every file it writes, it links


@pytest.mark.integration  # nbconvert runs in a process of its own
def test_latex_export_of_the_quickstart_shows_each_result_as_its_text_line(tmp_path: Path) -> None:
    """LaTeX (and PDF) exports drop HTML: each result's text line stands in for its card (the markdown cells are
    left out here because nbconvert needs pandoc for them, which has nothing to do with how results export)."""
    import nbformat

    notebook = REPO / "notebooks" / "quickstart.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code"]
    copy = tmp_path / "quickstart.ipynb"
    nbformat.write(nb, copy)
    out = _export(copy, "latex", tmp_path / "tex")
    tex = (out / "quickstart.tex").read_text()
    assert tex.count("ImageResult") >= _results_in(notebook)


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

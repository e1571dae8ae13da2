"""Issue 12: sweeps as labelled grids, `%%flux --grid` and `Flux.grid`, cost told before sending."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from doitong_nb._core import grid
from doitong_nb._core.errors import InvalidRequestError
from doitong_nb._runtime.client import Flux
from doitong_sandbox import Sandbox

PROMPT = "A paper boat on a pond"


@pytest.fixture
def ip(sandbox: Sandbox, tmp_path: Path, shell_for) -> Iterator[Any]:
    yield shell_for(sandbox, tmp_path / "out")


def test_axes_parse_with_types_and_refuse_nonsense() -> None:
    assert grid.parse_axis("seed=1, 2,3") == ("seed", [1, 2, 3])
    assert grid.parse_axis("aspect=1:1,16:9") == ("aspect", ["1:1", "16:9"])
    assert grid.parse_axis("raw=true,false") == ("raw", [True, False])
    for bad, message in (
        ("colour=red", "NAME=V1"),
        ("seed=", "no values"),
        ("seed=1,x", "whole number"),
        ("seed=1,1", "repeated"),
    ):
        with pytest.raises(InvalidRequestError, match=message):
            grid.parse_axis(bad)
    with pytest.raises(InvalidRequestError, match="one or two"):
        grid.cells([("seed", [1]), ("size", ["256x256"]), ("raw", [True])])


def test_two_axes_make_a_labelled_matrix_with_the_cost_told_first(ip: Any, sandbox: Sandbox, capsys) -> None:
    ip.run_cell_magic("flux", '--grid "seed=1,2,3" --grid "aspect=1:1,16:9" -o sweep', PROMPT)
    out = capsys.readouterr().out
    assert out.startswith("grid 3 seed × 2 aspect = 6 images, 120 credits")
    view = ip.user_ns["sweep"]
    assert (view.rows, view.columns, len(view.results)) == (3, 2, 6)
    assert view[2, 1].seed == 3 and view[2, 1].width > view[2, 1].height  # row seed=3, column 16:9
    assert sandbox.stats()["total"]["jobs_created"] == 6
    data, metadata = view._repr_mimebundle_()
    page = data["text/html"]
    assert page.count("<figure") == 6
    for label in ("seed=1", "seed=2", "seed=3", "aspect=1:1", "aspect=16:9"):
        assert f">{label}</th>" in page
    assert "[seed=3, aspect=16:9] <ImageResult" in data["text/plain"]
    assert set(data) == {"text/plain", "text/html"} and metadata == {}  # each image once: in the table, no sheet
    assert page.count("data:image/") == 6
    assert page.count('<tr style="background:none">') == 4 and "text-align:left" in page  # no JupyterLab shading
    ip.run_cell_magic("flux", '--grid "seed=1,2,3" --grid "aspect=1:1,16:9"', PROMPT)  # a re-run replays
    assert "6 images, 0 credits (6 already stored or paid: 0 credits)" in capsys.readouterr().out
    assert sandbox.stats()["total"]["jobs_created"] == 6


def test_dry_run_tells_the_cost_and_sends_nothing(ip: Any, sandbox: Sandbox, capsys) -> None:
    ip.run_cell_magic("flux", '--grid "seed=1,2" --size 256x256 --dry-run', PROMPT)
    assert "grid 2 seed = 2 images, 20 credits; --dry-run: nothing was sent" in capsys.readouterr().out
    assert sandbox.stats()["total"]["jobs_created"] == 0


def test_grid_with_each_or_count_is_refused(ip: Any, sandbox: Sandbox, failed_cell) -> None:
    assert "--grid cannot be combined" in failed_cell(ip, '--grid "seed=1,2" -n 2', PROMPT)
    assert sandbox.stats()["total"]["jobs_created"] == 0


def test_python_grid_takes_lists_as_axes(flux: Flux, capsys) -> None:
    view = flux.grid(PROMPT, seed=[4, 5], size=["256x256", "512x512"], raw=True)
    assert capsys.readouterr().out.startswith("grid 2 seed × 2 size = 4 images")
    assert [(r.seed, r.width) for r in view.results] == [(4, 256), (4, 512), (5, 256), (5, 512)]
    assert all(r.request.raw for r in view.results)

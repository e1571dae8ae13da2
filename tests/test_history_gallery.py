"""Issue 12: `%flux_history` as a thumbnail gallery (newest first, filters, --limit), --df, and --rerun."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

from doitong_sandbox import Sandbox


@pytest.fixture
def ip(sandbox: Sandbox, tmp_path: Path, shell_for) -> Iterator[Any]:
    shell = shell_for(sandbox, tmp_path / "out")
    for seed, prompt in ((1, "A red fox in snow"), (2, "An owl at night"), (3, "A fox cub at dawn")):
        shell.run_cell_magic("flux", f"--size 256x256 --seed {seed}", prompt)
    yield shell


def _bundle(gallery: Any) -> tuple[dict[str, str], dict[str, Any]]:
    return gallery._repr_mimebundle_()


def test_gallery_is_newest_first_with_metadata_cost_and_each_thumbnail_once(ip: Any) -> None:
    gallery = ip.run_line_magic("flux_history", "")
    assert [r.seed for r in gallery.results] == [3, 2, 1]
    data, metadata = _bundle(gallery)
    assert data["text/html"].count("<figure") == 3 and data["text/html"].count("<img ") == 3
    assert "256×256 · seed 3 · 10 credits" in data["text/html"]
    assert set(data) == {"text/plain", "text/html"} and metadata == {}  # no contact sheet: the thumbnails once
    lines = data["text/plain"].splitlines()
    assert lines[0] == "3 stored result(s)" and "'A fox cub at dawn'" in lines[1] and "10 credits" in lines[1]


def test_each_card_shows_its_whole_job_id_selectable_in_one_click(ip: Any) -> None:
    """`--rerun` needs the whole id: it was clipped by the card's edge."""
    gallery = ip.run_line_magic("flux_history", "")
    page = _bundle(gallery)[0]["text/html"]
    for result in gallery.results:
        tag = re.search(rf'<code style="([^"]*)"[^>]*>{result.job_id}</code>', page)
        assert tag is not None and "overflow-wrap:anywhere" in tag.group(1) and "user-select:all" in tag.group(1)


def test_filter_by_text_and_limit(ip: Any) -> None:
    gallery = ip.run_line_magic("flux_history", "FOX --limit 1")
    assert [r.seed for r in gallery.results] == [3]
    assert repr(gallery).splitlines()[0] == "2 stored result(s) matching 'FOX' (newest 1 of 2; --limit N shows more)"


def test_filter_by_date(ip: Any) -> None:
    assert len(ip.run_line_magic("flux_history", "--since 2000-01-01")) == 3
    assert len(ip.run_line_magic("flux_history", "--until 2000-01-01")) == 0
    with pytest.raises(UsageError, match="YYYY-MM-DD"):
        ip.run_line_magic("flux_history", "--since yesterday")


def test_df_is_still_a_dataframe(ip: Any) -> None:
    table = ip.run_line_magic("flux_history", "owl --df")  # a DataFrame with pandas, a plain table without
    rows = table.to_dict("records") if hasattr(table, "to_dict") else table.rows
    assert [row["seed"] for row in rows] == [2] and "job_id" in rows[0]


def test_rerun_replays_at_no_cost_and_refresh_charges(ip: Any, sandbox: Sandbox, capsys) -> None:
    job_id = ip.run_line_magic("flux_history", "owl").results[0].job_id
    charged = sandbox.stats()["total"]["credits_charged"]
    ip.run_line_magic("flux_history", f"--rerun {job_id}")
    assert sandbox.stats()["total"]["credits_charged"] == charged
    ip.run_line_magic("flux_history", f"--rerun {job_id} --refresh")
    assert sandbox.stats()["total"]["credits_charged"] == charged + 10
    with pytest.raises(UsageError, match="no stored result 'job_nope'"):
        ip.run_line_magic("flux_history", "--rerun job_nope")


def test_images_of_one_request_made_at_once_keep_seed_order_whatever_order_they_finished_in(tmp_path: Path) -> None:
    """A `-n 3` cell's images finish in any order; the history (and so a re-run notebook) shows them by seed."""
    from doitong_nb._core.request import GenerationRequest
    from doitong_nb._core.result import ImageResult
    from doitong_nb._notebook.display import filter_history

    def made(seed: int, prompt: str, at: str) -> ImageResult:
        request = GenerationRequest.build(prompt, size="256x256", seed=seed)
        path = tmp_path / f"job_{seed}.jpg"
        return ImageResult(request, f"job_{seed}", path, "0" * 64, 256, 256, seed, "ultra", 1.0, 10, at)

    forest = [made(s, "a misty forest", f"2026-12-03T10:00:0{5 - s % 3}Z") for s in (10, 11, 12)]
    harbor = made(21, "a quiet harbor", "2026-12-03T10:00:09Z")
    for finished in (forest, forest[::-1]):
        shown = filter_history([harbor, *finished])
        assert [(r.request.prompt, r.seed) for r in shown] == [
            ("a quiet harbor", 21),
            ("a misty forest", 10),
            ("a misty forest", 11),
            ("a misty forest", 12),
        ]

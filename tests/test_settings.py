"""Every settings source reaches every face: `%%flux` honours the environment and `%config`, the panel starts
from `%config`, and `-n` is paced by the plan like `--each` (a failing cell stopping papermill: test_papermill)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from doitong_nb.sandbox import Sandbox

PROMPT = "A lighthouse on a basalt cliff at dawn"


@pytest.fixture
def ip(sandbox: Sandbox, tmp_path: Path, shell_for) -> Iterator[InteractiveShell]:
    yield shell_for(sandbox, tmp_path / "out")


def _submitted_paths(box: Sandbox) -> set[str]:
    return {e["path"] for e in box.api_request_log if e["method"] == "POST" or e["path"].startswith("/v1/")}


def test_the_cell_magic_honours_doitong_transport_from_the_environment(
    ip: InteractiveShell, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOITONG_TRANSPORT", "rest")
    ip.run_cell_magic("flux", "--size 256x256 --seed 1", PROMPT)
    assert "/v1/text_to_image" in _submitted_paths(sandbox) and "/graphql" not in _submitted_paths(sandbox)


def test_config_wins_over_the_environment(ip: InteractiveShell, sandbox: Sandbox, monkeypatch) -> None:
    monkeypatch.setenv("DOITONG_TRANSPORT", "rest")
    ip.run_line_magic("config", "Flux.transport = 'graphql'")
    ip.run_cell_magic("flux", "--size 256x256 --seed 2", PROMPT)
    assert "/graphql" in _submitted_paths(sandbox) and "/v1/text_to_image" not in _submitted_paths(sandbox)


def test_an_output_folder_set_in_the_environment_is_seen_at_the_next_cell(
    ip: InteractiveShell, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ip.run_cell_magic("flux", "--size 256x256 --seed 3 -o first", PROMPT)
    monkeypatch.setenv("DOITONG_OUTPUT_DIR", str(tmp_path / "elsewhere"))
    ip.run_cell_magic("flux", "--size 256x256 --seed 3 -o second", PROMPT)
    assert ip.user_ns["first"].path.parent == tmp_path / "out"
    assert ip.user_ns["second"].path.parent == tmp_path / "elsewhere"


def test_the_panel_starts_from_config(ip: InteractiveShell) -> None:
    from doitong_nb._panel_widget import FluxPanel

    ip.run_line_magic("config", "Flux.size = '2048x2048'")
    ip.run_line_magic("config", "Flux.transport = 'rest'")
    ip.run_line_magic("config", "Flux.max_credits = 120")
    panel = FluxPanel()
    assert (panel.size.value, panel.transport.value, panel.budget.value) == ("2048x2048", "rest", 120)


def test_count_on_the_free_plan_is_paced_by_the_plan_and_delivers_every_image(tmp_path: Path, shell_for) -> None:
    """`-n 12` on the free plan (one job at a time) gave 9 images and 3 'too many jobs' errors (issue 10)."""
    with Sandbox(plan="free", credits=1000, speed=1000) as box:
        ip = shell_for(box, tmp_path / "out")
        ip.run_cell_magic("flux", "-n 12 --size 256x256 -o grid", PROMPT)
        total = box.stats()["total"]
    grid = ip.user_ns["grid"]
    assert len(grid) == 12 and all(hasattr(r, "path") for r in grid)
    assert total["rate_limited"] == 0 and total["jobs_created"] == 12

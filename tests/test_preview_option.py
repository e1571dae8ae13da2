"""Issue 24: the inline preview's size per cell (`--preview 256`, `--preview none`) and per kernel
(`%config Flux.preview_px`), none giving a link-only card with no image bytes, for notebooks kept in git."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError

from doitong_sandbox import Sandbox

PROMPT = "A heron in the reeds"


@pytest.fixture
def ip(sandbox: Sandbox, tmp_path: Path, shell_for: Any) -> Iterator[Any]:
    yield shell_for(sandbox, tmp_path / "out")


@pytest.fixture
def shown(ip: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The data of each display the cells send, in order."""
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(ip.display_pub, "publish", lambda data, *args, **kwargs: sent.append(data))
    return sent


def _widths(page: str) -> list[int]:
    return [int(w) for w in re.findall(r'<img [^>]*width="(\d+)"', page)]


def test_the_cell_option_sets_the_preview_size(ip: Any, shown: list[dict[str, Any]]) -> None:
    ip.run_cell_magic("flux", "--size 1024x1024 --seed 1 --preview 256", PROMPT)
    assert _widths(shown[-1]["text/html"]) == [256]
    ip.run_cell_magic("flux", "--size 1024x1024 --seed 1", PROMPT)  # the next cell: the setting again
    assert _widths(shown[-1]["text/html"]) == [1024]


@pytest.mark.parametrize("value", ["none", "0"])
def test_preview_none_is_a_link_only_card(ip: Any, shown: list[dict[str, Any]], value: str) -> None:
    ip.run_cell_magic("flux", f"--size 1024x1024 --seed 2 -n 2 --preview {value} -o pair", PROMPT)
    data = shown[-1]
    assert "<img" not in data["text/html"] and "base64" not in data["text/html"]
    for result in ip.user_ns["pair"]:
        assert result.path.name in data["text/html"]


def test_the_kernel_setting_makes_link_only_cards(ip: Any, shown: list[dict[str, Any]]) -> None:
    ip.run_line_magic("config", "Flux.preview_px = 0")
    ip.run_cell_magic("flux", "--size 1024x1024 --seed 3", PROMPT)
    assert "<img" not in shown[-1]["text/html"]


def test_a_bad_preview_is_refused_before_anything_is_sent(ip: Any, sandbox: Sandbox) -> None:
    with pytest.raises(UsageError, match="preview_px 'tiny' must be 0 \\(no image\\) or a whole number of pixels"):
        ip.run_cell_magic("flux", "--preview tiny", PROMPT)
    with pytest.raises(UsageError, match="argument --preview: preview_px 5 must be"):
        ip.run_cell_magic("flux", "--preview 5", PROMPT)
    assert sandbox.stats()["total"]["submissions"] == 0

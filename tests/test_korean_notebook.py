"""notebooks/korean.ipynb (issue 21) shows a session in Korean: no output it holds says a word of ours in English.

nbval keeps those outputs what the code shows today (`pytest notebooks/korean.ipynb`); this reads them as a user
does, with test_i18n's checker. A dry run's request is the service's language, not ours, so it is not read.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.test_i18n import english_words

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "korean.ipynb"
_REQUEST = re.compile(r"<pre\b.*?</pre>", re.S)  # the dry run's request, as it would be sent


def _shown() -> list[tuple[str, str]]:
    """(cell source, what an output shows) for every output: the HTML where there is one, else the text."""
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    shown = []
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            text = "".join(output.get("text") or data.get("text/html") or data.get("text/plain") or "")
            shown.append(("".join(cell["source"]).splitlines()[0], _REQUEST.sub(" ", text)))
    return shown


@pytest.mark.parametrize("text", [pytest.param(text, id=source) for source, text in _shown()])
def test_an_output_of_the_korean_notebook_has_no_english_word_of_ours(text: str) -> None:
    assert english_words(text) == []


def test_the_korean_notebook_shows_its_cells_in_korean() -> None:
    shown = "\n".join(text for _, text in _shown())
    assert all(word in shown for word in ("시드 7", "재사용", "시험 실행", "잔액", "저장된 결과", "너비 5000"))

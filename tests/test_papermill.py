"""Issue 12: where notebooks run. papermill runs the parameterised quickstart (its `parameters` cell) and fails on
a bad option; nbconvert exports are tested in test_render_everywhere.py."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

papermill = pytest.importorskip("papermill")
pytestmark = pytest.mark.integration  # papermill starts a kernel


def execute(*args: object, **kwargs: object) -> object:
    """papermill in a thread of its own: it leaves an event loop marked running in the thread that called it."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(papermill.execute_notebook, *args, **kwargs).result()


REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "notebooks" / "quickstart.ipynb"


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The kernel papermill starts inherits this environment: the bundled sandbox, fast, and a fresh folder."""
    monkeypatch.delenv("DOITONG_API_KEY", raising=False)
    monkeypatch.delenv("DOITONG_BASE_URL", raising=False)
    monkeypatch.setenv("DOITONG_SANDBOX_SPEED", "50")
    monkeypatch.setenv("DOITONG_OUTPUT_DIR", str(tmp_path / "flux_outputs"))
    return tmp_path


def test_the_quickstart_runs_under_papermill_with_its_parameters(outputs: Path) -> None:
    result = outputs / "quickstart-seed8.ipynb"
    execute(
        str(QUICKSTART), str(result), parameters={"seed": 8, "size": "512x512"}, cwd=str(outputs), progress_bar=False
    )
    nb = nbformat.read(result, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and "seed = 8" in injected[0].source
    texts = [
        o.get("data", {}).get("text/plain", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    ]
    assert any("512x512 seed=8" in t for t in texts), texts
    assert any("replayed" in t and "seed=8" in t for t in texts), "the re-run cell did not replay the first"


def test_a_bad_option_fails_the_papermill_run_at_that_cell(outputs: Path) -> None:
    ran = outputs / "quickstart-bad.ipynb"
    with pytest.raises(papermill.PapermillExecutionError):
        execute(
            str(QUICKSTART),
            str(ran),
            parameters={"size": "1000x1000"},  # not a multiple of 16: refused before sending
            cwd=str(outputs),
            progress_bar=False,
        )
    code = [c for c in nbformat.read(ran, as_version=4).cells if c.cell_type == "code"]
    failed = next(i for i, c in enumerate(code) if "1000 is not a multiple of 16" in str(c.get("outputs")))
    assert all(c.get("execution_count") is None for c in code[failed + 1 :]), "Run All went past the failing cell"
    assert not list((outputs / "flux_outputs").glob("*.jp*g")), "nothing after the failing cell ran"

"""Issue 24: a panel's results survive save, reopen and HTML export, as cards with the cells that redo them.

A real kernel runs the panel (nbclient, as Run All does); the notebook is written, read back and exported."""

from __future__ import annotations

from pathlib import Path

import nbformat
from _kernel import executed_notebook
from nbconvert import HTMLExporter

from doitong_sandbox import Sandbox

CELLS = [
    "%load_ext doitong_nb",
    "from doitong_nb._notebook.panel import FluxPanel\npanel = FluxPanel()\npanel",
    # the panel's worker has sent the record's update when its executor is shut down: a wait, not a sleep
    'panel.prompt.value, panel.seed.value = "A kingfisher on a reed", "8"\n'
    "panel.generate.click()\npanel._executor.shutdown(wait=True)\nprint(panel.results[0].job_id)",
]


def test_a_panel_result_survives_save_reopen_and_html_export(tmp_path: Path) -> None:
    with Sandbox(speed=1000) as box:
        nb = executed_notebook(CELLS, box, tmp_path)
    job_id = nb.cells[2].outputs[-1].text.strip()
    saved = tmp_path / "panel.ipynb"
    nbformat.write(nb, saved)
    reopened = nbformat.read(saved, as_version=4)
    outputs = reopened.cells[1].outputs
    texts = [o.data["text/plain"] for o in outputs if o.output_type == "display_data"]
    assert len(texts) == 2 and texts[0].startswith("Flux panel (interactive") and "VBox" not in texts[0]
    record = outputs[-1].data
    assert (
        job_id in record["text/plain"]
        and "%%flux --size 1024x1024 --seed 8\nA kingfisher on a reed" in record["text/plain"]
    )
    page, _ = HTMLExporter().from_notebook_node(reopened)
    assert page.count("<figure") == 1 and job_id in page and "data:image/jpeg;base64," in page
    assert "%%flux --size 1024x1024 --seed 8" in page and "VBox(children" not in page

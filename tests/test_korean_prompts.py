"""Issue 21: a Korean prompt all the way through, kept exactly as typed and escaped only where it is shown.

One prompt with Hangul and the characters HTML and JSON treat specially goes through `%%flux` and a grid, then
into the file names, the sidecar, the image's own provenance, the lock file, the RO-Crate and nbconvert's Markdown
and HTML exports; a re-run replays it at 0 credits.
"""

from __future__ import annotations

import html
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import nbformat
import pytest

from doitong_nb import read_provenance
from doitong_nb._notebook.display import result_bundle
from doitong_nb._tools.cli import main
from doitong_sandbox import Sandbox

PROMPT = '새벽녘 현무암 절벽 위의 등대, <u>"빛" & 그림자</u>'
ESCAPED = html.escape(PROMPT)  # what a page may carry: the Hangul as it is, the markup characters as entities


@pytest.fixture
def ip(sandbox: Sandbox, tmp_path: Path, shell_for: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("DOITONG_LOCK_FILE", raising=False)
    return shell_for(sandbox, tmp_path / "flux_outputs")


def _cell_result(ip: Any) -> Any:
    ip.run_cell_magic("flux", "--size 512x512 --seed 3 -o img", PROMPT)
    return ip.user_ns["img"]


def test_the_prompt_is_kept_exactly_in_every_file_and_the_file_names_stay_ascii(ip: Any, tmp_path: Path) -> None:
    result = _cell_result(ip)
    assert result.request.prompt == PROMPT
    out = tmp_path / "flux_outputs"
    assert all(p.name.isascii() for p in out.rglob("*"))  # files are named by job id, whatever the prompt's script
    sidecar = json.loads(result.path.with_suffix(".json").read_text(encoding="utf-8"))
    assert sidecar["request"]["prompt"] == PROMPT
    assert read_provenance(result.path)["request"]["prompt"] == PROMPT  # the metadata inside the image itself
    lines = (tmp_path / "flux_outputs.lock.jsonl").read_text(encoding="utf-8").splitlines()
    (locked,) = [json.loads(line) for line in lines[1:]]  # after the header line
    assert locked["request"]["prompt"] == PROMPT and locked["sha256"] == result.sha256


def test_the_card_shows_the_hangul_and_escapes_the_markup(ip: Any) -> None:
    bundle = result_bundle([_cell_result(ip)])
    page = bundle["text/html"]
    assert ESCAPED in page and "<u>" not in page  # a prompt never becomes markup


def test_a_grid_of_a_korean_prompt_labels_its_cells_and_escapes_the_prompt(ip: Any, capsys: Any) -> None:
    ip.run_cell_magic("flux", '--grid "seed=1,2" --size 256x256 -o sweep', PROMPT)
    page = ip.user_ns["sweep"]._repr_mimebundle_()[0]["text/html"]
    assert page.count("<figure") == 2 and ">seed=1</th>" in page and ">seed=2</th>" in page
    assert "<u>" not in page and all(r.request.prompt == PROMPT for r in ip.user_ns["sweep"].results)


def test_a_re_run_of_the_korean_cell_replays_at_no_cost(ip: Any, sandbox: Sandbox) -> None:
    first = _cell_result(ip)
    again = _cell_result(ip)
    assert again.replayed and again.sha256 == first.sha256
    assert sandbox.stats()["total"]["jobs_created"] == 1


def _notebook_of(result: Any, folder: Path) -> Path:
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(f"%%flux --size 512x512 --seed 3\n{PROMPT}")
    cell.outputs = [nbformat.v4.new_output("display_data", data=result_bundle([result]))]
    notebook.cells.append(cell)
    path = folder / "논문.ipynb"  # a Korean notebook name too
    nbformat.write(notebook, path)
    return path


def test_the_ro_crate_keeps_the_korean_prompt_and_notebook_name(ip: Any, tmp_path: Path) -> None:
    from rocrate.rocrate import ROCrate

    notebook = _notebook_of(_cell_result(ip), tmp_path)
    crate_dir = tmp_path / "crate"
    assert main(["export", str(notebook), "--ro-crate", str(crate_dir)]) == 0
    crate = ROCrate(crate_dir)
    (action,) = [e for e in crate.get_entities() if e.type == "CreateAction"]
    assert {p["name"]: p["value"] for p in action["object"]}["prompt"] == PROMPT
    assert crate.get(quote("논문.ipynb")) is not None  # an id is a URI: percent-encoded, as RO-Crate says
    assert (crate_dir / "논문.ipynb").is_file()
    assert main(["verify", str(notebook)]) == 0


@pytest.mark.parametrize("to", ["markdown", "html"])
def test_nbconvert_exports_carry_the_escaped_korean_prompt(ip: Any, tmp_path: Path, to: str) -> None:
    notebook = _notebook_of(_cell_result(ip), tmp_path)
    subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", to, "--log-level", "ERROR", str(notebook)],
        check=True,
        capture_output=True,
    )
    exported = notebook.with_suffix(".md" if to == "markdown" else ".html").read_text(encoding="utf-8")
    if to == "markdown":  # the card as it is; the cell's source fenced, as typed
        assert ESCAPED in exported and f"```\n%%flux --size 512x512 --seed 3\n{PROMPT}\n```" in exported
        exported = exported.replace(PROMPT, "")
    else:  # nbconvert's sanitizer writes the attributes anew: compare what they say
        assert html.unescape(exported).count(PROMPT) >= 3  # the source, the alt text and the caption
    assert "<u>" not in exported  # never markup

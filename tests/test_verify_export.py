"""`doitong-nb verify` / `%flux_verify` guard a notebook's images; `doitong-nb export` writes an RO-Crate."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from IPython.core.error import UsageError

from doitong_nb._notebook.display import result_bundle
from doitong_nb._runtime.client import Flux
from doitong_nb._store.lockfile import LockFile, render
from doitong_nb._tools.cli import main
from doitong_sandbox import Sandbox

PROMPTS = ["a lighthouse at dusk", "a harbour in fog"]


def notebook_showing(path: Path, results: list[Any]) -> Path:
    """A saved notebook whose outputs show `results` the way %%flux shows them (one card each)."""
    nb = nbformat.v4.new_notebook()
    for r in results:
        cell = nbformat.v4.new_code_cell(f"%%flux --seed {r.seed}\n{r.request.prompt}")
        cell.outputs = [nbformat.v4.new_output("display_data", data=result_bundle([r]))]
        nb.cells.append(cell)
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "print(r)", outputs=[nbformat.v4.new_output("stream", name="stdout", text=repr(results[0]) + "\n")]
        )
    )
    nbformat.write(nb, path)
    return path


@pytest.fixture
def paper(sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[Any]]:
    """A paper's folder: paper.ipynb, flux_outputs/ beside it and flux_outputs.lock.jsonl."""
    monkeypatch.delenv("DOITONG_OUTPUT_DIR", raising=False)
    monkeypatch.delenv("DOITONG_LOCK_FILE", raising=False)
    folder = tmp_path / "paper"
    folder.mkdir()
    with Flux(api_key=sandbox.api_key, base_url=sandbox.base_url, output_dir=folder / "flux_outputs") as flux:
        results = flux.batch(PROMPTS, size="1024x1024", seed=11, progress=False).images
    return notebook_showing(folder / "paper.ipynb", results), results


def verify(capsys: Any, *args: str) -> tuple[int, list[str]]:
    status = main(["verify", *args])
    return status, capsys.readouterr().out.splitlines()


def test_verify_passes_when_every_shown_image_is_locked_and_intact(paper: Any, capsys: Any) -> None:
    nb, results = paper
    status, lines = verify(capsys, str(nb))
    assert status == 0
    assert [line.split()[:2] for line in lines[:-1]] == [["OK", r.path.name] for r in results]
    assert lines[-1] == "2 images: 2 ok - all verified"


def test_verify_catches_an_edited_image(paper: Any, capsys: Any) -> None:
    nb, results = paper
    results[1].path.write_bytes(results[1].path.read_bytes() + b"retouched")
    status, lines = verify(capsys, str(nb))
    assert status == 1
    assert lines[1].startswith(f"MODIFIED     {results[1].path.name}") and "has sha256" in lines[1]
    assert lines[-1].endswith("FAILED")


def test_verify_catches_a_missing_file(paper: Any, capsys: Any) -> None:
    nb, results = paper
    results[0].path.unlink()
    status, lines = verify(capsys, str(nb))
    assert status == 1 and lines[0].startswith(f"MISSING      {results[0].path.name}")


def test_verify_catches_a_shown_image_absent_from_the_lock(paper: Any, capsys: Any) -> None:
    nb, results = paper
    lock = LockFile(nb.parent / "flux_outputs.lock.jsonl")
    lock.path.write_text(render([e for e in lock.entries() if e["job_id"] != results[0].job_id]))
    status, lines = verify(capsys, str(nb))
    assert status == 1 and lines[0].startswith(f"NOT IN LOCK  {results[0].path.name}")
    assert lines[-1] == "2 images: 1 ok, 1 not in lock - FAILED"


def test_verify_with_no_notebook_checks_every_locked_image(paper: Any, capsys: Any) -> None:
    nb, _ = paper
    status, lines = verify(capsys, "--output-dir", str(nb.parent / "flux_outputs"))
    assert status == 0 and lines[-1] == "2 images: 2 ok - all verified"


def test_the_verify_magic_prints_a_line_per_image_and_fails_the_cell_on_a_mismatch(
    paper: Any, sandbox: Sandbox, shell_for: Callable[[Sandbox, Path], Any], capsys: Any
) -> None:
    nb, results = paper
    shell = shell_for(sandbox, nb.parent / "flux_outputs")
    shell.run_line_magic("flux_verify", str(nb))
    assert capsys.readouterr().out.splitlines()[-1] == "2 images: 2 ok - all verified"
    results[0].path.write_bytes(b"\xff\xd8\xff" + b"not the image")
    with pytest.raises(UsageError, match="1 of 2 images failed"):
        shell.run_line_magic("flux_verify", str(nb))
    assert "MODIFIED" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["zip", "dir"])
def test_the_ro_crate_export_round_trips_and_lists_every_image_with_its_sha256(
    paper: Any, tmp_path: Path, capsys: Any, kind: str
) -> None:
    from rocrate.rocrate import ROCrate

    nb, results = paper
    dest = tmp_path / ("crate.zip" if kind == "zip" else "crate")
    assert main(["export", str(nb), "--ro-crate", str(dest)]) == 0
    assert "with 2 image(s)" in capsys.readouterr().out
    if kind == "zip":
        names = zipfile.ZipFile(dest).namelist()
        assert {"ro-crate-metadata.json", "paper.ipynb", "flux_outputs.lock.jsonl"} <= set(names)
    crate = ROCrate(dest)
    images = {e.id: e for e in crate.get_entities() if e.id.startswith("images/")}
    assert {i: e["sha256"] for i, e in images.items()} == {f"images/{r.path.name}": r.sha256 for r in results}
    actions = [e for e in crate.get_entities() if e.type == "CreateAction"]
    assert len(actions) == 2
    for action in actions:
        result = action["result"]
        assert result.id in images
        assert action["instrument"]["name"] == "Doitong Flux Ultra" and action["instrument"]["version"]
        assert action["agent"]["name"] == "doitong-nb" and action["agent"]["version"]
        assert action["startTime"] and action["endTime"]
        objects = {p["name"]: p["value"] for p in action["object"]}
        assert objects["prompt"] in PROMPTS and objects["seed"] == 11 and objects["width"] == 1024
    assert crate.get("paper.ipynb") is not None and crate.get("flux_outputs.lock.jsonl") is not None


def test_an_edited_image_is_not_exported(paper: Any, tmp_path: Path, capsys: Any) -> None:
    nb, results = paper
    results[0].path.write_bytes(results[0].path.read_bytes() + b"x")
    assert main(["export", str(nb), "--ro-crate", str(tmp_path / "crate.zip")]) == 2
    assert "modified" in capsys.readouterr().out and not (tmp_path / "crate.zip").exists()


def test_the_lock_in_the_crate_is_the_one_beside_the_notebook(paper: Any, tmp_path: Path) -> None:
    nb, _ = paper
    main(["export", str(nb), "--ro-crate", str(tmp_path / "crate")])
    inside = (tmp_path / "crate" / "flux_outputs.lock.jsonl").read_text()
    assert inside == (nb.parent / "flux_outputs.lock.jsonl").read_text()
    assert json.loads(inside.splitlines()[0]) == {"doitong-nb-lock": 1}

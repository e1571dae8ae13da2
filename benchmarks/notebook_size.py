"""How many bytes one %%flux image adds to a saved notebook, against embedding the full-resolution file.

Executes a tiny notebook with nbclient (`%load_ext doitong_nb`, then `%%flux --size 4096x4096 --seed 1`)
against the bundled sandbox (no DOITONG_API_KEY, DOITONG_SANDBOX_SPEED=50, DOITONG_OUTPUT_DIR a temp
dir), saves it, and compares its size with the same notebook whose image output is the full 4096x4096
file embedded as base64 (the baseline, built in the same run from the saved file).
Targets: <= 300 KB per image, > 20x smaller than the baseline. Run: `python benchmarks/notebook_size.py`.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CELLS = ("%load_ext doitong_nb", "%%flux --size 4096x4096 --seed 1\nA futuristic city with flying cars and neon lights")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def _execute(path: Path, out_dir: Path) -> float:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env = dict(os.environ, DOITONG_SANDBOX_SPEED="50", DOITONG_OUTPUT_DIR=str(out_dir))
    env.pop("DOITONG_API_KEY", None)
    env.pop("DOITONG_BASE_URL", None)
    started = time.perf_counter()
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        NotebookClient(nb, timeout=170, kernel_name="python3", resources={"metadata": {"path": str(out_dir)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    nbformat.write(nb, path)
    return time.perf_counter() - started


def _embedded_baseline(nb_path: Path, image: Path, path: Path) -> None:
    """The same notebook with the flux cell's output replaced by the full file as base64."""
    nb = nbformat.read(nb_path, as_version=4)
    cell = nb.cells[-1]
    text = "".join(
        "".join(o.get("data", {}).get("text/plain", "")) for o in cell.outputs if o.get("output_type") != "stream"
    )
    mime = mimetypes.guess_type(image.name)[0] or "image/jpeg"
    data = {mime: base64.b64encode(image.read_bytes()).decode("ascii"), "text/plain": text or str(image)}
    cell.outputs = [nbformat.v4.new_output("display_data", data=data)]
    nbformat.write(nb, path)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        out_dir = tmp_path / "flux_outputs"
        out_dir.mkdir()
        ours = tmp_path / "ours.ipynb"
        seconds = _execute(ours, out_dir)
        outputs = nbformat.read(ours, as_version=4).cells[-1].outputs
        errors = [o for o in outputs if o.get("output_type") == "error"]
        notes = [o["text"].strip() for o in outputs if o.get("name") == "stderr"]
        images = sorted(
            (p for p in out_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda p: p.stat().st_size,
        )
        if not images:
            raise SystemExit(f"no image saved under {out_dir}; cell outputs: {outputs}")
        full = images[-1]
        baseline = tmp_path / "embedded.ipynb"
        _embedded_baseline(ours, full, baseline)
        size, base = ours.stat().st_size, baseline.stat().st_size
        mimes = sorted({m for o in outputs for m in o.get("data", {})})
        print(f"notebook executed in {seconds:.1f} s; image outputs: {', '.join(mimes)}")
        if errors:
            print(f"  the cell raised: {errors[0].get('ename')}: {errors[0].get('evalue')}")
        for note in notes:
            print(f"  the cell's stderr: {note}")
        print(f"  full-resolution file {full.name}: {full.stat().st_size / 1024:,.0f} KB")
        print(f"  {'doitong_nb notebook (1 image)':<36}{size / 1024:10,.1f} KB per image  (target <= 300 KB)")
        print(f"  {'same, full image embedded (baseline)':<36}{base / 1024:10,.1f} KB per image")
        print(f"  ratio {base / size:.1f}x smaller  (target > 20x)")


if __name__ == "__main__":
    main()

"""The example notebooks' full-resolution files, byte for byte (issue 16).

nbval compares each cell's outputs, and so only the previews embedded in the notebook. This compares the files
the notebooks stored: after nbval has executed a notebook (conftest.py runs these tests after every notebook),
each file in its output folder, minus the provenance our store embedded (tests/_provenance.py, written apart
from store.py), must hash to what `notebooks/<name>.sha256.json` records for it.

Job ids are random, so the manifest is keyed by the request's replay key from each file's sidecar; a request
may own several files (reproducible_research.ipynb tampers with one and fetches it again), so each key lists
the sorted hashes of all of them. A missing, extra or changed file fails.

After a deliberate change to the sandbox's images or to a notebook, rewrite the manifests with
`pytest notebooks/ --update-fullres-hashes` (in the pinned test environment: Pillow from constraints.txt).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # tests/_provenance.py, as tests/ itself imports it

from _provenance import served_sha256  # noqa: E402

NOTEBOOKS = sorted(p.stem for p in HERE.glob("*.ipynb"))
_IMAGE_SUFFIXES = (".jpg", ".png")


def manifest_path(stem: str) -> Path:
    return HERE / f"{stem}.sha256.json"


def fullres_hashes(folder: Path) -> dict[str, dict[str, object]]:
    """Replay key -> the request in words and the sorted sha256s of its files' served bytes."""
    entries: dict[str, dict[str, object]] = {}
    images = sorted(p for p in folder.glob("*") if p.suffix in _IMAGE_SUFFIXES) if folder.is_dir() else []
    for image in images:
        sidecar_path = image.with_suffix(".json")
        assert sidecar_path.is_file(), f"{image.name} has no sidecar {sidecar_path.name}"
        sidecar = json.loads(sidecar_path.read_text(encoding="utf-8"))
        request = sidecar["request"]
        entry = entries.setdefault(
            sidecar["replay_key"],
            {
                "request": f"{request['prompt']!r} seed {request['seed']} {request['width']}x{request['height']}"
                f" raw={request['raw']} {request['output_format']}",
                "sha256": [],
            },
        )
        entry["sha256"].append(served_sha256(image))  # type: ignore[union-attr]
    for entry in entries.values():
        entry["sha256"].sort()  # type: ignore[union-attr]
    return dict(sorted(entries.items()))


def _differences(expected: dict[str, dict[str, object]], actual: dict[str, dict[str, object]]) -> list[str]:
    lines = []
    for key in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(key), actual.get(key)
        label = (want or got or {}).get("request")
        if want is None:
            lines.append(f"new request {label} (key {key[:12]}): {got['sha256']}")  # type: ignore[index]
        elif got is None:
            lines.append(f"no file for {label} (key {key[:12]}); the manifest has {want['sha256']}")
        elif want != got:
            lines.append(f"{label} (key {key[:12]}): manifest {want['sha256']}, this run {got['sha256']}")
    return lines


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_full_resolution_files_match_the_manifest(
    stem: str, notebook_outputs: dict[str, Path], request: pytest.FixtureRequest
) -> None:
    if stem not in notebook_outputs:
        pytest.skip(f"{stem}.ipynb was not executed in this session (run `pytest notebooks/`)")
    actual = fullres_hashes(notebook_outputs[stem])
    path = manifest_path(stem)
    if request.config.getoption("--update-fullres-hashes"):
        path.write_text(json.dumps(actual, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    assert path.is_file(), f"{path.name} is missing; write it with `pytest notebooks/ --update-fullres-hashes`"
    expected = json.loads(path.read_text(encoding="utf-8"))
    differences = _differences(expected, actual)
    assert not differences, (
        f"{stem}.ipynb's full-resolution files differ from {path.name} "
        "(if the change is deliberate: `pytest notebooks/ --update-fullres-hashes`):\n  " + "\n  ".join(differences)
    )

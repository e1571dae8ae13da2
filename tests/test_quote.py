"""Issue 24: one quote everywhere. `doitong-nb quote NOTEBOOK.ipynb` and `%flux_quote` price a notebook's %%flux and
%flux cells with the engine's quote, as the magics parse them, sending nothing; the README's price table is the
contract's."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from doitong_nb._tools.cli import main
from doitong_nb._tools.quote import price_table
from doitong_sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
CELLS = [
    "%load_ext doitong_nb",
    "%%flux --size 256x256 --seed 1\nA lighthouse at dawn",  # new: 10
    "x = 1\n%flux A paper boat --size 512x512 --seed 2",  # a line magic among code: new, 10
    "%%flux --size 256x256 -n 2\nA red fox",  # two unseeded variants: new, 20
    "%%flux --size 256x256 --seed 1\nA lighthouse at dawn",  # made above: replayed
    '%%flux --grid "seed=1,5" --size 256x256\nA lighthouse at dawn',  # seed 1 replayed, seed 5 new: 10
    "%%flux --dry-run --size 4096x4096\nA castle",  # sends nothing
    '%config Flux.size = "1024x1024"',
    "%%flux --seed 9\nAn owl",  # the %config size: new, 20
]


def _notebook(path: Path, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbformat.write(nb, path)
    return path


def _cli_quote(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["quote", str(path)]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_the_cli_quote_is_what_run_all_then_spends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nbclient import NotebookClient

    path = _notebook(tmp_path / "sweep.ipynb", CELLS)
    with Sandbox(speed=1000) as box:
        monkeypatch.setenv("DOITONG_API_KEY", box.api_key)
        monkeypatch.setenv("DOITONG_BASE_URL", box.base_url)
        monkeypatch.delenv("DOITONG_OUTPUT_DIR", raising=False)  # flux_outputs beside the notebook, as the kernel
        quoted = _cli_quote(path, capsys)
        assert quoted == "Run All would cost 70 credits: 6 new images, 2 replayed"
        assert box.stats()["total"]["api_requests"] == 0  # nothing sent
        nb = nbformat.read(path, as_version=4)
        NotebookClient(
            nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
        spent = box.stats()["total"]["credits_charged"]
        assert f"Run All would cost {spent} credits:" in quoted
        assert _cli_quote(path, capsys) == "Run All would cost 0 credits: 0 new images, 8 replayed"


def test_cells_that_need_the_kernel_are_named_and_a_bad_option_stops_the_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], sandbox: Sandbox
) -> None:
    monkeypatch.setenv("DOITONG_API_KEY", sandbox.api_key)
    monkeypatch.setenv("DOITONG_BASE_URL", sandbox.base_url)
    cells = [
        "%%flux --size 256x256 --seed 1\nA {style} lighthouse",
        "%%flux --size 256x256 --each animals\nA {item}",
        "%%flux --size 256x256 --seed 2\nA lighthouse, {{literally}}",
        "%%flux --size 999x256\nA boat",
        "%%flux --size 256x256 --seed 3\nnever reached",
    ]
    quoted = _cli_quote(_notebook(tmp_path / "vars.ipynb", cells), capsys)
    assert quoted == (
        "Run All would cost 10 credits: 1 new image, 0 replayed; not priced: cell(s) 1, 2, whose prompt or --each "
        "needs the kernel's variables (run %flux_quote in the notebook); Run All stops at cell 4: width 999 is not "
        "a multiple of 16; try 992 or 1008"
    )


def test_flux_quote_in_the_kernel_prices_with_its_variables_and_what_is_stored(
    tmp_path: Path, sandbox: Sandbox, shell_for, capsys: pytest.CaptureFixture[str]
) -> None:
    ip = shell_for(sandbox, tmp_path / "out")
    ip.user_ns.update(style="watercolour", animals=["fox", "owl", "hare"])
    ip.run_cell_magic("flux", "--size 256x256 --seed 1", "A watercolour lighthouse")
    capsys.readouterr()
    path = _notebook(
        tmp_path / "vars.ipynb",
        ["%%flux --size 256x256 --seed 1\nA {style} lighthouse", "%%flux --size 512x512 --each animals\nA {item}"],
    )
    ip.run_line_magic("flux_quote", str(path))
    assert capsys.readouterr().out.strip() == "Run All would cost 30 credits: 3 new images, 1 replayed"
    assert sandbox.stats()["total"]["submissions"] == 1


def test_flux_quote_without_a_name_needs_the_notebook_file(
    tmp_path: Path, sandbox: Sandbox, shell_for, monkeypatch: pytest.MonkeyPatch
) -> None:
    from IPython.core.error import UsageError

    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    ip = shell_for(sandbox, tmp_path / "out")
    with pytest.raises(UsageError, match=r"name it, %flux_quote NOTEBOOK\.ipynb"):
        ip.run_line_magic("flux_quote", "")


@pytest.mark.unit
def test_the_readme_price_table_is_the_contracts() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert price_table() in readme, "regenerate the README's price table with `doitong-nb prices`"
    assert "| 1024x1024 | 1.05 MP | 20 |" in price_table() and "| 4096x4096 | 16.78 MP | 50 |" in price_table()


@pytest.mark.unit
def test_the_readme_says_pip_install_with_the_extras() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert re.search(r"^pip install doitong-nb$", readme, re.M)
    named = set(re.findall(r'pip install "doitong-nb\[([a-z0-9,]+)\]"', readme))
    assert {e for group in named for e in group.split(",")} >= set(extras) - {"test"}

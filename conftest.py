"""Shared fixtures: a real sandbox on loopback, and a client bound to it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from doitong_nb._client import Flux
from doitong_nb._magics import register
from doitong_nb.sandbox import Sandbox

_OUTPUTS = Path(tempfile.mkdtemp(prefix="doitong-nb-tests-"))
_NOTEBOOKS_RUN: set[str] = set()  # stems of the notebooks nbval executed in this session


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-fullres-hashes",
        action="store_true",
        help="rewrite notebooks/<name>.sha256.json from this run's full-resolution files instead of comparing",
    )


def pytest_configure(config: pytest.Config) -> None:
    """No real key ever reaches a test; notebook kernels get a fast sandbox."""
    os.environ.pop("DOITONG_API_KEY", None)
    os.environ.pop("DOITONG_BASE_URL", None)
    os.environ.setdefault("DOITONG_SANDBOX_SPEED", "50")


_SERVER_FIXTURES = {"sandbox", "flux", "shell_for", "ip", "notebook_outputs"}  # the last: files notebooks made


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the engine's unit tests: no server, no kernel, no browser, so `make unit` runs them in seconds on
    every edit. A test is end-to-end when it is a notebook cell, uses a server fixture, or its module starts a
    Sandbox or a kernel itself."""
    for item in items:
        module = getattr(item, "module", None)
        namespace = vars(module) if module is not None else {}
        end_to_end = (
            str(item.fspath).endswith(".ipynb")
            or _SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
            or any(name in namespace for name in ("Sandbox", "kernel", "start_new_kernel", "NotebookClient"))
            or item.get_closest_marker("browser")
            or item.get_closest_marker("soak")
        )
        if not end_to_end:
            item.add_marker(pytest.mark.unit)
    # Tests that read what the notebooks wrote run after every notebook (stable sort: order kept otherwise).
    items.sort(key=lambda item: "notebook_outputs" in getattr(item, "fixturenames", ()))


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Each notebook's kernel (started with its first cell) gets a fresh output folder of its own."""
    path = Path(str(item.fspath))
    if path.suffix == ".ipynb":
        os.environ["DOITONG_OUTPUT_DIR"] = str(_OUTPUTS / path.stem / "flux_outputs")
        _NOTEBOOKS_RUN.add(path.stem)


@pytest.fixture
def notebook_outputs() -> dict[str, Path]:
    """Notebook stem -> the output folder its kernel wrote to, for the notebooks executed in this session."""
    return {stem: _OUTPUTS / stem / "flux_outputs" for stem in sorted(_NOTEBOOKS_RUN)}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fast sandbox on loopback (every duration divided by 1000), pro plan, 1000 credits."""
    with Sandbox(speed=1000) as sb:
        yield sb


@pytest.fixture
def flux(sandbox: Sandbox, tmp_path: Path) -> Iterator[Flux]:
    """A blocking client talking to `sandbox`, storing results under tmp_path."""
    with Flux(api_key=sandbox.api_key, base_url=sandbox.base_url, output_dir=tmp_path / "out") as client:
        yield client


@pytest.fixture
def failed_cell() -> Callable[..., str]:
    """Runs a %%flux cell that must fail, and returns its one line: a UsageError when nothing was sent (a value
    to change), a CellError otherwise. Either stops Run All, papermill and nbval at the cell."""
    from IPython.core.error import UsageError

    from doitong_nb._magics import CellError

    def run(ip: Any, line: str, cell: str, sent: bool = False) -> str:
        with pytest.raises(CellError if sent else UsageError) as caught:
            ip.run_cell_magic("flux", line, cell)
        return str(caught.value)

    return run


@pytest.fixture
def shell_for(monkeypatch: pytest.MonkeyPatch) -> Callable[[Sandbox, Path], Any]:
    """Makes the IPython shell with fresh magics, no `%config Flux` left over, bound to a sandbox by the environment."""
    from IPython.terminal.interactiveshell import TerminalInteractiveShell

    def bind(box: Sandbox, out: Path) -> Any:
        monkeypatch.setenv("DOITONG_API_KEY", box.api_key)
        monkeypatch.setenv("DOITONG_BASE_URL", box.base_url)
        monkeypatch.setenv("DOITONG_OUTPUT_DIR", str(out))
        shell = TerminalInteractiveShell.instance()  # the one singleton every test module can share
        for name in [n for n in shell.user_ns if not n.startswith("_") and n not in shell.user_ns_hidden]:
            del shell.user_ns[name]  # no `img` or `grid` left over from another test
        shell.config.pop("Flux", None)
        shell.configurables[:] = [c for c in shell.configurables if type(c).__name__ != "Flux"]
        register(shell)
        return shell

    return bind

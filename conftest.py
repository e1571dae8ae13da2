"""Shared fixtures: a real sandbox on loopback, and a client bound to it."""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported where used: `make unit` starts no server and needs none of them
    from doitong_nb._runtime.client import Flux
    from doitong_sandbox import Sandbox

_OUTPUTS = Path(tempfile.mkdtemp(prefix="doitong-nb-tests-"))
_NOTEBOOKS_RUN: set[str] = set()  # stems of the notebooks nbval executed in this session


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    parser.addoption(
        "--update-fullres-hashes",
        action="store_true",
        help="rewrite notebooks/<name>.sha256.json from this run's full-resolution files instead of comparing",
    )
    if not pluginmanager.has_plugin("nbval"):
        # `make unit` runs with `-p no:nbval`: nbval only runs notebooks, and its imports (nbformat, jsonschema,
        # jupyter_client) take 2 s of the loop's 10. The nbval options in addopts are then accepted and unused.
        for flag in ("--nbval", "--nbval-current-env"):
            parser.addoption(flag, action="store_true", help="unused: nbval is not loaded (-p no:nbval)")
        parser.addoption("--nbval-sanitize-with", help="unused: nbval is not loaded (-p no:nbval)")


def pytest_configure(config: pytest.Config) -> None:
    """No real key ever reaches a test, nor the user's settings file or saved key (a config directory of the run's
    own: `language = ko` there would change what every test sees); notebook kernels get a fast sandbox."""
    os.environ.pop("DOITONG_API_KEY", None)
    os.environ.pop("DOITONG_BASE_URL", None)
    os.environ["XDG_CONFIG_HOME"] = str(_OUTPUTS / "config")  # platformdirs' user_config_dir on Linux
    os.environ.setdefault("DOITONG_SANDBOX_SPEED", "50")
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_WorkerGroups(), "doitong-worker-groups")


_NOTEBOOK_OUTPUTS_CHECK = "notebooks/test_fullres_hashes.py"  # its tests read the `notebook_outputs` of this process
_SERVER_FIXTURES = {"sandbox", "flux", "shell_for", "ip", "notebook_outputs"}  # the last: files notebooks made
_STARTERS = {"Sandbox", "kernel", "start_new_kernel", "NotebookClient"}  # a module that binds one starts it itself
_NOT_UNIT = ("integration", "slow", "browser", "soak")


def _top_level_names(statements: list[ast.stmt]) -> Iterator[str]:
    """The names a module binds when it is imported (not those of `if TYPE_CHECKING:` or inside functions)."""
    for node in statements:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield from (alias.asname or alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            yield from (target.id for target in targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.If) and not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
            yield from _top_level_names(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            yield from _top_level_names(
                node.body + node.orelse + node.finalbody + [s for handler in node.handlers for s in handler.body]
            )


@functools.cache
def _module_is_end_to_end(path: Path) -> bool:
    """Whether a test module binds one of _STARTERS at its top level, or marks all its tests with one of _NOT_UNIT
    (`pytestmark`): read from its source, so `-m unit` need not import it."""
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError):
        return False  # collected as usual: pytest reports the error
    if _STARTERS & set(_top_level_names(tree.body)):
        return True
    return any(
        isinstance(node, ast.Assign)
        and any(isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets)
        and any(isinstance(mark, ast.Attribute) and mark.attr in _NOT_UNIT for mark in ast.walk(node.value))
        for node in tree.body
    )


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """`make unit` (`-m unit`) does not even import a module that holds no unit test: seconds of imports saved."""
    if (
        config.option.markexpr == "unit"
        and collection_path.suffix == ".py"
        and collection_path.name.startswith("test_")
        and _module_is_end_to_end(collection_path)
    ):
        return True
    return None  # not False: that would overrule --ignore and the other plugins


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the engine's unit tests: no server, kernel, browser or other process, milliseconds each, so `make unit`
    runs them all in seconds on every edit. A test is not unit when it is a notebook cell, uses a server fixture,
    is marked `integration` (it starts another process: a pytest, a kernel through papermill or nbconvert, a child
    it kills), `slow` (detailed 4K images), `browser` or `soak`, or its module starts a Sandbox or a kernel itself
    (binds one of _STARTERS at its top level). A unit test that starts a process anyway fails
    (`_unit_tests_start_no_process`)."""
    for item in items:
        path = Path(str(item.fspath))
        end_to_end = (
            path.suffix == ".ipynb"
            or _SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
            or any(item.get_closest_marker(name) for name in _NOT_UNIT)
            or (path.suffix == ".py" and _module_is_end_to_end(path))
        )
        if not end_to_end:
            item.add_marker(pytest.mark.unit)
    # Tests that read what the notebooks wrote run after every notebook (stable sort: order kept otherwise).
    items.sort(key=lambda item: "notebook_outputs" in getattr(item, "fixturenames", ()))


class _WorkerGroups:
    """`pytest -n` (`make test`): the tests go to the workers in groups (`_worker_group`), each group to one worker;
    registered only where xdist is loaded (its hook is unknown to pytest otherwise)."""

    @staticmethod
    def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
        from xdist.scheduler import LoadScopeScheduling

        class ByGroup(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return _worker_group(nodeid)

        return ByGroup(config, log)


def _worker_group(nodeid: str) -> str:
    """What must run in one process: a notebook's cells (they share its kernel) with the check of the files it wrote
    (`notebook_outputs` is read from this process), the browser tests (one Jupyter server and one Chromium for them
    all), and otherwise a module (its module-scoped fixtures, such as a shared sandbox, are made once). Read from the
    node id alone: xdist's own `xdist_group` marks rename node ids, which pytest 9 no longer lets a plugin do."""
    module, _, test = nodeid.partition("::")
    if module.endswith(".ipynb"):
        return f"notebook {Path(module).stem}"
    if module == _NOTEBOOK_OUTPUTS_CHECK:
        return f"notebook {test.partition('[')[2].rstrip(']')}"  # parametrized by the notebook's stem
    if module.startswith("tests/browser/"):
        return "browser"
    return module


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Each notebook's kernel (started with its first cell) gets a fresh output folder of its own; each test (each
    notebook) a bundled sandbox state folder of its own, never the user's data folder."""
    path = Path(str(item.fspath))
    if path.suffix == ".ipynb":
        os.environ["DOITONG_OUTPUT_DIR"] = str(_OUTPUTS / path.stem / "flux_outputs")
        _NOTEBOOKS_RUN.add(path.stem)
        os.environ["DOITONG_SANDBOX_STATE"] = str(_OUTPUTS / path.stem / "sandbox_state")
    else:
        test = hashlib.sha256(item.nodeid.encode()).hexdigest()[:16]
        os.environ["DOITONG_SANDBOX_STATE"] = str(_OUTPUTS / "sandbox_state" / test)


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keeps the unit mark honest: a unit test that starts a process fails, telling how to mark it."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a unit test starts no process: mark this test `pytest.mark.integration` (conftest.py)")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
    if hasattr(os, "fork"):
        monkeypatch.setattr(os, "fork", refuse)


@pytest.fixture
def notebook_outputs() -> dict[str, Path]:
    """Notebook stem -> the output folder its kernel wrote to, for the notebooks executed in this session."""
    return {stem: _OUTPUTS / stem / "flux_outputs" for stem in sorted(_NOTEBOOKS_RUN)}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A fast sandbox on loopback (every duration divided by 1000), pro plan, 1000 credits."""
    from doitong_sandbox import Sandbox

    with Sandbox(speed=1000) as sb:
        yield sb


@pytest.fixture
def flux(sandbox: Sandbox, tmp_path: Path) -> Iterator[Flux]:
    """A blocking client talking to `sandbox`, storing results under tmp_path."""
    from doitong_nb._runtime.client import Flux

    with Flux(api_key=sandbox.api_key, base_url=sandbox.base_url, output_dir=tmp_path / "out") as client:
        yield client


@pytest.fixture
def failed_cell() -> Callable[..., str]:
    """Runs a %%flux cell that must fail, and returns its one line: a UsageError when nothing was sent (a value
    to change), a CellError otherwise. Either stops Run All, papermill and nbval at the cell."""
    from IPython.core.error import UsageError

    from doitong_nb._notebook.magics import CellError

    def run(ip: Any, line: str, cell: str, sent: bool = False) -> str:
        with pytest.raises(CellError if sent else UsageError) as caught:
            ip.run_cell_magic("flux", line, cell)
        return str(caught.value)

    return run


@pytest.fixture
def shell_for(monkeypatch: pytest.MonkeyPatch) -> Callable[[Sandbox, Path], Any]:
    """Makes the IPython shell with fresh magics, no `%config Flux` left over, bound to a sandbox by the environment."""
    from IPython.terminal.interactiveshell import TerminalInteractiveShell

    from doitong_nb._notebook.magics import register

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

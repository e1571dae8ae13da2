"""JupyterLab on loopback and Debian's Chromium driven by Playwright, for the tests a person would do by hand.

The server runs on a copy of notebooks/ with its own config and settings (no news pop-up, no saved workspace)
and the bundled sandbox at the real service's speed, so that a job is visibly in flight for several seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
START_TIMEOUT = 90.0
SANDBOX_SPEED = "1"  # 8 s per 1024x1024 image: long enough to run another cell while a job is in flight


@dataclass(frozen=True)
class Lab:
    url: str
    token: str
    root: Path
    log: Path

    def write_notebook(self, name: str, cells: list[str]) -> None:
        """A notebook of code cells in the served folder, on the python3 kernel (no kernel dialog to answer)."""
        import nbformat  # here, not at the top: `make unit` imports this conftest and needs no nbformat

        notebook = nbformat.v4.new_notebook(
            metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        )
        notebook.cells = [nbformat.v4.new_code_cell(cell) for cell in cells]
        nbformat.write(notebook, self.root / name)

    def run_all(self, page: Any, notebook: str, app: str = "lab") -> None:
        """Open a notebook in JupyterLab (`app="lab"`) or Notebook 7 (`app="notebook"`), wait for its kernel,
        then Run > Run All Cells from the menu bar, as a person would, until every code cell has run."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        if app == "lab":  # reset: no tabs of earlier tests
            page.goto(f"{self.url}/lab/tree/{notebook}?reset&token={self.token}")
        else:
            page.goto(f"{self.url}/notebooks/{notebook}?token={self.token}")
        page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
        dialog = page.locator(".jp-Dialog", has_text="Select Kernel")  # when the kernel preference is not known

        def answer_the_kernel_dialog() -> None:  # it may come late on a loaded machine, even after the kernel idles
            if dialog.count():
                with contextlib.suppress(PlaywrightTimeout):
                    dialog.locator("button.jp-mod-accept").click(timeout=3_000)

        idle = page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")
        for _ in range(180):  # up to 90 s
            if idle.count():
                break
            answer_the_kernel_dialog()
            page.wait_for_timeout(500)
        idle.first.wait_for(state="attached", timeout=10_000)
        prompts = "[...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]"
        started = f"() => {prompts}.some(p => /[0-9*]/.test(p.textContent))"
        all_ran = f"() => {{ const p = {prompts}; return p.length > 0 && p.every(e => /[0-9]/.test(e.textContent)); }}"
        run_all = page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$"))
        for _ in range(5):  # a click while the kernel's websocket is still (re)connecting, or under a dialog, is lost
            answer_the_kernel_dialog()
            try:
                if not run_all.is_visible():  # the menu may still be open from a lost attempt
                    page.locator(".lm-MenuBar-item", has_text="Run").first.click(timeout=5_000)
                run_all.click(timeout=5_000)
                page.wait_for_function(started, timeout=10_000)
                # every cell ran: a kernel replaced while the cells were queued (a late kernel dialog) drops them
                page.wait_for_function(all_ran, timeout=60_000)
                return
            except PlaywrightTimeout:
                continue
        pytest.fail(f"Run > Run All Cells did not start {notebook} in {app}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, token: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"jupyter lab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"jupyter lab did not answer /api/status within {START_TIMEOUT:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """`jupyter lab` on 127.0.0.1 with a random token, serving a copy of notebooks/; stopped at the end."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns("flux_outputs", ".ipynb_checkpoints"))
    for path in root.glob("*.ipynb"):  # no saved prompt numbers: a number in a prompt then means this run ran it
        notebook = json.loads(path.read_text())
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                cell["outputs"], cell["execution_count"] = [], None
        path.write_text(json.dumps(notebook))
    config = base / "config"
    (config / "labconfig").mkdir(parents=True)
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOITONG_")}
    env.update(
        DOITONG_SANDBOX_SPEED=SANDBOX_SPEED,
        DOITONG_SANDBOX_STATE=str(base / "sandbox_state"),  # never the user's data folder
        JUPYTER_CONFIG_DIR=str(config),
        JUPYTERLAB_SETTINGS_DIR=str(base / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(base / "runtime"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    token, port = secrets.token_hex(16), _free_port()
    log = base / "jupyter.log"
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--allow-root",  # CI containers run as root; harmless otherwise
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, token, process, log)
        yield Lab(url, token, root, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium (Playwright's own browser download does not work here); skips only when it is absent."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium); the browser tests need it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.skip(f"playwright cannot be imported ({exc}); pip install playwright")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, lab: Lab, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh page; on failure a screenshot named after the test lands in test-artifacts/."""
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        shoot(page, f"{request.node.name}-failure")
        print(f"jupyter log tail:\n{lab.log.read_text()[-2000:]}")
    context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]


def shoot(target: Any, name: str) -> Path:
    """A screenshot of a page or of one element in test-artifacts/ (gitignored), kept for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    target.screenshot(path=str(path))
    return path


@pytest.fixture
def screenshot() -> Callable[[Any, str], Path]:
    return shoot

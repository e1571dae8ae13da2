"""What a first-time user hit (issue 15): waits that say what they wait for, picked-up jobs, the sandbox's
command line, `make demo`'s links and output, the package metadata."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import nbformat
import pytest

try:
    import tomllib
except ImportError:  # Python 3.10: pytest's own dependency reads TOML the same way
    import tomli as tomllib

from doitong_nb import _contract as contract
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.settings import Settings
from doitong_nb._core.steps import Reply, Sleep, Work
from doitong_nb._engine.engine import WAITING_FOR_RATE, WAITING_FOR_SLOT, Engine
from doitong_nb._notebook.display import result_bundle
from doitong_nb._runtime.client import Flux
from doitong_sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "A lighthouse on a basalt cliff at dawn"


# --- the progress line says what a request waits for (scripted driver, no I/O) ----------------------


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    settings = Settings("sbx_test", "http://127.0.0.1:9", "graphql", tmp_path / "out", 60.0, sandbox=True)
    return Engine(settings)


def test_a_wait_for_the_rate_limit_is_reported_before_it_starts(engine: Engine) -> None:
    heard: list[str] = []
    engine.budget.block_for(5.0)  # as a 429 with Retry-After would
    flow = engine.generate(GenerationRequest.build(PROMPT, seed=1), progress=lambda s, e, d: heard.append(s))
    step = next(flow)
    while isinstance(step, Work):  # the journal records the submission first
        step = flow.send(step.fn())
    assert isinstance(step, Sleep)
    assert heard == [WAITING_FOR_RATE] == ["waiting for the plan's rate limit"]
    flow.close()


def test_a_wait_for_a_free_job_slot_is_reported(engine: Engine) -> None:
    heard: list[str] = []
    call = engine.transport.submit(GenerationRequest.build(PROMPT, seed=1))
    flow = engine.call(call, deadline=float("inf"), waiting=heard.append)
    next(flow)  # the Send
    busy = {"errors": [{"message": "no free job slot", "extensions": {"code": contract.CONCURRENCY_LIMITED}}]}
    step = flow.send(Reply(429, httpx.Headers({"Retry-After": "1"}), busy))
    assert isinstance(step, Sleep) and heard == [WAITING_FOR_SLOT] == ["waiting for a free job slot"]
    flow.close()


# --- a job picked up from the journal ----------------------------------------------------------------


def test_a_job_picked_up_from_the_journal_says_already_paid(flux: Flux, sandbox: Sandbox) -> None:
    """Submitted before an interrupt (or in an earlier session), finished now: no second charge, and the card
    says so instead of showing its cost beside an unchanged session total."""
    request = GenerationRequest.build(PROMPT, size="512x512", seed=3)
    entry = flux.store.journal.begin(request.key(), request)
    job = flux.run(flux.engine.submit(request, entry.idempotency_key, float("inf")))
    flux.store.journal.mark_submitted(entry.idempotency_key, job.id)
    spent = flux.session_credits
    assert flux.engine.quote([request]).total == 0
    result = flux.generate(request)
    assert result.job_id == job.id and result.resumed and result.credits == 0
    assert flux.session_credits == spent and sandbox.stats()["total"]["jobs_created"] == 1
    page = result_bundle([result])["text/html"]
    assert "picked up, already paid" in page and "10 credits" not in page


# --- doitong-sandbox ------------------------------------------------------------------------------------


def _sandbox_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doitong_sandbox", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_sandbox_on_a_busy_port_says_so_in_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _sandbox_cli("--port", str(port))
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.splitlines() == [
        f"doitong-sandbox: port {port} on 127.0.0.1 is busy; use --port 0 (any free port) or another port"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--credits", "-5"), "doitong-sandbox: --credits -5 must be 0 or more"),
        (("--speed", "0"), "doitong-sandbox: --speed 0 must be above 0 ('inf' for no waiting)"),
        (("--port", "70000"), "doitong-sandbox: --port 70000 is not a port; use 1 to 65535, or 0 for any free port"),
    ],
)
def test_sandbox_refuses_a_bad_value_in_one_line(args: tuple[str, ...], message: str) -> None:
    run = _sandbox_cli(*args)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert run.stderr.splitlines() == [message]


# --- make demo -------------------------------------------------------------------------------------------


class _FullResolutionLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and found.get("title") == "open full resolution" and found.get("href"):
            self.hrefs.append(found["href"])


def test_make_demo_html_links_reach_the_full_resolution_files(tmp_path: Path) -> None:
    """The HTML in build/ linked to files that were in notebooks/flux_outputs/ (issue 15)."""
    notebook = tmp_path / "notebooks" / "tiny.ipynb"
    notebook.parent.mkdir()
    cell = nbformat.v4.new_code_cell(f"%load_ext doitong_nb\n%flux {PROMPT} --size 256x256 --seed 1 -n 2")
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), notebook)
    venv = Path(sys.executable).parent.parent
    kept = ("DOITONG_SANDBOX_SPEED", "DOITONG_SANDBOX_STATE")  # the test's sandbox state, not the user's
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOITONG_") or k in kept}
    env["PYTHONPATH"] = str(ROOT)
    build = tmp_path / "build"
    make_vars = [f"VENV={venv}", f"DEMO={notebook}", f"BUILD={build}"]
    run = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "-o", f"{venv}/.installed", "demo", *make_vars],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    output = (run.stdout + run.stderr).strip().splitlines()
    assert output[-1] == f"Open {build}/tiny.html; full-resolution images are in {build}/flux_outputs/"
    assert len(output) <= 3 and not any("warning" in line.lower() for line in output), output
    links = _FullResolutionLinks()
    links.feed((build / "tiny.html").read_text())
    assert len(links.hrefs) == 2
    for href in links.hrefs:
        assert not urlsplit(href).scheme, href  # relative, so the folder can be moved or shared whole
        assert (build / unquote(href)).is_file(), href


# --- packaging -----------------------------------------------------------------------------------------


def test_license_is_an_spdx_string_that_the_build_backend_understands() -> None:
    """The `{text = ...}` table made setuptools print a wall of deprecation warnings during `make demo`."""
    from packaging.licenses import canonicalize_license_expression
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    license = pyproject["project"]["license"]
    assert isinstance(license, str) and canonicalize_license_expression(license) == license
    backend = next(Requirement(r) for r in pyproject["build-system"]["requires"] if r.startswith("setuptools"))
    assert "77" in backend.specifier and "76.9" not in backend.specifier  # PEP 639 strings: setuptools 77+

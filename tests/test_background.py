"""Issue 12: background cells. `%%flux --background` returns at once with a live card that becomes the result.

The real-kernel tests run the magics in an IPython kernel against a fast sandbox that holds the cell's job
unfinished until the test lets it go (`Sandbox.jobs_held`): a cell that returns while its job is held cannot have
waited for it, whatever the machine's load. How fast the first cell returns is measured by
benchmarks/first_cell.py, not asserted here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _kernel import kernel, run

from doitong_sandbox import Sandbox

PROMPT = "A lighthouse on a cliff at dawn"


def _wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    """Poll a condition (a generous timeout, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _active_jobs(box: Sandbox) -> int:
    return box.stats()["total"]["active_jobs"]


class Cell:
    """One executed cell's iopub messages, kept as they come (displays, their updates by id, streams)."""

    def __init__(self, kc: Any, code: str) -> None:
        self.kc, self.msg_id = kc, kc.execute(code)
        self.idle = False
        self.texts: list[str] = []
        self.display_ids: list[str] = []

    def wait_idle(self, sink: dict[str, list[str]]) -> Cell:
        while not self.idle:
            pump(self.kc, {self.msg_id: self}, sink)
        return self


def pump(kc: Any, cells: dict[str, Cell], updates: dict[str, list[str]], timeout: float = 60) -> None:
    """Read one iopub message: a cell's own into that cell, any display update into `updates` by display id."""
    msg = kc.get_iopub_msg(timeout=timeout)
    kind, content = msg["msg_type"], msg["content"]
    display_id = (content.get("transient") or {}).get("display_id")
    if kind == "update_display_data":
        updates.setdefault(display_id, []).append(content["data"].get("text/plain", ""))
        return
    cell = cells.get(msg["parent_header"].get("msg_id"))
    if cell is None:
        return
    if kind == "stream":
        cell.texts.append(content["text"])
    elif kind in ("display_data", "execute_result"):
        cell.texts.append(content["data"].get("text/plain", ""))
        if display_id:
            cell.display_ids.append(display_id)
    elif kind == "error":
        cell.texts.append(f"{content['ename']}: {content['evalue']}")
    elif kind == "status" and content["execution_state"] == "idle":
        cell.idle = True


@pytest.fixture
def kernel_with_sandbox(tmp_path: Path) -> Iterator[tuple[Any, Sandbox, Path]]:
    """A kernel with the extension loaded and its client made, bound to a fast sandbox."""
    from jupyter_client.manager import start_new_kernel

    out = tmp_path / "out"
    with Sandbox(speed=1000) as box:
        env = {**os.environ, "DOITONG_API_KEY": box.api_key, "DOITONG_BASE_URL": box.base_url}
        env["DOITONG_OUTPUT_DIR"] = str(out)
        km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path), env=env)
        try:
            kc.execute_interactive("%load_ext doitong_nb\n%flux_account", timeout=60)  # the client exists already
            yield kc, box, out
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def test_a_background_cell_returns_at_once_and_its_card_becomes_the_result(kernel_with_sandbox) -> None:
    kc, box, _ = kernel_with_sandbox
    updates: dict[str, list[str]] = {}
    with box.jobs_held():  # the cells below return while the job cannot end
        first = Cell(kc, f"%%flux --background --size 512x512 --seed 4 -o img\n{PROMPT}").wait_idle(updates)
        second = Cell(kc, "ran = 1 + 1\nimg").wait_idle(updates)  # the kernel is free while the job runs
        assert any("<BackgroundJob bg" in t for t in second.texts), second.texts
    card = first.display_ids[0]
    _wait_for_update(kc, card, updates, "<ImageResult")
    # the first cell's own output now holds the finished card; `.result()` gives the image
    final = Cell(kc, "print(img.result().seed, img)").wait_idle(updates)
    assert final.texts and final.texts[0].startswith("4 <BackgroundJob bg1 · completed"), final.texts


def _wait_for_update(kc: Any, display_id: str, updates: dict[str, list[str]], text: str) -> None:
    deadline = time.monotonic() + 60
    while not any(text in u for u in updates.get(display_id, [])):
        assert time.monotonic() < deadline, updates.get(display_id)
        pump(kc, {}, updates)


def test_cancel_keeps_the_job_listed_and_a_resume_charges_nothing_more(kernel_with_sandbox) -> None:
    kc, box, out = kernel_with_sandbox
    updates: dict[str, list[str]] = {}
    with box.jobs_held():  # still running at the service when the cell stops waiting
        cell = Cell(kc, f"%%flux --background --size 512x512 --seed 5 -o job\n{PROMPT}").wait_idle(updates)
        _wait_for(lambda: box.stats()["total"]["jobs_created"] == 1)
        listed = Cell(kc, "%flux_jobs").wait_idle(updates)
        assert any("background cell(s) running" in t and "bg" in t for t in listed.texts), listed.texts
        assert not any("pending job(s)" in t for t in listed.texts), listed.texts  # running, not pending
        cancel = Cell(kc, "job.cancel()\njob").wait_idle(updates)
        assert any("stopped waiting" in t for t in cancel.texts), cancel.texts
        _wait_for_update(kc, cell.display_ids[0], updates, "goes on at the service and is paid for")
    assert not any("`" in u for u in updates[cell.display_ids[0]])  # plain text, no raw markdown
    pending = Cell(kc, "%flux_jobs").wait_idle(updates)
    text = "".join(pending.texts)
    assert "1 pending job(s), paid for" in text and "background cell(s) running" not in text, text
    api = Cell(kc, "[j.job_id for j in get_ipython().magics_manager.registry['Flux'].client.jobs()]").wait_idle(updates)
    assert api.texts and api.texts[0].startswith("['job_"), api.texts
    charged = box.stats()["total"]["credits_charged"]
    _wait_for(lambda: _active_jobs(box) == 0)  # it goes on at the service
    resumed = Cell(kc, "%flux_resume --all").wait_idle(updates)
    assert any("<ImageResult" in t and "already paid" in t for t in resumed.texts), resumed.texts
    total = box.stats()["total"]
    assert (total["credits_charged"], total["submissions"]) == (charged, 1)
    assert len(list(out.glob("*.jp*g"))) == 1


def test_a_background_submission_still_awaiting_its_answer_is_running_not_pending(kernel_with_sandbox) -> None:
    """Journaled before it is sent, a submission has no job id until its answer comes: it is this cell's, running,
    and `%flux_jobs` must not offer it for `--resend` (issue 24: it was listed as pending)."""
    from doitong_sandbox import Faults

    kc, box, _ = kernel_with_sandbox
    box.faults = Faults(slow_submit=1, slow_seconds=30_000.0)  # the answer held at the service (30 s at 1000x)
    Cell(kc, f"%%flux --background --size 512x512 --seed 8 -o held\n{PROMPT}").wait_idle({})
    _wait_for(lambda: box.stats()["total"]["held_submissions"] == 1)
    listed = Cell(kc, "%flux_jobs").wait_idle({})
    assert any("background cell(s) running" in t for t in listed.texts), listed.texts
    assert not any("pending job(s)" in t or "--resend" in t for t in listed.texts), listed.texts
    Cell(kc, "held.cancel()").wait_idle({})


def test_flux_jobs_cancel_needs_a_known_name(kernel_with_sandbox) -> None:
    kc, _, _ = kernel_with_sandbox
    cell = Cell(kc, "%flux_jobs --cancel bg99").wait_idle({})
    assert any("UsageError" in t and "no background cell 'bg99'" in t for t in cell.texts), cell.texts


def test_config_background_makes_every_cell_a_background_cell(kernel_with_sandbox) -> None:
    kc, box, _ = kernel_with_sandbox
    updates: dict[str, list[str]] = {}
    Cell(kc, "%config Flux.background = True").wait_idle(updates)
    with box.jobs_held():  # a cell that waited for its job would not return in this block
        cell = Cell(kc, f"%%flux --size 512x512 --seed 6 -o later\n{PROMPT}").wait_idle(updates)
    _wait_for_update(kc, cell.display_ids[0], updates, "<ImageResult")


def test_loading_the_extension_prepares_the_first_cell_before_it_runs(tmp_path: Path) -> None:
    """The first cell's client and widget modules are imported on a thread once `%load_ext` returns, and the next
    cell starts after that thread: it finds them imported and pays nothing for them (benchmarks/first_cell.py)."""
    with kernel(tmp_path, DOITONG_API_KEY=None, DOITONG_BASE_URL=None) as kc:
        assert run(kc, "import sys; print('ipywidgets' in sys.modules)") == ["False\n"]
        run(kc, "%load_ext doitong_nb")
        probe = "print(sorted(m for m in ('ipywidgets', 'httpx', 'doitong_nb._notebook.display') if m in sys.modules))"
        assert run(kc, probe) == ["['doitong_nb._notebook.display', 'httpx', 'ipywidgets']\n"]

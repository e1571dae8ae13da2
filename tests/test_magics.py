"""The magics in an IPython shell (in-process) and in a real Jupyter kernel, against a real sandbox."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _journal_probe import journaled_job_id
from _kernel import collect
from IPython.core.interactiveshell import InteractiveShell

from doitong_nb._core.errors import InvalidRequestError
from doitong_nb._core.request import GenerationRequest
from doitong_sandbox import Sandbox
from doitong_sandbox.faults import Faults

PROMPT = "A futuristic city with flying cars and neon lights"


@pytest.fixture
def ip(sandbox: Sandbox, tmp_path: Path, shell_for) -> Iterator[InteractiveShell]:
    yield shell_for(sandbox, tmp_path / "out")


def submissions(box: Sandbox) -> int:
    return box.stats()["total"]["submissions"]


def test_cell_magic_generates_and_binds_the_result(ip: InteractiveShell, sandbox: Sandbox) -> None:
    ip.run_cell_magic("flux", "--size 512x512 --seed 7 -o img", PROMPT)
    img = ip.user_ns["img"]
    assert (img.width, img.height, img.seed, img.request.prompt) == (512, 512, 7, PROMPT)
    assert img.path.exists() and submissions(sandbox) == 1


def test_prompt_expands_names_and_expressions(ip: InteractiveShell) -> None:
    ip.user_ns.update(style="watercolor", n=3)
    ip.run_cell_magic("flux", "--size 256x256 -o img", "$n boats, {style.upper()}, $$price {{literal}}")
    assert ip.user_ns["img"].request.prompt == "3 boats, WATERCOLOR, $price {literal}"


def test_line_magic_keeps_quotes_in_the_prompt(ip: InteractiveShell) -> None:
    ip.run_line_magic("flux", 'Monet\'s "garden" at noon --size 256x256 --seed 2 -o img')
    assert ip.user_ns["img"].request.prompt == 'Monet\'s "garden" at noon'


def test_count_with_a_seed_makes_consecutive_seeds(ip: InteractiveShell, sandbox: Sandbox) -> None:
    ip.run_cell_magic("flux", "-n 3 --seed 10 --size 256x256 -o imgs", PROMPT)
    assert [r.seed for r in ip.user_ns["imgs"]] == [10, 11, 12]
    assert submissions(sandbox) == 3


def test_each_makes_one_image_per_item_in_order_and_replays_on_rerun(ip: InteractiveShell, sandbox: Sandbox) -> None:
    ip.user_ns["animals"] = ["fox", "owl", "hare"]
    before = submissions(sandbox)
    ip.user_ns["style"] = "ink"
    ip.run_cell_magic("flux", "--each animals --size 256x256 --seed 5 -o imgs", "a {item} in the snow, {style}")
    imgs = ip.user_ns["imgs"]
    assert [r.request.prompt for r in imgs] == [f"a {a} in the snow, ink" for a in ("fox", "owl", "hare")]
    assert {r.seed for r in imgs} == {5} and len({r.job_id for r in imgs}) == 3
    assert submissions(sandbox) - before == 3
    ip.run_cell_magic("flux", "--each animals --size 256x256 --seed 5 -o again", "a {item} in the snow, {style}")
    assert all(r.replayed for r in ip.user_ns["again"]) and submissions(sandbox) - before == 3


@pytest.mark.parametrize(
    ("line", "prompt", "message"),
    [
        ("--each nowhere", "a {item}", "there is no variable 'nowhere'"),
        ("--each animals", "a fox", "write {item} in the prompt"),
        ("--each animals -n 2", "a {item}", "-n cannot be combined with --each"),
        ("--each word", "a {item}", "expected a list of items"),
    ],
)
def test_each_misuse_is_one_line_and_nothing_is_sent(
    ip: InteractiveShell, sandbox: Sandbox, failed_cell, line: str, prompt: str, message: str
) -> None:
    ip.user_ns.update(animals=["fox", "owl"], word="fox")
    before = sandbox.stats()["total"]["api_requests"]
    err = failed_cell(ip, line + " --size 256x256", prompt)
    assert message in err and "\n" not in err
    assert sandbox.stats()["total"]["api_requests"] == before


def test_rerun_replays_and_refresh_generates_again(ip: InteractiveShell, sandbox: Sandbox) -> None:
    ip.run_cell_magic("flux", "--size 256x256 --seed 1 -o a", PROMPT)
    ip.run_cell_magic("flux", "--size 256x256 --seed 1 -o b", PROMPT)
    assert ip.user_ns["b"].replayed and ip.user_ns["b"].credits == 0 and submissions(sandbox) == 1
    ip.run_cell_magic("flux", "--size 256x256 --seed 1 --refresh -o c", PROMPT)
    assert not ip.user_ns["c"].replayed and submissions(sandbox) == 2


def test_config_sets_defaults(ip: InteractiveShell) -> None:
    ip.run_line_magic("config", 'Flux.size = "512x256"')
    ip.run_cell_magic("flux", "--seed 3 -o img", PROMPT)
    assert (ip.user_ns["img"].width, ip.user_ns["img"].height) == (512, 256)


def test_bad_value_is_one_line_and_nothing_is_sent(ip: InteractiveShell, sandbox: Sandbox, failed_cell) -> None:
    before = sandbox.stats()["total"]["api_requests"]
    err = failed_cell(ip, "--size 1000x1024", PROMPT)
    assert err == "width 1000 is not a multiple of 16; try 992 or 1008"
    assert sandbox.stats()["total"]["api_requests"] == before


def test_budget_refuses_before_sending(ip: InteractiveShell, sandbox: Sandbox, failed_cell) -> None:
    ip.run_line_magic("config", "Flux.max_credits = 15")
    assert "raise max_credits" in failed_cell(ip, "--size 2048x2048", PROMPT)
    assert submissions(sandbox) == 0


def test_budget_refuses_a_whole_cell_in_one_line_that_fits_the_numbers(
    ip: InteractiveShell, sandbox: Sandbox, failed_cell
) -> None:
    """`-n 4` past the budget printed four identical lines advising a smaller size (issue 15)."""
    ip.run_line_magic("config", "Flux.max_credits = 20")
    err = failed_cell(ip, "-n 4 --size 256x256", PROMPT)
    assert err == (
        "these 4 images cost 40 credits and the session has spent 0 of its 20-credit budget, 20 left: "
        "2 of them fit: ask for fewer or raise max_credits"
    )
    ip.run_cell_magic("flux", "-n 2 --size 256x256", PROMPT)  # spends the whole budget
    err = failed_cell(ip, "-n 4 --size 256x256 --seed 9", PROMPT)
    assert "\n" not in err and "0 left: raise max_credits" in err and "smaller size" not in err
    assert submissions(sandbox) == 2


def test_grid_of_four_adds_under_300kb_to_the_notebook(ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    """Previews sized to the grid's columns, not 1024 px each (issue 15: 790 KB for `-n 4`)."""
    import IPython.display

    shown: list = []
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kwargs: shown.append(obj))
    ip.run_cell_magic("flux", "-n 4 --size 1024x1024 --seed 3", PROMPT)
    data, _ = shown[-1]._repr_mimebundle_()
    page = data["text/html"]
    assert page.count("<img ") == 4 and len(json.dumps(data).encode()) < 300_000  # with its contact sheet
    assert page.count("session ") == 1 and "session total 80 credits" in page  # the total once, under the grid


def test_line_magic_usage_names_the_prompt() -> None:
    from doitong_nb._notebook.magics import Flux

    assert Flux.flux_line.__doc__.lstrip(":\n ").startswith("%flux PROMPT [--size SIZE]")
    assert Flux.flux.__doc__.lstrip(":\n ").startswith("%%flux [--size SIZE]")


def test_interrupt_message_counts_the_jobs_and_names_the_sandbox(ip: InteractiveShell) -> None:
    """ "job job_a, job_b goes on at Doitong" was singular, and wrong about where (issue 15)."""
    import dataclasses

    from doitong_nb._notebook.magics import requests_for

    magics = ip.magics_manager.registry["Flux"]
    args = magics.flux.parser.parse_argstring("-n 2 --size 256x256 --seed 1")
    pairs = requests_for(PROMPT, args, "1024x1024")
    journal = magics.client.store.journal
    for (request, variant), job_id in zip(pairs, ("job_a", "job_b"), strict=True):
        entry = journal.begin(request.key(variant), request)
        journal.mark_submitted(entry.idempotency_key, job_id)
    assert magics._interrupted(pairs) == (
        "Stopped waiting; jobs job_a, job_b go on at Doitong and are paid for. Re-run this cell to pick them up: "
        "they will not be charged again."
    )
    engine = magics.client.engine
    engine.settings = dataclasses.replace(engine.settings, sandbox=True)
    assert magics._interrupted(pairs[:1]) == (
        "Stopped waiting; job job_a goes on at the sandbox and is paid for. Re-run this cell to pick it up: "
        "it will not be charged again."
    )


def test_dry_run_shows_the_request_without_the_key(
    ip: InteractiveShell, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_cell_magic("flux", "--dry-run --size 4096x4096 --transport rest", PROMPT)
    out = capsys.readouterr().out
    assert "dry run: 1 new image, 50 credits; nothing was sent" in out and "/v1/text_to_image" in out
    assert "X-API-Key: <DOITONG_API_KEY>" in out and sandbox.api_key not in out
    assert sandbox.stats()["total"]["api_requests"] == 0


@pytest.mark.parametrize(
    ("made", "dry_run"),
    [
        ("--size 2048x2048 --seed 3", "--size 2048x2048 --seed 3"),
        ("-n 4 --size 256x256", "-n 4 --size 256x256"),
        ("--each animals --size 256x256", "--each animals --size 256x256"),
        ("--size 256x256 --seed 8", "line"),
    ],
)
def test_dry_run_of_stored_images_quotes_them_at_zero(
    ip: InteractiveShell, sandbox: Sandbox, capsys: pytest.CaptureFixture[str], made: str, dry_run: str
) -> None:
    """Issue 24: a stored request quoted 30 (or 50), `-n 4` 80 for four stored images, the line magic 20."""
    ip.user_ns["animals"] = ["a fox", "an owl"]
    prompt = PROMPT + (" of {item}" if "--each" in made else "")
    ip.run_cell_magic("flux", made, prompt)
    capsys.readouterr()
    before = sandbox.stats()["total"]["api_requests"]
    if dry_run == "line":
        ip.run_line_magic("flux", f"{PROMPT} {made} --dry-run")
    else:
        ip.run_cell_magic("flux", f"{dry_run} --dry-run", prompt)
    out = capsys.readouterr().out
    stored = {"-n 4": 4, "--each": 2}.get(made.split(" animals")[0].split(" --size")[0], 1)
    assert out.splitlines()[0] == f"dry run: {stored} stored, replayed at 0 credits; nothing was sent"
    assert "POST " not in out  # nothing would be sent
    assert sandbox.stats()["total"]["api_requests"] == before


def test_dry_run_says_what_is_new_and_what_is_stored_and_shows_a_repeated_body_once(
    ip: InteractiveShell, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_cell_magic("flux", "-n 1 --size 512x512", PROMPT)
    capsys.readouterr()
    ip.run_cell_magic("flux", "-n 3 --size 512x512 --dry-run", PROMPT)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == (
        "dry run: 2 new images, 20 credits; 1 stored, replayed at 0 credits; nothing was sent "
        "(the 2 requests are alike: shown once)"
    )
    assert out.count("mutation Generate") == 1


def test_grid_dry_run_quotes_stored_cells_at_zero(
    ip: InteractiveShell, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_cell_magic("flux", "--size 256x256 --seed 1", PROMPT)
    capsys.readouterr()
    ip.run_cell_magic("flux", '--grid "seed=1,2" --size 256x256 --dry-run', PROMPT)
    out = capsys.readouterr().out
    assert (
        out.strip()
        == "grid 2 seed = 2 images, 10 credits (1 already stored or paid: 0 credits); --dry-run: nothing was sent"
    )


def test_session_spend_is_one_figure_for_the_kernel_across_services(
    ip: InteractiveShell, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 24: after %flux_login then %flux_logout the next card said "session 20" while the account said 140."""
    ip.run_cell_magic("flux", "--size 512x512 --seed 1 -o first", PROMPT)
    with Sandbox(speed=1000) as other:
        monkeypatch.setenv("DOITONG_API_KEY", other.api_key)
        monkeypatch.setenv("DOITONG_BASE_URL", other.base_url)
        ip.run_cell_magic("flux", "--size 1024x1024 --seed 1 -o second", PROMPT)
        monkeypatch.setenv("DOITONG_API_KEY", sandbox.api_key)
        monkeypatch.setenv("DOITONG_BASE_URL", sandbox.base_url)
        ip.run_cell_magic("flux", "--size 512x512 --seed 2 -o third", PROMPT)
    assert "(session 40" in repr(ip.user_ns["third"])  # not 10: the kernel's figure, not the client's
    account = repr(ip.run_line_magic("flux_account", ""))
    assert (
        f"spent this session: 40 credits (20 credits at {sandbox.base_url}, 20 credits at {other.base_url})" in account
    )


def test_insufficient_credits_is_one_clear_line(tmp_path: Path, shell_for, failed_cell) -> None:
    with Sandbox(credits=12, speed=1000) as box:
        err = failed_cell(shell_for(box, tmp_path), "--size 2048x2048 -o img", PROMPT, sent=True)
    assert err == "Flux error: needs 30 credits, 12 left: top up or use a smaller size"


def test_account_and_history(ip: InteractiveShell) -> None:
    ip.run_cell_magic("flux", "--size 256x256 --seed 5", PROMPT)
    account = ip.run_line_magic("flux_account", "")
    assert "spent this session: 10 credits" in repr(account) and "plan: pro" in repr(account)
    history = ip.run_line_magic("flux_history", "")
    assert len(history) == 1


def test_account_on_the_bundled_sandbox_says_so(ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no key the account is the bundled sandbox's, and reads like a real one unless it says so (issue 15)."""
    monkeypatch.delenv("DOITONG_API_KEY")
    monkeypatch.delenv("DOITONG_BASE_URL")
    account = repr(ip.run_line_magic("flux_account", ""))
    assert account.startswith("service: 127.0.0.1:") and "(sandbox: no real credits)" in account.splitlines()[0]


def test_interrupt_stops_waiting_and_rerun_resumes_the_same_job(tmp_path: Path) -> None:
    """In a real kernel: Ctrl-C while waiting ends the cell at once, without an image, while the job goes on at
    the service and completes there; re-running the cell then picks it up and pays nothing again."""
    from jupyter_client.manager import start_new_kernel

    out = tmp_path / "out"
    with Sandbox(speed=1000) as box:
        km, kc = start_new_kernel(
            kernel_name="python3",
            cwd=str(tmp_path),
            env={
                **os.environ,
                "DOITONG_API_KEY": box.api_key,
                "DOITONG_BASE_URL": box.base_url,
                "DOITONG_OUTPUT_DIR": str(out),
            },
        )
        try:
            kc.execute_interactive("%load_ext doitong_nb", timeout=60)
            cell = f"%%flux --size 512x512 --seed 4 -o img\n{PROMPT}"
            with box.jobs_held():  # idle again while the job cannot have ended: the cell stopped waiting for it
                msg_id = kc.execute(cell)
                _wait_for(lambda: journaled_job_id(out) is not None)  # accepted, and its id journaled: waiting now
                km.interrupt_kernel()
                messages = _messages(kc, msg_id)
                first = _texts(messages)
                # the one line, and nothing else: no KeyboardInterrupt traceback, no progress line left above it
                errors = [c["traceback"] for kind, c in messages if kind == "error"]
                assert len(errors) == 1 and len(errors[0]) == 1 and errors[0][0].startswith("Stopped waiting; ")
                assert "Re-run this cell" in errors[0][0] and not [t for t in first if "Stopped waiting" in t], first
                assert _last_paint(messages) == "", messages
                assert not any("<ImageResult" in text for text in first), first
                bound: list[str] = []
                collect(kc, kc.execute("'img' in globals()"), bound)
                assert not list(out.glob("*.jp*g")) and bound == ["False"], bound
            _wait_for(lambda: _active_jobs(box) == 0)  # the job goes on at the service, and completes there
            total = box.stats()["total"]
            assert (total["jobs_created"], total["jobs_failed"]) == (1, 0)
            second: list[str] = []
            collect(kc, kc.execute(cell), second)
            assert any("<ImageResult" in text for text in second), second
            # one job, charged once, and no second submission: the rerun resumed the journaled job
            total = box.stats()["total"]
            assert (total["jobs_created"], total["credits_charged"], total["submissions"]) == (1, 10, 1)
            # a failed job: its one error line, and no progress line left above it (issue 24)
            box.faults = Faults(moderate_job=1)
            messages = _messages(kc, kc.execute(f"%%flux --size 256x256 --seed 99\n{PROMPT}"))
            errors = [c["traceback"] for kind, c in messages if kind == "error"]
            assert len(errors) == 1 and len(errors[0]) == 1 and "moderation" in errors[0][0], errors
            assert _last_paint(messages) == "", messages
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def _messages(kc: Any, msg_id: str) -> list[tuple[str, dict[str, Any]]]:
    """A cell's iopub messages (type, content) until the kernel is idle again."""
    messages = []
    while True:
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return messages
        messages.append((msg["msg_type"], msg["content"]))


def _texts(messages: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [c.get("text") or c.get("data", {}).get("text/plain", "") for _, c in messages]


def _last_paint(messages: list[tuple[str, dict[str, Any]]]) -> str:
    """What the cell's progress line shows at the end: its last paint, by its display id."""
    (line,) = {c["transient"]["display_id"] for kind, c in messages if kind == "display_data"}
    paints = [c["data"]["text/plain"] for kind, c in messages if c.get("transient", {}).get("display_id") == line]
    return paints[-1]


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Poll a server-side condition (a generous timeout, not a speed assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the sandbox"
        time.sleep(0.02)


def _active_jobs(box: Sandbox) -> int:
    return box.stats()["total"]["active_jobs"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("--aspect 30:1", "aspect ratio '30:1' is outside the supported range 21:9 (wide) to 9:21 (tall)"),
        ("--aspect 1:22", "aspect ratio '1:22' is outside the supported range 21:9 (wide) to 9:21 (tall)"),
        ("--size 512x512 --aspect 16:9", "give either an aspect ratio or a size, not both"),
    ],
)
def test_aspect_out_of_range_or_with_a_size_is_refused_as_in_python(
    ip: InteractiveShell, sandbox: Sandbox, failed_cell, options: str, message: str
) -> None:
    before = sandbox.stats()["total"]["api_requests"]
    assert message in failed_cell(ip, options, PROMPT)
    assert sandbox.stats()["total"]["api_requests"] == before
    with pytest.raises(InvalidRequestError, match=re.escape(message)):
        GenerationRequest.build(PROMPT, **_python_options(options))


def _python_options(options: str) -> dict[str, str]:
    words = options.split()
    names = {"--aspect": "aspect_ratio", "--size": "size"}
    return {names[flag]: value for flag, value in zip(words[::2], words[1::2], strict=True)}


def test_the_sandbox_notice_is_a_quiet_note_on_stdout_not_a_red_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 24: on stderr, every notebook's first cell opened with a red box."""
    from doitong_nb._runtime import sandbox as bundled

    monkeypatch.setattr(bundled, "_sandbox", None)  # this process's own bundled sandbox, stopped after
    box = bundled.shared_sandbox("pro", 100, 1000)
    try:
        out, err = capsys.readouterr()
        assert "images come from the bundled offline sandbox" in out and err == ""
    finally:
        box.stop()

"""`%flux_jobs`, `%flux_resume ID|--all` and `%flux_doctor` in an IPython shell, against a real sandbox (issue 11)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from doitong_nb._core.errors import JobTimeoutError
from doitong_nb._runtime.client import Flux
from doitong_sandbox import Sandbox

PROMPT = "A lighthouse on a cliff at dawn"


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def ip(sandbox: Sandbox, out: Path, shell_for) -> Iterator[InteractiveShell]:
    yield shell_for(sandbox, out)


def charged(box: Sandbox) -> int:
    total = box.stats()["total"]
    return total["credits_charged"] - total["credits_refunded"]


def leave_pending(box: Sandbox, out: Path, seed: int) -> str:
    """A paid job an earlier session stopped waiting for: the journal keeps it; its id."""
    with Flux(api_key=box.api_key, base_url=box.base_url, output_dir=out, timeout=0.001) as flux:
        with pytest.raises(JobTimeoutError) as caught:
            flux.generate(PROMPT, size="256x256", seed=seed)
    return caught.value.job_id


def test_flux_jobs_says_when_nothing_is_pending(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("flux_jobs", "")
    assert "No pending jobs" in capsys.readouterr().out


def test_flux_jobs_lists_a_paid_job_and_flux_resume_fetches_it_at_no_new_cost(
    ip: InteractiveShell, sandbox: Sandbox, out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = leave_pending(sandbox, out, seed=1)
    spent = charged(sandbox)
    ip.run_line_magic("flux_jobs", "")
    listed = capsys.readouterr().out
    assert "1 pending job(s), paid for" in listed and job_id in listed and "%flux_resume --all" in listed

    ip.run_line_magic("flux_resume", job_id)
    assert capsys.readouterr().err == ""
    assert list(out.glob(f"{job_id}.*g")), "the image is stored under its job id"
    ip.run_line_magic("flux_jobs", "")
    assert "No pending jobs" in capsys.readouterr().out
    assert charged(sandbox) == spent and sandbox.stats()["total"]["jobs_created"] == 1


def test_flux_resume_all_fetches_every_pending_job(
    ip: InteractiveShell, sandbox: Sandbox, out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = [leave_pending(sandbox, out, seed=s) for s in (1, 2)]
    ip.run_line_magic("flux_resume", "--all")
    assert capsys.readouterr().err == ""
    assert all(list(out.glob(f"{i}.*g")) for i in ids)
    ip.run_line_magic("flux_resume", "--all")
    assert "No pending jobs to resume" in capsys.readouterr().out
    assert sandbox.stats()["total"]["jobs_created"] == 2


@pytest.mark.parametrize("line", ["", "a b", "--every"])
def test_flux_resume_without_one_id_or_all_is_a_usage_error(ip: InteractiveShell, line: str) -> None:
    with pytest.raises(UsageError, match=r"%flux_resume JOB_ID .*%flux_resume --all"):
        ip.run_line_magic("flux_resume", line)


def test_flux_resume_of_an_unknown_job_says_how_to_list_the_pending_ones(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    try:  # printed as one line, or raised (magics that raise are coming): either way it names %flux_jobs
        ip.run_line_magic("flux_resume", "job_nothing")
        said = capsys.readouterr().err
    except Exception as exc:
        said = str(exc)
    assert "flux_jobs" in said and "job_nothing" in said


def test_flux_doctor_prints_one_line_per_assumption_and_spends_nothing(
    ip: InteractiveShell, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("flux_doctor", "")
    text = capsys.readouterr().out
    assert "ok   reachable" in text and "ok   status query" in text and "0 failed" in text
    assert charged(sandbox) == 0


def test_flux_doctor_names_a_dialects_difference_and_what_to_set(
    tmp_path: Path, shell_for, capsys: pytest.CaptureFixture[str]
) -> None:
    with Sandbox(speed=1000, dialect="no-introspection") as box:
        ip = shell_for(box, tmp_path / "out")
        ip.run_line_magic("flux_doctor", "")
        said = capsys.readouterr()
        assert "FAIL status query" in said.err and "Flux.status_query" in said.err, said
        ip.run_line_magic("config", 'Flux.status_query = "getJob(jobId)"')
        ip.run_line_magic("flux_doctor", "")
        said = capsys.readouterr()
        assert said.err == "" and "getJob(jobId: ID!) (as named)" in said.out and "0 failed" in said.out, said

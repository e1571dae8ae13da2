"""The bundled sandbox keeps its state across kernel restarts (issue 24): jobs, balance, spend, keys, images."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _kernel import kernel, run

from doitong_nb import _contract as c
from doitong_nb._core.errors import JobTimeoutError
from doitong_nb._runtime import sandbox as bundled
from doitong_nb._runtime.client import Flux
from doitong_sandbox import Sandbox
from doitong_sandbox.__main__ import main as sandbox_cli
from doitong_sandbox.state import STATE, Endpoint, StateInUse, user_state_dir

PROMPT = "A lighthouse on a cliff at dawn"


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The bundled sandbox's state folder for this test; no bundled sandbox of another test is reused."""
    folder = tmp_path / "state"
    monkeypatch.setenv("DOITONG_SANDBOX_STATE", str(folder))
    monkeypatch.setenv("DOITONG_SANDBOX_SPEED", "100")
    monkeypatch.setattr(bundled, "_sandbox", None)
    yield folder
    kernel_dies()


def kernel_dies() -> None:
    """What a kernel's end does to its bundled sandbox: it stops, and the next kernel's process starts anew."""
    if isinstance(bundled._sandbox, Sandbox):
        bundled._sandbox.stop()
    bundled._sandbox = None


def running() -> Sandbox:
    assert isinstance(bundled._sandbox, Sandbox)
    return bundled._sandbox


def stopped_waiting(out: Path) -> str:
    """A cell that stopped waiting for its paid job (the journal keeps it); the job's id."""
    with Flux(output_dir=out, timeout=0.001) as flux, pytest.raises(JobTimeoutError) as caught:
        flux.generate(PROMPT, size="256x256", seed=1)
    return caught.value.job_id


def test_a_job_journaled_before_a_restart_is_resumed_after_it_at_no_new_charge(state: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    job_id = stopped_waiting(out)
    before = running().stats()["total"]
    key, secret, url = running().api_key, running().webhook_secret, running().base_url
    kernel_dies()

    with Flux(output_dir=out) as flux:
        result = flux.resume(job_id)
        account = flux.account()
    after = running().stats()["total"]
    assert result.job_id == job_id and Path(result.path).exists()
    assert (after["credits_charged"], after["jobs_created"]) == (before["credits_charged"], 1)
    assert account.credits == before["credits"]  # the balance goes on, it is not back to the start
    assert (running().api_key, running().webhook_secret, running().base_url) == (key, secret, url)


def test_a_job_reads_the_same_after_a_restart_status_and_image(state: Path, tmp_path: Path) -> None:
    with Flux(output_dir=tmp_path / "out") as flux:
        job_id = flux.generate(PROMPT, size="256x256", seed=7).job_id
        first = flux.status(job_id)
    box = running()
    image = httpx.get(f"{box.cdn_url}/outputs/{job_id}.jpg").content
    kernel_dies()

    with Flux(output_dir=tmp_path / "out") as flux:
        again = flux.status(job_id)
    box = running()
    assert (again.status, again.created_at, again.metadata) == (first.status, first.created_at, first.metadata)
    assert (again.status, again.metadata["seed"], again.metadata["width"]) == (c.STATUS_COMPLETED, 7, 256)
    served = httpx.get(f"{box.cdn_url}/outputs/{job_id}.jpg").content
    assert hashlib.sha256(served).digest() == hashlib.sha256(image).digest()


def test_spend_and_the_daily_count_go_on_across_restarts(state: Path, tmp_path: Path) -> None:
    for seed in (1, 2):
        with Flux(output_dir=tmp_path / "out") as flux:
            flux.generate(PROMPT, size="256x256", seed=seed)
        kernel_dies()
    with Flux(output_dir=tmp_path / "out"):
        box = running()
    account = httpx.get(f"{box.base_url}{c.REST_ACCOUNT_PATH}", headers={"Authorization": f"Bearer {box.api_key}"})
    assert (account.json()["data"]["account"]["jobsToday"], account.json()["data"]["account"]["credits"]) == (2, 4980)
    assert box.stats()["total"]["credits_charged"] == 20


def test_a_second_kernel_uses_the_running_sandbox_and_no_charge_is_lost(state: Path, tmp_path: Path) -> None:
    other_kernel = Sandbox(speed=100, state_dir=state).start()
    try:
        with Flux(output_dir=tmp_path / "a") as flux:
            flux.generate(PROMPT, size="256x256", seed=1)
        assert isinstance(bundled._sandbox, Endpoint) and bundled._sandbox.base_url == other_kernel.base_url
        with Flux(api_key=other_kernel.api_key, base_url=other_kernel.base_url, output_dir=tmp_path / "b") as flux:
            flux.generate(PROMPT, size="256x256", seed=2)
        with Flux(output_dir=tmp_path / "c") as flux:
            other_kernel.stop()  # that kernel ends: this one's next connection (its next cell) takes the state over
            bundled.shared_sandbox("pro", 1000, 100.0)
            assert flux.account().credits == 1000 - 2 * 10  # the same client goes on: the same address
    finally:
        other_kernel.stop()
    assert (running().api_key, running().base_url) == (other_kernel.api_key, other_kernel.base_url)


def test_a_second_sandbox_on_a_state_in_use_is_refused_and_names_the_first(tmp_path: Path) -> None:
    with Sandbox(state_dir=tmp_path) as first:
        with pytest.raises(StateInUse, match=r"in use by the sandbox at http://127\.0\.0\.1:\d+") as caught:
            Sandbox(state_dir=tmp_path).start()
    assert caught.value.endpoint is not None and caught.value.endpoint.base_url == first.base_url
    with Sandbox(state_dir=tmp_path) as second:  # once the first has stopped, its state is free
        assert second.api_key == first.api_key


def test_the_state_is_on_disk_while_the_sandbox_runs_so_a_killed_one_loses_no_job(tmp_path: Path) -> None:
    with (
        Sandbox(speed=100, state_dir=tmp_path) as box,
        Flux(api_key=box.api_key, base_url=box.base_url, output_dir=tmp_path / "out", timeout=0.001) as flux,
    ):
        with pytest.raises(JobTimeoutError) as caught:
            flux.generate(PROMPT, size="256x256", seed=1)
        saved = json.loads((tmp_path / STATE).read_bytes())  # as a kill -9 would leave it: no stop() has run
    assert [job["id"] for job in saved["jobs"]] == [caught.value.job_id]
    assert saved["accounts"][0]["credits"] == 1000 - 10


def test_the_state_and_endpoint_files_are_the_users_only_and_the_key_is_never_printed(
    state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Flux(output_dir=tmp_path / "out"):
        pass
    key = running().api_key
    for name in (STATE, "endpoint.json"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    endpoint = bundled.shared_sandbox("pro", 1000, 1.0)
    out = capsys.readouterr().out  # the notice is a note on stdout, not an error
    assert "bundled offline sandbox" in out and key not in out and key not in repr(endpoint)
    assert key not in str(StateInUse(state, Endpoint("http://x", "http://y", 1, 1.0, key, "whsec")))


def test_doitong_sandbox_reset_starts_afresh_and_refuses_while_one_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Sandbox(state_dir=tmp_path, credits=100) as box:
        box.add_key()
        with pytest.raises(SystemExit, match="in use by the sandbox at"):
            sandbox_cli(["--reset", "--state", str(tmp_path)])
    sandbox_cli(["--reset", "--state", str(tmp_path)])
    assert "removed; the next sandbox on it starts afresh" in capsys.readouterr().out
    with Sandbox(state_dir=tmp_path) as fresh:
        assert fresh.api_key != box.api_key and fresh.stats()["total"]["credits"] == 1000


def test_a_sandbox_made_directly_stays_in_memory_and_fresh(state: Path) -> None:
    with Sandbox() as first:
        key = first.add_key()
    with Sandbox() as second:
        assert first.api_key != second.api_key and key not in second.stats()["keys"]
    assert not state.exists()


@pytest.mark.integration
def test_restart_kernel_and_run_all_delivers_the_job_a_stopped_cell_paid_for(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    env = {"DOITONG_API_KEY": None, "DOITONG_BASE_URL": None, "DOITONG_OUTPUT_DIR": str(tmp_path / "out")}
    env |= {"DOITONG_SANDBOX_STATE": str(folder), "DOITONG_SANDBOX_SPEED": "100"}
    cell = f"%%flux --size 256x256 --seed 3\n{PROMPT}"
    with kernel(tmp_path, **env) as kc:
        run(kc, "%load_ext doitong_nb")
        stopped = "".join(run(kc, cell.replace("%%flux", "%%flux --timeout 0.001")))
    with kernel(tmp_path, **env) as kc:  # Restart Kernel, then Run All
        run(kc, "%load_ext doitong_nb")
        delivered = "".join(run(kc, cell))
    with Sandbox(state_dir=folder) as box:
        total = box.stats()["total"]
    job_id = re.search(r"job_[a-z2-7]{20}", stopped)
    assert job_id and "paid for" in stopped, stopped
    assert job_id.group() in delivered and "error" not in delivered.lower(), delivered
    assert (total["jobs_created"], total["credits_charged"]) == (1, 10)


def test_the_suite_keeps_the_bundled_sandbox_state_out_of_the_users_data_folder() -> None:
    assert bundled.state_dir() != user_state_dir()
    assert bundled.state_dir().is_relative_to(Path(tempfile.gettempdir()))

"""Faults on the user's own machine: a full disk, a read-only or missing folder, a folder that vanishes, a busy
journal. Each ends as a StorageError in its item's place, naming the job that is paid and how to fetch it; what
is stored stays stored, nothing half-written looks complete, and a re-run after the fix pays nothing twice.

Two ways to fill a disk:
- a real tiny filesystem: a tmpfs mounted for the test (needs root or CAP_SYS_ADMIN; skipped, saying so,
  where mounting is not allowed);
- a filesystem-full fault injected at the store's write calls (`_HashingWriter.write`, the one place image
  bytes are written into the folder), which always runs, so CI always covers the behaviour.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from doitong_nb._core.errors import StorageError
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import ImageResult, Job
from doitong_nb._runtime.client import AsyncFlux, Flux
from doitong_nb._store import store as store_module
from doitong_nb._store.journal import Journal
from doitong_nb._store.store import STALE_SECONDS, Store
from doitong_sandbox import Sandbox

COST_2048 = GenerationRequest("x", width=2048, height=2048).estimated_credits
COST_1024 = GenerationRequest("x", width=1024, height=1024).estimated_credits


def prompts(n: int) -> list[str]:
    return [f"a lighthouse at dusk, study {i}" for i in range(n)]


def charged(box: Sandbox) -> int:
    return box.stats(box.api_key)["credits_charged"]


def client(box: Sandbox, out: Path) -> Flux:
    return Flux(api_key=box.api_key, base_url=box.base_url, output_dir=out)


def paid_errors(results: list) -> list[StorageError]:
    return [o for o in results if isinstance(o, StorageError) and o.paid]


def assert_nothing_half_written(out: Path) -> None:
    """No partial download, no unfinished atomic write, and no image without its sidecar (or the reverse)."""
    assert not [p for p in (out / ".partial").iterdir()] if (out / ".partial").is_dir() else True
    assert not list(out.glob(".*.tmp"))
    images = {p.stem for p in out.iterdir() if p.suffix in (".jpg", ".png")}
    sidecars = {p.stem for p in out.glob("*.json")}
    assert images == sidecars


# --- a real tiny filesystem -------------------------------------------------------------------------


def _mount(target: Path, options: str) -> str | None:
    """Mount a tmpfs at `target`; the reason it could not be mounted, or None."""
    if sys.platform != "linux":
        return "tmpfs mounts are Linux-only"
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True)
    return None if done.returncode == 0 else f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})"


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """mount(options) -> a tmpfs folder with those mount options, unmounted (lazily if still busy) afterwards."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        target = tmp_path / f"fs{len(mounted)}"
        reason = _mount(target, options)
        if reason:
            pytest.skip(reason)
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def resize(target: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(target)], check=True)


def test_a_full_3_mb_tmpfs_ends_unstored_items_in_place_and_a_rerun_after_freeing_space_pays_no_more(
    sandbox: Sandbox, tiny_fs: Callable[[str], Path]
) -> None:
    disk = tiny_fs("size=3m")
    out = disk / "flux_outputs"
    with client(sandbox, out) as flux:
        first = flux.batch(prompts(6), size="2048x2048", seed=1, progress=False)
        images, failed = first.images, paid_errors(first)
        unsent = [o for o in first if isinstance(o, StorageError) and not o.paid]
        assert images and failed and len(images) + len(failed) + len(unsent) == 6
        assert set(first.errors.values()) == set(failed) | set(unsent)  # every failure is a StorageError
        assert all(e.job_id and e.kind == "full" for e in failed)
        assert all(f"{len(failed)} jobs are paid and waiting" in str(e) for e in failed)
        assert all("re-run the same cell (or call)" in str(e) and "no extra cost" in str(e) for e in failed)
        assert charged(sandbox) == COST_2048 * (len(images) + len(failed))  # delivered + paid and waiting
        assert flux.engine.paid_waiting() == len(failed)
        assert all(r.path.is_file() for r in images)
        assert_nothing_half_written(out)

        resize(disk, "32m")  # space freed
        before = charged(sandbox)
        again = flux.batch(prompts(6), size="2048x2048", seed=1, progress=False)
    assert not again.errors
    assert charged(sandbox) == before + COST_2048 * len(unsent)  # the paid jobs are fetched at no cost
    assert [r.job_id for r in again if r.replayed] == [r.job_id for r in images]
    assert {r.job_id for r in again if not r.replayed} >= {e.job_id for e in failed}
    assert_nothing_half_written(out)


def test_a_read_only_folder_is_refused_before_any_request_naming_the_folder_and_the_setting(
    sandbox: Sandbox, tiny_fs: Callable[[str], Path]
) -> None:
    disk = tiny_fs("size=1m,ro")
    with client(sandbox, disk) as flux:
        with pytest.raises(StorageError) as caught:
            flux.generate("a lighthouse", size="512x512", seed=1)
        with pytest.raises(StorageError):
            flux.batch(prompts(2), size="512x512", seed=1, progress=False)
    message = str(caught.value)
    assert str(disk) in message and "output_dir=" in message and "DOITONG_OUTPUT_DIR" in message
    assert "nothing was sent or charged" in message and caught.value.job_id is None
    assert sandbox.stats(sandbox.api_key)["api_requests"] == 0


def test_an_unmounted_folder_mid_batch_is_told_per_item_and_a_rerun_after_it_is_back_pays_nothing_twice(
    sandbox: Sandbox, tiny_fs: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = tiny_fs("size=64m")
    out = disk / "flux_outputs"
    unmount_before_put(monkeypatch, after=1, how=lambda: subprocess.run(["umount", "-l", str(disk)], check=True))
    with client(sandbox, out) as flux:
        first = flux.batch(prompts(4), size="1024x1024", seed=1, progress=False)
        failed = paid_errors(first)
        assert len(first.images) == 1 and failed and all(e.kind == "gone" and e.job_id for e in failed)
        assert all("this session remembers it" in str(e) for e in failed)
        # the folder is back (here: the mount point, now on the parent filesystem); the same call again
        before = charged(sandbox)
        again = flux.batch(prompts(4), size="1024x1024", seed=1, progress=False)
    unsent = [o for o in first if isinstance(o, StorageError) and not o.paid]
    assert not again.errors
    # the unsent items are paid now; the image stored before the mount went is made again, unless its job was
    # still journaled as unfinished when the mount went (then the session fetches it again, free)
    assert charged(sandbox) - before in (COST_1024 * len(unsent), COST_1024 * (len(unsent) + 1))
    assert {r.job_id for r in again} >= {e.job_id for e in failed}


def test_a_full_journal_is_a_storage_error_not_a_sqlite_one(tiny_fs: Callable[[str], Path]) -> None:
    disk = tiny_fs("size=256k")
    journal = Journal(disk / "journal.sqlite")
    (disk / "ballast").write_bytes(b"\0" * (disk_free(disk) - 4096))
    with pytest.raises(StorageError) as caught:
        for i in range(10_000):
            journal.begin(f"key-{i}", GenerationRequest(f"a long prompt to fill pages {'x' * 900} {i}"))
    journal.close()
    assert caught.value.kind == "full" and str(disk) in str(caught.value)


def disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


# --- a filesystem-full fault injected at the store's write calls (always runs) -----------------------


class _FullDisk:
    """Makes the store's image writes fail with ENOSPC once `full` is set (what a full filesystem does)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, full_after_puts: int | None = None) -> None:
        self.full = False
        self.puts = 0
        original_write, original_put = store_module._HashingWriter.write, Store.put
        disk = self

        def write(writer: object, data: bytes) -> int:
            if disk.full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return original_write(writer, data)

        def put(store: Store, *args: object, **kwargs: object) -> ImageResult:
            result = original_put(store, *args, **kwargs)
            disk.puts += 1
            if disk.puts == full_after_puts:  # once: freeing space later stays freed
                disk.full = True
            return result

        monkeypatch.setattr(store_module._HashingWriter, "write", write)
        monkeypatch.setattr(Store, "put", put)


def unmount_before_put(monkeypatch: pytest.MonkeyPatch, *, after: int, how: Callable[[], object]) -> None:
    """Make the folder vanish (by `how`) just before the put that follows `after` successful ones. Puts run
    in worker threads; they are taken one at a time here, so "after N puts" means the same in every run."""
    original_put = Store.put
    count = {"puts": 0}
    one_at_a_time = threading.Lock()

    def put(store: Store, *args: object, **kwargs: object) -> ImageResult:
        with one_at_a_time:
            if count["puts"] == after:
                how()
            count["puts"] += 1
            return original_put(store, *args, **kwargs)

    monkeypatch.setattr(Store, "put", put)


def test_an_injected_full_disk_ends_each_unstored_item_in_its_place_and_a_rerun_pays_nothing_twice(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _FullDisk(monkeypatch, full_after_puts=2)
    out = tmp_path / "out"
    with client(sandbox, out) as flux:
        first = flux.batch(prompts(6), size="1024x1024", seed=1, progress=False)
        images, failed = first.images, paid_errors(first)
        unsent = [o for o in first if isinstance(o, StorageError) and not o.paid]
        assert len(images) >= 2 and failed and len(images) + len(failed) + len(unsent) == 6
        assert set(first.errors.values()) == set(failed) | set(unsent)
        assert all(
            e.job_id and e.kind == "full" and f"{len(failed)} jobs are paid and waiting" in str(e) for e in failed
        )
        assert charged(sandbox) == COST_1024 * (len(images) + len(failed))
        assert_nothing_half_written(out)

        disk.full = False  # space freed
        before = charged(sandbox)
        again = flux.batch(prompts(6), size="1024x1024", seed=1, progress=False)
    assert not again.errors
    assert charged(sandbox) == before + COST_1024 * len(unsent)
    assert {r.job_id for r in again} >= {e.job_id for e in failed} | {r.job_id for r in images}


def test_an_injected_full_disk_fails_one_generate_with_its_job_id_and_the_same_call_again_fetches_it_free(
    sandbox: Sandbox, flux: Flux, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = _FullDisk(monkeypatch)
    disk.full = True
    with pytest.raises(StorageError) as caught:
        flux.generate("a lighthouse", size="512x512", seed=3)
    assert caught.value.paid and caught.value.job_id and "1 job is paid and waiting" in str(caught.value)
    assert_nothing_half_written(flux.store.root)
    disk.full = False
    result = flux.generate("a lighthouse", size="512x512", seed=3)
    assert result.job_id == caught.value.job_id
    assert sandbox.stats(sandbox.api_key)["jobs_created"] == 1


def test_a_full_disk_during_the_download_is_not_retried(
    sandbox: Sandbox, flux: Flux, monkeypatch: pytest.MonkeyPatch
) -> None:
    from doitong_nb._runtime import client as client_module

    def full(handle: object, chunk: bytes, written: int, max_bytes: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(client_module, "_write_chunk", full)
    with pytest.raises(StorageError) as caught:
        flux.generate("a lighthouse", size="512x512", seed=4)
    assert caught.value.kind == "full" and caught.value.job_id
    assert sandbox.stats(sandbox.api_key)["cdn_requests"] == 1
    assert_nothing_half_written(flux.store.root)


def test_a_full_disk_at_the_sidecar_leaves_no_image_that_looks_stored(tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    request = GenerationRequest("a lighthouse", width=256, height=256, seed=7)
    store = Store(tmp_path / "out")
    download = store.partial_path("job_1", "jpg")
    Image.new("RGB", (64, 48), "teal").save(download, "JPEG")
    original = store_module._atomic_write

    def atomic_write(path: Path):  # the image goes in, its sidecar meets a full disk
        if path.suffix == ".json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(path)

    monkeypatch.setattr(store_module, "_atomic_write", atomic_write)
    with pytest.raises(StorageError) as caught:
        store.put(request.key(), request, Job("job_1", "completed", credit_cost=20), download, "sandbox")
    store.close()
    assert caught.value.kind == "full"
    assert not (store.root / "job_1.jpg").exists() and not download.exists()
    assert_nothing_half_written(store.root)


def test_a_journal_that_cannot_record_the_job_id_leaves_a_rerun_that_sends_the_same_idempotency_key(
    sandbox: Sandbox, flux: Flux, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal holds the idempotency key from before the submission: the service answers it with the same job."""

    def full(journal: Journal, idempotency_key: str, job_id: str) -> None:
        raise StorageError.from_os(sqlite3.OperationalError("database or disk is full"), journal.path.parent, "writing")

    with monkeypatch.context() as patch:
        patch.setattr(Journal, "mark_submitted", full)
        with pytest.raises(StorageError) as caught:
            flux.generate("a lighthouse", size="512x512", seed=5)
    assert caught.value.paid and caught.value.job_id and caught.value.kind == "full"
    result = flux.generate("a lighthouse", size="512x512", seed=5)
    stats = sandbox.stats(sandbox.api_key)
    assert result.job_id == caught.value.job_id
    assert (stats["jobs_created"], stats["credits_charged"]) == (1, result.credit_cost)


# --- missing, vanished --------------------------------------------------------------------------------


def test_a_folder_that_cannot_be_created_is_refused_before_any_request(sandbox: Sandbox, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with client(sandbox, blocker / "flux_outputs") as flux:
        with pytest.raises(StorageError) as caught:
            flux.generate("a lighthouse", size="512x512", seed=1)
        with pytest.raises(StorageError):
            flux.batch(prompts(3), size="512x512", seed=1, progress=False)
    message = str(caught.value)
    assert str(blocker / "flux_outputs") in message and "%config Flux.output_dir" in message
    assert sandbox.stats(sandbox.api_key)["api_requests"] == 0


def test_a_folder_deleted_mid_batch_is_told_per_item_and_the_same_call_again_pays_nothing_twice(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    unmount_before_put(monkeypatch, after=1, how=lambda: shutil.rmtree(out))
    with client(sandbox, out) as flux:
        first = flux.batch(prompts(4), size="1024x1024", seed=1, progress=False)
        failed = paid_errors(first)
        assert len(first.images) == 1 and failed
        assert all(e.kind == "gone" and e.job_id and str(out) in str(e) for e in failed)
        before = charged(sandbox)
        # the lock beside the folder still records the image lost with it: it is made again only when asked
        # the image stored is whichever came first, not always the first prompt's
        stored = [p for p, o in zip(prompts(4), first, strict=True) if not isinstance(o, StorageError)]
        missing = flux.batch(stored, size="1024x1024", seed=1, progress=False)
        assert [type(e).__name__ for e in missing.errors.values()] == ["MissingResultError"]
        assert charged(sandbox) == before
        flux.engine.on_missing = "regenerate"
        again = flux.batch(prompts(4), size="1024x1024", seed=1, progress=False)
    unsent = [o for o in first if isinstance(o, StorageError) and not o.paid]
    assert not again.errors
    # the unsent items are paid now; the image stored before the folder went is made again, unless its job was
    # still journaled as unfinished when the folder went (then the session fetches it again, free)
    assert charged(sandbox) - before in (COST_1024 * len(unsent), COST_1024 * (len(unsent) + 1))
    assert {r.job_id for r in again} >= {e.job_id for e in failed}
    assert_nothing_half_written(out)


def test_a_journal_deleted_under_a_running_client_is_not_written_to_blindly(tmp_path: Path) -> None:
    store = Store(tmp_path / "out")
    store.prepare()
    journal = store.journal
    for path in store.root.glob("journal.sqlite*"):
        path.unlink()
    with pytest.raises(StorageError) as caught:
        journal.begin("k", GenerationRequest("a lighthouse"))
    assert caught.value.kind == "gone"
    store.prepare()  # the next call opens a journal in the folder again
    assert store.journal.begin("k", GenerationRequest("a lighthouse")).state == "submitting"
    store.close()


# --- a busy journal -----------------------------------------------------------------------------------


def test_a_journal_held_by_another_process_fails_clearly_after_a_bounded_wait_and_sends_nothing(
    sandbox: Sandbox, flux: Flux
) -> None:
    flux.generate("warm up", size="256x256", seed=1)
    flux.store.close()
    flux.store.busy_timeout = 0.2
    submissions = sandbox.stats(sandbox.api_key)["submissions"]
    other = sqlite3.connect(flux.store.root / "journal.sqlite", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another kernel in the middle of a write that does not end
        with pytest.raises(StorageError) as caught:
            flux.generate("a lighthouse", size="256x256", seed=6)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert caught.value.kind == "busy" and not caught.value.paid and "another process" in str(caught.value)
    assert sandbox.stats(sandbox.api_key)["submissions"] == submissions
    flux.generate("a lighthouse", size="256x256", seed=6)
    assert sandbox.stats(sandbox.api_key)["submissions"] == submissions + 1


# --- partials and descriptors --------------------------------------------------------------------------


def test_stale_partials_are_removed_at_the_next_start_and_fresh_ones_are_left_to_their_download(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    (out / ".partial").mkdir(parents=True)
    stale, fresh, stale_tmp = out / ".partial/job_old.jpg", out / ".partial/job_new.jpg", out / ".job_x.jpg.ab.tmp"
    for path in (stale, fresh, stale_tmp):
        path.write_bytes(b"\xff\xd8 half an image")
    long_ago = time.time() - STALE_SECONDS - 60
    for path in (stale, stale_tmp):
        os.utime(path, (long_ago, long_ago))
    Store(out).prepare()
    assert not stale.exists() and not stale_tmp.exists() and fresh.exists()


def _open_descriptors() -> list[str]:
    """Files and pipes open in this process (sockets are left out: the in-process sandbox closes its own ends
    of the connections in its own time; the clients' ends are closed by httpx)."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, closed by now
        if not name.startswith("socket:"):
            names.append(name)
    return sorted(names)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc/self/fd (Linux)")
def test_closing_clients_releases_every_descriptor_they_opened_even_several_on_one_folder(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with client(sandbox, out) as flux:  # first use of httpx/PIL/sqlite3 in the process, outside the count
        flux.generate("warm up", size="256x256", seed=1)
        flux.batch(prompts(1), size="256x256", seed=1, progress=False)
    before = _open_descriptors()
    clients = [client(sandbox, out) for _ in range(3)]
    for i, flux in enumerate(clients):
        flux.generate(f"one {i}", size="256x256", seed=1)
        flux.batch(prompts(2), size="256x256", seed=i, progress=False)
    assert any("journal.sqlite" in name for name in _open_descriptors())
    for flux in clients:
        flux.close()

    async def run_async() -> None:
        async with AsyncFlux(api_key=sandbox.api_key, base_url=sandbox.base_url, output_dir=out) as flux:
            await flux.generate("async one", size="256x256", seed=1)

    with ThreadPoolExecutor(1) as thread:  # a loop of its own, whatever another test left in this thread
        thread.submit(asyncio.run, run_async()).result()
    assert _open_descriptors() == before


# --- the faces ------------------------------------------------------------------------------------------


def test_magics_show_a_storage_failure_as_one_line_with_the_recovery(
    sandbox: Sandbox,
    tmp_path: Path,
    shell_for,
    failed_cell,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    ip = shell_for(sandbox, blocker / "out")
    err = failed_cell(ip, "--size 256x256 --seed 1 -o img", "a lighthouse", sent=True)
    assert "Traceback" not in capsys.readouterr().err and "\n" not in err
    assert "cannot be used" in err and "%config Flux.output_dir" in err and "img" not in ip.user_ns

    ip = shell_for(sandbox, tmp_path / "out")
    _FullDisk(monkeypatch).full = True
    ip.user_ns["things"] = ["fox", "owl"]
    assert "2 of 2 images failed" in failed_cell(ip, "--each things --size 256x256 --seed 1", "a {item}", sent=True)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("item ")]
    assert "Traceback" not in err and len(lines) == 2
    assert all("re-run the same cell" in line for line in lines)


def test_a_plain_cell_on_a_full_disk_prints_one_line_with_the_job_and_the_recovery(
    sandbox: Sandbox,
    tmp_path: Path,
    shell_for,
    failed_cell,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ip = shell_for(sandbox, tmp_path / "out")
    disk = _FullDisk(monkeypatch)
    disk.full = True
    err = failed_cell(ip, "--size 256x256 --seed 2 -o img", "a heron", sent=True)
    assert "Traceback" not in capsys.readouterr().err and "\n" not in err
    assert "paid and waiting" in err and "re-run the same cell" in err and "img" not in ip.user_ns
    disk.full = False
    ip.run_cell_magic("flux", "--size 256x256 --seed 2 -o img", "a heron")
    assert ip.user_ns["img"].path.is_file() and sandbox.stats(sandbox.api_key)["jobs_created"] == 1


def test_the_panel_shows_a_storage_failure_in_its_banner(
    sandbox: Sandbox, flux: Flux, monkeypatch: pytest.MonkeyPatch
) -> None:
    from doitong_nb._notebook.panel import FluxPanel

    _FullDisk(monkeypatch).full = True
    panel = FluxPanel(flux)
    panel.prompt.value = "a heron"
    panel.generate.click()
    deadline = time.monotonic() + 60  # a bound on waiting, not a timing assertion
    while panel.running and time.monotonic() < deadline:
        time.sleep(0.02)
    (error,) = panel.errors
    assert error.startswith("Flux error: job ") and "paid and waiting" in error
    assert "Traceback" not in panel.banner.value and not panel.gallery.children

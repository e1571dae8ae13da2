"""A shared S3 store (moto's server on loopback, through s3fs) and replay from the lock on a second machine."""

from __future__ import annotations

import itertools
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

import fsspec  # noqa: E402

from doitong_nb._core.errors import MissingResultError  # noqa: E402
from doitong_nb._runtime.client import Flux  # noqa: E402
from doitong_nb._store.lockfile import LockFile  # noqa: E402
from doitong_nb._store.remote import ObjectStore, RemoteStoreError, content_path  # noqa: E402
from doitong_nb._store.store import Store  # noqa: E402
from doitong_sandbox import Sandbox  # noqa: E402

_buckets = itertools.count()


class S3:
    """moto's S3 server on loopback, restartable on the same port (its data lives in this process)."""

    def __init__(self) -> None:
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        self.port = self.server.get_host_and_port()[1]

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def options(self) -> dict[str, Any]:
        return {
            "endpoint_url": f"http://127.0.0.1:{self.port}",
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"region_name": "us-east-1"},
            "config_kwargs": {"connect_timeout": 2, "read_timeout": 10, "retries": {"max_attempts": 1}},
        }


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    server = S3()
    yield server
    server.stop()


@pytest.fixture
def bucket(s3: S3, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; s3:// URLs reach moto through fsspec's own configuration, as a user's would."""
    monkeypatch.setitem(fsspec.config.conf, "s3", s3.options())
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    name = f"team-{next(_buckets)}"
    import boto3

    options = s3.options()
    boto3.client(
        "s3",
        endpoint_url=options["endpoint_url"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=name)
    return name


def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, lock: Path) -> None:
    """Another computer: its own cache folder (journal, working copies), the same lock file from git."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / name / "cache"))
    monkeypatch.setenv("DOITONG_LOCK_FILE", str(lock))


def client(box: Sandbox, url: str, **kwargs: Any) -> Flux:
    return Flux(api_key=box.api_key, base_url=box.base_url, output_dir=url, **kwargs)


def make(flux: Flux, prompts: list[str], seed: int) -> list[Any]:
    batch = flux.batch(prompts, size="1024x1024", seed=seed, progress=False)
    assert not batch.errors
    return batch.images


def stats(box: Sandbox) -> tuple[int, int]:
    s = box.stats(box.api_key)
    return s["api_requests"], s["credits_charged"]


def objects(bucket: str) -> list[str]:
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    return sorted(p.split("/", 1)[1] for p in fs.find(bucket))


PROMPTS = ["a lighthouse at dusk", "a harbour in fog", "a gull over the pier"]


def test_images_go_to_the_store_content_addressed_and_the_lock_to_the_notebook_folder(
    sandbox: Sandbox, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "repo" / "team.lock.jsonl"
    machine(tmp_path, monkeypatch, "alice", lock)
    with client(sandbox, f"s3://{bucket}/team") as flux:
        results = make(flux, PROMPTS[:2], seed=3)
        local = flux.settings.output_dir
    entries = LockFile(lock).entries()
    assert sorted(e["sha256"] for e in entries) == sorted(r.sha256 for r in results)
    assert objects(bucket) == sorted(f"team/{content_path(r.sha256, 'jpg')}" for r in results)
    assert str(local).startswith(str(tmp_path / "alice" / "cache"))  # the working copy is per machine
    assert (local / "journal.sqlite").exists() and not list(local.glob(".upload/*"))


def test_identical_files_are_stored_once(bucket: str, tmp_path: Path) -> None:
    source = tmp_path / "image.jpg"
    source.write_bytes(b"\xff\xd8\xff" + b"same bytes" * 100)
    import hashlib

    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    alice, bob = ObjectStore(f"s3://{bucket}/shared"), ObjectStore(f"s3://{bucket}/shared")
    assert alice.upload(source, sha, "jpg") is True
    assert bob.upload(source, sha, "jpg") is False  # already there: nothing sent
    assert objects(bucket) == [f"shared/{content_path(sha, 'jpg')}"]


def test_a_second_machine_replays_from_the_lock_at_no_cost_and_no_request(
    sandbox: Sandbox, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "repo" / "team.lock.jsonl"
    machine(tmp_path, monkeypatch, "alice", lock)
    with client(sandbox, f"s3://{bucket}/team") as flux:
        made = make(flux, PROMPTS, seed=3)
    cloned = tmp_path / "clone" / "team.lock.jsonl"  # a co-author's clone of the repository
    cloned.parent.mkdir()
    shutil.copy(lock, cloned)
    machine(tmp_path, monkeypatch, "bob", cloned)
    before = stats(sandbox)
    with client(sandbox, f"s3://{bucket}/team") as flux:
        assert flux.settings.output_dir != made[0].path.parent
        again = make(flux, PROMPTS, seed=3)
    assert stats(sandbox) == before  # 0 API requests, 0 credits
    assert [r.sha256 for r in again] == [r.sha256 for r in made]
    assert [r.path.read_bytes() for r in again] == [r.path.read_bytes() for r in made]
    assert all(r.replayed and r.credits == 0 for r in again)
    assert [r.job_id for r in again] == [r.job_id for r in made]
    assert objects(bucket) == sorted(f"team/{content_path(r.sha256, 'jpg')}" for r in made)  # nothing re-uploaded


def test_a_locked_image_the_store_lacks_is_an_error_naming_it_not_a_paid_regeneration(
    sandbox: Sandbox, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "repo" / "team.lock.jsonl"
    machine(tmp_path, monkeypatch, "alice", lock)
    with client(sandbox, f"s3://{bucket}/team") as flux:
        made = flux.generate(PROMPTS[0], size="1024x1024", seed=3)
    fsspec.filesystem("s3", skip_instance_cache=True).rm(f"{bucket}/team/{content_path(made.sha256, 'jpg')}")
    machine(tmp_path, monkeypatch, "bob", lock)
    before = stats(sandbox)
    with client(sandbox, f"s3://{bucket}/team") as flux, pytest.raises(MissingResultError) as caught:
        flux.generate(PROMPTS[0], size="1024x1024", seed=3)
    message = str(caught.value)
    assert PROMPTS[0] in message and made.job_id in message and f"s3://{bucket}/team" in message
    assert 'on_missing = "regenerate"' in message and "nothing was sent" in message
    assert stats(sandbox) == before

    with client(sandbox, f"s3://{bucket}/team", on_missing="regenerate") as flux:
        fresh = flux.generate(PROMPTS[0], size="1024x1024", seed=3)
    assert fresh.job_id != made.job_id and fresh.credits > 0 and stats(sandbox)[1] > before[1]
    assert {e["job_id"] for e in LockFile(lock).entries()} == {made.job_id, fresh.job_id}


def test_an_unreachable_store_mid_batch_loses_no_image_and_sync_uploads_them_later(
    sandbox: Sandbox, s3: S3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    lock = tmp_path / "repo" / "team.lock.jsonl"
    machine(tmp_path, monkeypatch, "alice", lock)
    real_upload = ObjectStore.upload
    uploads = itertools.count()
    one_at_a_time = threading.Lock()

    def upload_then_go_offline(self: ObjectStore, *args: Any) -> bool:
        with one_at_a_time:
            sent = real_upload(self, *args)
            if next(uploads) == 0:  # the store goes away once the first image is in it
                s3.stop()
            return sent

    monkeypatch.setattr(ObjectStore, "upload", upload_then_go_offline)
    try:
        with client(sandbox, f"s3://{bucket}/team") as flux:
            results = make(flux, PROMPTS, seed=5)
            waiting = flux.store.waiting_uploads()
            assert all(r.path.is_file() for r in results)  # every paid image is kept locally
            assert len(waiting) == 2 and len(LockFile(lock).entries()) == 3
            with pytest.raises(RemoteStoreError):
                flux.store.sync()  # still unreachable: told, nothing local touched
            assert flux.store.waiting_uploads() == waiting
            s3.restart()
            assert flux.store.sync() == 2
            assert flux.store.waiting_uploads() == []
    finally:
        if not s3.server._server_ready_event.is_set():
            s3.restart()
    assert "stays in" in capsys.readouterr().err
    assert objects(bucket) == sorted(f"team/{content_path(r.sha256, 'jpg')}" for r in results)


def test_a_local_folder_replays_from_the_lock_when_another_machine_shares_the_folder(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    """Without a shared store, a lock whose images are not here is the same clear error."""
    with Flux(api_key=sandbox.api_key, base_url=sandbox.base_url, output_dir=tmp_path / "out") as flux:
        flux.generate(PROMPTS[0], size="1024x1024", seed=3)
    fresh = Store(tmp_path / "elsewhere", lock=tmp_path / "out.lock.jsonl")
    from doitong_nb._core.request import GenerationRequest

    key = GenerationRequest(PROMPTS[0], width=1024, height=1024, seed=3).key()
    with pytest.raises(MissingResultError, match="no shared store is set"):
        fresh.restore(key, flux.settings.origin)
    assert fresh.restore(key, flux.settings.origin, "regenerate") is None
    fresh.close()

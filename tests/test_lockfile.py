"""The lock file: one sorted line per image, written as results arrive, merged cleanly, shared safely."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import Job
from doitong_nb._store.lockfile import FIELDS, LockFile, LockFileError, lock_path_for, parse, render
from doitong_nb._store.store import Store
from doitong_nb._version import __version__

ORIGIN = "https://api.doitong.com"
REPO = Path(__file__).resolve().parents[1]


def entry(job_id: str, key: str = "k", **extra: object) -> dict:
    return {"key": key, "origin": ORIGIN, "job_id": job_id, "sha256": "0" * 64, "file": f"{job_id}.jpg", **extra}


def put(store: Store, job_id: str, prompt: str = "a lighthouse") -> None:
    request = GenerationRequest(prompt, seed=7)
    download = store.partial_path(job_id, "jpg")
    Image.new("RGB", (32, 24), (10, 20, 30)).save(download, "JPEG")
    job = Job(
        id=job_id,
        status="completed",
        credit_cost=20,
        created_at="2025-01-02T03:04:05Z",
        completed_at="2025-01-02T03:04:09Z",
        metadata={"width": 1024, "height": 768, "seed": 7, "version": "flux-pro-1.1-ultra"},
    )
    store.put(request.key(), request, job, download, ORIGIN)


def test_the_lock_of_a_local_folder_sits_beside_it_and_of_a_url_in_the_current_folder(tmp_path: Path) -> None:
    assert lock_path_for(tmp_path / "flux_outputs") == tmp_path / "flux_outputs.lock.jsonl"
    assert lock_path_for("s3://bucket/team/images", cwd=tmp_path) == tmp_path / "images.lock.jsonl"
    assert lock_path_for(f"file://{tmp_path}/out") == tmp_path / "out.lock.jsonl"


def test_each_stored_image_is_added_to_the_lock_with_everything_that_reproduces_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "out")
    put(store, "job_1")
    store.close()
    lines = (tmp_path / "out.lock.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {"doitong-nb-lock": 1} and len(lines) == 2
    recorded = json.loads(lines[1])
    sidecar = json.loads((tmp_path / "out" / "job_1.json").read_text())
    assert set(FIELDS) <= set(recorded)
    assert recorded["sha256"] == sidecar["sha256"] and recorded["key"] == sidecar["replay_key"]
    assert recorded["bytes"] == (tmp_path / "out" / "job_1.jpg").stat().st_size
    assert (recorded["width"], recorded["height"], recorded["seed"]) == (1024, 768, 7)
    assert recorded["version"] == "flux-pro-1.1-ultra" and recorded["credits"] == 20
    assert recorded["completed_at"] == "2025-01-02T03:04:09Z" and recorded["package"] == f"doitong-nb {__version__}"
    assert recorded["origin"] == ORIGIN and recorded["request"]["prompt"] == "a lighthouse"
    assert list(recorded) == sorted(recorded)  # sorted keys: a stable diff


def test_the_lock_never_holds_the_api_key(tmp_path: Path) -> None:
    store = Store(tmp_path / "out")
    put(store, "job_1")
    store.close()
    text = (tmp_path / "out.lock.jsonl").read_text()
    assert "api_key" not in text and "Bearer" not in text and "sk-" not in text


def test_entries_are_sorted_one_line_each_whatever_order_they_arrive_in(tmp_path: Path) -> None:
    lock = LockFile(tmp_path / "x.lock.jsonl")
    lock.add(entry("job_b", key="2"))
    lock.add(entry("job_a", key="1"), entry("job_c", key="3"))
    lines = lock.path.read_text().splitlines()
    assert [json.loads(line).get("job_id") for line in lines[1:]] == ["job_a", "job_b", "job_c"]
    before = lock.path.read_text()
    lock.add(entry("job_b", key="2"))  # adding the same entry again changes nothing
    assert lock.path.read_text() == before


def test_a_union_merge_of_two_peoples_additions_reads_back_whole() -> None:
    base = render([entry("job_a", key="1")]).splitlines()
    ours = render([entry("job_a", key="1"), entry("job_b", key="2")]).splitlines()
    theirs = render([entry("job_a", key="1"), entry("job_c", key="2")]).splitlines()
    # git's merge=union keeps both sides' added lines (ours first) around the common ones
    merged = "\n".join([*base, ours[-1], theirs[-1]]) + "\n"
    assert [e["job_id"] for e in parse(merged)] == ["job_a", "job_b", "job_c"]
    assert render(parse(merged)) == render([entry("job_a", key="1"), entry("job_b", key="2"), entry("job_c", key="2")])


def test_a_merge_conflict_left_in_the_lock_is_reported_with_how_to_resolve_it() -> None:
    text = render([entry("job_a")]) + "<<<<<<< HEAD\n" + json.dumps(entry("job_b")) + "\n=======\n>>>>>>> x\n"
    with pytest.raises(LockFileError, match=r"merge conflict marker on line 3.*merge=union"):
        parse(text)


@pytest.mark.integration
def test_two_processes_adding_at_once_lose_no_entry(tmp_path: Path) -> None:
    path = tmp_path / "shared.lock.jsonl"
    script = textwrap.dedent(
        f"""
        import sys
        from doitong_nb._store.lockfile import LockFile
        lock = LockFile({str(path)!r})
        who = sys.argv[1]
        for i in range(40):
            lock.add({{"key": f"{{who}}{{i:02d}}", "origin": "o", "job_id": f"job_{{who}}{{i:02d}}", "sha256": "0"}})
        """
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    writers = [subprocess.Popen([sys.executable, "-c", script, who], env=env) for who in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    job_ids = {e["job_id"] for e in LockFile(path).entries()}
    assert job_ids == {f"job_{who}{i:02d}" for who in "ab" for i in range(40)}
    assert not list(tmp_path.glob(".*.tmp"))  # every write was renamed into place


def test_the_journal_stays_in_the_folder_and_the_lock_outside_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "out")
    put(store, "job_1")
    store.close()
    assert (tmp_path / "out" / "journal.sqlite").exists()
    assert not list((tmp_path / "out").glob("*.lock.jsonl"))


def test_sync_adds_images_stored_before_the_lock_existed(tmp_path: Path) -> None:
    store = Store(tmp_path / "out", lock=False)
    put(store, "job_1")
    put(store, "job_2", prompt="a harbour")
    store.close()
    later = Store(tmp_path / "out")
    assert later.lock is not None and later.lock.entries() == []
    later.sync()
    assert {e["job_id"] for e in later.lock.entries()} == {"job_1", "job_2"}
    later.close()

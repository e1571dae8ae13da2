"""The job journal: written before a submission is sent, and still whole after the process is killed."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from doitong_nb._core.request import GenerationRequest
from doitong_nb._store.journal import Journal

REQUEST = GenerationRequest("a lighthouse at dusk", seed=7)
REPO = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from doitong_nb._store.journal import Journal
    from doitong_nb._core.request import GenerationRequest

    journal = Journal(Path(sys.argv[1]))
    request = GenerationRequest("a lighthouse at dusk")
    for i in range(int(sys.argv[3])):
        entry = journal.begin(f"{sys.argv[2]}-{i}", request)
        print("begun", entry.idempotency_key, flush=True)
        journal.mark_submitted(entry.idempotency_key, f"job-{i}")
        print("submitted", entry.idempotency_key, flush=True)
""")


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def stored_row(path: Path, idempotency_key: str) -> tuple:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT state, job_id, error FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
        ).fetchone()


def writer(path: Path, prefix: str, count: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), prefix, str(count)], stdout=subprocess.PIPE, text=True, env=env
    )


def test_begin_records_a_submitting_entry_with_a_fresh_idempotency_key(journal: Journal) -> None:
    first, second = journal.begin("k", REQUEST), journal.begin("k", REQUEST)
    assert first.state == "submitting" and first.job_id is None
    assert uuid.UUID(first.idempotency_key).version == 4
    assert first.idempotency_key != second.idempotency_key


def test_begin_keeps_the_request_in_canonical_form(journal: Journal) -> None:
    assert journal.begin("k", REQUEST).request == REQUEST.canonical()


def test_begin_is_committed_before_it_returns(journal: Journal) -> None:
    entry = journal.begin("k", REQUEST)
    assert stored_row(journal.path, entry.idempotency_key) == ("submitting", None, None)


def test_unfinished_returns_the_submitted_entry_with_its_job_id(journal: Journal) -> None:
    entry = journal.begin("k", REQUEST)
    journal.mark_submitted(entry.idempotency_key, "job_1")
    found = journal.unfinished("k")
    assert (found.idempotency_key, found.state, found.job_id) == (entry.idempotency_key, "submitted", "job_1")


def test_unfinished_ignores_other_keys(journal: Journal) -> None:
    journal.begin("k", REQUEST)
    assert journal.unfinished("other") is None


def test_done_ends_the_entry(journal: Journal) -> None:
    entry = journal.begin("k", REQUEST)
    journal.mark_submitted(entry.idempotency_key, "job_1")
    journal.mark_done(entry.idempotency_key)
    assert journal.unfinished("k") is None
    assert stored_row(journal.path, entry.idempotency_key) == ("done", "job_1", None)


def test_failed_ends_the_entry_and_keeps_the_error(journal: Journal) -> None:
    entry = journal.begin("k", REQUEST)
    journal.mark_submitted(entry.idempotency_key, "job_1")
    journal.mark_failed(entry.idempotency_key, "CONTENT_MODERATED: refused")
    assert journal.unfinished("k") is None
    assert stored_row(journal.path, entry.idempotency_key) == ("failed", "job_1", "CONTENT_MODERATED: refused")


def test_after_a_failure_a_rerun_begins_anew(journal: Journal) -> None:
    failed = journal.begin("k", REQUEST)
    journal.mark_failed(failed.idempotency_key, "GENERATION_FAILED")
    again = journal.begin("k", REQUEST)
    assert journal.unfinished("k").idempotency_key == again.idempotency_key != failed.idempotency_key


def test_marking_an_unknown_idempotency_key_raises(journal: Journal) -> None:
    with pytest.raises(KeyError):
        journal.mark_done("no-such-key")


def test_pending_lists_every_unfinished_entry_oldest_first(journal: Journal) -> None:
    a, b, c = (journal.begin(k, REQUEST) for k in "abc")
    journal.mark_submitted(b.idempotency_key, "job_b")
    journal.mark_done(c.idempotency_key)
    assert [e.idempotency_key for e in journal.pending()] == [a.idempotency_key, b.idempotency_key]


def test_the_file_is_in_wal_mode(journal: Journal) -> None:
    with sqlite3.connect(journal.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_second_journal_on_the_same_file_sees_the_first_ones_entries(journal: Journal) -> None:
    entry = journal.begin("k", REQUEST)
    other = Journal(journal.path)
    assert other.unfinished("k").idempotency_key == entry.idempotency_key
    other.close()


def test_threads_can_share_one_journal(journal: Journal) -> None:
    def work(n: int) -> None:
        for i in range(20):
            entry = journal.begin(f"{n}-{i}", REQUEST)
            journal.mark_submitted(entry.idempotency_key, f"job-{n}-{i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e.job_id for e in journal.pending()) == sorted(f"job-{n}-{i}" for n in range(8) for i in range(20))


@pytest.mark.integration
def test_processes_can_write_the_same_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    writers = [writer(path, f"p{n}", 25) for n in range(3)]
    for w in writers:
        w.communicate(timeout=60)
        assert w.returncode == 0
    journal = Journal(path)
    assert len(journal.pending()) == 75
    journal.close()


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_committed_entries_survive_a_kill_in_the_middle_of_a_write(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    proc = writer(path, "k", 1_000_000)
    lines = [proc.stdout.readline().strip() for _ in range(100)]
    time.sleep(random.uniform(0, 0.05))  # land the kill at an arbitrary point of a transaction
    proc.send_signal(signal.SIGKILL)
    lines += proc.stdout.read().splitlines()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    journal = Journal(path)
    states = {e.idempotency_key: e.state for e in journal.pending()}
    journal.close()
    printed = [line.split() for line in lines if line]
    assert {key for _, key in printed} <= set(states)
    assert all(states[key] == "submitted" for step, key in printed if step == "submitted")


def test_an_unfinished_submission_is_resumed_only_by_the_origin_it_went_to(journal: Journal) -> None:
    sandbox_job = journal.begin("k", REQUEST, "sandbox")
    assert journal.unfinished("k", "https://api.doitong.com") is None
    assert journal.unfinished("k", "sandbox").idempotency_key == sandbox_job.idempotency_key
    legacy = journal.begin("k", REQUEST)  # written before origins were recorded: any origin resumes it
    assert journal.unfinished("k", "https://api.doitong.com").idempotency_key == legacy.idempotency_key

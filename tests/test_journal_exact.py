"""The journal's records read back exactly, its file's fate, and the replay index (issue 16: mutants that
tests/test_journal.py let through). No server, no kernel.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from doitong_nb._core.errors import StorageError
from doitong_nb._core.request import GenerationRequest
from doitong_nb._store.journal import FAILED, SUBMITTING, Journal

HOOKED = GenerationRequest.build("a kite", size="512x512", seed=1, webhook_url="https://example.com/hook")


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def test_what_begin_returns_is_what_the_journal_reads_back(journal: Journal) -> None:
    entry = journal.begin("k1", HOOKED, "https://api.example")
    assert entry.key == "k1" and entry.state == SUBMITTING and entry.job_id is None
    assert entry.created_at == entry.updated_at and entry.created_at > 0
    assert journal.unfinished("k1") == entry
    assert journal.pending() == [entry]


def test_the_journal_keeps_the_webhook_and_origin_beside_the_canonical_request(journal: Journal) -> None:
    entry = journal.begin("k1", HOOKED, "https://api.example")
    assert entry.request == {
        **HOOKED.canonical(),
        "webhook_url": "https://example.com/hook",
        "origin": "https://api.example",
    }
    plain = journal.begin("k2", GenerationRequest.build("a kite", seed=2))
    assert "webhook_url" not in plain.request and "origin" not in plain.request


def test_a_state_change_keeps_the_job_id_and_moves_updated_at(journal: Journal) -> None:
    entry = journal.begin("k1", HOOKED)
    journal.mark_submitted(entry.idempotency_key, "job_1")
    journal.mark_failed(entry.idempotency_key, "boom")
    row = sqlite3.connect(journal.path).execute("SELECT state, job_id, error, updated_at FROM jobs").fetchone()
    assert row[:3] == (FAILED, "job_1", "boom") and row[3] >= entry.updated_at
    with pytest.raises(KeyError, match="no journal entry has idempotency key 'nope'"):
        journal.mark_done("nope")


def test_the_journal_opens_inside_folders_that_do_not_exist_yet(tmp_path: Path) -> None:
    j = Journal(tmp_path / "a" / "b" / "journal.sqlite")
    j.begin("k1", HOOKED)
    assert j.unfinished("k1") is not None
    j.close()


def test_a_closed_journal_refuses_to_be_used_and_closing_twice_is_harmless(journal: Journal) -> None:
    journal.close()
    journal.close()
    with pytest.raises(StorageError, match="is closed") as caught:
        journal.begin("k1", HOOKED)
    assert caught.value.remedy == "use a client that is not closed"
    with pytest.raises(StorageError, match="is closed"):
        journal.pending()


def test_a_journal_whose_file_was_deleted_is_never_written_blindly(journal: Journal) -> None:
    journal.begin("k1", HOOKED)
    for name in ("journal.sqlite", "journal.sqlite-wal", "journal.sqlite-shm"):
        (journal.path.parent / name).unlink(missing_ok=True)
    assert not journal.intact()
    with pytest.raises(StorageError, match="was deleted or its folder replaced or unmounted while in use") as caught:
        journal.begin("k2", HOOKED)
    assert caught.value.kind == "gone"
    assert caught.value.remedy == f"make the folder {journal.path.parent} available again"


def test_the_replay_index_is_replaced_whole(journal: Journal) -> None:
    journal.record_replay("job_a", "k1", "2026-01-01T00:00:01")
    journal.record_replay("job_b", "k1", "2026-01-01T00:00:02")
    assert journal.replay_job_ids("k1") == ["job_b", "job_a"]  # newest first
    journal.replace_replays([("job_c", "k1", "2026-01-01T00:00:03"), ("job_d", "k2", "2026-01-01T00:00:04")])
    assert journal.replay_job_ids("k1") == ["job_c"]
    assert journal.replay_job_ids("k2") == ["job_d"]
    assert journal.replay_count() == 2


def test_a_journal_that_cannot_be_opened_is_a_storage_error_naming_the_folder(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("not a folder")
    with pytest.raises(StorageError, match="while opening the journal") as caught:
        Journal(tmp_path / "plain-file" / "journal.sqlite")
    assert str(tmp_path / "plain-file") in str(caught.value) and "(File exists, " in str(caught.value)


def test_a_journal_read_or_write_that_fails_is_a_storage_error(journal: Journal) -> None:
    with sqlite3.connect(journal.path) as other:
        other.execute("DROP TABLE jobs")
    with pytest.raises(StorageError, match=r"no such table: jobs, while reading the journal"):
        journal.pending()
    with pytest.raises(StorageError, match=r"no such table: jobs, while writing the journal") as caught:
        journal.begin("k1", HOOKED)
    assert f"writing to {journal.path.parent} failed" in str(caught.value)


def test_adopted_entries_are_written_down_as_they_were(tmp_path: Path, journal: Journal) -> None:
    entry = journal.begin("k1", HOOKED, "https://api.example")
    journal.mark_submitted(entry.idempotency_key, "job_1")
    kept = journal.pending()
    other = Journal(tmp_path / "new" / "journal.sqlite")
    other.adopt(kept)
    other.adopt(kept)  # twice: once
    [adopted] = other.pending()
    assert (adopted.key, adopted.idempotency_key, adopted.job_id, adopted.state, adopted.request) == (
        "k1",
        entry.idempotency_key,
        "job_1",
        "submitted",
        entry.request,
    )
    assert adopted.created_at == entry.created_at
    other.close()


def test_a_note_says_why_an_entry_is_unfinished_and_keeps_its_state(journal: Journal) -> None:
    why = "answer unclear: may be charged"
    entry = journal.begin("k1", HOOKED)
    other = journal.begin("k2", HOOKED)
    journal.note(entry.idempotency_key, why)
    noted, untouched = journal.pending()
    assert (noted.idempotency_key, noted.state, noted.job_id, noted.error) == (
        entry.idempotency_key,
        SUBMITTING,
        None,
        why,
    )
    assert noted.updated_at >= entry.updated_at
    assert untouched == other and untouched.error is None
    assert journal.unfinished("k1").error == why


@pytest.mark.parametrize("seconds", [30.0, 0.25])
def test_the_journal_waits_its_busy_timeout_for_another_processs_lock(tmp_path: Path, seconds: float) -> None:
    journal = Journal(tmp_path / "journal.sqlite", busy_timeout=seconds)
    try:
        assert journal._db.execute("PRAGMA busy_timeout").fetchone()[0] == int(seconds * 1000)
    finally:
        journal.close()


def test_a_read_does_not_wait_behind_a_write_under_way(journal: Journal) -> None:
    """The event loop reads the journal (is this image being made?) while other flows' writes flush on worker
    threads: a read must see the last committed state at once, not queue behind the write's lock."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    done = journal.begin("k1", HOOKED)
    inside, release = threading.Event(), threading.Event()

    def slow_write() -> None:
        with journal._write() as db:  # a write under way: inside its transaction, not committed yet
            db.execute("UPDATE jobs SET state = ? WHERE idempotency_key = ?", (FAILED, done.idempotency_key))
            inside.set()
            release.wait(30)

    with ThreadPoolExecutor(2) as pool:
        writer = pool.submit(slow_write)
        assert inside.wait(30)
        try:
            read = pool.submit(journal.unfinished, "k1")
            assert read.result(timeout=10) == done  # the committed state: the write is not visible yet
        finally:
            release.set()
        writer.result(timeout=30)
    assert journal.unfinished("k1") is None  # and once it commits, the next read sees it

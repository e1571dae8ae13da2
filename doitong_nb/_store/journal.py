"""The job journal: every submission is written down (durably) before it is sent.

If the kernel dies between "credits charged" and "image saved", the journal still holds the
idempotency key and the job id, so the next run resumes the job instead of paying again. The same
SQLite file also holds the store's replay index (request key -> job id), rebuilt from the sidecars
whenever it disagrees with them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doitong_nb._core.errors import StorageError
from doitong_nb._core.i18n import _
from doitong_nb._core.request import GenerationRequest

SUBMITTING, SUBMITTED, DONE, FAILED = "submitting", "submitted", "done", "failed"
UNFINISHED = (SUBMITTING, SUBMITTED)
BUSY_TIMEOUT_MS = 30_000
ORIGIN = "origin"  # the service a submission went to, kept beside its request

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    idempotency_key TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    job_id TEXT,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_key ON jobs (key, state);
CREATE TABLE IF NOT EXISTS replays (
    job_id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    saved_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS replays_by_key ON replays (key, saved_at);
"""
_COLUMNS = "key, idempotency_key, job_id, state, request, created_at, updated_at, error"


@dataclass(frozen=True)
class JournalEntry:
    """One submission as the journal last recorded it."""

    key: str
    idempotency_key: str
    job_id: str | None
    state: str
    request: dict[str, Any]
    created_at: float
    updated_at: float
    error: str | None


def _entry(row: tuple[Any, ...]) -> JournalEntry:
    key, idempotency_key, job_id, state, request, created_at, updated_at, error = row
    return JournalEntry(key, idempotency_key, job_id, state, json.loads(request), created_at, updated_at, error)


class Journal:
    """SQLite in WAL mode with synchronous=FULL: a committed write survives a killed process or a power cut.

    Each method is one short transaction. Writes share one connection under a lock; reads have a connection and a
    lock of their own, so a read on the event loop never waits behind another flow's write and its flush (WAL
    lets a reader see every committed write while the next one is under way). busy_timeout lets several
    processes share the file: a write waits at most `busy_timeout` seconds for
    another process's lock, then fails with a StorageError (the caller has sent nothing yet, or holds an
    idempotency key that makes a re-send harmless). Every failure of the file (full, read-only, deleted)
    is a StorageError. Before each write the file is checked to be the one opened: a journal whose folder
    was deleted or unmounted would otherwise go on "recording" into a file nobody can read again.
    """

    def __init__(self, path: Path, *, busy_timeout: float = BUSY_TIMEOUT_MS / 1000) -> None:
        self.path = Path(path)
        self._lock, self._read_lock = threading.Lock(), threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = _connect(self.path, busy_timeout)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._identity = _identity(self.path)
            with self._write() as db:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
            self._reader = _connect(self.path, busy_timeout)
            self._reader.execute("PRAGMA query_only=ON")
        except BaseException as exc:
            self.close()
            if isinstance(exc, (sqlite3.Error, OSError)):
                raise StorageError.from_os(exc, self.path.parent, _("opening the journal")) from None
            raise

    def _failure(self, exc: BaseException, doing: str) -> StorageError:
        return StorageError.from_os(exc, self.path.parent, doing)

    def intact(self) -> bool:
        """The path still names the file this connection writes (not deleted, not under a new mount)."""
        try:
            return _identity(self.path) == self._identity
        except OSError:
            return False

    def _check_file(self) -> None:
        if not self.intact():
            raise StorageError(
                _("the journal {path} was deleted or its folder replaced or unmounted while in use").format(
                    path=self.path
                ),
                remedy=_("make the folder {folder} available again").format(folder=self.path.parent),
                kind="gone",
            )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so a busy file waits instead of failing mid-way."""
        with self._lock:
            db = self._open(self._db)
            self._check_file()
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._failure(exc, _("waiting to write the journal")) from None
            try:
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    with suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                if isinstance(exc, (sqlite3.Error, OSError)):
                    raise self._failure(exc, _("writing the journal")) from None
                raise

    def _open(self, db: sqlite3.Connection | None) -> sqlite3.Connection:
        if db is None:
            raise StorageError(
                _("the journal {path} is closed").format(path=self.path), remedy=_("use a client that is not closed")
            )
        return db

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._read_lock:
            try:
                return self._open(self._reader).execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._failure(exc, _("reading the journal")) from None

    def begin(self, key: str, request: GenerationRequest, origin: str | None = None) -> JournalEntry:
        """Record a submission about to be sent to `origin`, under a fresh idempotency key."""
        data = request.canonical()
        if request.webhook_url is not None:
            data["webhook_url"] = request.webhook_url
        if origin is not None:
            data[ORIGIN] = origin
        now = time.time()
        entry = JournalEntry(key, str(uuid.uuid4()), None, SUBMITTING, data, now, now, None)
        with self._write() as db:
            db.execute(
                f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (key, entry.idempotency_key, None, SUBMITTING, json.dumps(data), now, now, None),
            )
        return entry

    def unfinished(self, key: str, origin: str | None = None) -> JournalEntry | None:
        """The newest submission of `key` to `origin` that was sent (or may have been) but not finished.

        Entries written before origins were recorded match any origin, as they did then.
        """
        rows = self._read(
            f"SELECT {_COLUMNS} FROM jobs WHERE key = ? AND state IN (?, ?) ORDER BY created_at DESC",
            (key, *UNFINISHED),
        )
        entries = (_entry(row) for row in rows)
        return next((e for e in entries if origin is None or e.request.get(ORIGIN, origin) == origin), None)

    def mark_submitted(self, idempotency_key: str, job_id: str) -> None:
        self._set_state(idempotency_key, SUBMITTED, job_id=job_id)

    def mark_done(self, idempotency_key: str) -> None:
        self._set_state(idempotency_key, DONE)

    def note(self, idempotency_key: str, why: str) -> None:
        """Say why an unfinished submission is still unfinished (e.g. its answer was unclear), keeping its state."""
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET error = ?, updated_at = ? WHERE idempotency_key = ?",
                (why, time.time(), idempotency_key),
            )

    def mark_failed(self, idempotency_key: str, error: str) -> None:
        """Terminal: the job failed (and was refunded), so a re-run submits anew."""
        self._set_state(idempotency_key, FAILED, error=error)

    def _set_state(
        self, idempotency_key: str, state: str, *, job_id: str | None = None, error: str | None = None
    ) -> None:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = ?, job_id = COALESCE(?, job_id), error = ?, updated_at = ? "
                "WHERE idempotency_key = ?",
                (state, job_id, error, time.time(), idempotency_key),
            )
            if cursor.rowcount == 0:
                raise KeyError(f"no journal entry has idempotency key {idempotency_key!r}")

    def pending(self) -> list[JournalEntry]:
        """Every unfinished submission, oldest first: the jobs a new session should pick up."""
        rows = self._read(f"SELECT {_COLUMNS} FROM jobs WHERE state IN (?, ?) ORDER BY created_at", UNFINISHED)
        return [_entry(row) for row in rows]

    # --- the store's replay index ----------------------------------------------------------------

    def record_replay(self, job_id: str, key: str, saved_at: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO replays (job_id, key, saved_at) VALUES (?, ?, ?)", (job_id, key, saved_at)
            )

    def replay_job_ids(self, key: str) -> list[str]:
        """Job ids stored under `key`, newest first."""
        rows = self._read("SELECT job_id FROM replays WHERE key = ? ORDER BY saved_at DESC", (key,))
        return [row[0] for row in rows]

    def replay_count(self) -> int:
        return self._read("SELECT COUNT(*) FROM replays")[0][0]

    def replace_replays(self, rows: Iterable[tuple[str, str, str]]) -> None:
        """Swap the whole index for (job_id, key, saved_at) rows read from the sidecars, in one transaction."""
        with self._write() as db:
            db.execute("DELETE FROM replays")
            db.executemany("INSERT OR REPLACE INTO replays (job_id, key, saved_at) VALUES (?, ?, ?)", rows)

    def adopt(self, entries: Iterable[JournalEntry]) -> None:
        """Write down unfinished entries kept elsewhere (a journal that was lost with its folder), as they were."""
        rows = [
            (e.key, e.idempotency_key, e.job_id, e.state, json.dumps(e.request), e.created_at, time.time(), e.error)
            for e in entries
        ]
        with self._write() as db:
            db.executemany(f"INSERT OR IGNORE INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def close(self) -> None:
        """Close the connections (and with them journal.sqlite, -wal and -shm); closing twice is harmless."""
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout)
    db.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    return db


def _identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino

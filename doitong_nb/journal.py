"""The job journal: every submission is written down (durably) before it is sent.

If the kernel dies between "credits charged" and "image saved", the journal still holds the
idempotency key and the job id, so the next run resumes the job instead of paying again. The same
SQLite file also holds the store's replay index (request key -> job id), rebuilt from the sidecars
whenever it disagrees with them.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .request import GenerationRequest

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

    Each method is one short transaction; a lock makes one connection safe across threads and
    busy_timeout lets several processes share the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._write() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE takes the write lock up front, so a busy file waits instead of failing mid-way."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

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

    def close(self) -> None:
        with self._lock:
            self._db.close()

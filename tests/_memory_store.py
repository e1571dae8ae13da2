"""An in-memory store and journal for the engine's ports (`_engine/ports.py`): flow tests with no folder at all.

Results, the journal and downloads live in dicts; a `Script(sink=store.files.__setitem__)` writes its Fetches here.
What it keeps is what the engine's rules are about (keys, origins, journal states, job ids), not the folder's
formats, which tests/test_store.py and tests/test_journal.py cover against the real files.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import replace
from pathlib import PurePosixPath
from typing import Any

from doitong_nb._core.errors import DownloadError
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import ImageResult, Job
from doitong_nb._store.journal import DONE, FAILED, ORIGIN, SUBMITTED, SUBMITTING, UNFINISHED, JournalEntry


class MemoryJournal:
    def __init__(self) -> None:
        self.entries: dict[str, JournalEntry] = {}

    def begin(self, key: str, request: GenerationRequest, origin: str | None = None) -> JournalEntry:
        data = {**request.canonical(), **({ORIGIN: origin} if origin is not None else {})}
        now = time.time()
        entry = JournalEntry(key, str(uuid.uuid4()), None, SUBMITTING, data, now, now, None)
        self.entries[entry.idempotency_key] = entry
        return entry

    def unfinished(self, key: str, origin: str | None = None) -> JournalEntry | None:
        found = [e for e in self.pending() if e.key == key and e.request.get(ORIGIN, origin) == origin]
        return found[-1] if found else None

    def pending(self) -> list[JournalEntry]:
        return [e for e in self.entries.values() if e.state in UNFINISHED]

    def _set(self, idempotency_key: str, **changes: Any) -> None:
        self.entries[idempotency_key] = replace(self.entries[idempotency_key], **changes, updated_at=time.time())

    def mark_submitted(self, idempotency_key: str, job_id: str) -> None:
        self._set(idempotency_key, state=SUBMITTED, job_id=job_id, error=None)

    def mark_done(self, idempotency_key: str) -> None:
        self._set(idempotency_key, state=DONE, error=None)

    def mark_failed(self, idempotency_key: str, error: str) -> None:
        self._set(idempotency_key, state=FAILED, error=error)

    def note(self, idempotency_key: str, why: str) -> None:
        self._set(idempotency_key, error=why)


class MemoryStore:
    root = PurePosixPath("memory:")

    def __init__(self) -> None:
        self.journal = MemoryJournal()
        self.files: dict[Any, bytes] = {}  # downloads, by the path the engine gave the driver
        self.results: dict[tuple[str, str], ImageResult] = {}
        self._rescued: dict[str, JournalEntry] = {}

    def prepare(self) -> None:
        """Nothing to create: memory can always take an image."""

    def find(self, key: str, origin: str) -> ImageResult | None:
        stored = self.results.get((key, origin))
        return None if stored is None else replace(stored, replayed=True, credits=0)

    def locked(self, key: str, origin: str) -> bool:
        return False

    def restore(self, key: str, origin: str, on_missing: str = "error") -> ImageResult | None:
        return None

    def partial_path(self, job_id: str, ext: str) -> PurePosixPath:
        return self.root / ".partial" / f"{job_id}.{ext}"

    def check(self, download: Any, job: Job) -> None:
        if not self.files.get(download):
            raise DownloadError(f"nothing was downloaded to {download}")

    def discard(self, download: Any) -> None:
        self.files.pop(download, None)

    def put(self, key: str, request: GenerationRequest, job: Job, download: Any, origin: str) -> ImageResult:
        data = self.files.pop(download)
        result = ImageResult(
            request=request,
            job_id=job.id,
            path=self.root / f"{job.id}{PurePosixPath(str(download)).suffix}",  # type: ignore[arg-type]
            sha256=hashlib.sha256(data).hexdigest(),
            width=request.width,
            height=request.height,
            seed=request.seed,
            version=request.version,
            duration=job.duration,
            credit_cost=job.credit_cost or request.estimated_credits,
            created_at=job.created_at,
            credits=job.credit_cost or request.estimated_credits,
        )
        self.results[(key, origin)] = result
        return result

    def history(self) -> list[ImageResult]:
        return list(reversed(self.results.values()))

    def rescue(self, entry: JournalEntry) -> None:
        self._rescued[entry.idempotency_key] = entry

    def rescued_entries(self) -> list[JournalEntry]:
        return list(self._rescued.values())


class MemoryDiscovery:
    def __init__(self) -> None:
        self.found: dict[str, dict[str, Any]] = {}

    def get(self, origin: str) -> dict[str, Any]:
        return dict(self.found.get(origin, {}))

    def put(self, origin: str, **found: Any) -> None:
        self.found.setdefault(origin, {}).update(found)

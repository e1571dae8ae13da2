"""What the engine needs from storage, as protocols: the folder (`_store.Store`) is one implementation, an
in-memory one is another (tests/_memory_store.py), so the flows can be run and tested with no folder, the way
h11's tests pair a connection with a fake peer instead of a socket.

The engine reaches the disk only through these calls, and through `Work` steps for the ones that take time (the
driver runs those off its event loop).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any, Protocol

from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import ImageResult, Job


class JournalPort(Protocol):
    """Every submission, written down before it is sent (see `_store.journal.Journal`)."""

    def begin(self, key: str, request: GenerationRequest, origin: str | None = None) -> Any: ...

    def unfinished(self, key: str, origin: str | None = None) -> Any: ...

    def pending(self) -> list[Any]: ...

    def mark_submitted(self, idempotency_key: str, job_id: str) -> None: ...

    def mark_done(self, idempotency_key: str) -> None: ...

    def mark_failed(self, idempotency_key: str, error: str) -> None: ...

    def note(self, idempotency_key: str, why: str) -> None: ...


class StorePort(Protocol):
    """Stored results by replay key and origin, the journal, and where downloads go."""

    root: PurePath
    journal: JournalPort

    def prepare(self) -> None: ...

    def find(self, key: str, origin: str) -> ImageResult | None: ...

    def locked(self, key: str, origin: str) -> bool: ...

    def restore(self, key: str, origin: str, on_missing: str = "error") -> ImageResult | None: ...

    def partial_path(self, job_id: str, ext: str) -> Any: ...

    def check(self, download: Any, job: Job) -> None: ...

    def discard(self, download: Any) -> None: ...

    def put(self, key: str, request: GenerationRequest, job: Job, download: Any, origin: str) -> ImageResult: ...

    def history(self) -> list[ImageResult]: ...

    def rescue(self, entry: Any) -> None: ...

    def rescued_entries(self) -> list[Any]: ...


class DiscoveryPort(Protocol):
    """What was learned about a service, per origin (see `_store.discovery_cache.DiscoveryCache`)."""

    def get(self, origin: str) -> dict[str, Any]: ...

    def put(self, origin: str, **found: Any) -> None: ...

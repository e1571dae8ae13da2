"""The lock file: the shareable record of every generated image, meant to be committed beside the notebook.

The SQLite journal is the crash-safe working record of one machine; the lock file is what travels with the
notebook (a co-author's clone, a reviewer, CI, a paper's supplement). It is JSON Lines: a header line, then
one line per image, sorted by request key and job id, each line a JSON object with sorted keys:

    {"doitong-nb-lock": 1}
    {"bytes": 812345, "completed_at": "...", "created_at": "...", "credits": 8, "file": "job_ab12.jpg", ...}

One line per entry keeps a diff to the images that changed and lets git merge two people's additions
(`flux_outputs.lock.jsonl merge=union` in `.gitattributes` even resolves two additions at the same place);
the reader takes the entries in any order and drops repeated lines, so a union merge reads back whole.

It never holds the API key: an entry records its origin ("sandbox" or the API's scheme://host), so a real
key never replays a sandbox image from a lock (and the reverse).

Writes are atomic (a temporary file renamed over the lock) and serialised between processes with an
advisory lock on the lock file itself (POSIX `flock`, re-checked after the rename of another writer), so
two kernels adding images at once lose no entry.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from doitong_nb._core.errors import StorageError
from doitong_nb._core.i18n import _

HEADER = {"doitong-nb-lock": 1}
SUFFIX = ".lock.jsonl"
# The fields every entry has (the request is its canonical form, which decides the image).
FIELDS = (
    "key",
    "origin",
    "job_id",
    "file",
    "sha256",
    "bytes",
    "width",
    "height",
    "seed",
    "version",
    "credits",
    "created_at",
    "completed_at",
    "package",
    "request",
)


class LockFileError(StorageError):
    """The lock file cannot be read (a merge left conflict markers, or a line is not an entry)."""


def lock_path_for(output: str | os.PathLike[str], *, cwd: str | os.PathLike[str] | None = None) -> Path:
    """Where the lock of an output location lives by default.

    A local folder `flux_outputs` has `flux_outputs.lock.jsonl` beside it (beside the notebook for the default,
    relative folder). A URL such as `s3://bucket/team/images` has `images.lock.jsonl` in the current folder
    (the notebook's, in Jupyter): the lock goes to git, the images to the store.
    """
    text = os.fspath(output)
    if "://" in text and not text.startswith("file://"):
        name = text.split("://", 1)[1].rstrip("/").rsplit("/", 1)[-1] or "flux_outputs"
        return Path(cwd or Path.cwd()) / f"{name}{SUFFIX}"
    path = Path(text.removeprefix("file://"))
    return path.parent / f"{path.name}{SUFFIX}"


def _line(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def _order(entry: dict[str, Any]) -> tuple[str, str, str]:
    return (str(entry.get("key", "")), str(entry.get("origin", "")), str(entry.get("job_id", "")))


def parse(text: str, where: str = "the lock file") -> list[dict[str, Any]]:
    """The entries of a lock file's text, in order, each job id once (a later line of the same job wins)."""
    entries: dict[str, dict[str, Any]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(("<<<<<<<", "=======", ">>>>>>>", "|||||||")):
            raise LockFileError(
                _(
                    "{where} has a merge conflict marker on line {number}; keep both sides' lines (every entry is "
                    "one line and the order does not matter) and delete the markers, or add "
                    "`*{suffix} merge=union` to .gitattributes so git does it"
                ).format(where=where, number=number, suffix=SUFFIX),
                remedy=_("resolve the conflict"),
            )
        try:
            data = json.loads(line)
        except ValueError:
            raise LockFileError(
                _("{where} line {number} is not JSON").format(where=where, number=number),
                remedy=_("restore the file from git"),
            ) from None
        if not isinstance(data, dict):
            raise LockFileError(
                _("{where} line {number} is not an entry").format(where=where, number=number),
                remedy=_("restore the file from git"),
            )
        if "doitong-nb-lock" in data:
            continue
        if not isinstance(data.get("job_id"), str) or not isinstance(data.get("key"), str):
            raise LockFileError(
                _("{where} line {number} has no job_id or key").format(where=where, number=number),
                remedy=_("restore the file from git"),
            )
        entries[data["job_id"]] = data
    return sorted(entries.values(), key=_order)


def render(entries: Iterable[dict[str, Any]]) -> str:
    """The text of a lock file holding `entries` (sorted, one line each)."""
    unique = {e["job_id"]: e for e in entries}
    lines = [_line(HEADER), *(_line(e) for e in sorted(unique.values(), key=_order))]
    return "\n".join(lines) + "\n"


class LockFile:
    """One lock file: read it, add entries to it safely while other processes do the same."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._cache: tuple[tuple[int, int, int], list[dict[str, Any]]] | None = None

    def __repr__(self) -> str:
        return f"LockFile({str(self.path)!r})"

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, sorted; [] when there is no lock file yet."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StorageError.from_os(exc, self.path.parent, _("reading the lock file")) from None
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._cache is not None and self._cache[0] == stamp:
            return self._cache[1]
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StorageError.from_os(exc, self.path.parent, _("reading the lock file")) from None
        entries = parse(text, str(self.path))
        self._cache = (stamp, entries)
        return entries

    def find(self, key: str, origin: str) -> dict[str, Any] | None:
        """The newest entry for `key` made by `origin` (None if the lock has none)."""
        found = [e for e in self.entries() if e["key"] == key and e.get("origin") == origin]
        return max(found, key=lambda e: str(e.get("completed_at") or e.get("created_at") or ""), default=None)

    def by_job_id(self) -> dict[str, dict[str, Any]]:
        return {e["job_id"]: e for e in self.entries()}

    def add(self, *entries: dict[str, Any]) -> None:
        """Add (or replace, by job id) entries: read, merge and rename under the inter-process lock."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._exclusive():
                try:
                    current = parse(self.path.read_text(encoding="utf-8"), str(self.path))
                except FileNotFoundError:
                    current = []
                text = render([*current, *entries])
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
                try:
                    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                        f.write(text)
                        f.flush()
                        os.fsync(f.fileno())
                    os.replace(tmp, self.path)
                except BaseException:
                    with suppress(FileNotFoundError):
                        os.unlink(tmp)
                    raise
        except OSError as exc:
            raise StorageError.from_os(exc, self.path.parent, _("writing the lock file")) from None

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the advisory lock of the file now at `path` (POSIX flock; a best-effort spin file elsewhere).

        A writer renames a new file over the path, so after taking the lock on what we opened we check it is
        still the file at the path; if another writer replaced it meanwhile, we lock the new one instead.
        """
        try:
            import fcntl
        except ImportError:  # Windows: a sibling marker file made with O_EXCL
            with self._spin_lock():
                yield
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    try:
                        yield
                    finally:
                        fcntl.flock(fd, fcntl.LOCK_UN)
                    return
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    @contextmanager
    def _spin_lock(self, stale: float = 30.0) -> Iterator[None]:
        marker = self.path.with_name(f".{self.path.name}.writing")
        while True:
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                with suppress(OSError):
                    if time.time() - marker.stat().st_mtime > stale:
                        marker.unlink()
                time.sleep(0.02)
        try:
            yield
        finally:
            with suppress(OSError):
                marker.unlink()

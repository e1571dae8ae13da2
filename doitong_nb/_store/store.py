"""Results on disk with their provenance, so that re-running a cell replays instead of paying again.

Layout under the root folder:

    <job_id>.jpg|png   the full-resolution image, provenance embedded in its own metadata
    <job_id>.json      the sidecar: provenance + sha256 + replay key; the source of truth
    journal.sqlite     the job journal and a replay index rebuilt from the sidecars when they disagree
    .partial/          downloads in progress
    .upload/           markers of files waiting to be uploaded to the shared store (when there is one)

Beside the folder, `<folder>.lock.jsonl` (lockfile.py) is the shareable record: every stored image is added to
it as it arrives. With a shared store (`output_dir` an fsspec URL such as `s3://bucket/prefix`, see remote.py)
this folder is the machine's working copy and every image is also uploaded, content addressed; a machine with
the lock but not the images fetches them from the store by sha256 (`restore`), at no cost.

Job ids come from the server, so they are checked before they name any file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, NamedTuple

from doitong_nb._contract import PRODUCTION_BASE_URL
from doitong_nb._core.errors import (
    SETTING_OUTPUT_DIR,
    DownloadError,
    MissingResultError,
    StorageError,
    StoreIntegrityError,
    UnsafeResponseError,
    is_storage_failure,
    system_reason,
)
from doitong_nb._core.i18n import _
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import ImageResult, Job
from doitong_nb._core.settings import SANDBOX_ORIGIN, origin_of
from doitong_nb._store.journal import BUSY_TIMEOUT_MS, Journal, JournalEntry
from doitong_nb._store.lockfile import LockFile, lock_path_for
from doitong_nb._store.provenance import (
    CHUNK,
    copy_jpeg_with,
    copy_png_with,
    image_format,
    read_embedded_provenance,
)
from doitong_nb._version import __version__

_JOB_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
_EXT_RE = re.compile(r"[a-z0-9]{1,8}")
STALE_SECONDS = 15 * 60  # a partial download untouched this long belongs to no live download (see _clean_partials)


def _check_job_id(job_id: str) -> str:
    if not isinstance(job_id, str) or not _JOB_ID_RE.fullmatch(job_id):
        raise UnsafeResponseError(
            _(
                "the server sent job id {job_id!r}; only 1-128 of A-Z a-z 0-9 _ - are accepted "
                "as a file name, so nothing was written"
            ).format(job_id=job_id)
        )
    return job_id


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _identity(path: Path) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _identity_or_none(path: Path) -> tuple[int, int] | None:
    try:
        return _identity(path) if path.is_dir() else None
    except OSError:
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (POSIX only; Windows cannot open a directory)."""
    if os.name == "posix":
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def _atomic_write(path: Path) -> Iterator[IO[bytes]]:
    """Write beside `path`, fsync, then rename over it: readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


class _HashingWriter:
    """Hashes what it writes, so the final file's sha256 costs no second read."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self._raw.write(data)


# --- JPEG: COM segments after SOI and the APPn headers (JFIF/Exif stay where readers expect them) ---


# --- PNG: an uncompressed iTXt chunk just before IEND ------------------------------------------


def _int_or(value: Any, default: int | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _request_from(data: dict[str, Any]) -> GenerationRequest:
    names = {f.name for f in fields(GenerationRequest)}
    return GenerationRequest(**{k: v for k, v in data.items() if k in names})


class _Stored(NamedTuple):
    """A readable sidecar: the result it describes (as a zero-credit replay) and its index fields."""

    result: ImageResult
    replay_key: str
    saved_at: str
    origin: str


def _legacy_origin(data: dict[str, Any]) -> str:
    """The origin of a sidecar written before origins were recorded: the sandbox marks its images, so an
    unmarked one came from the real service (a sandbox image is never taken for a real one)."""
    metadata = data.get("metadata")
    return SANDBOX_ORIGIN if isinstance(metadata, dict) and metadata.get("sandbox") else origin_of(PRODUCTION_BASE_URL)


class Store:
    """The output folder: put a paid result once, find it again for free.

    `prepare()` runs before anything is sent: it creates the folder if need be, proves it takes a file
    (a read-only or uncreatable folder is refused while nothing is paid), removes stale partial files and
    pins the folder's identity. From then on every write checks the folder is still the one pinned: a
    folder deleted or unmounted mid-batch fails the writes in flight with a StorageError instead of
    silently writing somewhere nobody will look (or into a deleted journal). The next `prepare()` takes
    the folder as it is then (creating it again if it was deleted) and carries the unfinished jobs of the
    lost journal over, so their images are still fetched without paying again.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] = "flux_outputs",
        *,
        busy_timeout: float | None = None,
        lock: str | os.PathLike[str] | bool | None = None,
        remote: str | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        """`lock`: the lock file's path (None: `<root>.lock.jsonl`, or named after `remote`; False: none).
        `remote`: an fsspec URL every image is also uploaded to, content addressed."""
        self.root = Path(root)
        if lock is None or lock is True:
            lock = lock_path_for(remote or self.root)
        self.lock: LockFile | None = LockFile(lock) if lock is not False else None
        self.remote: Any = None
        if remote is not None:
            from doitong_nb._store.remote import ObjectStore

            self.remote = ObjectStore(remote, **(storage_options or {}))
        self.busy_timeout = BUSY_TIMEOUT_MS / 1000 if busy_timeout is None else busy_timeout
        self._journal: Journal | None = None
        self._journal_lock = threading.Lock()
        self._prepare_lock = threading.Lock()
        self._index_checked = False
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the root once prepared
        self._rescued: dict[str, JournalEntry] = {}  # paid jobs the journal could not record, by idempotency key

    @property
    def journal(self) -> Journal:
        """Opened on first use, so that merely building a Store creates nothing on disk."""
        with self._journal_lock:
            if self._journal is None:
                self._journal = Journal(self.root / "journal.sqlite", busy_timeout=self.busy_timeout)
            return self._journal

    def close(self) -> None:
        """Close the journal's files (journal.sqlite, -wal, -shm); a later use opens them again."""
        with self._journal_lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None

    # --- the folder itself ---------------------------------------------------------------------

    def prepare(self) -> None:
        """Make sure the folder can take the results, before anything is sent (cheap once it has).

        Raises StorageError naming the folder and the settings that choose it when it cannot be created
        or written: nothing is paid for an image that could not be stored.
        """
        with self._prepare_lock:
            current = _identity_or_none(self.root)
            if current is not None and current == self._identity and (self._journal is None or self._journal.intact()):
                return
            lost = self._identity is not None  # the folder we used was deleted, replaced or unmounted
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                (self.root / ".partial").mkdir(exist_ok=True)
                fd, probe = tempfile.mkstemp(dir=self.root, prefix=".probe-", suffix=".tmp")
                os.close(fd)
                os.unlink(probe)
                identity = _identity(self.root)
            except OSError as exc:
                told = StorageError.from_os(exc, self.root, _("preparing it"))
                raise StorageError(
                    _("the output folder {folder} cannot be used ({reason})").format(
                        folder=self.root, reason=system_reason(exc)
                    ),
                    remedy=_("create it or make it writable, or choose another folder with {setting}").format(
                        setting=_(SETTING_OUTPUT_DIR)
                    ),
                    kind=told.kind,
                ) from None
            carried = self._detach_journal() if lost else []
            self._index_checked = False
            self._clean_partials()
            if carried:
                try:
                    self.journal.adopt(carried)
                except StorageError:  # kept for the next try; the folder stays unpinned until then
                    self._rescued.update((e.idempotency_key, e) for e in carried)
                    raise
            self._identity = identity

    def _detach_journal(self) -> list[JournalEntry]:
        """Close the journal of a folder that is gone, keeping what it (and this session) knew unfinished."""
        carried = dict(self._rescued)
        with self._journal_lock:
            old, self._journal = self._journal, None
        if old is not None:
            with suppress(StorageError):  # a deleted file stays readable through its open descriptor
                carried.update((e.idempotency_key, e) for e in old.pending())
            old.close()
        self._rescued.clear()
        return list(carried.values())

    def rescue(self, entry: JournalEntry) -> None:
        """Keep in memory a paid job the journal could not record; the next prepare() writes it down."""
        self._rescued[entry.idempotency_key] = entry

    def rescued_entries(self) -> list[JournalEntry]:
        return list(self._rescued.values())

    def _check_root(self, doing: str) -> None:
        """The folder is still the one prepared (prepared now if it never was)."""
        if self._identity is None:
            self.prepare()
            return
        if _identity_or_none(self.root) != self._identity:
            raise StorageError(
                _(
                    "the output folder {folder} was deleted, replaced or unmounted while in use (found while {doing})"
                ).format(folder=self.root, doing=doing),
                remedy=_("make the folder {folder} available again").format(folder=self.root),
                kind="gone",
            )

    def _clean_partials(self) -> None:
        """Remove partial downloads and unfinished atomic writes nobody has touched for STALE_SECONDS.

        Another kernel may be downloading into this same folder right now, so a partial file is removed
        only when it is clearly dead: a live download writes at least every HTTP_TIMEOUT seconds (a
        stalled one is abandoned after that) and is moved into place a moment after its last byte, so a
        file untouched for minutes belongs to no one. (The journal cannot tell: a "submitted" job of
        another kernel may be downloading, and a finished job's partial is already gone.)
        """
        cutoff = time.time() - STALE_SECONDS
        candidates = [*self.root.glob(".partial/*"), *self.root.glob(".*.tmp")]
        for path in candidates:
            with suppress(OSError):
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()

    def partial_path(self, job_id: str, ext: str) -> Path:
        """Where a download streams before `put` moves it into place."""
        _check_job_id(job_id)
        if not _EXT_RE.fullmatch(ext):
            raise UnsafeResponseError(_("file extension {ext!r} is not accepted").format(ext=ext))
        path = self._inside(f".partial/{job_id}.{ext}")
        self._check_root(_("starting a download"))
        try:
            path.parent.mkdir(exist_ok=True)
        except OSError as exc:
            raise StorageError.from_os(exc, self.root, _("making the .partial folder")) from None
        return path

    def _inside(self, name: str) -> Path:
        path = self.root / name
        if not path.resolve().is_relative_to(self.root.resolve()):
            raise UnsafeResponseError(
                _("{path} resolves outside the output folder {folder}; refusing to use it").format(
                    path=path, folder=self.root
                )
            )
        return path

    def check(self, download: Path, job: Job) -> None:
        """A download must decode to the end (a truncated body fails here), at the size the job announced."""
        from PIL import Image

        try:
            with Image.open(download) as image:
                size = image.size
                image.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))  # JPEG: decoded at 1/8 scale, whole
                image.load()
        except Exception as exc:
            if is_storage_failure(exc):  # the disk failed, not the image
                raise
            raise DownloadError(
                _("the file is not a whole image ({reason})").format(reason=system_reason(exc, typed=True))
            ) from None
        expected = (job.metadata.get("width"), job.metadata.get("height"))
        if all(isinstance(v, int) for v in expected) and size != expected:
            raise DownloadError(
                _("the image is {width}x{height}, but the job announced {expected_width}x{expected_height}").format(
                    width=size[0], height=size[1], expected_width=expected[0], expected_height=expected[1]
                )
            )

    def discard(self, download: Path) -> None:
        """Drop a download that failed its check or its transfer (a retry starts afresh)."""
        with suppress(OSError):
            Path(download).unlink(missing_ok=True)

    def locked(self, key: str, origin: str) -> bool:
        """The lock file records `key` by `origin` (its image may still have to be fetched)."""
        return self.lock is not None and self.lock.find(key, origin) is not None

    def put(self, key: str, request: GenerationRequest, job: Job, download: Path, origin: str) -> ImageResult:
        """Move a checked download made by `origin` into place with its provenance embedded, write the
        sidecar, index it.

        A failing disk raises StorageError and leaves nothing that looks stored: the image is only moved
        into place once whole, is removed again if its sidecar cannot be written, and the download is
        removed (to give the space back; a re-run fetches it again at no cost).
        """
        job_id = _check_job_id(job.id)
        try:
            self._check_root(_("storing the image"))
            result, saved_at = self._put(key, request, job, Path(download), origin, job_id)
            size = result.path.stat().st_size
        except (OSError, StorageError) as exc:
            with suppress(OSError):
                os.unlink(download)
            if isinstance(exc, StorageError):
                raise
            raise StorageError.from_os(exc, self.root, _("storing the image")) from None
        with suppress(OSError):
            os.unlink(download)
        try:
            self.journal.record_replay(job_id, key, saved_at)
        except StorageError:  # the sidecar is the truth: the index is rebuilt from it when it can be written
            self._index_checked = False
        self._share(lock_entry(result, key, origin, job.completed_at or saved_at, size))
        return result

    # --- sharing: the lock file and the shared store -------------------------------------------------

    def _share(self, entry: dict[str, Any]) -> None:
        """Add a stored image to the lock and upload it; neither failure loses it (it is stored here).

        An upload that fails leaves a marker in `.upload/`: the local copy stays, and the next successful
        upload (or `sync()`) sends it. Both failures are told on stderr, in one line each.
        """
        if self.lock is not None:
            try:
                self.lock.add(entry)
            except StorageError as exc:
                _warn(
                    _(
                        "{error} (the image is stored in {folder}; `Flux().store.sync()` adds it to the lock later)"
                    ).format(error=exc, folder=self.root)
                )
        if self.remote is None:
            return
        marker = self.root / ".upload" / entry["file"]
        try:
            marker.parent.mkdir(exist_ok=True)
            with _atomic_write(marker) as out:  # another thread's _upload_waiting never reads it half written
                out.write(entry["sha256"].encode("ascii"))
        except OSError:
            pass  # the upload is tried now anyway
        try:
            self._upload(entry["file"], entry["sha256"])
        except StorageError as exc:
            _warn(
                _("{error}; {file} stays in {folder} until it is uploaded").format(
                    error=exc, file=entry["file"], folder=self.root
                )
            )
            return
        with suppress(StorageError):  # the store went away again: they keep waiting, nothing is lost
            self._upload_waiting()

    def _upload(self, file: str, sha256: str) -> bool:
        path = self._inside(file)
        uploaded = self.remote.upload(path, sha256, path.suffix[1:])
        with suppress(OSError):
            (self.root / ".upload" / file).unlink()
        return uploaded

    def _upload_waiting(self) -> int:
        """Upload the files whose earlier upload failed; how many were sent."""
        sent = 0
        for marker in self._markers():
            try:
                sha256 = marker.read_text(encoding="ascii").strip()
            except OSError:
                continue
            if not sha256:  # written by another process that has not finished: its own upload follows
                continue
            if not (self.root / marker.name).is_file():
                with suppress(OSError):
                    marker.unlink()
                continue
            sent += self._upload(marker.name, sha256)
        return sent

    def waiting_uploads(self) -> list[str]:
        """The files stored here that the shared store does not have yet."""
        return [p.name for p in self._markers()]

    def _markers(self) -> list[Path]:
        """The markers in `.upload/`, not the temporary files they are written through."""
        return sorted(p for p in self.root.glob(".upload/*") if not p.name.startswith("."))

    def sync(self) -> int:
        """Put every stored image into the lock file and upload what waits; returns how many were uploaded.

        Raises RemoteStoreError (a StorageError) when the store is unreachable: nothing local is touched.
        """
        if self.lock is not None:
            known = self.lock.by_job_id()
            missing = []
            for sidecar_path in self._sidecars():
                stored = self._load(sidecar_path)
                if stored is None or stored.result.job_id in known:
                    continue
                raw = json.loads(sidecar_path.read_text(encoding="utf-8"))
                size = stored.result.path.stat().st_size if stored.result.path.is_file() else 0
                completed = raw.get("completed_at") or stored.saved_at
                missing.append(lock_entry(stored.result, stored.replay_key, stored.origin, completed, size))
            if missing:
                self.lock.add(*missing)
        return self._upload_waiting() if self.remote is not None else 0

    def restore(self, key: str, origin: str, on_missing: str = "error") -> ImageResult | None:
        """The image the lock file records for `key` by `origin`, brought into this folder and checked: from the
        shared store by sha256 (or found in the folder itself). None when the lock does not record it.

        When the lock records it but neither the folder nor the store has the file, `on_missing` decides:
        "error" raises MissingResultError (nothing is sent: a new image would differ, and the science with it),
        "regenerate" returns None so the caller generates (and pays for) a new one.
        """
        entry = self.lock.find(key, origin) if self.lock is not None else None
        if entry is None:
            return None
        job_id = _check_job_id(entry["job_id"])
        sha256, file = str(entry.get("sha256", "")), str(entry.get("file", ""))
        ext = file.rsplit(".", 1)[-1]
        if file not in (f"{job_id}.jpg", f"{job_id}.png"):
            raise StoreIntegrityError(
                _("{lock} names file {file!r} for job {job_id}").format(lock=self.lock.path, file=file, job_id=job_id),
                job_id=job_id,
            )
        path = self._inside(file)
        if path.is_file():
            if _sha256(path) != sha256:
                raise StoreIntegrityError(
                    _(
                        "{path} does not match the sha256 the lock file {lock} records for job {job_id}; "
                        "restore it, or use --refresh / refresh=True to generate again"
                    ).format(path=path, lock=self.lock.path.name, job_id=job_id),
                    job_id=job_id,
                )
        else:
            fetched = False
            if self.remote is not None:
                partial = self.partial_path(job_id, ext)
                try:
                    fetched = self.remote.download(sha256, ext, partial)
                    if fetched:
                        os.replace(partial, path)
                finally:
                    with suppress(OSError):
                        partial.unlink()
            if not fetched:
                if on_missing == "regenerate":
                    return None
                raise MissingResultError(_missing_text(entry, self.lock.path, self.root, self.remote), job_id=job_id)
        return self._adopt(entry, key, origin, path)

    def _adopt(self, entry: dict[str, Any], key: str, origin: str, path: Path) -> ImageResult:
        """Write the sidecar of an image that came with the lock (its own embedded provenance first)."""
        saved_at = _now()
        provenance = {
            "job_id": entry["job_id"],
            "request": entry.get("request") or {},
            "seed": entry.get("seed"),
            "version": entry.get("version"),
            "width": entry.get("width"),
            "height": entry.get("height"),
            "duration": None,
            "credit_cost": entry.get("credits"),
            "created_at": entry.get("created_at"),
            "file": entry["file"],
            "metadata": {},
        }
        with suppress(OSError, ValueError):
            provenance.update(read_embedded_provenance(path) or {})
        sidecar = {
            **provenance,
            "sha256": entry["sha256"],
            "replay_key": key,
            "origin": origin,
            "saved_at": saved_at,
            "completed_at": entry.get("completed_at"),
        }
        sidecar_path = self._inside(f"{entry['job_id']}.json")
        try:
            with _atomic_write(sidecar_path) as out:
                out.write(json.dumps(sidecar, ensure_ascii=False, indent=2).encode("utf-8") + b"\n")
        except OSError as exc:
            raise StorageError.from_os(exc, self.root, _("writing the sidecar of an image from the lock")) from None
        stored = self._load(sidecar_path)
        if stored is None:
            raise StoreIntegrityError(
                _("the lock entry of job {job_id} is incomplete").format(job_id=entry["job_id"]), job_id=entry["job_id"]
            )
        with suppress(StorageError):
            self.journal.record_replay(stored.result.job_id, key, saved_at)
        return stored.result

    def _put(
        self, key: str, request: GenerationRequest, job: Job, download: Path, origin: str, job_id: str
    ) -> tuple[ImageResult, str]:
        kind = image_format(download)
        if kind is None:
            raise DownloadError(_("the downloaded output is neither JPEG nor PNG"), job_id=job_id)
        path = self._inside(f"{job_id}.{kind}")
        sidecar_path = self._inside(f"{job_id}.json")
        saved_at = _now()
        metadata = job.metadata
        credit_cost = job.credit_cost if isinstance(job.credit_cost, int) else request.estimated_credits
        version = metadata.get("version")
        result = ImageResult(
            request=request,
            job_id=job_id,
            path=path,
            sha256="",
            width=_int_or(metadata.get("width"), request.width),
            height=_int_or(metadata.get("height"), request.height),
            seed=_int_or(metadata.get("seed"), request.seed),
            version=version if isinstance(version, str) else request.version,
            duration=job.duration,
            credit_cost=credit_cost,
            created_at=job.created_at or saved_at,
            replayed=False,
            credits=credit_cost,
            metadata=dict(metadata),
        )
        provenance = result.provenance()
        del provenance["sha256"]
        payload = json.dumps(provenance, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        with open(download, "rb") as src, _atomic_write(path) as out:
            writer = _HashingWriter(out)
            (copy_jpeg_with if kind == "jpg" else copy_png_with)(src, writer, payload)
        try:
            result.sha256 = writer.digest.hexdigest()
            sidecar = {
                **result.provenance(),
                "replay_key": key,
                "origin": origin,
                "saved_at": saved_at,
                "completed_at": job.completed_at,
            }
            with _atomic_write(sidecar_path) as out:
                out.write(json.dumps(sidecar, ensure_ascii=False, indent=2).encode("utf-8") + b"\n")
        except OSError:  # an image without its sidecar is not stored: take it away again
            with suppress(OSError):
                path.unlink()
            raise
        return result, saved_at

    def find(self, key: str, origin: str) -> ImageResult | None:
        """The stored result of `key` made by `origin`, checked against its sha256; None if it was never stored.

        Results of another origin are never returned: a real key is never shown a sandbox image.
        """
        if not self.root.is_dir():
            return None
        for job_id in self._replay_job_ids(key):
            sidecar_path = self._inside(f"{_check_job_id(job_id)}.json")
            if not sidecar_path.exists():
                continue  # its sidecar was deleted: the user asked to forget this result
            sidecar = self._load(sidecar_path)
            if sidecar is None:
                raise StoreIntegrityError(
                    _(
                        "{sidecar} is not a readable sidecar; delete it, or use --refresh / "
                        "refresh=True to generate again"
                    ).format(sidecar=sidecar_path),
                    job_id=job_id,
                )
            if sidecar.replay_key == key and sidecar.origin == origin:
                self._verify(sidecar.result, sidecar_path)
                return sidecar.result
        return None

    def history(self) -> list[ImageResult]:
        """Every stored result, newest first (unreadable sidecars are left out)."""
        loaded = [s for s in map(self._load, self._sidecars()) if s is not None]
        loaded.sort(key=lambda s: s.saved_at, reverse=True)
        return [s.result for s in loaded]

    def _sidecars(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob("*.json") if _JOB_ID_RE.fullmatch(p.stem)]

    def _replay_job_ids(self, key: str) -> list[str]:
        """Job ids stored under `key`, newest first: from the index, or from the sidecars themselves when the
        index cannot be read or rebuilt right now (a full disk, a busy journal)."""
        try:
            self._check_index()
            return self.journal.replay_job_ids(key)
        except StorageError:
            loaded = [s for s in map(self._load, self._sidecars()) if s is not None and s.replay_key == key]
            return [s.result.job_id for s in sorted(loaded, key=lambda s: s.saved_at, reverse=True)]

    def _check_index(self) -> None:
        """Once per Store: rebuild the index from the sidecars (the truth) when the counts disagree."""
        if self._index_checked:
            return
        sidecars = self._sidecars()
        if len(sidecars) != self.journal.replay_count():
            loaded = [s for s in map(self._load, sidecars) if s is not None]
            self.journal.replace_replays((s.result.job_id, s.replay_key, s.saved_at) for s in loaded)
        self._index_checked = True

    def _load(self, sidecar_path: Path) -> _Stored | None:
        """None for a sidecar that is not valid JSON of the expected shape."""
        try:
            data = json.loads(sidecar_path.read_text(encoding="utf-8"))
            job_id = _check_job_id(data["job_id"])
            if job_id != sidecar_path.stem or data["file"] not in (f"{job_id}.jpg", f"{job_id}.png"):
                return None
            result = ImageResult(
                request=_request_from(data["request"]),
                job_id=job_id,
                path=self._inside(data["file"]),
                sha256=data["sha256"],
                width=data["width"],
                height=data["height"],
                seed=data["seed"],
                version=data["version"],
                duration=data["duration"],
                credit_cost=data["credit_cost"],
                created_at=data["created_at"],
                replayed=True,
                credits=0,
                metadata=data["metadata"],
            )
            origin = data.get("origin") or _legacy_origin(data)
            return _Stored(result, data["replay_key"], data["saved_at"], str(origin))
        except (OSError, ValueError, KeyError, TypeError, UnsafeResponseError):
            return None

    @staticmethod
    def _verify(result: ImageResult, sidecar_path: Path) -> None:
        remedy = _(
            "restore it, delete its sidecar {sidecar}, or use --refresh / refresh=True to generate again"
        ).format(sidecar=sidecar_path.name)
        if not result.path.is_file():
            raise StoreIntegrityError(
                _("{path} is missing (generated as job {job_id}); {remedy}").format(
                    path=result.path, job_id=result.job_id, remedy=remedy
                ),
                job_id=result.job_id,
            )
        if _sha256(result.path) != result.sha256:
            raise StoreIntegrityError(
                _("{path} was modified since it was generated (sha256 mismatch); {remedy}").format(
                    path=result.path, remedy=remedy
                ),
                job_id=result.job_id,
            )


def lock_entry(result: ImageResult, key: str, origin: str, completed_at: str | None, size: int) -> dict[str, Any]:
    """What the lock file records of one stored image (never the API key: the origin is a host or "sandbox")."""
    return {
        "key": key,
        "origin": origin,
        "job_id": result.job_id,
        "file": result.path.name,
        "sha256": result.sha256,
        "bytes": size,
        "width": result.width,
        "height": result.height,
        "seed": result.seed,
        "version": result.version,
        "credits": result.credit_cost,
        "created_at": result.created_at,
        "completed_at": completed_at,
        "package": f"doitong-nb {__version__}",
        "request": result.request.canonical(),
    }


def _missing_text(entry: dict[str, Any], lock: Path, root: Path, remote: Any) -> str:
    prompt = str((entry.get("request") or {}).get("prompt", ""))
    short = prompt if len(prompt) <= 60 else prompt[:57] + "..."
    said = (
        _(
            "the lock file {lock} records this request ({prompt!r}, seed {seed}, job {job_id}, sha256 {sha256}...) but "
            "its image is neither in {folder} nor in the store {store}; nothing was sent or charged. "
        )
        if remote is not None
        else _(
            "the lock file {lock} records this request ({prompt!r}, seed {seed}, job {job_id}, sha256 {sha256}...) "
            "but its image is neither in {folder} (no shared store is set); nothing was sent or charged. "
        )
    )
    advice = _(
        "Point output_dir (%config Flux.output_dir, DOITONG_OUTPUT_DIR) at the store that holds the "
        'images, or, to pay for a new image that will differ, %config Flux.on_missing = "regenerate" '
        '(on_missing="regenerate") or --refresh / refresh=True'
    )
    told = {"lock": lock.name, "prompt": short, "seed": entry.get("seed"), "job_id": entry["job_id"], "folder": root}
    shown = remote.shown if remote is not None else ""
    return said.format(**told, sha256=str(entry.get("sha256"))[:12], store=shown) + advice


def _warn(text: str) -> None:
    import sys

    print(f"doitong_nb: {text}", file=sys.stderr)

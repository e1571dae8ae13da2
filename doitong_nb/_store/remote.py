"""A shared object store for full-resolution files, through fsspec: `s3://`, `gs://`, `az://`, `memory://`...

Files are content addressed: `<url>/sha256/<ab>/<sha256>.<ext>`, so two people's identical images are stored
once and a file is found from a lock file's sha256 alone. The backend is whatever fsspec and the installed
extra provide (`pip install doitong-nb[s3]` for s3fs); its options (endpoint, credentials, retries) come from
fsspec's own configuration: `FSSPEC_S3='{"endpoint_url": ...}'`, a file in `~/.config/fsspec/`, or
`fsspec.config.conf["s3"] = {...}` in the notebook, plus each backend's usual variables (AWS_PROFILE...).

Every failure of the store (unreachable, refused, no such bucket) is a RemoteStoreError, a StorageError, so
the callers keep the local copy and say what to do.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from doitong_nb._core.errors import StorageError, system_reason
from doitong_nb._core.i18n import _

_SHA_RE = re.compile(r"[0-9a-f]{64}")
_EXT_RE = re.compile(r"[a-z0-9]{1,8}")


class RemoteStoreError(StorageError):
    """The shared store could not be read or written (what is stored locally stays where it is)."""

    def _text(self, job_id: str | None) -> str:
        return _("{problem}: {remedy}").format(problem=self.problem, remedy=self.remedy)


def is_url(text: str | os.PathLike[str] | None) -> bool:
    """An fsspec URL other than a plain local path (`file://` counts as local)."""
    if text is None or isinstance(text, os.PathLike):
        return False
    scheme, sep, _ = str(text).partition("://")
    return bool(sep) and scheme.lower() != "file" and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) is not None


def redact_url(url: str) -> str:
    """The URL without credentials someone may have written into it (user:secret@host)."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = host.rsplit("@", 1)[1]
    return f"{scheme}{sep}{host}{slash}{path}"


def content_path(sha256: str, ext: str) -> str:
    """Where a file with this sha256 lives under the store's root."""
    if not _SHA_RE.fullmatch(sha256) or not _EXT_RE.fullmatch(ext):
        raise ValueError(f"not a sha256 and extension: {sha256!r}, {ext!r}")
    return f"sha256/{sha256[:2]}/{sha256}.{ext}"


class ObjectStore:
    """One fsspec location holding content-addressed files."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)
        self._options = storage_options
        self._fs: Any = None
        self._root = ""

    def __repr__(self) -> str:
        return f"ObjectStore({self.shown!r})"

    def _fail(self, exc: BaseException, doing: str) -> RemoteStoreError:
        reason = " ".join(system_reason(exc, typed=True).split())
        return RemoteStoreError(
            _("the store {store} could not be reached or refused the request ({reason}, while {doing})").format(
                store=self.shown, reason=reason[:200], doing=doing
            ),
            remedy=_(
                "check the URL, your network and credentials, then run this again (`Flux().store.sync()` "
                "uploads what waits)"
            ),
            kind="remote",
        )

    @property
    def fs(self) -> Any:
        if self._fs is None:
            import fsspec

            try:
                self._fs, self._root = fsspec.core.url_to_fs(self.url, **self._options)
            except ImportError as exc:
                scheme = self.url.split("://", 1)[0]
                extra = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}.get(scheme)
                hint = f"pip install doitong-nb[{extra}]" if extra else _("install the fsspec backend for it")
                raise RemoteStoreError(
                    _("no fsspec backend for {scheme}:// is installed ({reason})").format(
                        scheme=scheme, reason=system_reason(exc)
                    ),
                    remedy=hint,
                    kind="remote",
                ) from None
            except Exception as exc:
                raise self._fail(exc, _("opening the store")) from None
        return self._fs

    def _path(self, sha256: str, ext: str) -> str:
        return f"{self._root.rstrip('/')}/{content_path(sha256, ext)}" if self._root else content_path(sha256, ext)

    def location(self, sha256: str, ext: str) -> str:
        """The full URL of a file (for messages and the RO-Crate)."""
        return f"{self.shown}/{content_path(sha256, ext)}"

    def has(self, sha256: str, ext: str, size: int | None = None) -> bool:
        """Whether the store holds this file (of this size, when given); asks the store, not a cached listing."""
        fs = self.fs
        path = self._path(sha256, ext)
        try:
            fs.invalidate_cache(path)
            info = fs.info(path)
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._fail(exc, _("looking for {path}").format(path=content_path(sha256, ext))) from None
        return size is None or int(info.get("size", -1)) == size

    def upload(self, local: Path, sha256: str, ext: str) -> bool:
        """Put `local` under its content address; False (and nothing sent) when the store already has it."""
        size = local.stat().st_size
        if self.has(sha256, ext, size):
            return False
        path = self._path(sha256, ext)
        try:
            parent = path.rsplit("/", 1)[0]
            self.fs.makedirs(parent, exist_ok=True)
            self.fs.put_file(os.fspath(local), path)  # one PUT: readers see the whole object or none
            self.fs.invalidate_cache(path)
        except Exception as exc:
            raise self._fail(exc, _("uploading {name}").format(name=local.name)) from None
        return True

    def download(self, sha256: str, ext: str, dest: Path) -> bool:
        """Fetch a file into `dest` and check its sha256; False when the store does not have it.

        A file whose bytes do not hash to its address is refused (and `dest` removed): raises StorageError.
        """
        if not self.has(sha256, ext):
            return False
        try:
            self.fs.get_file(self._path(sha256, ext), os.fspath(dest))
        except FileNotFoundError:
            return False
        except Exception as exc:
            raise self._fail(exc, _("downloading {path}").format(path=content_path(sha256, ext))) from None
        digest = hashlib.sha256()
        with open(dest, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != sha256:
            dest.unlink(missing_ok=True)
            raise RemoteStoreError(
                _("{location} does not hash to its own address: the store's copy was altered").format(
                    location=self.location(sha256, ext)
                ),
                remedy=_("restore it from a good copy (`doitong-nb verify` lists what is affected)"),
                kind="integrity",
            )
        return True

    def read_sha256(self, sha256: str, ext: str) -> str | None:
        """The actual sha256 of the stored file's bytes (None when it is missing): what `verify` compares."""
        if not self.has(sha256, ext):
            return None
        digest = hashlib.sha256()
        try:
            with self.fs.open(self._path(sha256, ext), "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._fail(exc, _("reading {path}").format(path=content_path(sha256, ext))) from None
        return digest.hexdigest()

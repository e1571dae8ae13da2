"""`doitong-nb verify NOTEBOOK.ipynb...` and `%flux_verify`: the images a notebook shows are the ones it locked.

For every image shown in a notebook's saved outputs (found by the file name `<job_id>.jpg|png` that every
result card and text line links to): it is in the lock file, its file is in the store (the shared store for a
URL output, else the output folder), and the file's sha256 is the one the lock records. One line per image,
then a summary; any problem makes the exit status non-zero, so CI can guard a paper's notebooks.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doitong_nb._core.i18n import N_, _, columns, ngettext, padded
from doitong_nb._store.lockfile import LockFile, lock_path_for

# What a result card (href="...job.jpg") and a result's text line ("-> .../job.jpg>") link to.
_SHOWN_RE = re.compile(r"(?:href=\"|-> )(?:[^\"\s<>]*/)?([A-Za-z0-9_-]{1,128})\.(jpg|png)(?=[\">])")

OK, NOT_IN_LOCK, MISSING, MODIFIED = "ok", "not in lock", "missing", "modified"  # `Check.status`: identifiers
_SAID = {OK: N_("ok"), NOT_IN_LOCK: N_("not in lock"), MISSING: N_("missing"), MODIFIED: N_("modified")}


def status_text(status: str) -> str:
    """A status in the language of the moment ("modified", "변경됨")."""
    return _(_SAID[status])


@dataclass(frozen=True)
class Check:
    """The verdict on one image."""

    file: str
    status: str
    where: str  # the notebook that shows it, or the lock file for an image no notebook is named for
    sha256: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK

    def line(self) -> str:
        digest = f"sha256 {self.sha256[:12]}" if self.sha256 else "sha256 -"
        width = max(12, *(columns(status_text(status).upper()) for status in _SAID))
        text = f"{padded(status_text(self.status).upper(), width)} {self.file:<32} {digest}  {self.where}"
        return f"{text}  ({self.detail})" if self.detail else text


@dataclass
class Target:
    """Where the images of one output setting are: the lock file, the local folder, the shared store."""

    lock: LockFile
    folder: Path
    remote: Any = None  # an ObjectStore when the output is an fsspec URL

    @classmethod
    def of(
        cls,
        output_dir: str | os.PathLike[str] | None = None,
        *,
        lock: str | os.PathLike[str] | None = None,
        base: Path | None = None,
    ) -> Target:
        """The target of an output setting (unset: as the client resolves it); a relative local folder
        (and the lock) is taken from `base`."""
        from doitong_nb._runtime.settings import value_of
        from doitong_nb._store.location import store_location
        from doitong_nb._store.remote import ObjectStore

        folder, url = store_location(value_of("output_dir", output_dir))
        if url is None and base is not None and not folder.is_absolute():
            folder = base / folder
        lock = value_of("lock_file", lock)
        lock_path = Path(lock) if lock else lock_path_for(url or folder, cwd=base)
        return cls(LockFile(lock_path), folder, ObjectStore(url) if url else None)

    def check(self, file: str, where: str) -> Check:
        entry = next((e for e in self.lock.entries() if e.get("file") == file), None)
        if entry is None:
            return Check(
                file, NOT_IN_LOCK, where, detail=_("{lock} has no entry for it").format(lock=self.lock.path.name)
            )
        expected = str(entry["sha256"])
        if self.remote is not None:
            actual = self.remote.read_sha256(expected, file.rsplit(".", 1)[-1])
            place = self.remote.location(expected, file.rsplit(".", 1)[-1])
        else:
            path = self.folder / file
            actual = _sha256(path) if path.is_file() else None
            place = str(path)
        if actual is None:
            return Check(file, MISSING, where, expected, _("not at {place}").format(place=place))
        if actual != expected:
            said = _("{place} has sha256 {digest}").format(place=place, digest=actual[:12])
            return Check(file, MODIFIED, where, expected, said)
        return Check(file, OK, where, expected)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def shown_images(notebook: str | os.PathLike[str]) -> list[str]:
    """The image files a notebook's saved outputs show, in order of appearance, each once."""
    import nbformat

    nb = nbformat.read(os.fspath(notebook), as_version=4)
    seen: dict[str, None] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            texts = [output.get("text", "")]
            data = output.get("data", {})
            texts += [data.get("text/html", ""), data.get("text/plain", "")]
            for text in texts:
                text = "".join(text) if isinstance(text, list) else str(text)
                for job_id, ext in _SHOWN_RE.findall(text):
                    seen.setdefault(f"{job_id}.{ext}", None)
    return list(seen)


def verify_notebooks(
    notebooks: list[str | os.PathLike[str]],
    target: Target | None = None,
    output_dir: str | None = None,
    lock: str | None = None,
) -> list[Check]:
    """Check every image each notebook shows; the target defaults to each notebook's own output folder."""
    checks = []
    for notebook in notebooks:
        path = Path(notebook)
        where = target or Target.of(output_dir, lock=lock, base=path.parent)
        checks += [where.check(file, path.name) for file in shown_images(path)]
    return checks


def verify_lock(target: Target) -> list[Check]:
    """Check every image the lock records (when no notebook is named)."""
    return [target.check(str(e["file"]), target.lock.path.name) for e in target.lock.entries()]


def summary(checks: list[Check]) -> str:
    counts: dict[str, int] = {}
    for c in checks:
        counts[c.status] = counts.get(c.status, 0) + 1
    if not checks:
        return _("no images to verify")
    ordered = sorted(counts.items(), key=lambda kv: kv[0] != OK)
    parts = [_("{count} {status}").format(count=n, status=status_text(status)) for status, n in ordered]
    verdict = _("all verified") if all(c.ok for c in checks) else _("FAILED")
    images = ngettext("{n} image", "{n} images", len(checks)).format(n=len(checks))
    return _("{images}: {counts} - {verdict}").format(images=images, counts=", ".join(parts), verdict=verdict)


def report(checks: list[Check]) -> str:
    return "\n".join([*(c.line() for c in checks), summary(checks)])


class Verification(list):  # type: ignore[type-arg]
    """The verdict on each image, in order: `ok` when all check, `summary()` one line, `str()` the full report."""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self)

    def summary(self) -> str:
        return summary(self)

    def __str__(self) -> str:
        return report(self)


def verify(
    output_dir: str | os.PathLike[str] | None = None,
    *,
    notebooks: Iterable[str | os.PathLike[str]] = (),
    lock: str | os.PathLike[str] | None = None,
) -> Verification:
    """Check that every image the notebooks show (or, with none named, every image the lock records) is in the
    lock file and in the store, with its sha256: what a colleague runs after pulling the repository."""
    named = list(notebooks)
    if named:
        return Verification(verify_notebooks(named, output_dir=output_dir and os.fspath(output_dir), lock=lock))
    return Verification(verify_lock(Target.of(output_dir, lock=lock)))

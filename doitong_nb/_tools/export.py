"""`doitong-nb export NOTEBOOK.ipynb --ro-crate DIR|ZIP`: a notebook, its images and lock file as an RO-Crate.

Built with the `rocrate` library (`pip install doitong-nb[export]`). Each image is a File (`images/<job_id>.jpg`)
with its sha256 and size, and the result of one CreateAction: instrument Doitong Flux Ultra at the model
version that made it, object the prompt and each parameter (PropertyValue), agent this package (a
SoftwareApplication with its version), start and end times from the service. The crate is read back with the
library and checked to list every image with its sha256 before the export is reported done.

What it says to the user (its errors) follows the `language` setting; the crate's own texts (its name, the
descriptions, each action's name) stay English whoever exports it: they are the archived record a reader of the
paper's supplement or a repository such as Zenodo meets, the same crate for the same notebook on every machine.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from doitong_nb._core.errors import DoitongError, StoreIntegrityError
from doitong_nb._core.i18n import _
from doitong_nb._tools.verify import OK, Target, shown_images, status_text
from doitong_nb._version import __version__

SHA256_TERM = {"sha256": "https://w3id.org/ro/terms/workflow-run#sha256"}
_FORMATS = {"jpg": "image/jpeg", "png": "image/png"}


class ExportError(DoitongError):
    """The notebook's images cannot all be put into the crate (missing, edited, or not in the lock)."""

    code = "EXPORT"


def export_ro_crate(
    notebook: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    output_dir: str | None = None,
    lock: str | os.PathLike[str] | None = None,
) -> tuple[Path, int]:
    """Write the crate to `dest` (a folder, or a .zip file); returns (dest, number of images)."""
    try:
        from rocrate.model.contextentity import ContextEntity
        from rocrate.model.softwareapplication import SoftwareApplication
        from rocrate.rocrate import ROCrate
    except ImportError:
        raise ExportError(_("the RO-Crate export needs the rocrate library: pip install doitong-nb[export]")) from None

    notebook, dest = Path(notebook), Path(dest)
    target = Target.of(output_dir, lock=lock, base=notebook.parent)
    files = shown_images(notebook) or [str(e["file"]) for e in target.lock.entries()]
    entries = {str(e["file"]): e for e in target.lock.entries()}
    problems = [c for c in (target.check(f, notebook.name) for f in files) if c.status != OK]
    if problems:
        listed = "; ".join(
            f"{c.file} {status_text(c.status)}" + (f" ({c.detail})" if c.detail else "") for c in problems
        )
        said = _("these images cannot be exported as recorded: {problems} (`doitong-nb verify` tells the same)")
        raise ExportError(said.format(problems=listed))

    crate = ROCrate()
    crate.metadata.extra_terms.update(SHA256_TERM)
    crate.name = f"{notebook.stem}: images generated with Doitong Flux Ultra"
    crate.description = (
        f"The notebook {notebook.name}, the {len(files)} image(s) it shows, and its lock file, with the "
        "generation of each image recorded as a CreateAction."
    )
    crate.datePublished = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    crate.add_file(
        notebook,
        dest_path=notebook.name,
        properties={
            "@type": ["File", "SoftwareSourceCode"],
            "name": notebook.name,
            "encodingFormat": "application/x-ipynb+json",
        },
    )
    crate.add_file(
        target.lock.path,
        dest_path=target.lock.path.name,
        properties={
            "name": "lock file",
            "encodingFormat": "application/jsonl",
            "description": "one line per generated image: request key, job id, file, sha256, size, seed, version, "
            "credits, times, package version",
        },
    )
    package = crate.add(
        SoftwareApplication(
            crate,
            "#doitong-nb",
            properties={"name": "doitong-nb", "version": __version__, "url": "https://pypi.org/project/doitong-nb/"},
        )
    )
    instruments: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="doitong-export-") as scratch:
        for file in files:
            entry = entries[file]
            version = str(entry.get("version"))
            if version not in instruments:
                instruments[version] = crate.add(
                    SoftwareApplication(
                        crate,
                        f"#flux-ultra-{version}",
                        properties={
                            "name": "Doitong Flux Ultra",
                            "version": version,
                            "provider": str(entry.get("origin")),
                        },
                    )
                )
            source = _fetch(target, entry, Path(scratch))
            image = crate.add_file(
                source,
                dest_path=f"images/{file}",
                properties={
                    "name": file,
                    "encodingFormat": _FORMATS.get(file.rsplit(".", 1)[-1], "image"),
                    "sha256": entry["sha256"],
                    "contentSize": str(entry.get("bytes")),
                    "width": str(entry.get("width")),
                    "height": str(entry.get("height")),
                },
            )
            request = entry.get("request") or {}
            parameters = [
                crate.add(
                    ContextEntity(
                        crate,
                        f"#{entry['job_id']}-{name}",
                        properties={"@type": "PropertyValue", "name": name, "value": _text(value)},
                    )
                )
                for name, value in sorted(request.items())
                if value is not None
            ]
            crate.add_action(
                instruments[version],
                identifier=f"#{entry['job_id']}",
                object=parameters,
                result=image,
                properties={
                    "@type": "CreateAction",
                    "name": f"generate {file}",
                    "description": str(request.get("prompt", "")),
                    "agent": {"@id": package.id},
                    "startTime": entry.get("created_at"),
                    "endTime": entry.get("completed_at"),
                },
            )
        if dest.suffix == ".zip":
            dest.parent.mkdir(parents=True, exist_ok=True)
            crate.write_zip(dest)
        else:
            crate.write(dest)
    read_back(dest, {entries[f]["sha256"] for f in files})
    return dest, len(files)


def _text(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def _fetch(target: Target, entry: dict[str, Any], scratch: Path) -> Path:
    """The image's bytes as a local file whose sha256 was checked."""
    file, sha256 = str(entry["file"]), str(entry["sha256"])
    if target.remote is not None:
        dest = scratch / file
        if not target.remote.download(sha256, file.rsplit(".", 1)[-1], dest):
            raise ExportError(_("{file} is not in the store {store}").format(file=file, store=target.remote.shown))
        return dest
    return target.folder / file


def read_back(dest: Path, sha256s: set[str]) -> list[dict[str, Any]]:
    """Read the crate with the rocrate library; every image is there, as a file hashing to its sha256."""
    from rocrate.rocrate import ROCrate

    crate = ROCrate(dest)
    if not crate.name or not crate.datePublished:
        raise ExportError(_("the crate at {dest} has no name or datePublished").format(dest=dest))
    images = [e for e in crate.get_entities() if e.id.startswith("images/")]
    found = {e["sha256"] for e in images}
    if found != sha256s:
        said = _("the crate at {dest} lists {found} image(s), expected {expected}")
        raise ExportError(said.format(dest=dest, found=len(found), expected=len(sha256s)))
    for image in images:
        path = Path(crate.source) / image.id
        if hashlib.sha256(path.read_bytes()).hexdigest() != image["sha256"]:
            raise StoreIntegrityError(
                _("{image} in the crate does not hash to its recorded sha256").format(image=image.id)
            )
        actions = [a for a in crate.get_entities() if a.type == "CreateAction" and a.get("result") is image]
        if len(actions) != 1:
            said = _("{image} in the crate is the result of {count} CreateActions, not one")
            raise ExportError(said.format(image=image.id, count=len(actions)))
    return [{"file": e.id, "sha256": e["sha256"]} for e in images]

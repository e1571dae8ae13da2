"""Job (what the service says about a generation) and ImageResult (a finished image on disk)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from doitong_nb import _contract as contract
from doitong_nb._core.i18n import ngettext

if TYPE_CHECKING:
    from doitong_nb._core.result import ImageResult


if TYPE_CHECKING:
    from PIL.Image import Image

    from doitong_nb._core.request import GenerationRequest


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 (with a trailing Z) -> aware datetime; None for anything unparsable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _first(data: dict[str, Any], *names: str) -> Any:
    """The first of `names` present (not None) in `data`."""
    return next((data[n] for n in names if data.get(n) is not None), None)


def _mapping(value: Any) -> dict[str, Any]:
    """A metadata object, or one sent as a JSON string; anything else is empty."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, dict) else {}


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


@dataclass(frozen=True)
class Job:
    """A job as the service reported it; both GraphQL shapes and REST parse into this."""

    id: str
    status: str
    url: str | None = None
    credit_cost: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    completed_at: str | None = None
    error_code: str | None = None
    error_message: str | None = None

    raw_status: str | None = None  # the service's own spelling, e.g. "SUCCEEDED" (status holds its meaning)

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> Job:
        """Read a job object in any plausible dialect: statuses by meaning (`SUCCEEDED`, `done`, `error`, ...),
        camelCase or snake_case fields, `metadata` as an object or a JSON string, `error` as an object or text.
        `generateImage`'s flat width/height/duration fold into metadata."""
        metadata = _mapping(_first(data, "metadata", "meta"))
        for name in ("width", "height", "duration"):
            if data.get(name) is not None:
                metadata.setdefault(name, data[name])
        raw = _first(data, "status", "state")
        key = contract.status_key(raw) if raw is not None else contract.STATUS_PROCESSING
        status = contract.status_meaning(key) or key
        error = _first(data, "error", "failure")
        error = error if isinstance(error, dict) else ({"message": str(error)} if error else {})
        code = error.get("code") or _first(data, "errorCode", "error_code")
        if status == contract.STATUS_FAILED and not code:
            code = contract.CONTENT_MODERATED if key in contract.MODERATED_STATUSES else contract.GENERATION_FAILED
        message = error.get("message") or _first(data, "errorMessage", "error_message")
        if status == contract.STATUS_FAILED and not message:
            message = f"the service reported status {raw!r}"
        url = _first(data, "url", "imageUrl", "image_url", "outputUrl", "output_url", "sample")
        return cls(
            id=str(_first(data, "id", "jobId", "job_id") or ""),
            status=status,
            url=url if isinstance(url, str) and url else None,
            credit_cost=_integer(_first(data, "creditCost", "credit_cost", "cost", "credits")),
            metadata=metadata,
            created_at=_first(data, "createdAt", "created_at"),
            completed_at=_first(data, "completedAt", "completed_at"),
            error_code=code,
            error_message=message,
            raw_status=None if raw is None else str(raw),
        )

    def named(self, statuses: Mapping[str, str]) -> Job:
        """This job with a status no reading knows read as the user's `statuses` setting names it (status_key ->
        meaning, see settings.parse_statuses); itself otherwise."""
        meaning = None if self.known or self.raw_status is None else statuses.get(contract.status_key(self.raw_status))
        return self if meaning is None else replace(self, status=meaning)

    @property
    def known(self) -> bool:
        """Whether the status is one the contract (or a synonym of it) names."""
        return self.status in contract.STATUS_SPELLINGS

    @property
    def done(self) -> bool:
        return self.status in contract.FINAL_STATUSES

    @property
    def duration(self) -> float | None:
        """Seconds from acceptance to completion: metadata.duration, else the timestamps."""
        value = self.metadata.get("duration")
        if isinstance(value, (int, float)):
            return float(value)
        start, end = parse_time(self.created_at), parse_time(self.completed_at)
        return (end - start).total_seconds() if start and end else None


@dataclass
class ImageResult:
    """A finished image: the full-resolution file on disk and its provenance.

    `credits` is what this call spent: the job's cost when generated now, 0 when replayed from the store
    or `resumed` (a job submitted, and paid for, before an interrupt or in an earlier session).
    """

    request: GenerationRequest
    job_id: str
    path: Path
    sha256: str
    width: int
    height: int
    seed: int | None
    version: str
    duration: float | None
    credit_cost: int
    created_at: str | None
    replayed: bool = False
    credits: int = 0
    resumed: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    session_credits: int | None = None
    balance: int | None = None

    @property
    def image(self) -> Image:
        """The full-resolution image, opened on demand (never held by the result)."""
        from PIL import Image as PILImage

        return PILImage.open(self.path)

    def provenance(self) -> dict[str, Any]:
        """What the sidecar and the image's own metadata record."""
        return {
            "job_id": self.job_id,
            "request": self.request.canonical(),
            "seed": self.seed,
            "version": self.version,
            "width": self.width,
            "height": self.height,
            "duration": self.duration,
            "credit_cost": self.credit_cost,
            "created_at": self.created_at,
            "sha256": self.sha256,
            "file": self.path.name,
            "metadata": self.metadata,
        }

    def __repr__(self) -> str:
        from doitong_nb._notebook.display import result_text

        return result_text(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        from doitong_nb._notebook.display import result_display

        return result_display([self])


def credits_text(n: int) -> str:
    """'1 credit', '30 credits' ('30 크레딧'): the unit in the user's language."""
    return ngettext("{n} credit", "{n} credits", n).format(n=n)

"""Job (what the service says about a generation) and ImageResult (a finished image on disk)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import contract

if TYPE_CHECKING:
    from PIL.Image import Image

    from .request import GenerationRequest


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 (with a trailing Z) -> aware datetime; None for anything unparsable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
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

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> Job:
        """Read a job object; `generateImage`'s flat width/height/duration fold into metadata."""
        metadata = dict(data.get("metadata") or {})
        for name in ("width", "height", "duration"):
            if data.get(name) is not None:
                metadata.setdefault(name, data[name])
        error = data.get("error") or {}
        return cls(
            id=str(data.get("id") or ""),
            status=str(data.get("status") or contract.STATUS_PROCESSING).lower(),
            url=data.get("url"),
            credit_cost=data.get("creditCost"),
            metadata=metadata,
            created_at=data.get("createdAt"),
            completed_at=data.get("completedAt"),
            error_code=error.get("code"),
            error_message=error.get("message"),
        )

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
        from .display import result_text

        return result_text(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        from .display import result_bundle

        return result_bundle([self])

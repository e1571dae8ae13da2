"""What a flow yields and what it is sent back: the vocabulary between the engine and its drivers (h11's events).

The engine (`_engine`) only yields these steps and reads their outcomes; the drivers (`_client`, and the scripted one
the tests use) carry them out. So this module has no I/O and knows nothing of either side.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from doitong_nb._core.errors import DoitongError

T = TypeVar("T")
Flow = Generator["Step", Any, T]
Progress = Callable[[str, float, str], None]  # (status, seconds so far, detail): one image's progress line
Completion = Callable[[str], "concurrent.futures.Future[dict[str, Any]]"]  # job id -> its verified webhook payload


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Any  # a case-insensitive mapping (httpx.Headers)
    body: Any  # parsed JSON, or None when the body was not JSON
    raw: bytes = b""  # the body as sent: a submission's answer cut short may still name its job


@dataclass(frozen=True)
class Send:
    call: HttpCall
    headers: dict[str, str]


@dataclass(frozen=True)
class Fetch:
    """Stream `url` into `dest` (no credentials attached); the outcome is a `Fetched`."""

    url: str
    dest: Path
    max_bytes: int


@dataclass(frozen=True)
class Fetched:
    status: int
    content_length: int | None
    written: int


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Work:
    """Run `fn()`: disk and CPU work (checking, then storing an image). The async driver runs it in a
    thread, so the event loop keeps serving the other flows; an exception is thrown into the flow."""

    fn: Callable[[], Any]


@dataclass(frozen=True)
class WaitFor:
    """Wait until `future` is resolved (a job's webhook came) or `seconds` have passed; the outcome is its result,
    or None at the deadline. One step, not a loop of ticks: the driver wakes the flow when the webhook arrives."""

    future: concurrent.futures.Future[Any]
    seconds: float


Step = Send | Fetch | Sleep | Work | WaitFor

EventKind = Literal["submitted", "status", "completed", "failed", "charged", "refused"]


@dataclass(frozen=True)
class Event:
    """What happened, as the engine classified it: faces subscribe (`Engine.subscribe`) instead of reading replies.

    `submitted`: the service accepted a submission (key, job_id; journaled by now). `status`: a job's status was
    heard, read or by webhook (job_id, status). `completed`: the job is done, its image is fetched next (key, job_id).
    `failed`: the job failed and its credits are refunded (key, job_id, error). `charged`: the session's credits
    changed by `credits` (job_id; negative for a refund). `refused`: the service refused a request (error, e.g. a
    RateLimitError), which the engine retries or raises. `key` is the image's replay key (`request.key(variant)`).
    """

    kind: EventKind
    key: str | None = None
    job_id: str | None = None
    status: str | None = None
    credits: int = 0
    error: DoitongError | None = None


Listener = Callable[[Event], None]


class ConnectFailed(OSError):
    """What a driver throws into a flow when no connection could be opened (the name does not resolve, the
    port refuses): before the service has ever answered, that is a wrong host, not a blip worth retrying."""


@dataclass(frozen=True)
class HttpCall:
    """One API request, before the engine adds the base URL, auth and idempotency headers."""

    method: str
    path: str
    json: dict[str, Any] | None = None
    kind: str = "status"  # "submit" | "status" | "account": for retries, stats and the rate budget

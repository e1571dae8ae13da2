"""The engine: every operation written once, as a generator of I/O steps.

A flow yields `Send`, `Fetch`, `Sleep` and `Work` steps and receives their outcomes; `client.Flux`
runs flows with a blocking httpx.Client and `client.AsyncFlux` with an httpx.AsyncClient. So retries,
polling, the journal and replay are the same code in sync and async use, and can be tested once.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from . import contract
from .config import Settings
from .errors import (
    BudgetExceededError,
    DoitongError,
    DownloadError,
    GenerationFailedError,
    JobTimeoutError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StorageError,
    UnsafeResponseError,
    from_response,
    is_storage_failure,
    redact,
)
from .journal import ORIGIN, SUBMITTED, JournalEntry
from .limits import RateBudget
from .polling import DurationModel, expected_seconds
from .request import GenerationRequest
from .result import ImageResult, Job
from .store import Store
from .transport import Account, HttpCall, Transport, make_transport
from .transport.base import account_from

T = TypeVar("T")
Flow = Generator["Step", Any, T]
Progress = Callable[[str, float, str], None]
Completion = Callable[[str], "dict[str, Any] | None"]  # job id -> its (verified) webhook payload, once it came
Waiting = Callable[[str], None]  # told why a request waits, before the wait
WAITING_FOR_RATE = "waiting for the plan's rate limit"
WAITING_FOR_SLOT = "waiting for a free job slot"

MAX_ATTEMPTS = 8
BACKOFF_BASE, BACKOFF_CAP = 0.25, 20.0
DOWNLOAD_ATTEMPTS = 4
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024  # a 4096x4096 PNG is at most ~50 MB
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
WEBHOOK_GRACE = 4.0  # no webhook after this many predicted durations, plus the slack below: read the status
WEBHOOK_SLACK = 5.0  # seconds a delivery may take on top (network, the sender's queue)
_EVENT_TICK = 0.01  # look for a job's webhook every 1% of its predicted duration


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Any  # a case-insensitive mapping (httpx.Headers)
    body: Any  # parsed JSON, or None when the body was not JSON


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


Step = Send | Fetch | Sleep | Work


class ConnectFailed(OSError):
    """What a driver throws into a flow when no connection could be opened (the name does not resolve, the
    port refuses): before the service has ever answered, that is a wrong host, not a blip worth retrying."""


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter (the doc's advice, without synchronised retries)."""
    return random.uniform(0.5, 1.0) * min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)


def check_output_url(url: Any, base_url: str) -> str:
    """Refuse output URLs that are not http(s) on the service's own hosts (the API's, its CDN's)."""
    parts = urlsplit(str(url or ""))
    api = urlsplit(base_url)
    host, api_host = (parts.hostname or ""), (api.hostname or "")
    if parts.scheme not in ("https", "http") or (api.scheme == "https" and parts.scheme != "https"):
        raise UnsafeResponseError(f"refusing output URL with scheme {parts.scheme!r}; expected {api.scheme}")
    same_service = host == api_host or host.endswith(".doitong.com") or (host in _LOOPBACK and api_host in _LOOPBACK)
    if not same_service:
        raise UnsafeResponseError(f"refusing output URL on host {host!r}, which is not the service's")
    return str(url)


class Engine:
    """State shared by every face: settings, the rate budget, the duration model, the store."""

    def __init__(
        self, settings: Settings, *, mutation: str = "generate", replay: bool = True, max_credits: int | None = None
    ) -> None:
        self.settings = settings
        self.transport = make_transport(settings.transport, mutation=mutation)
        self.store = Store(settings.output_dir)
        self.replay = replay
        self.max_credits = max_credits
        self.budget = RateBudget()
        self.durations = DurationModel()
        self.session_credits = 0
        self._charged: set[str] = set()  # job ids counted in session_credits (a resent submission is one job)
        self.balance: int | None = None
        self.plan: str | None = None
        self.requests: Counter[str] = Counter()
        self.reached = False  # the service has answered once: from then on a failed connection is retried

    # --- one API call, with retries -------------------------------------------------------------
    def call(
        self,
        call: HttpCall,
        *,
        deadline: float,
        idempotency_key: str | None = None,
        via: Transport | None = None,
        waiting: Waiting | None = None,
    ) -> Flow[dict[str, Any]]:
        """Send `call`, retrying 429, 5xx and network errors with backoff until `deadline`.

        `waiting(why)` hears of each wait for the plan's limits, so a progress line can say what it waits for.
        """
        headers = {"Accept": "application/json", **(via or self.transport).auth_headers(self.settings.api_key)}
        if idempotency_key:
            headers[contract.HEADER_IDEMPOTENCY] = idempotency_key
        for attempt in range(MAX_ATTEMPTS):
            slot = self.budget.reserve()
            if slot.wait > 0:
                if waiting:
                    waiting(WAITING_FOR_RATE)
                yield Sleep(slot.wait)
            slot = self.budget.sent(slot)
            self.requests[call.kind] += 1
            try:
                reply: Reply = yield Send(call, headers)
            except Exception as exc:  # the driver throws transport failures (httpx.TransportError) in here
                self.budget.answered(slot)
                if isinstance(exc, ConnectFailed) and not self.reached:
                    raise NetworkError(
                        f"cannot connect to {urlsplit(self.settings.base_url).netloc} ({exc}): check the network, "
                        f"or set {contract.ENV_BASE_URL} to the API's address; nothing was sent or charged"
                    ) from None
                error: DoitongError = NetworkError(
                    redact(
                        f"could not reach {self.settings.base_url} ({type(exc).__name__}: {exc})", self.settings.api_key
                    )
                )
                delay = backoff(attempt)
            else:
                self.reached = True
                self.budget.answered(slot)
                self.budget.observe(reply.headers)
                if self.budget.window_told:  # a speed-scaled service is as much faster as its window is shorter
                    self.durations.assume(self.budget.window / contract.RATE_WINDOW_SECONDS)
                body = reply.body if isinstance(reply.body, dict) else {}
                if reply.status < 400 and not body.get("errors") and reply.body is not None:
                    return body
                error = from_response(reply.status, reply.body, _retry_after(reply.headers))
                if isinstance(error, RateLimitError):
                    self.requests["429"] += 1
                    delay = error.retry_after if error.retry_after is not None else backoff(attempt)
                    if error.code != contract.CONCURRENCY_LIMITED:  # no free job slot: status reads may go on
                        self.budget.block_for(delay)
                elif isinstance(error, ServerError) or (reply.status < 400 and reply.body is None):
                    delay = backoff(attempt)
                else:
                    raise error
            if time.monotonic() + delay > deadline or attempt == MAX_ATTEMPTS - 1:
                raise error
            self.requests["retries"] += 1
            if waiting and isinstance(error, RateLimitError):
                waiting(WAITING_FOR_SLOT if error.code == contract.CONCURRENCY_LIMITED else WAITING_FOR_RATE)
            yield Sleep(delay)
        raise AssertionError("unreachable")

    def transport_named(self, name: str | None) -> Transport:
        """The engine's transport, or another one for a single call (`%%flux --transport rest`)."""
        if name is None or name == self.transport.name:
            return self.transport
        return make_transport(name)

    def submit(
        self,
        request: GenerationRequest,
        idempotency_key: str,
        deadline: float,
        via: Transport | None = None,
        waiting: Waiting | None = None,
    ) -> Flow[Job]:
        """Submit once (retries reuse the idempotency key, so they are charged once) and count its cost."""
        via = via or self.transport
        body = yield from self.call(
            via.submit(request), deadline=deadline, idempotency_key=idempotency_key, via=via, waiting=waiting
        )
        job = via.parse_job(body)
        if job.id not in self._charged:  # the same Idempotency-Key sent again is answered with the first job
            self._charged.add(job.id)
            self._charge(job.credit_cost if job.credit_cost is not None else request.estimated_credits)
        return job

    def status(
        self, job_id: str, deadline: float, via: Transport | None = None, waiting: Waiting | None = None
    ) -> Flow[Job]:
        via = via or self.transport
        body = yield from self.call(via.status(job_id), deadline=deadline, via=via, waiting=waiting)
        return via.parse_job(body)

    def account(self) -> Flow[Account]:
        body = yield from self.call(self.transport.account(), deadline=time.monotonic() + self.settings.timeout)
        account = account_from(body)
        self.balance, self.plan = account.credits, account.plan
        return account

    # --- waiting and fetching -------------------------------------------------------------------
    def wait(
        self,
        job: Job,
        pixels: int,
        deadline: float,
        accepted_at: float,
        progress: Progress | None = None,
        via: Transport | None = None,
        completion: Completion | None = None,
    ) -> Flow[Job]:
        """Read the job's status when it is predicted to be done; raise JobTimeoutError at the deadline.

        With `completion` (webhook mode) the job's webhook says when it is done, so no status is read
        unless the webhook is lost.
        """
        if completion is not None and not job.done:
            job = yield from self._await_webhook(job, pixels, deadline, accepted_at, completion)
        reads = 0
        waiting = None if progress is None else (lambda why: progress(why, time.monotonic() - accepted_at, ""))
        while not job.done:
            elapsed = time.monotonic() - accepted_at
            if progress:
                progress(job.status, elapsed, f"{reads} status reads")
            delay = self.durations.next_delay(pixels, elapsed, reads)
            if time.monotonic() + delay > deadline:
                raise JobTimeoutError(
                    f"stopped waiting for job {job.id} after {elapsed:.0f} s; it is still running and paid for: "
                    "run the same request again to pick it up (nothing is charged twice)",
                    job_id=job.id,
                )
            yield Sleep(delay)
            job = yield from self.status(job.id, deadline, via, waiting)
            reads += 1
        if job.status == contract.STATUS_COMPLETED and job.duration is not None:
            self.durations.observe(pixels, job.duration)
        return job

    def _await_webhook(
        self, job: Job, pixels: int, deadline: float, accepted_at: float, completion: Completion
    ) -> Flow[Job]:
        """Look up the job's webhook locally (no API request) until it comes or the grace period ends."""
        expected = self.durations.predict(pixels) or expected_seconds(pixels)
        give_up = min(deadline, accepted_at + WEBHOOK_GRACE * expected + WEBHOOK_SLACK)
        first = accepted_at + 0.9 * expected - time.monotonic()
        if first > 0:
            yield Sleep(first)
        while (payload := completion(job.id)) is None:
            if time.monotonic() >= give_up:
                return job
            yield Sleep(max(0.002, _EVENT_TICK * expected))
        metadata = {**job.metadata, **(payload.get("metadata") or {})}
        done = Job.from_payload({**payload, "metadata": metadata})
        return replace(done, id=job.id, credit_cost=job.credit_cost, created_at=done.created_at or job.created_at)

    def download(self, job: Job, request: GenerationRequest, deadline: float) -> Flow[Path]:
        """Stream the output to the store's partial folder and check it is the whole, decodable image."""
        url = check_output_url(job.url, self.settings.base_url)
        suffix = Path(urlsplit(url).path).suffix.lower().lstrip(".")
        ext = suffix if suffix in ("jpg", "jpeg", "png") else ("png" if request.output_format == "png" else "jpg")
        dest = self.store.partial_path(job.id, ext)
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                fetched: Fetched = yield Fetch(url, dest, MAX_DOWNLOAD_BYTES)
                if fetched.status != 200:
                    raise DownloadError(f"the CDN answered HTTP {fetched.status}")
                if fetched.content_length is not None and fetched.written != fetched.content_length:
                    raise DownloadError(f"got {fetched.written} of {fetched.content_length} bytes")
                yield Work(partial(_check_image, dest, job))
                return dest
            except UnsafeResponseError:
                _discard(dest)
                raise
            except Exception as exc:
                _discard(dest)
                if is_storage_failure(exc):  # the disk, not the network: trying again would not help
                    raise StorageError.from_os(exc, self.store.root, "downloading the image") from None
                if attempt == DOWNLOAD_ATTEMPTS - 1 or time.monotonic() > deadline:
                    raise DownloadError(
                        f"job {job.id} is done and paid for, but its image could not be downloaded "
                        f"({redact(str(exc), self.settings.api_key)}); run the same request again to retry the "
                        "download (nothing is charged twice)",
                        job_id=job.id,
                    ) from None
                yield Sleep(backoff(attempt))
        raise AssertionError("unreachable")

    # --- the whole thing ------------------------------------------------------------------------
    def check_budget(self, request: GenerationRequest) -> None:
        """Refuse, before sending, a job that would cross the session's credit budget."""
        self.check_costs([request.estimated_credits])

    def check_costs(self, costs: list[int]) -> None:
        """Refuse, before sending, jobs that together would cross the session's budget: one verdict for a cell."""
        refusal = budget_refusal(costs, self.session_credits, self.max_credits)
        if refusal is not None:
            raise refusal

    def charge_for(self, request: GenerationRequest, variant: int = 0, refresh: bool = False) -> int:
        """What `generate` would charge now: nothing for a replay, or for a journaled job it picks up.

        Asked before anything is sent, so a folder that cannot take the image is refused here already.
        """
        self.store.prepare()
        key = request.key(variant)
        if self.replay and not refresh and self.stored(key) is not None:
            return 0
        entry = self.unfinished(key)
        return 0 if entry is not None and entry.job_id is not None else request.estimated_credits

    def generate(
        self,
        request: GenerationRequest,
        *,
        variant: int = 0,
        refresh: bool = False,
        progress: Progress | None = None,
        via: Transport | None = None,
        completion: Completion | None = None,
        timeout: float | None = None,
    ) -> Flow[ImageResult]:
        """Replay from the store, resume a journaled job, or submit anew; then wait, fetch and store.

        `timeout` overrides the settings' wait for this one call (`%%flux --timeout`).
        """
        key = request.key(variant)
        origin = self.settings.origin
        self.store.prepare()  # a folder that cannot take the image is refused before anything is sent
        journal = self.store.journal
        entry = journal.unfinished(key, origin)
        if self.replay and not refresh:
            stored = self.store.find(key, origin)
            if stored is not None:
                if entry is not None:  # stored, but the process died before the journal heard of it
                    with suppress(StorageError):  # the sidecar says it is stored; the journal can learn it later
                        journal.mark_done(entry.idempotency_key)
                return self._annotate(stored)
        deadline = time.monotonic() + (self.settings.timeout if timeout is None else timeout)
        job: Job | None = None
        if entry is not None and entry.job_id is not None:
            try:
                job = yield from self.status(entry.job_id, deadline, via)
            except NotFoundError:  # the service no longer knows it (expired, or another sandbox): start over
                journal.mark_failed(entry.idempotency_key, "job unknown to the service on resume")
                entry = None
        if entry is None:
            self.check_budget(request)
            entry = journal.begin(key, request, origin)
        resumed = job is not None  # submitted, and paid for, before an interrupt or in an earlier session
        if job is None:
            waiting = None if progress is None else (lambda why: progress(why, 0.0, ""))  # 0 s: not accepted yet
            job = yield from self.submit(request, entry.idempotency_key, deadline, via, waiting)
            try:
                journal.mark_submitted(entry.idempotency_key, job.id)
            except StorageError as exc:
                raise self._not_stored(exc, entry, job.id) from None
        accepted_at = time.monotonic()
        pixels = request.width * request.height
        job = yield from self.wait(job, pixels, deadline, accepted_at, progress, via, completion)
        if job.status == contract.STATUS_FAILED:
            with suppress(StorageError):  # unrecorded, a re-run reads the same failure again: nothing is lost
                journal.mark_failed(entry.idempotency_key, job.error_code or contract.GENERATION_FAILED)
            if job.id in self._charged:  # a job resumed from an earlier session was not counted in this one
                self._charged.discard(job.id)
                self._charge(-(job.credit_cost if job.credit_cost is not None else request.estimated_credits))
            advice = (
                "rephrase the prompt"
                if job.error_code == contract.CONTENT_MODERATED
                else "try again, perhaps with another seed or prompt"
            )
            raise GenerationFailedError(
                f"job {job.id} failed ({job.error_code}: {job.error_message}); its credits are refunded: {advice}",
                code=job.error_code or contract.GENERATION_FAILED,
                job_id=job.id,
            )
        if progress:
            progress("downloading", time.monotonic() - accepted_at, "")
        try:
            path = yield from self.download(job, request, deadline)
            result: ImageResult = yield Work(partial(self.store.put, key, request, job, path, origin))
        except StorageError as exc:
            raise self._not_stored(exc, entry, job.id) from None
        if resumed:
            result.resumed, result.credits = True, 0
        with suppress(StorageError):  # stored: the sidecar says so, and the next run sets the journal right
            journal.mark_done(entry.idempotency_key)
        return self._annotate(result)

    def _not_stored(self, exc: StorageError, entry: JournalEntry, job_id: str) -> StorageError:
        """The storage failure of a paid job, told with its job id and how many paid jobs wait to be fetched.

        While the journal file is there it holds the job (or at least its idempotency key, which the service
        answers with this same job, charged once). When the folder is gone the session keeps the job in
        memory, and the store writes it into the folder's new journal once the folder is back.
        """
        journaled = exc.kind != "gone"
        if not journaled:
            self.store.rescue(replace(entry, job_id=job_id, state=SUBMITTED))
        waiting = self.paid_waiting([job_id])
        return exc.with_context(job_id=job_id, paid=True, journaled=journaled, waiting=waiting)

    def paid_waiting(self, also: Iterable[str] = ()) -> int:
        """Jobs of this service that are paid and not yet stored: unfinished in the journal, kept in memory, or
        named in `also` (jobs whose id the journal could not record)."""
        origin = self.settings.origin
        ids = {*also, *(e.job_id for e in self.store.rescued_entries() if e.job_id)}
        with suppress(StorageError):
            pending = self.store.journal.pending()
            ids |= {e.job_id for e in pending if e.job_id and e.request.get(ORIGIN, origin) == origin}
        return len(ids)

    def stored(self, key: str) -> ImageResult | None:
        """The result `generate` would replay for `key` (made by this engine's service), if any."""
        return self.store.find(key, self.settings.origin)

    def unfinished(self, key: str) -> Any:
        """The journal's unfinished submission of `key` to this engine's service, if any."""
        return self.store.journal.unfinished(key, self.settings.origin)

    def _charge(self, credits: int) -> None:
        self.session_credits += credits
        if self.balance is not None:
            self.balance -= credits

    def _annotate(self, result: ImageResult) -> ImageResult:
        result.session_credits = self.session_credits
        result.balance = self.balance
        return result


def budget_refusal(
    costs: list[int], spent: int, budget: int | None, name: str = "max_credits"
) -> BudgetExceededError | None:
    """The refusal of images that would cross a session budget, with the advice its numbers allow, or None."""
    total = sum(costs)
    if budget is None or spent + total <= budget:
        return None
    left = max(0, budget - spent)
    what = f"this image costs {total} credits" if len(costs) == 1 else f"these {len(costs)} images cost {total} credits"
    fit = max(k for k in range(len(costs) + 1) if sum(costs[:k]) <= left)
    cheapest = contract.credit_cost(contract.MIN_SIDE, contract.MIN_SIDE)
    if fit:
        advice = f"{fit} of them fit: ask for fewer or raise {name}"
    elif left >= cheapest:
        advice = f"a smaller size fits (from {cheapest} credits an image) or raise {name}"
    else:
        advice = f"raise {name}"
    return BudgetExceededError(
        f"{what} and the session has spent {spent} of its {budget}-credit budget, {left} left: {advice}"
    )


def _discard(path: Path) -> None:
    with suppress(OSError):
        path.unlink(missing_ok=True)


def _retry_after(headers: Any) -> float | None:
    try:
        value = headers.get("Retry-After")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _check_image(path: Path, job: Job) -> None:
    """The file must decode to the end (a truncated body fails here), at the size the job announced."""
    from PIL import Image

    with Image.open(path) as image:
        size = image.size
        image.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))  # JPEG: decode at 1/8 scale, still whole
        image.load()
    expected = (job.metadata.get("width"), job.metadata.get("height"))
    if all(isinstance(v, int) for v in expected) and size != expected:
        raise DownloadError(f"the image is {size[0]}x{size[1]}, but the job announced {expected[0]}x{expected[1]}")

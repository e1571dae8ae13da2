"""The sandbox's state and rules: keys, plans, credits, jobs, rate limits, idempotency, webhooks.

All methods run on the server's event loop (one thread), so the state needs no locks. Time comes from
`clock` (Unix seconds) and every duration is divided by `speed`; speed=inf means no waiting at all,
while records such as idempotency keys are then kept for the sandbox's whole life.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from doitong_nb import _contract as c
from doitong_sandbox.dialects import RELATIVE_OUTPUT_PATH, Dialect
from doitong_sandbox.errors import ApiError
from doitong_sandbox.faults import Faults
from doitong_sandbox.outputs import Outputs
from doitong_sandbox.validation import Spec
from doitong_sandbox.webhooks import WebhookSender

_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
_LOG_LIMIT = 10_000
STAT_NAMES = (
    "api_requests",
    "submissions",
    "idempotent_replays",
    "status_requests",
    "account_requests",
    "rate_limited",
    "jobs_created",
    "jobs_failed",
    "credits_charged",
    "credits_refunded",
    "cdn_requests",
    "outputs_rendered",
    "webhook_attempts",
)


def iso(t: float) -> str:
    """ISO 8601 UTC with milliseconds and a `Z`."""
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def generation_seconds(width: int, height: int, seed: int) -> float:
    """Unscaled time to render: 8 s up to 1 MP, linear to 15 s at 4096x4096, +-0.5 s jitter from the seed."""
    return c.typical_seconds(width * height) + random.Random(seed).uniform(-0.5, 0.5)


class _Window:
    """A sliding window of event times."""

    def __init__(self, length: float) -> None:
        self.length = length
        self.times: deque[float] = deque()

    def count(self, now: float) -> int:
        while self.times and self.times[0] <= now - self.length:
            self.times.popleft()
        return len(self.times)

    def reset_at(self, now: float, limit: int) -> float:
        """When one more event would fit under `limit`: when the oldest leaves, or as many as it takes."""
        over = self.count(now) - limit
        return self.times[max(0, over)] + self.length if self.times else now


@dataclass
class Job:
    """One accepted generation; its status follows from the clock until `final` is set."""

    id: str
    key: str
    spec: Spec
    seed: int
    created: float
    duration: float
    cost: int
    failure: str | None  # the error code it will fail with, or None
    queued: float = 0.0  # seconds it waits in `queued` before processing
    held: float = 0.0  # seconds a test held it unfinished past its time (Engine.hold)
    final: str | None = None
    completed_reads: int = 0  # status reads since it completed (the url_late_reads dialect)

    @property
    def done_at(self) -> float:
        return self.created + self.queued + self.duration + self.held

    @property
    def ext(self) -> str:
        return "png" if self.spec.output_format == "png" else "jpg"


@dataclass
class Account:
    """One API key: its plan, balance, request windows, idempotency records and unfinished jobs."""

    key: str
    plan: c.Plan
    credits: int
    webhook_secret: str
    requests: _Window
    submissions: _Window
    idempotency: dict[str, tuple[str, float]] = field(default_factory=dict)
    pending: dict[str, Job] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    last_submitted: str | None = None  # the job the last accepted submission answered with (for the app's dialects)


class Engine:
    """Decides every answer; the ASGI apps only translate between HTTP and these methods."""

    def __init__(
        self,
        *,
        speed: float,
        cdn_url: str,
        faults: Faults,
        clock: Callable[[], float],
        dialect: Dialect | None = None,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0 (inf for no waiting), got {speed!r}")
        self.speed = speed
        self.cdn_url = cdn_url
        self.dialect = dialect or Dialect()
        self.storage_secret = secrets.token_hex(16)  # signs the signed-urls dialect's output URLs
        self.faults = faults
        self.clock = clock
        self.accounts: dict[str, Account] = {}
        self.jobs: dict[str, Job] = {}
        self.unattributed: Counter[str] = Counter()
        self.api_request_log: deque[dict[str, Any]] = deque(maxlen=_LOG_LIMIT)
        self.cdn_requests: deque[dict[str, str]] = deque(maxlen=_LOG_LIMIT)
        self.webhooks = WebhookSender(
            scaled=self.scaled,
            clock=clock,
            log=deque(maxlen=_LOG_LIMIT),
            sign=None if self.dialect.default else self.dialect.webhook_headers,
        )
        self.outputs = Outputs()
        self.held_submissions = 0  # accepted submissions whose answer a slow_submit fault is holding now
        self.served_sha256: dict[str, str] = {}  # job id -> sha256 of the bytes the CDN last served whole
        self.holding: dict[str, Job] | None = None  # while a test holds new jobs (hold): those jobs, by id

    def scaled(self, seconds: float) -> float:
        """A duration at this sandbox's speed."""
        return seconds / self.speed

    # --- keys -------------------------------------------------------------------------------------
    def add_key(self, plan: str = "pro", credits: int = 1000, key: str | None = None) -> Account:
        if plan not in c.PLANS:
            raise ApiError(
                400, c.BAD_USER_INPUT, f"plan {plan!r} is unknown; allowed: {', '.join(c.PLANS)}", field="plan"
            )
        if isinstance(credits, bool) or not isinstance(credits, int) or credits < 0:
            raise ApiError(400, c.BAD_USER_INPUT, f"credits {credits!r} must be an integer >= 0", field="credits")
        key = key or "sbx_" + secrets.token_hex(16)
        account = Account(
            key=key,
            plan=c.PLANS[plan],
            credits=credits,
            webhook_secret="whsec_" + secrets.token_hex(16),
            requests=_Window(self.scaled(c.RATE_WINDOW_SECONDS)),
            submissions=_Window(self.scaled(c.DAY_SECONDS)),
        )
        self.accounts[key] = account
        return account

    def authenticate(self, key: str | None) -> Account | None:
        return self.accounts.get(key) if key else None

    # --- request budget ---------------------------------------------------------------------------
    def admit(self, account: Account) -> None:
        """Count a request as it arrives, and refuse it with RATE_LIMITED past the plan's rate.

        A refused request counts too (the contract counts every authenticated request), so a client
        that keeps knocking stays refused; Retry-After says when one request will be let in.
        """
        limit, arrived = account.plan.requests_per_minute, self.clock()
        used = account.requests.count(arrived)
        account.requests.times.append(arrived)
        if used >= limit:
            reset = account.requests.reset_at(arrived, limit)
            raise _limited(c.RATE_LIMITED, f"more than {limit} requests a minute", reset - arrived, reset)

    def fake_rate_limit(self) -> ApiError:
        """The 429 the rate_limit_429 fault answers with."""
        retry = self.scaled(self.faults.rate_limit_seconds)
        return _limited(c.RATE_LIMITED, "rate limited (injected fault)", retry, self.clock() + retry)

    def rate_headers(self, account: Account) -> dict[str, str]:
        now = self.clock()
        used = account.requests.count(now)
        return {
            c.HEADER_RATE_LIMIT: str(account.plan.requests_per_minute),
            c.HEADER_RATE_REMAINING: str(max(0, account.plan.requests_per_minute - used)),
            c.HEADER_RATE_RESET: f"{account.requests.reset_at(now, account.plan.requests_per_minute):.3f}",
            c.HEADER_RATE_WINDOW: f"{account.requests.length:g}",
        }

    # --- jobs -------------------------------------------------------------------------------------
    def submit(self, account: Account, spec: Spec, idempotency_key: str | None) -> dict[str, Any]:
        """Accept a job (charging for it) and return its view; a known Idempotency-Key returns the first job."""
        account.stats["submissions"] += 1
        now = self.clock()
        if not self.dialect.honours_idempotency:
            idempotency_key = None  # the ignores-idempotency dialects: every send is a new job
        if idempotency_key:
            seen = account.idempotency.get(idempotency_key)
            if seen and now - seen[1] < self._idempotency_ttl():
                account.stats["idempotent_replays"] += 1
                account.last_submitted = seen[0]
                return self.view(self.jobs[seen[0]])
        self._settle(account)
        limit = account.plan.daily_limit
        if limit is not None and account.submissions.count(now) >= limit:
            reset = account.submissions.reset_at(now, limit)
            raise _limited(c.DAILY_LIMIT_REACHED, f"the daily limit of {limit} jobs is reached", reset - now, reset)
        if len(account.pending) >= account.plan.concurrent_jobs:
            free_at = min(job.done_at for job in account.pending.values())
            raise _limited(
                c.CONCURRENCY_LIMITED,
                f"{account.plan.concurrent_jobs} jobs are already processing (plan {account.plan.name})",
                free_at - now,
                free_at,
            )
        cost = c.credit_cost(spec.width, spec.height)
        if account.credits < cost:
            raise ApiError(
                402,
                c.INSUFFICIENT_CREDITS,
                f"Insufficient credits for this operation: {cost} required, {account.credits} available",
                creditsRequired=cost,
                creditsAvailable=account.credits,
            )
        seed = spec.seed if spec.seed is not None else random.randrange(2**31)
        job = Job(
            id="job_" + "".join(secrets.choice(_BASE32) for _ in range(20)),
            key=account.key,
            spec=spec,
            seed=seed,
            created=now,
            duration=self.scaled(generation_seconds(spec.width, spec.height, seed)),
            cost=cost,
            failure=_failure(self.faults),
            queued=self.scaled(self.faults.queue_seconds) if self.faults.fire("queue_job") else 0.0,
        )
        account.credits -= cost
        account.stats.update(jobs_created=1, credits_charged=cost)
        account.submissions.times.append(now)
        account.pending[job.id] = job
        self.jobs[job.id] = job
        if idempotency_key:
            account.idempotency[idempotency_key] = (job.id, now)
        account.last_submitted = job.id
        if self.holding is None:
            self._finish_when_due(job)
        else:
            self.holding[job.id] = job
        if job.failure is None:
            self.outputs.start(job, lambda: account.stats.update(outputs_rendered=1))
        return self.view(job, status=c.STATUS_QUEUED if job.queued else c.STATUS_PROCESSING)

    def job(self, account: Account, job_id: str) -> dict[str, Any]:
        """The view of one of this key's jobs; anyone else's is NOT_FOUND, exactly like a missing one."""
        account.stats["status_requests"] += 1
        job = self.jobs.get(job_id)
        if job is None or job.key != account.key:
            raise ApiError(404, c.NOT_FOUND, f"job {job_id!r} not found", id=job_id)
        view = self.view(job)
        if self.dialect.url_late_reads and self.status(job) == c.STATUS_COMPLETED:
            job.completed_reads += 1
            if job.completed_reads <= self.dialect.url_late_reads:
                view = {**view, "url": None}  # completed, but the url is not there yet
        return view

    def account(self, account: Account) -> dict[str, Any]:
        account.stats["account_requests"] += 1
        self._settle(account)
        plan = account.plan
        return {
            "credits": account.credits,
            "plan": plan.name,
            "requestsPerMinute": plan.requests_per_minute,
            "concurrentJobs": plan.concurrent_jobs,
            "dailyLimit": plan.daily_limit,
            "jobsToday": account.submissions.count(self.clock()),
            "activeJobs": len(account.pending),
        }

    def status(self, job: Job) -> str:
        if job.final is None:
            now = self.clock()
            if now < job.created + job.queued:
                return c.STATUS_QUEUED
            if now >= job.done_at and (self.holding is None or job.id not in self.holding):
                self._finish(job)
        return job.final or c.STATUS_PROCESSING

    # --- test hooks -------------------------------------------------------------------------------
    def hold(self) -> None:
        """Keep every job submitted from now on unfinished (queued, then processing) until `release`, however
        fast the sandbox: a test then acts while a job runs without racing it."""
        if self.holding is None:
            self.holding = {}

    def release(self) -> None:
        """Let the held jobs go: each finishes at its own time, or now if that passed while it was held."""
        held, self.holding = self.holding or {}, None
        now = self.clock()
        for job in held.values():
            job.held = max(0.0, now - job.done_at)
            self._finish_when_due(job)

    def _finish_when_due(self, job: Job) -> None:
        """Finish `job` (refund, webhook) at its time by `clock`, even when nobody reads it; on the server's loop."""
        wait = job.done_at - self.clock()
        if wait > 0:
            asyncio.get_running_loop().call_later(wait, self._finish_when_due, job)
        else:
            self._finish(job)

    def view(self, job: Job, status: str | None = None) -> dict[str, Any]:
        """The Job object of the wire, every field present."""
        status = status or self.status(job)
        view = self._view(job, status)
        return view if self.dialect.default else self._in_dialect(job, view)

    def _in_dialect(self, job: Job, view: dict[str, Any]) -> dict[str, Any]:
        """The contract's view as the sandbox's dialect spells it (see dialects.py)."""
        dialect, now = self.dialect, self.clock()
        unknown = dialect.unknown_status
        if unknown and view["status"] in (c.STATUS_PROCESSING, c.STATUS_COMPLETED) and job.failure is None:
            late = now >= job.done_at - dialect.unknown_share * job.duration
            if (view["status"] == c.STATUS_PROCESSING and late) or dialect.unknown_forever:
                return {**view, "status": unknown, "url": None, "completedAt": None}
        if dialect.signed_urls and view["url"]:
            path = f"/storage/{job.id}.{job.ext}"
            host = self.cdn_url.replace("127.0.0.1", "localhost")  # another host name: "object storage"
            view = {**view, "url": host + dialect.sign(self.storage_secret, path, now + self.scaled(dialect.url_ttl))}
        if dialect.url_form == "path" and view["url"]:
            view = {**view, "url": RELATIVE_OUTPUT_PATH.format(id=job.id, ext=job.ext)}
        elif dialect.url_form == "scheme-relative" and view["url"]:
            view = {**view, "url": "//" + view["url"].partition("://")[2]}
        return dialect.spell(view, sum(map(ord, job.id)))

    def _view(self, job: Job, status: str) -> dict[str, Any]:
        done = status == c.STATUS_COMPLETED
        duration = round(job.duration, 3) if done else None
        spec = job.spec
        return {
            "id": job.id,
            "status": status,
            "type": "IMAGE",
            "provider": c.SERVICE,
            "service": c.SERVICE,
            "url": f"{self.cdn_url}/outputs/{job.id}.{job.ext}" if done else None,
            "width": spec.width,
            "height": spec.height,
            "duration": duration,
            "webhookUrl": spec.webhook_url,
            "metadata": {
                "width": spec.width,
                "height": spec.height,
                "seed": job.seed,
                "version": spec.version,
                "raw": spec.raw,
                "quality": spec.quality,
                "outputFormat": spec.output_format,
                "duration": duration,
                "sandbox": True,
            },
            "creditCost": job.cost,
            "createdAt": iso(job.created),
            "completedAt": iso(job.done_at) if status in c.FINAL_STATUSES else None,
            "error": {"code": job.failure, "message": _FAILURE_MESSAGES[job.failure]}
            if status == c.STATUS_FAILED and job.failure
            else None,
        }

    def output(self, job_id: str, ext: str) -> Job | None:
        """The completed job a CDN path names, counted for its owner; None for anything else."""
        job = self.jobs.get(job_id)
        if job is None:
            self.unattributed["cdn_requests"] += 1
            return None
        self.accounts[job.key].stats["cdn_requests"] += 1
        return job if ext == job.ext and self.status(job) == c.STATUS_COMPLETED else None

    def finish_restored(self) -> None:
        """Finish each restored job still running when it is due, as its submission would have (refund, webhook);
        on the server's loop."""
        for account in self.accounts.values():
            for job in list(account.pending.values()):
                self._finish_when_due(job)

    def _settle(self, account: Account) -> None:
        for job in list(account.pending.values()):
            self.status(job)

    def _finish(self, job: Job) -> None:
        if job.final is not None:
            return
        account = self.accounts[job.key]
        job.final = c.STATUS_FAILED if job.failure else c.STATUS_COMPLETED
        account.pending.pop(job.id, None)
        if job.failure:
            account.credits += job.cost
            account.stats.update(jobs_failed=1, credits_refunded=job.cost)
        if job.spec.webhook_url:
            view = self.view(job)
            payload = {
                "id": job.id,
                "status": view["status"],
                "url": view["url"],
                "service": c.SERVICE,
                "createdAt": view["createdAt"],
                "completedAt": view["completedAt"],
                "metadata": {k: view["metadata"][k] for k in ("duration", "width", "height", "seed")},
            }
            self.webhooks.send(
                job.spec.webhook_url, account.webhook_secret, payload, lambda: account.stats.update(webhook_attempts=1)
            )

    async def aclose(self) -> None:
        """Stop webhook deliveries and pending renders."""
        self.outputs.close()
        await self.webhooks.aclose()

    def _idempotency_ttl(self) -> float:
        return math.inf if math.isinf(self.speed) else self.scaled(c.IDEMPOTENCY_TTL_SECONDS)

    # --- observation ------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Counters per key and in total, with each key's credit balance and jobs still processing; the faults
        injected by kind."""
        keys = {}
        for key, account in self.accounts.items():
            self._settle(account)
            keys[key] = {name: account.stats[name] for name in STAT_NAMES} | {
                "credits": account.credits,
                "active_jobs": len(account.pending),
            }
        total = {name: sum(k[name] for k in keys.values()) + self.unattributed[name] for name in STAT_NAMES}
        total["credits"] = sum(k["credits"] for k in keys.values())
        total["active_jobs"] = sum(k["active_jobs"] for k in keys.values())
        total["held_submissions"] = self.held_submissions
        return {"total": total, "keys": keys, "faults": dict(self.faults.fired)}


_FAILURE_MESSAGES = {
    c.GENERATION_FAILED: "generation failed (injected fault); credits refunded",
    c.CONTENT_MODERATED: "the prompt was refused by content moderation (injected fault); credits refunded",
}


def _failure(faults: Faults) -> str | None:
    """The error code a new job will fail with, if a fault says it fails."""
    if faults.fire("moderate_job"):
        return c.CONTENT_MODERATED
    return c.GENERATION_FAILED if faults.fire("fail_job") else None


def _limited(code: str, reason: str, retry_after: float, reset_at: float) -> ApiError:
    retry_after = max(0.0, retry_after)
    return ApiError(
        429,
        code,
        f"Too many requests: {reason}; retry after {retry_after:.3f} s",
        headers={"Retry-After": f"{retry_after:.3f}"},
        retryAfter=round(retry_after, 3),
        resetAt=round(reset_at, 3),
    )

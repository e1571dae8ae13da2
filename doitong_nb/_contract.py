"""The Doitong Flux Ultra contract in one place (see shared/CONTRACT.md).

Every value the documentation leaves open is an assumption; each one lives here as a single
constant so that it changes in one line when the real service turns out to differ. The client
and the sandbox both read this module, which is why they can never drift apart.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
from dataclasses import dataclass

# --- endpoints [doc] -------------------------------------------------------------------------
PRODUCTION_BASE_URL = "https://api.doitong.com"
MAX_SEED = 2**31 - 1  # [assumed] GraphQL's Int is 32-bit signed
TRANSPORTS = ("graphql", "rest")  # the wire formats: GraphQL (POST /graphql) and REST
GRAPHQL_PATH = "/graphql"
REST_SUBMIT_PATH = "/v1/text_to_image"
REST_JOB_PATH = "/v1/jobs/{id}"  # [assumed]
REST_ACCOUNT_PATH = "/v1/account"  # [assumed]
# [assumed] Where else a REST service plausibly reads a job, tried in turn when REST_JOB_PATH answers 404 for a job
# the service itself just named; the one that answers is remembered per host (see DISCOVERY_TTL_SECONDS).
REST_JOB_PATHS = (
    REST_JOB_PATH,
    "/v1/generations/{id}",
    "/v1/text_to_image/{id}",
    "/v1/images/{id}",
    "/v1/tasks/{id}",
    "/v1/predictions/{id}",
    "/v1/get_result?id={id}",
)
# [assumed] GraphQL: the query that reads a job is `job(id:)`; when the schema has no such field, one
# introspection query finds the field of Query that returns the mutation's job type and takes one id argument
# (these names first, in this order). What was found is kept on disk per host for this long.
STATUS_QUERY = "job"
STATUS_QUERY_ARG = "id"
STATUS_QUERY_NAMES = ("job", "generation", "getJob", "getGeneration", "jobStatus", "task", "getTask", "prediction")
DISCOVERY_TTL_SECONDS = 86_400.0
CDN_OUTPUT_PATH = "/outputs/{id}.{ext}"
# [assumed] What object storage answers for an expired signed output URL; the client then reads the job's status
# once more for a fresh URL.
EXPIRED_URL_STATUSES = (401, 403, 410)
# [assumed] Query parameters (lower-cased) that mark an output URL as signed, hence expiring: S3, GCS, CloudFront.
SIGNED_URL_MARKERS = ("signature", "expires", "x-amz-", "x-goog-")

# --- request parameters ------------------------------------------------------------------------
SERVICE = "flux-ultra"
DEFAULT_VERSION = "flux-pro-1.1-ultra"
VERSIONS = ("flux-pro-1.1-ultra", "flux-pro-1.1", "flux-dev")  # [assumed] the first is [doc]
QUALITIES = ("standard", "high")  # [assumed] "high" is [doc]
OUTPUT_FORMATS = ("jpeg", "png")  # [assumed]
DEFAULT_SIZE = 1024  # [doc]
MIN_SIDE, MAX_SIDE, SIDE_STEP = 256, 4096, 16  # [assumed]
MAX_PIXELS = 4096 * 4096  # [assumed]
MAX_PROMPT_CHARS = 10_000  # [assumed]
SAFETY_TOLERANCE_RANGE = (0, 6)  # [assumed]
ASPECT_RATIO_PIXELS = 1024 * 1024  # [assumed] an aspectRatio alone asks for about one megapixel
ASPECT_RATIO_RANGE = ((21, 9), (9, 21))  # [doc] Ultra: from 21:9 (widest) to 9:21 (tallest)

# --- jobs [assumed] ----------------------------------------------------------------------------
STATUS_QUEUED, STATUS_PROCESSING = "queued", "processing"
STATUS_COMPLETED, STATUS_FAILED = "completed", "failed"
PENDING_STATUSES = (STATUS_QUEUED, STATUS_PROCESSING)
FINAL_STATUSES = (STATUS_COMPLETED, STATUS_FAILED)
# [assumed] Statuses are read by meaning, whatever their case, spaces or dashes: the spellings a resold
# service plausibly passes through (Black Forest Labs' own are Pending, Ready, Request/Content Moderated, Error).
STATUS_SPELLINGS: dict[str, tuple[str, ...]] = {
    STATUS_QUEUED: ("queued", "pending", "waiting", "submitted", "created", "starting", "in_queue", "scheduled"),
    STATUS_PROCESSING: ("processing", "running", "in_progress", "started", "generating", "active"),
    STATUS_COMPLETED: ("completed", "succeeded", "success", "successful", "done", "ready", "finished", "complete"),
    STATUS_FAILED: (
        "failed",
        "failure",
        "error",
        "errored",
        "moderated",
        "request_moderated",
        "content_moderated",
        "canceled",
        "cancelled",
        "rejected",
        "expired",
        "task_not_found",
    ),
}
MODERATED_STATUSES = ("moderated", "request_moderated", "content_moderated")  # failed with CONTENT_MODERATED
_STATUS_MEANING = {spelling: meaning for meaning, spellings in STATUS_SPELLINGS.items() for spelling in spellings}
# An unknown status counts as "still running" this long (at least, and this many predicted durations), then
# the wait stops with a message naming it; the job stays in the journal, resumable.
UNKNOWN_STATUS_PATIENCE_SECONDS = 120.0
UNKNOWN_STATUS_PATIENCE_DURATIONS = 10.0


def status_key(raw: object) -> str:
    """'Request Moderated' -> 'request_moderated': the form the spellings above are written in."""
    return "_".join(str(raw or "").strip().lower().replace("-", " ").split())


# [assumed] A spelling nobody listed is read by its words: English stems and Korean words that mean the same, tried
# in this order (a failure word wins over a done word: "completed_with_error" is a failure). `upscaling` means
# none of them, so it stays unknown (still running, for a while); `statuses` maps such words by hand.
STATUS_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        STATUS_FAILED,
        (
            "fail",
            "error",
            "abort",
            "cancel",
            "reject",
            "moderat",
            "expire",
            "denied",
            "refus",
            "실패",
            "오류",
            "에러",
            "취소",
            "거부",
            "만료",
        ),
    ),
    (STATUS_COMPLETED, ("complet", "succe", "done", "ready", "finish", "deliver", "완료", "성공")),
    (
        STATUS_PROCESSING,
        (
            "process",
            "run",
            "progress",
            "generat",
            "render",
            "work",
            "flight",
            "start",
            "active",
            "처리",
            "생성",
            "진행",
        ),
    ),
    (
        STATUS_QUEUED,
        ("queue", "pend", "wait", "submit", "creat", "accept", "schedul", "receiv", "대기", "접수", "예약"),
    ),
)


def status_meaning(raw: object) -> str | None:
    """The contract's status a service's spelling means, by the lists above or by its words; None for a status
    whose words mean nothing we know."""
    key = status_key(raw)
    if key in _STATUS_MEANING:
        return _STATUS_MEANING[key]
    words = key.split("_")
    for meaning, stems in STATUS_WORDS:
        if any(word.startswith(stem) or (not stem.isascii() and stem in word) for word in words for stem in stems):
            return meaning
    return None


# --- errors ------------------------------------------------------------------------------------
BAD_USER_INPUT = "BAD_USER_INPUT"
UNAUTHENTICATED = "UNAUTHENTICATED"
INSUFFICIENT_CREDITS = "INSUFFICIENT_CREDITS"  # [doc]
NOT_FOUND = "NOT_FOUND"
RATE_LIMITED = "RATE_LIMITED"
CONCURRENCY_LIMITED = "CONCURRENCY_LIMITED"
DAILY_LIMIT_REACHED = "DAILY_LIMIT_REACHED"
INTERNAL = "INTERNAL"
CONTENT_MODERATED = "CONTENT_MODERATED"
GENERATION_FAILED = "GENERATION_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"  # graphql-js / Apollo: the query does not fit the schema
# [assumed] An error without extensions.code (some services answer GraphQL errors with HTTP 200 and no code) is
# classified by its message, lower-cased: the first pattern found in it decides the code.
CODE_BY_MESSAGE: tuple[tuple[str, str], ...] = (
    ("cannot query field", GRAPHQL_VALIDATION_FAILED),
    ("unknown argument", GRAPHQL_VALIDATION_FAILED),
    ("introspection", GRAPHQL_VALIDATION_FAILED),
    ("not found", NOT_FOUND),
    ("does not exist", NOT_FOUND),
    ("insufficient credits", INSUFFICIENT_CREDITS),
    ("too many", RATE_LIMITED),
    ("rate limit", RATE_LIMITED),
    ("unauthenticated", UNAUTHENTICATED),
    ("api key", UNAUTHENTICATED),
    ("internal", INTERNAL),
    ("invalid", BAD_USER_INPUT),
    ("must be", BAD_USER_INPUT),
)
# [assumed] Of those validation failures, the ones that mean "the schema has no such query or argument" (then the
# service's own status query is looked for), as graphql-js words them.
SCHEMA_MISMATCH_MESSAGES = ("cannot query field", "unknown argument", "is required, but it was not provided")
# [assumed] The HTTP status a codeless error answered with HTTP 200 stands for, by the code its message gave.
HTTP_STATUS_OF_CODE = {INTERNAL: 500, NOT_FOUND: 404, BAD_USER_INPUT: 400}

# --- headers -----------------------------------------------------------------------------------
HEADER_RATE_LIMIT = "X-RateLimit-Limit"  # [doc]
HEADER_RATE_REMAINING = "X-RateLimit-Remaining"  # [doc]
HEADER_RATE_RESET = "X-RateLimit-Reset"  # [doc]; [assumed] Unix seconds, may carry a fraction
RESET_IS_UNIX_TIME_ABOVE = 1e9  # [assumed] a smaller X-RateLimit-Reset is seconds from now (another common form)
RESET_IS_MILLISECONDS_ABOVE = 1e11  # [assumed] a larger one is a Unix time in milliseconds (year 5138 in seconds)
# [assumed] Retry-After is seconds; an HTTP date (RFC 9110's other form) is read too
HEADER_RATE_WINDOW = "X-RateLimit-Window"  # [assumed] optional: window length in seconds
# [assumed] Idempotency-Key is not in Doitong's documentation, so no credit depends on it: the client sends one with
# every submission, but sends a submission again after an unclear answer only once the service has shown that it
# honours the key (an answer echoing it, or Idempotent-Replayed: true); ARCHITECTURE.md, "The submission rule".
HEADER_IDEMPOTENCY = "Idempotency-Key"
HEADER_IDEMPOTENT_REPLAYED = "Idempotent-Replayed"  # [assumed] "true" on an answer replayed for a known key
HEADER_SIGNATURE = "X-Doitong-Signature"  # [doc]
HEADER_TIMESTAMP = "X-Doitong-Timestamp"  # [assumed]
RATE_WINDOW_SECONDS = 60.0  # [doc] "per minute"; [assumed] sliding
DAY_SECONDS = 86_400.0
IDEMPOTENCY_TTL_SECONDS = DAY_SECONDS  # [assumed]
WEBHOOK_TOLERANCE_SECONDS = 300.0  # [assumed]
WEBHOOK_MAX_ATTEMPTS = 5  # [assumed]


@dataclass(frozen=True)
class Plan:
    """A plan's limits [doc]; enterprise is "custom", so its numbers are [assumed]."""

    name: str
    requests_per_minute: int
    concurrent_jobs: int
    daily_limit: int | None  # None: unlimited


PLANS: dict[str, Plan] = {
    "free": Plan("free", 10, 1, 100),
    "starter": Plan("starter", 30, 3, 1_000),
    "pro": Plan("pro", 60, 10, 10_000),
    "enterprise": Plan("enterprise", 600, 50, None),
}


def plan_with_rate(requests_per_minute: float | None) -> Plan | None:
    """The plan an X-RateLimit-Limit names (each plan's rate is its own), or None for a custom one."""
    return next((p for p in PLANS.values() if p.requests_per_minute == requests_per_minute), None)


# [assumed] cost = round(linear interpolation by pixel count between these points)
_PRICE_POINTS = ((512 * 512, 10), (1024 * 1024, 20), (2048 * 2048, 30), (4096 * 4096, 50))


def typical_seconds(pixels: int) -> float:
    """[assumed] The service's typical duration for an image of `pixels`: 8 s up to 1 MP, linear to 15 s at the
    largest size. The client plans its polling by it; the sandbox renders in this time (plus a seed's jitter)."""
    return 8.0 + 7.0 * max(0, pixels - 1024 * 1024) / (MAX_PIXELS - 1024 * 1024)


def credit_cost(width: int, height: int) -> int:
    """Credits one image of width x height costs (price table of the doc, interpolated)."""
    pixels = width * height
    if pixels <= _PRICE_POINTS[0][0]:
        return _PRICE_POINTS[0][1]
    for (p0, c0), (p1, c1) in itertools.pairwise(_PRICE_POINTS):
        if pixels <= p1:
            return round(c0 + (c1 - c0) * (pixels - p0) / (p1 - p0))
    return _PRICE_POINTS[-1][1]


def parse_aspect_ratio(text: str) -> tuple[int, int]:
    """'16:9' -> (16, 9); raises ValueError with the accepted form and range."""
    parts = str(text).split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"aspect ratio {text!r} is not of the form W:H with positive integers, e.g. 16:9")
    w, h = int(parts[0]), int(parts[1])
    (wide_w, wide_h), (tall_w, tall_h) = ASPECT_RATIO_RANGE
    if not tall_w * h <= w * tall_h or not w * wide_h <= wide_w * h:  # exact: no float rounding at the edges
        raise ValueError(
            f"aspect ratio {text!r} is outside the supported range {wide_w}:{wide_h} (wide) to {tall_w}:{tall_h} (tall)"
        )
    return w, h


def size_for_aspect_ratio(text: str, pixels: int = ASPECT_RATIO_PIXELS) -> tuple[int, int]:
    """The width and height an aspectRatio asks for: about `pixels`, each a multiple of 16."""
    w, h = parse_aspect_ratio(text)
    scale = math.sqrt(pixels / (w * h))

    def side(v: float) -> int:
        return int(min(MAX_SIDE, max(MIN_SIDE, round(v * scale / SIDE_STEP) * SIDE_STEP)))

    return side(w), side(h)


def webhook_signature(secret: str, body: bytes, timestamp: str | None = None) -> str:
    """The X-Doitong-Signature value: sha256 HMAC of `timestamp.body`, or of the body alone."""
    message = body if timestamp is None else timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()

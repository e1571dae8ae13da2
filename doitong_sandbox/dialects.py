"""Dialects: the sandbox speaking a service that differs from CONTRACT.md in one [assumed] area.

The default dialect is the contract exactly (and changes nothing, byte for byte). Each other one changes
one assumption the way a real, resold service plausibly would, so that the client can be tested against
it and `doitong-nb doctor` can be shown to name the difference. `Sandbox(dialect="statuses")`,
`doitong-sandbox --dialect statuses`; `Dialect` values can be built directly for variations in tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from typing import Any

from doitong_nb import _contract as c

SIGNED_URL_TTL = 600.0  # seconds (before speed scaling): Black Forest Labs' result URLs last about 10 minutes
SNAKE = {
    "creditCost": "credit_cost",
    "createdAt": "created_at",
    "completedAt": "completed_at",
    "webhookUrl": "webhook_url",
}


@dataclass(frozen=True)
class Dialect:
    """What differs from the contract; every default is the contract's own choice."""

    name: str = "default"
    summary: str = "exactly CONTRACT.md"
    # GraphQL: the query that reads a job, its argument, and whether introspection answers
    status_query: str = "job"
    status_arg: str = "id"
    status_extra_args: str = ""  # more (required) arguments of the status query, in SDL, e.g. "kind: JobKind!"
    extra_sdl: str = ""  # type definitions those arguments need, appended to the schema
    introspection: bool = True
    # submissions: what a proxy in front of the service may do to them
    honours_idempotency: bool = True  # False: every send makes (and charges) a new job, whatever its key
    submit_cut: str | None = None  # "after-id" | "before-id": an accepted submission's 2xx body cut short there
    submit_truncate_at: int | None = None  # or: exactly this many bytes of it kept
    submit_202: str | None = None  # "absolute" | "path": 202, an empty body and Location: the job's REST URL
    # statuses: meaning -> the spellings used, taken in turn job by job; an unlisted status before completion
    spellings: dict[str, tuple[str, ...]] = field(default_factory=dict)
    unknown_status: str | None = None
    unknown_share: float = 0.4  # the last part of processing shown as `unknown_status`
    unknown_forever: bool = False  # a job never leaves `unknown_status` (for the client's patience)
    # REST
    rest_job_path: str = c.REST_JOB_PATH
    rest_snake_case: bool = False
    rest_submit_key: str = "generateImage"
    metadata_as_string: bool = False
    # headers
    rate_headers: bool = True
    retry_after_date: bool = False
    retry_after_ms: bool = False  # Retry-After in milliseconds (some proxies), not seconds
    reset_delta: bool = False
    reset_unit: str = "s"  # X-RateLimit-Reset as a Unix time in "s", "ms", or as an "http-date"
    # errors
    errors_200: bool = False
    codeless: tuple[str, ...] = ()  # error codes answered without extensions.code
    rest_error_shape: str = "errors"  # REST errors as the contract's list, {"error": {code, message}}, {"detail"}
    korean_errors: bool = False  # messages in Korean; a 402's numbers only in its message
    # credits, outputs, webhooks
    cost_late: bool = False
    signed_urls: bool = False
    url_ttl: float = SIGNED_URL_TTL
    url_form: str = "absolute"  # "path": relative to the API host (served there); "scheme-relative": //host/...
    url_late_reads: int = 0  # a completed job's url is null for this many status reads after completion
    cdn_redirect: int | None = None  # the CDN answers an output URL with this redirect (e.g. 302) to BLOB_PATH
    webhook_timestamp: bool = True
    webhook_encoding: str = "hex"  # or "base64"

    @property
    def default(self) -> bool:
        return self == DIALECTS["default"]

    # --- job views ----------------------------------------------------------------------------------
    def spell(self, view: dict[str, Any], number: int) -> dict[str, Any]:
        """A job view with this dialect's status spelling and cost timing (the contract's view otherwise)."""
        status = view["status"]
        if self.spellings.get(status):
            choices = self.spellings[status]
            error = view.get("error") or {}
            if status == c.STATUS_FAILED and error.get("code") == c.CONTENT_MODERATED and "moderated" in choices:
                view = {**view, "status": "moderated"}
            else:
                view = {**view, "status": choices[number % len(choices)]}
        if self.cost_late and status != c.STATUS_COMPLETED:
            view = {**view, "creditCost": None}
        if self.korean_errors and view.get("error"):
            error = view["error"]
            view = {**view, "error": {**error, "message": _KOREAN_JOB_ERRORS.get(error["code"], error["message"])}}
        return view

    def rest(self, view: dict[str, Any]) -> dict[str, Any]:
        """A job view as the REST API spells it."""
        if self.metadata_as_string and isinstance(view.get("metadata"), dict):
            view = {**view, "metadata": json.dumps(view["metadata"], separators=(",", ":"))}
        if self.rest_snake_case:
            view = {SNAKE.get(k, k): v for k, v in view.items()}
        return view

    # --- answers ------------------------------------------------------------------------------------
    def answer(
        self, status: int, payload: Any, headers: dict[str, str], now: float, graphql: bool
    ) -> tuple[int, Any, dict[str, str]]:
        """An API answer (status, body, headers) in this dialect."""
        headers = dict(headers)
        if not self.rate_headers:
            for name in (c.HEADER_RATE_LIMIT, c.HEADER_RATE_REMAINING, c.HEADER_RATE_RESET, c.HEADER_RATE_WINDOW):
                headers.pop(name, None)
        reset = _float(headers.get(c.HEADER_RATE_RESET))
        if reset is not None and self.reset_unit == "ms":
            headers[c.HEADER_RATE_RESET] = str(round(reset * 1000))
        elif reset is not None and self.reset_unit == "http-date":
            headers[c.HEADER_RATE_RESET] = formatdate(math.ceil(reset), usegmt=True)
        if status == 429 and (self.retry_after_date or self.reset_delta or self.retry_after_ms):
            retry = _float(headers.get("Retry-After"))
            if retry is not None and self.retry_after_date:
                headers["Retry-After"] = formatdate(math.ceil(now + retry), usegmt=True)
            elif retry is not None and self.retry_after_ms:
                headers["Retry-After"] = str(math.ceil(retry * 1000))
            if retry is not None and self.reset_delta:
                headers[c.HEADER_RATE_RESET] = f"{math.ceil(retry)}"
        if isinstance(payload, dict) and payload.get("errors") and self.korean_errors:
            payload = {**payload, "errors": [_korean(e) for e in payload["errors"]]}
        if graphql and isinstance(payload, dict) and payload.get("errors"):
            if self.errors_200:
                status = 200
            if self.codeless:
                payload = {**payload, "errors": [_codeless(e, self.codeless) for e in payload["errors"]]}
        if not graphql and isinstance(payload, dict) and payload.get("errors") and self.rest_error_shape != "errors":
            payload = _rest_error(payload["errors"][0], self.rest_error_shape)
        return status, payload, headers

    def retry_seconds(self, value: str | None) -> float | None:
        """A Retry-After this dialect sent, in seconds (None for an HTTP date): for the request log."""
        seconds = _float(value)
        return seconds / 1000 if seconds is not None and self.retry_after_ms else seconds

    # --- submissions through a proxy ----------------------------------------------------------------
    def cut(self, body: bytes, job_id: str) -> bytes | None:
        """An accepted submission's body as this dialect cuts it short, or None when it is whole."""
        if self.submit_truncate_at is not None:
            return body[: self.submit_truncate_at]
        if self.submit_cut is None:
            return None
        where = body.find(job_id.encode())
        if where < 0:  # the query did not select the id: cut in the middle
            return body[: len(body) // 2]
        if self.submit_cut == "before-id":
            return body[: max(0, body.rfind(b'"', 0, where - 1) - 1)]  # e.g. {"data":{"generate":{"i
        return body[: min(len(body) - 1, where + len(job_id) + _PAST_THE_ID)]  # ..."id":"job_...","status":"pro

    def location(self, base_url: str, job_id: str) -> str:
        """The Location a 202 points at: the job's REST URL, absolute or as a path."""
        path = self.rest_job_path.format(id=job_id)
        return base_url.rstrip("/") + path if self.submit_202 == "absolute" else path

    # --- signed output URLs -------------------------------------------------------------------------
    def sign(self, secret: str, path: str, expires: float) -> str:
        mac = hmac.new(secret.encode(), f"{path}:{expires:.3f}".encode(), hashlib.sha256).hexdigest()[:32]
        return f"{path}?expires={expires:.3f}&signature={mac}"

    def check(self, secret: str, path: str, expires: str, signature: str, now: float) -> int:
        """200, or 403 for a bad or expired signature (object storage answers 403 to both)."""
        try:
            when = float(expires)
        except ValueError:
            return 403
        good = self.sign(secret, path, when).endswith(f"signature={signature}")
        return 200 if good and now <= when else 403

    # --- webhooks -----------------------------------------------------------------------------------
    def webhook_headers(self, secret: str, body: bytes, timestamp: str) -> dict[str, str]:
        if self.webhook_timestamp and self.webhook_encoding == "hex":
            return {c.HEADER_TIMESTAMP: timestamp, c.HEADER_SIGNATURE: c.webhook_signature(secret, body, timestamp)}
        message = timestamp.encode() + b"." + body if self.webhook_timestamp else body
        digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
        value = base64.b64encode(digest).decode() if self.webhook_encoding == "base64" else digest.hex()
        headers = {c.HEADER_SIGNATURE: "sha256=" + value}
        if self.webhook_timestamp:
            headers[c.HEADER_TIMESTAMP] = timestamp
        return headers


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _codeless(error: Any, codes: tuple[str, ...]) -> Any:
    ext = error.get("extensions") if isinstance(error, dict) else None
    if not isinstance(ext, dict) or ext.get("code") not in codes:
        return error
    rest = {k: v for k, v in ext.items() if k != "code"}
    stripped = {k: v for k, v in error.items() if k != "extensions"}
    return {**stripped, "extensions": rest} if rest else stripped


_PAST_THE_ID = 20  # bytes kept after the job id by submit_cut="after-id": into the next field, never to the end
BLOB_PATH = "/blobs/{id}.{ext}"  # where the cdn_redirect dialects' CDN sends output downloads
RELATIVE_OUTPUT_PATH = "/cdn/outputs/{id}.{ext}"  # where url_form="path" serves outputs, on the API host

_KOREAN_JOB_ERRORS = {
    c.GENERATION_FAILED: "이미지 생성에 실패했습니다. 크레딧은 환불되었습니다",
    c.CONTENT_MODERATED: "콘텐츠 정책에 따라 요청이 거부되었습니다. 크레딧은 환불되었습니다",
}


def _korean(error: Any) -> Any:
    """One GraphQL error with a Korean message (a 402's numbers only in it); graphql-core's own stay English."""
    ext = error.get("extensions") if isinstance(error, dict) else None
    if not isinstance(ext, dict):
        return error
    code, ext = ext.get("code"), dict(ext)
    if code == c.INSUFFICIENT_CREDITS:
        need, have = ext.pop("creditsRequired", "?"), ext.pop("creditsAvailable", "?")
        message = f"크레딧이 부족합니다: 필요 {need}, 잔액 {have}"
    elif code == c.BAD_USER_INPUT:
        message = f"입력값이 올바르지 않습니다: {ext['field']}" if ext.get("field") else "입력값이 올바르지 않습니다"
    elif code in (c.RATE_LIMITED, c.CONCURRENCY_LIMITED, c.DAILY_LIMIT_REACHED):
        reason = {
            c.RATE_LIMITED: "요청이 너무 많습니다",
            c.CONCURRENCY_LIMITED: "동시에 처리 중인 작업이 너무 많습니다",
            c.DAILY_LIMIT_REACHED: "일일 작업 한도에 도달했습니다",
        }[code]
        message = f"{reason}. {ext.get('retryAfter', 0)}초 후에 다시 시도하세요"
    elif code in _KOREAN_MESSAGES:
        message = _KOREAN_MESSAGES[code]
    else:
        return error
    return {**error, "message": message, "extensions": ext}


_KOREAN_MESSAGES = {
    c.UNAUTHENTICATED: "API 키가 없거나 올바르지 않습니다",
    c.NOT_FOUND: "작업을 찾을 수 없습니다",
    c.INTERNAL: "서버 내부 오류가 발생했습니다. 잠시 후 다시 시도하세요",
}


def _rest_error(error: dict[str, Any], shape: str) -> dict[str, Any]:
    """The first error as another REST convention spells it: {"error": {code, message, ...}} or {"detail"}."""
    ext = error.get("extensions") or {}
    if shape == "detail":
        return {"detail": error.get("message", "")}
    details = {k: v for k, v in ext.items() if k != "code"}
    return {"error": {"code": ext.get("code"), "message": error.get("message", ""), **details}}


_DEFAULT = Dialect()
DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        _DEFAULT,
        replace(
            _DEFAULT,
            name="status-query",
            summary="jobs are read with generation(id:), not job(id:); introspection is on",
            status_query="generation",
        ),
        replace(
            _DEFAULT,
            name="no-introspection",
            summary="jobs are read with getJob(jobId:), and introspection is disabled",
            status_query="getJob",
            status_arg="jobId",
            introspection=False,
        ),
        replace(
            _DEFAULT,
            name="statuses",
            summary="statuses PENDING/RUNNING/SUCCEEDED/FAILED, success, done, error, moderated, and 'upscaling'",
            spellings={
                c.STATUS_QUEUED: ("PENDING",),
                c.STATUS_PROCESSING: ("RUNNING",),
                c.STATUS_COMPLETED: ("SUCCEEDED", "success", "done"),
                c.STATUS_FAILED: ("FAILED", "error", "moderated"),
            },
            unknown_status="upscaling",
        ),
        replace(
            _DEFAULT,
            name="rest-shape",
            summary="REST jobs at /v1/generations/{id}, snake_case fields, data.generateimage, metadata as text",
            rest_job_path="/v1/generations/{id}",
            rest_snake_case=True,
            rest_submit_key="generateimage",
            metadata_as_string=True,
        ),
        replace(
            _DEFAULT,
            name="signed-urls",
            summary="outputs on another host behind signed URLs that expire after 10 minutes (then 403)",
            signed_urls=True,
        ),
        replace(
            _DEFAULT,
            name="headers",
            summary="no X-RateLimit-* headers; Retry-After as an HTTP date; X-RateLimit-Reset in seconds from now",
            rate_headers=False,
            retry_after_date=True,
            reset_delta=True,
        ),
        replace(
            _DEFAULT,
            name="errors-200",
            summary="GraphQL errors answered with HTTP 200, some without extensions.code",
            errors_200=True,
            codeless=(c.NOT_FOUND, c.BAD_USER_INPUT, c.INTERNAL, c.GRAPHQL_VALIDATION_FAILED),
        ),
        replace(
            _DEFAULT,
            name="webhook-body-only",
            summary="webhooks signed over the raw body only, with no timestamp header",
            webhook_timestamp=False,
        ),
        replace(
            _DEFAULT,
            name="webhook-base64",
            summary="webhooks signed over the raw body only, the signature in base64 instead of hex",
            webhook_timestamp=False,
            webhook_encoding="base64",
        ),
        replace(
            _DEFAULT,
            name="cost-late",
            summary="creditCost is absent from the submission's answer, known only once the job completed",
            cost_late=True,
        ),
        replace(
            _DEFAULT,
            name="unclear-submit",
            summary="a proxy cuts an accepted (and charged) submission's 2xx body short just past the job id, "
            "and ignores Idempotency-Key",
            submit_cut="after-id",
            honours_idempotency=False,
        ),
        replace(
            _DEFAULT,
            name="unclear-submit-no-id",
            summary="a proxy cuts an accepted (and charged) submission's 2xx body short before the job id, "
            "and ignores Idempotency-Key",
            submit_cut="before-id",
            honours_idempotency=False,
        ),
        replace(
            _DEFAULT,
            name="accepted-202",
            summary="submissions answer 202 with an empty body and Location: <base>/v1/jobs/{id} (charged); "
            "Idempotency-Key ignored",
            submit_202="absolute",
            honours_idempotency=False,
        ),
        replace(
            _DEFAULT,
            name="accepted-202-path",
            summary="submissions answer 202 with an empty body and Location: /v1/jobs/{id} (a path); "
            "Idempotency-Key ignored",
            submit_202="path",
            honours_idempotency=False,
        ),
        replace(
            _DEFAULT,
            name="ignores-idempotency",
            summary="Idempotency-Key is ignored: every send makes and charges a new job",
            honours_idempotency=False,
        ),
        replace(
            _DEFAULT,
            name="reset-ms",
            summary="X-RateLimit-Reset as a Unix time in milliseconds",
            reset_unit="ms",
        ),
        replace(
            _DEFAULT,
            name="reset-http-date",
            summary="X-RateLimit-Reset as an HTTP date",
            reset_unit="http-date",
        ),
        replace(
            _DEFAULT,
            name="retry-after-ms",
            summary="a 429's Retry-After in milliseconds (its extensions.retryAfter still in seconds)",
            retry_after_ms=True,
        ),
        replace(
            _DEFAULT,
            name="korean-statuses",
            summary="statuses in Korean: 대기, 처리 중 / 생성 중, 완료, 실패",
            spellings={
                c.STATUS_QUEUED: ("대기",),
                c.STATUS_PROCESSING: ("처리 중", "생성 중"),
                c.STATUS_COMPLETED: ("완료",),
                c.STATUS_FAILED: ("실패",),
            },
        ),
        replace(
            _DEFAULT,
            name="odd-statuses",
            summary="statuses no list names, read by their words: ACCEPTED, IN_FLIGHT, DELIVERED, ABORTED",
            spellings={
                c.STATUS_QUEUED: ("ACCEPTED",),
                c.STATUS_PROCESSING: ("IN_FLIGHT",),
                c.STATUS_COMPLETED: ("DELIVERED",),
                c.STATUS_FAILED: ("ABORTED",),
            },
        ),
        replace(
            _DEFAULT,
            name="opaque-statuses",
            summary="statuses as stage codes no word reading can know: s0 (queued), s1, s2 (done), s9 (failed)",
            spellings={
                c.STATUS_QUEUED: ("s0",),
                c.STATUS_PROCESSING: ("s1",),
                c.STATUS_COMPLETED: ("s2",),
                c.STATUS_FAILED: ("s9",),
            },
        ),
        replace(
            _DEFAULT,
            name="relative-urls",
            summary="output urls are paths on the API host (/cdn/outputs/{id}.jpg), served there without a key",
            url_form="path",
        ),
        replace(
            _DEFAULT,
            name="scheme-relative-urls",
            summary="output urls are scheme-relative (//host:port/outputs/{id}.jpg) on the CDN host",
            url_form="scheme-relative",
        ),
        replace(
            _DEFAULT,
            name="url-late",
            summary="a completed job's url is null for its first 2 status reads after completion",
            url_late_reads=2,
        ),
        replace(
            _DEFAULT,
            name="status-two-args",
            summary="jobs are read with job(id: ID!, kind: JobKind!) (enum JobKind { IMAGE }); introspection is on",
            status_extra_args="kind: JobKind!",
            extra_sdl="enum JobKind {\n  IMAGE\n}\n",
        ),
        replace(
            _DEFAULT,
            name="rest-error-shape",
            summary='REST errors as {"error": {"code", "message", ...details}}, not the errors list',
            rest_error_shape="error-object",
        ),
        replace(
            _DEFAULT,
            name="rest-error-detail",
            summary='REST errors as {"detail": message}: no code at all, only the HTTP status',
            rest_error_shape="detail",
        ),
        replace(
            _DEFAULT,
            name="korean-errors",
            summary="error messages in Korean; a 402 carries its numbers only in the message (no creditsRequired)",
            korean_errors=True,
        ),
        replace(
            _DEFAULT,
            name="cdn-302",
            summary="the CDN answers an output URL with 302 to /blobs/{id}.jpg on the same host, which serves it",
            cdn_redirect=302,
        ),
    )
}


def dialect(value: str | Dialect | None) -> Dialect:
    """A dialect by name (or itself); a clear error naming the known ones."""
    if isinstance(value, Dialect):
        return value
    name = value or "default"
    if name not in DIALECTS:
        raise ValueError(f"dialect {name!r} is unknown; known: {', '.join(DIALECTS)}")
    return DIALECTS[name]

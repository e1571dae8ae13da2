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
    introspection: bool = True
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
    reset_delta: bool = False
    # errors
    errors_200: bool = False
    codeless: tuple[str, ...] = ()  # error codes answered without extensions.code
    # credits, outputs, webhooks
    cost_late: bool = False
    signed_urls: bool = False
    url_ttl: float = SIGNED_URL_TTL
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
        if status == 429 and (self.retry_after_date or self.reset_delta):
            retry = _float(headers.get("Retry-After"))
            if retry is not None and self.retry_after_date:
                headers["Retry-After"] = formatdate(math.ceil(now + retry), usegmt=True)
            if retry is not None and self.reset_delta:
                headers[c.HEADER_RATE_RESET] = f"{math.ceil(retry)}"
        if graphql and isinstance(payload, dict) and payload.get("errors"):
            if self.errors_200:
                status = 200
            if self.codeless:
                payload = {**payload, "errors": [_codeless(e, self.codeless) for e in payload["errors"]]}
        return status, payload, headers

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

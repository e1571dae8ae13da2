"""A service's answer as a typed error: GraphQL's `errors[0].extensions` and HTTP statuses mapped to the error
tree, with a message that says what to do next.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote, urlsplit

from doitong_nb import _contract as contract
from doitong_nb._core.errors import (
    AuthenticationError,
    DoitongError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from doitong_nb._core.i18n import N_, _
from doitong_nb._core.steps import Reply

_BY_CODE: dict[str, type[DoitongError]] = {
    contract.BAD_USER_INPUT: InvalidRequestError,
    contract.UNAUTHENTICATED: AuthenticationError,
    contract.INSUFFICIENT_CREDITS: InsufficientCreditsError,
    contract.NOT_FOUND: NotFoundError,
    contract.RATE_LIMITED: RateLimitError,
    contract.CONCURRENCY_LIMITED: RateLimitError,
    contract.DAILY_LIMIT_REACHED: RateLimitError,
    contract.INTERNAL: ServerError,
}


_BY_STATUS: dict[int, type[DoitongError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: InsufficientCreditsError,
    404: NotFoundError,
    429: RateLimitError,
}


def _first_error(body: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the first error, its extensions) of an error body in any shape a service writes: GraphQL's (and the
    contract's) `errors` list, REST's `{"error": {"code", "message", ...}}` or `{"error": "text"}`, or
    `{"detail": "text"}`; empty dicts where the body has none."""
    first: dict[str, Any] = {}
    if not isinstance(body, dict):
        return first, {}
    if isinstance(body.get("errors"), list) and body["errors"]:
        first = body["errors"][0] if isinstance(body["errors"][0], dict) else {"message": str(body["errors"][0])}
    elif isinstance(body.get("error"), dict):
        error = body["error"]
        details = {k: v for k, v in error.items() if k != "message"}
        first = {"message": error.get("message") or "", "extensions": {**details, **(error.get("extensions") or {})}}
    elif body.get("error") or body.get("detail"):
        first = {"message": str(body.get("error") or body.get("detail"))}
    ext = first.get("extensions") if isinstance(first.get("extensions"), dict) else {}
    return first, ext


def _theirs(text: str) -> str:
    """The service's own words, quoted, when they say more than our message can (another language, numbers)."""
    return _(' (the service said: "{text}")').format(text=text)


def error_code(body: Any) -> str | None:
    """`errors[0].extensions.code` of an answer, if it has one."""
    return _first_error(body)[1].get("code")


def schema_mismatch(body: Any) -> str | None:
    """The message of a GraphQL answer saying the query asked for something the schema lacks, else None."""
    first, ext = _first_error(body)
    text = str(first.get("message") or "")
    code = ext.get("code") or _code_from_message(text)
    lowered = text.lower()
    if code == contract.GRAPHQL_VALIDATION_FAILED and any(m in lowered for m in contract.SCHEMA_MISMATCH_MESSAGES):
        return text
    return None


def _code_from_message(text: str) -> str:
    lowered = text.lower()
    return next((code for pattern, code in contract.CODE_BY_MESSAGE if pattern in lowered), "")


def from_response(status: int, body: Any, retry_after: float | None = None) -> DoitongError:
    """The typed error for an API answer, with a message that says what to do next."""
    first, ext = _first_error(body)
    text = str(first.get("message") or f"HTTP {status}")  # the service's own words, shown as it wrote them
    code = str(ext.get("code") or "")
    if not code and first:  # no code: read the message; an error answered with HTTP 200 takes the code's status
        code = _code_from_message(text)
        status = contract.HTTP_STATUS_OF_CODE.get(code, status) if status < 400 else status
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else DoitongError)
    if cls is InvalidRequestError:
        field = ext.get("field")
        said = _("the service refused the request: {text}").format(text=text)
        return InvalidRequestError(
            said + (_(" (field {field})").format(field=field) if field else ""),
            field=field,
            status=status,
        )
    if cls is AuthenticationError:
        from doitong_nb._core.env import ENV_API_KEY

        return AuthenticationError(
            _("the API key was refused ({text}); check {variable}").format(text=text, variable=ENV_API_KEY),
            status=status,
        )
    if cls is InsufficientCreditsError:
        need, have = ext.get("creditsRequired"), ext.get("creditsAvailable")
        if need is not None and have is not None:
            said = _("needs {need} credits, {have} left").format(need=need, have=have)
        else:
            said = _("too few credits")
        if need is None or have is None or not text.isascii():
            said += _theirs(text)
        return InsufficientCreditsError(
            _("{said}: top up or use a smaller size").format(said=said),
            credits_required=need,
            credits_available=have,
            status=status,
        )
    if cls is NotFoundError:
        return NotFoundError(_("not found: {text}").format(text=text), status=status)
    if cls is RateLimitError:
        wait = ext.get("retryAfter", retry_after)
        reset = ext.get("resetAt")
        advice = _(_RATE_ADVICE[code]) if code in _RATE_ADVICE else _("rate limit reached")
        when = _("; retry in {seconds:.1f} s").format(seconds=float(wait)) if isinstance(wait, (int, float)) else ""
        return RateLimitError(
            f"{advice}{'' if text.isascii() else _theirs(text)}{when}",
            code=code or contract.RATE_LIMITED,
            retry_after=float(wait) if isinstance(wait, (int, float)) else None,
            reset_at=float(reset) if isinstance(reset, (int, float)) else None,
            status=status,
        )
    if cls is ServerError:
        return ServerError(
            _("the service had an internal error (HTTP {status}): {text}; it is retried automatically").format(
                status=status, text=text
            ),
            status=status,
        )
    return DoitongError(_("unexpected answer (HTTP {status}): {text}").format(status=status, text=text), status=status)


_RATE_ADVICE = {
    contract.CONCURRENCY_LIMITED: N_("too many jobs running at once for this plan"),
    contract.DAILY_LIMIT_REACHED: N_("the plan's daily limit is reached"),
}


def has_error_shape(body: Any) -> bool:
    """Whether a body is an error as a service writes one (GraphQL's errors list, `{"error": ...}` or
    `{"detail": ...}`), as opposed to a proxy's page or nothing."""
    return isinstance(body, dict) and bool(body.get("errors") or body.get("error") or body.get("detail"))


def unclear_submission(reply: Reply) -> str | None:
    """Why an answer to a submission does not say whether a job was made, or None when it is clear: a refusal in
    the service's error shape (nothing made), or a whole answer. A 202, a 2xx whose body is cut short or empty, and
    a 5xx without the service's error shape (a proxy's) may all stand for an accepted, charged job."""
    if reply.status == 202:
        return (
            _("HTTP 202 Accepted with a Location")
            if reply.headers.get("Location")
            else _("HTTP 202 Accepted and no job")
        )
    if 200 <= reply.status < 300 and not isinstance(reply.body, dict):
        return _("HTTP {status} with a body cut short or empty ({size} bytes)").format(
            status=reply.status, size=len(reply.raw)
        )
    if reply.status >= 500 and not has_error_shape(reply.body):
        return _("HTTP {status} without the service's error body").format(status=reply.status)
    return None


_ID_IN_BODY = re.compile(rb'"(?:id|jobId|job_id)"\s*:\s*"([A-Za-z0-9_.:-]{1,200})"')


def job_id_in(reply: Reply) -> str | None:
    """The job an unclear answer names: the last path segment of its `Location`, or the first whole id in a body
    cut short (the mutations select `id` first)."""
    location = reply.headers.get("Location")
    if location:
        segment = unquote(urlsplit(location).path.rstrip("/").rpartition("/")[2])
        if re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", segment):
            return segment
    found = _ID_IN_BODY.search(reply.raw or b"")
    return found.group(1).decode() if found else None

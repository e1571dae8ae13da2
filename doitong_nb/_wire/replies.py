"""A service's answer as a typed error: GraphQL's `errors[0].extensions` and HTTP statuses mapped to the error
tree, with a message that says what to do next.
"""

from __future__ import annotations

from typing import Any

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
    """(errors[0], its extensions) of an error body, empty dicts where the body has none."""
    first: dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        first = body["errors"][0] if isinstance(body["errors"][0], dict) else {}
    ext = first.get("extensions") if isinstance(first.get("extensions"), dict) else {}
    return first, ext


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
    text = str(first.get("message") or f"HTTP {status}")
    code = str(ext.get("code") or "")
    if not code and first:  # no code: read the message; an error answered with HTTP 200 takes the code's status
        code = _code_from_message(text)
        status = contract.HTTP_STATUS_OF_CODE.get(code, status) if status < 400 else status
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else DoitongError)
    if cls is InvalidRequestError:
        field = ext.get("field")
        return InvalidRequestError(
            f"the service refused the request: {text}" + (f" (field {field})" if field else ""),
            field=field,
            status=status,
        )
    if cls is AuthenticationError:
        from doitong_nb._core.env import ENV_API_KEY

        return AuthenticationError(f"the API key was refused ({text}); check {ENV_API_KEY}", status=status)
    if cls is InsufficientCreditsError:
        need, have = ext.get("creditsRequired"), ext.get("creditsAvailable")
        return InsufficientCreditsError(
            f"needs {need} credits, {have} left: top up or use a smaller size",
            credits_required=need,
            credits_available=have,
            status=status,
        )
    if cls is NotFoundError:
        return NotFoundError(f"not found: {text}", status=status)
    if cls is RateLimitError:
        wait = ext.get("retryAfter", retry_after)
        reset = ext.get("resetAt")
        advice = {
            contract.CONCURRENCY_LIMITED: "too many jobs running at once for this plan",
            contract.DAILY_LIMIT_REACHED: "the plan's daily limit is reached",
        }.get(code, "rate limit reached")
        when = f"; retry in {float(wait):.1f} s" if isinstance(wait, (int, float)) else ""
        return RateLimitError(
            f"{advice}{when}",
            code=code or contract.RATE_LIMITED,
            retry_after=float(wait) if isinstance(wait, (int, float)) else None,
            reset_at=float(reset) if isinstance(reset, (int, float)) else None,
            status=status,
        )
    if cls is ServerError:
        return ServerError(
            f"the service had an internal error (HTTP {status}): {text}; it is retried automatically", status=status
        )
    return DoitongError(f"unexpected answer (HTTP {status}): {text}", status=status)

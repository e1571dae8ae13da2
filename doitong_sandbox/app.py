"""The two ASGI apps: the API host (GraphQL, REST, admin) and the CDN host (rendered outputs).

They only translate HTTP to engine calls and back, and apply the HTTP-level faults (5xx, fake 429,
slow answers, dropped connections, truncated downloads).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from doitong_nb import _contract as c
from doitong_sandbox import gql, validation
from doitong_sandbox.dialects import BLOB_PATH, RELATIVE_OUTPUT_PATH
from doitong_sandbox.engine import Account, Engine
from doitong_sandbox.errors import ApiError

MAX_BODY_BYTES = 1 << 20
logger = logging.getLogger(__name__)
Answer = tuple[int, dict[str, Any], dict[str, str]]
Handler = Callable[[Engine, Account, Request, bytes], Answer]


class _Dropped(Exception):
    """Raised after a partial body so the server closes the connection (an injected fault)."""


class _QuietDrops(logging.Filter):
    """Keeps uvicorn from logging a traceback for every connection we drop on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Dropped))


logging.getLogger("uvicorn.error").addFilter(_QuietDrops())


class _Cut:
    """A response that announces its full Content-Length, sends half the body, then drops the connection."""

    def __init__(self, response: Response) -> None:
        self.response = response

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytes(self.response.body)
        await send(
            {"type": "http.response.start", "status": self.response.status_code, "headers": self.response.raw_headers}
        )
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise _Dropped


def _seconds(value: str | None) -> float | None:
    """A Retry-After in seconds for the log; None when absent or an HTTP date (the `headers` dialect)."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _recording(
    app: ASGIApp,
    record: Callable[[Scope], dict[str, Any] | None],
    seconds: Callable[[str | None], float | None] = _seconds,
) -> ASGIApp:
    """Calls `record` as each request arrives; a dict it returns gets the answer's status and Retry-After
    (read by `seconds`, as the dialect wrote it)."""

    async def recorded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (entry := record(scope)) is None:
            await app(scope, receive, send)
            return

        async def answered(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", [])}
                entry.update(status=message["status"], retry_after=seconds(headers.get("retry-after")))
            await send(message)

        await app(scope, receive, answered)

    return recorded


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


async def _not_routed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = c.NOT_FOUND if exc.status_code == 404 else "METHOD_NOT_ALLOWED"
    return JSONResponse(
        ApiError(exc.status_code, code, f"{request.method} {request.url.path}: {exc.detail}").body(), exc.status_code
    )


# --- API host ------------------------------------------------------------------------------------
def _credential(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


async def _read_body(request: Request) -> bytes:
    """The body, or 413 past MAX_BODY_BYTES (the rest is drained so the connection stays usable)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size <= MAX_BODY_BYTES:
            chunks.append(chunk)
    if size > MAX_BODY_BYTES:
        raise ApiError(
            413, "PAYLOAD_TOO_LARGE", f"the request body has {size} bytes; allowed: at most {MAX_BODY_BYTES}"
        )
    return b"".join(chunks)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than the parser allows
        raise ApiError(400, "BAD_REQUEST", f"the request body is not valid JSON: {exc}") from None


async def _answer(
    engine: Engine, account: Account | None, request: Request, handler: Handler
) -> tuple[Response, bool, str | None]:
    """The response, whether the request reached `Engine.submit` (accepted or not), and the job an accepted
    submission answered with."""
    submitted, job_id = False, None
    try:
        if account is not None:
            account.stats["api_requests"] += 1
            engine.admit(account)
        body = await _read_body(request)
        if account is None:
            given = _credential(request) is not None
            raise ApiError(
                401, c.UNAUTHENTICATED, "invalid API key" if given else "missing API key (Authorization: Bearer <key>)"
            )
        before = account.stats["submissions"]  # the handler runs without awaiting: no other request interleaves
        account.last_submitted = None
        try:
            status, payload, headers = handler(engine, account, request, body)
            job_id = account.last_submitted
        finally:
            submitted = account.stats["submissions"] > before
    except ApiError as exc:
        status, payload, headers = exc.status, exc.body(), exc.headers
    except Exception:
        logger.exception("%s %s failed", request.method, request.url.path)
        status, payload, headers = 500, ApiError(500, c.INTERNAL, "internal server error").body(), {}
    if account is None:
        engine.unattributed["api_requests"] += 1
        return _respond(engine, payload, status, headers, handler is _graphql), submitted, None
    if status == 429:
        account.stats["rate_limited"] += 1
    response = _respond(engine, payload, status, {**headers, **engine.rate_headers(account)}, handler is _graphql)
    return response, submitted, job_id if 200 <= response.status_code < 300 else None


def _through_proxy(engine: Engine, request: Request, response: Response, job_id: str) -> Response:
    """An accepted submission's answer as a dialect's proxy passes it on: a 202 pointing at the job, or a body
    cut short (with a Content-Length that matches what is sent: the proxy believes it is whole)."""
    dialect = engine.dialect
    headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
    if dialect.submit_202:
        headers["Location"] = dialect.location(str(request.base_url), job_id)
        return Response(b"", 202, headers)
    cut = dialect.cut(bytes(response.body), job_id)
    if cut is None:
        return response
    return Response(cut, response.status_code, headers, media_type="application/json")


def _respond(engine: Engine, payload: Any, status: int, headers: dict[str, str], graphql: bool) -> JSONResponse:
    """The answer in the sandbox's dialect (the default dialect leaves it exactly as it is)."""
    if not engine.dialect.default:
        status, payload, headers = engine.dialect.answer(status, payload, headers, engine.clock(), graphql)
    return JSONResponse(payload, status, headers)


async def _hold(engine: Engine, seconds: float) -> None:
    """Keep an accepted submission's answer back (a slow_submit fault), visible as `held_submissions`."""
    engine.held_submissions += 1
    try:
        await asyncio.sleep(engine.scaled(seconds))
    finally:
        engine.held_submissions -= 1


def _api(engine: Engine, handler: Handler) -> Callable[[Request], Any]:
    async def endpoint(request: Request) -> Response | _Cut:
        account = engine.authenticate(_credential(request))
        faults = engine.faults
        rate = engine.rate_headers(account) if account else {}
        graphql = handler is _graphql
        if faults.fire("error_5xx"):
            status = faults.choice((500, 502, 503))
            error = ApiError(status, c.INTERNAL, f"internal server error (injected fault, HTTP {status})")
            return _respond(engine, error.body(), status, rate, graphql)
        if faults.fire("rate_limit_429"):
            error = engine.fake_rate_limit()
            if account:
                account.stats["rate_limited"] += 1
            return _respond(engine, error.body(), 429, {**error.headers, **rate}, graphql)
        replays = account.stats["idempotent_replays"] if account else 0
        response, submitted, job_id = await _answer(engine, account, request, handler)
        key = request.headers.get(c.HEADER_IDEMPOTENCY)
        if job_id is not None and key and engine.dialect.honours_idempotency:  # the key is honoured: say so
            response.headers[c.HEADER_IDEMPOTENCY] = key
            if account and account.stats["idempotent_replays"] > replays:
                response.headers[c.HEADER_IDEMPOTENT_REPLAYED] = "true"
        if job_id is not None and (
            engine.dialect.submit_202 or engine.dialect.submit_cut or engine.dialect.submit_truncate_at is not None
        ):
            response = _through_proxy(engine, request, response, job_id)
        if submitted and faults.fire("slow_submit"):
            await _hold(engine, faults.slow_seconds)
        if faults.fire("slow"):
            await asyncio.sleep(engine.scaled(faults.slow_seconds))
        return _Cut(response) if faults.fire("drop") else response

    return endpoint


def _graphql(engine: Engine, account: Account, request: Request, body: bytes) -> Answer:
    return gql.run(engine, account, _json(body), request.headers.get(c.HEADER_IDEMPOTENCY))


def _rest_submit(engine: Engine, account: Account, request: Request, body: bytes) -> Answer:
    spec = validation.from_image_input(_json(body))
    job = engine.submit(account, spec, request.headers.get(c.HEADER_IDEMPOTENCY))
    return 200, {"data": {engine.dialect.rest_submit_key: engine.dialect.rest(job)}}, {}


def _rest_job(engine: Engine, account: Account, request: Request, body: bytes) -> Answer:
    return 200, {"data": {"job": engine.dialect.rest(engine.job(account, request.path_params["id"]))}}, {}


def _rest_account(engine: Engine, account: Account, request: Request, body: bytes) -> Answer:
    return 200, {"data": {"account": engine.account(account)}}, {}


def _app(routes: list[Route]) -> Starlette:
    """JSON errors for unrouted requests, and no slash redirects: an API answers, it does not bounce."""
    app = Starlette(routes=routes, exception_handlers={HTTPException: _not_routed})
    app.router.redirect_slashes = False
    return app


def api_app(engine: Engine) -> ASGIApp:
    """GraphQL, REST and the unauthenticated /_sandbox admin endpoints."""
    gql.schema_for(engine)

    async def stats(request: Request) -> Response:
        return JSONResponse(engine.stats())

    async def keys(request: Request) -> Response:
        try:
            params = _json(await _read_body(request) or b"{}")
            if not isinstance(params, dict):
                raise ApiError(400, "BAD_REQUEST", "the request body must be a JSON object")
            account = engine.add_key(params.get("plan", "pro"), params.get("credits", 1000))
        except ApiError as exc:
            return JSONResponse(exc.body(), exc.status)
        return JSONResponse({"api_key": account.key, "webhook_secret": account.webhook_secret})

    routes = [
        Route(c.GRAPHQL_PATH, _api(engine, _graphql), methods=["POST"]),
        Route(c.REST_SUBMIT_PATH, _api(engine, _rest_submit), methods=["POST"]),
        Route(engine.dialect.rest_job_path, _api(engine, _rest_job), methods=["GET"]),
        Route(c.REST_ACCOUNT_PATH, _api(engine, _rest_account), methods=["GET"]),
        Route("/_sandbox/stats", stats, methods=["GET"]),
        Route("/_sandbox/keys", keys, methods=["POST"]),
    ]
    if engine.dialect.url_form == "path":  # outputs on the API host, as a CDN serves them (no key, no budget)
        routes.append(Route(RELATIVE_OUTPUT_PATH, _output(engine), methods=["GET"]))
    app = _app(routes)

    def record(scope: Scope) -> dict[str, Any] | None:
        if engine.dialect.url_form == "path" and scope["path"].startswith(RELATIVE_OUTPUT_PATH.partition("{")[0]):
            _record_cdn(engine, scope)  # a download, logged with the CDN's (whichever host served it)
            return None
        names = list(_headers(scope))
        has_auth = "authorization" in names or "x-api-key" in names
        entry = {"method": scope["method"], "path": scope["path"], "headers": names, "has_auth": has_auth}
        engine.api_request_log.append({**entry, "at": engine.clock(), "status": None, "retry_after": None})
        return engine.api_request_log[-1]

    return _recording(app, record, engine.dialect.retry_seconds)


# --- CDN host ------------------------------------------------------------------------------------
def _record_cdn(engine: Engine, scope: Scope) -> None:
    query = scope.get("query_string", b"").decode("latin-1")
    target = scope["path"] + (f"?{query}" if query else "")
    engine.cdn_requests.append({**_headers(scope), ":path": target})


def _output(engine: Engine) -> Callable[[Request], Any]:
    """The endpoint that serves a completed job's image (on the CDN host, or the API host's relative path)."""

    async def output(request: Request) -> Response | _Cut:
        job = engine.output(request.path_params["id"], request.path_params["ext"])
        if job is None:
            path = request.url.path
            return JSONResponse(ApiError(404, c.NOT_FOUND, f"{path} not found (unknown or unfinished job)").body(), 404)
        try:
            data = await engine.outputs.get(job)
        except Exception:
            logger.exception("rendering %s failed", job.id)
            return JSONResponse(ApiError(500, c.INTERNAL, "rendering failed").body(), 500)
        response = Response(data, media_type="image/png" if job.ext == "png" else "image/jpeg")
        if engine.faults.fire("truncate_cdn"):
            return _Cut(response)
        engine.served_sha256[job.id] = hashlib.sha256(data).hexdigest()
        return response

    return output


def cdn_app(engine: Engine) -> ASGIApp:
    """Serves `/outputs/{id}.{ext}` without auth; the image was rendered while its job ran (see outputs.py)."""
    output = _output(engine)

    async def redirected(request: Request) -> Response:
        """The cdn_redirect dialects: a completed job's output URL answers a redirect to where the bytes are."""
        job_id, ext = request.path_params["id"], request.path_params["ext"]
        if engine.output(job_id, ext) is None:
            path = request.url.path
            return JSONResponse(ApiError(404, c.NOT_FOUND, f"{path} not found (unknown or unfinished job)").body(), 404)
        location = BLOB_PATH.format(id=job_id, ext=ext)
        return Response(b"", engine.dialect.cdn_redirect or 302, {"Location": location})

    def record(scope: Scope) -> None:
        _record_cdn(engine, scope)

    async def stored(request: Request) -> Response | _Cut:
        """The signed-urls dialect's object storage: a signed, expiring URL, or 403 (as S3 answers)."""
        params = request.query_params
        verdict = engine.dialect.check(
            engine.storage_secret,
            request.url.path,
            params.get("expires", ""),
            params.get("signature", ""),
            engine.clock(),
        )
        if verdict != 200:
            engine.unattributed["cdn_requests"] += 1
            return Response(b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", 403)
        return await output(request)

    routes = [Route(c.CDN_OUTPUT_PATH, output, methods=["GET"])]
    if engine.dialect.cdn_redirect:
        routes = [Route(c.CDN_OUTPUT_PATH, redirected, methods=["GET"]), Route(BLOB_PATH, output, methods=["GET"])]
    if engine.dialect.signed_urls:
        routes = [Route("/storage/{id}.{ext}", stored, methods=["GET"])]  # outputs only behind signed URLs
    return _recording(_app(routes), record)

"""Webhooks: verify Doitong's signature, and a small loopback receiver that batches wait on.

The signature is an HMAC of the exact raw body (prefixed by the timestamp when the service sends
one, CONTRACT.md), so verification runs on the bytes received, before any JSON parsing, and
compares in constant time. Deliveries are retried by the service, so the receiver keeps the first
event of each job and ignores later copies.

The receiver speaks HTTP/1.1 and keeps each sender's connection open: a webhook then costs no new
connection and no new thread, only the read of its request, so it reaches its waiting flow in the time of
one wake-up even while the client's other threads keep the interpreter busy.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import secrets
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from doitong_nb import _contract as contract
from doitong_nb._core.errors import WebhookVerificationError
from doitong_nb._core.i18n import _
from doitong_nb._wire.webhooks import signature_form, verify_signature

MAX_BODY_BYTES = 1 << 20
DEFAULT_PATH = "/doitong/webhook"
_POLL_SECONDS = 0.05  # how soon stop() is heard (the default half second shows in every batch's run time)
_IDLE_SECONDS = 30.0  # a sender's kept-open connection that stays silent this long is closed


class WebhookReceiver:
    """A threaded HTTP server on loopback that verifies each call and records it by job id.

    `.future(job_id)` is the engine's completion source in webhook mode (resolved when the job's call
    comes, so a waiting flow wakes at once); `.url` is what the service is given. A GET on the URL
    answers with this receiver's token, so `reachable()` can tell that a (tunnelled) URL really leads
    here.
    """

    def __init__(
        self,
        secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = DEFAULT_PATH,
        tolerance: float = contract.WEBHOOK_TOLERANCE_SECONDS,
        strict: bool = False,
    ) -> None:
        self.secret, self.host, self.port, self.path = secret, host, port, path
        self.tolerance, self.strict = tolerance, strict
        self.token = secrets.token_hex(8)
        self.duplicates = self.rejected = 0
        self.signed_as: str | None = None  # how the last verified call was signed (`signature_form`)
        self._events: dict[str, dict[str, Any]] = {}
        self._waiters: dict[str, list[concurrent.futures.Future[dict[str, Any]]]] = {}
        self._seen: set[tuple[str, str | None, str]] = set()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()  # the senders' open connections (stop() closes them)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the webhook receiver is not started")
        return f"http://{self.host}:{self._server.server_address[1]}{self.path}"

    def start(self) -> WebhookReceiver:
        if self._server is None:
            self._server = ThreadingHTTPServer((self.host, self.port), _handler(self))
            self._server.daemon_threads = True
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                args=(_POLL_SECONDS,),
                name="doitong-webhooks",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close the senders' open connections (safe to call twice); recorded events stay
        readable."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            assert self._thread is not None
            self._thread.join()
            with self._lock:
                connections = list(self._connections)
            for connection in connections:  # a kept-open connection must not deliver to a stopped receiver
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The verified payload of `job_id`'s webhook, or None while none has come."""
        with self._lock:
            return self._events.get(job_id)

    def future(self, job_id: str) -> concurrent.futures.Future[dict[str, Any]]:
        """A future of `job_id`'s verified payload: resolved already if it came, else when it comes. The waiter
        may cancel it (it stopped waiting); the receiver then leaves it be."""
        future: concurrent.futures.Future[dict[str, Any]] = concurrent.futures.Future()
        with self._lock:
            payload = self._events.get(job_id)
            if payload is None:
                self._waiters.setdefault(job_id, []).append(future)
        if payload is not None:
            future.set_result(payload)
        return future

    @property
    def events(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return dict(self._events)

    def reachable(self, url: str | None = None, timeout: float = 2.0) -> bool:
        """True when a GET on `url` (default: our own) is answered by this receiver."""
        try:
            response = httpx.get(url or self.url, timeout=timeout, follow_redirects=False, trust_env=False)
        except httpx.HTTPError:
            return False
        return response.status_code == 200 and response.text.strip() == self.token

    def receive(self, body: bytes, signature: str | None, timestamp: str | None) -> int:
        """Verify and record one call; the HTTP status to answer (200, 401 refused, 409 replayed)."""
        try:
            verify_signature(
                body, signature, self.secret, timestamp=timestamp, tolerance=self.tolerance, strict=self.strict
            )
            payload = json.loads(body)
            job_id = payload["id"] if isinstance(payload, dict) else None
            if not isinstance(job_id, str):
                raise WebhookVerificationError(_("the payload carries no job id"))
        except (WebhookVerificationError, ValueError, KeyError):
            with self._lock:
                self.rejected += 1
            return 401
        with self._lock:
            seen = (job_id, timestamp, str(signature))
            if seen in self._seen:
                self.rejected += 1
                return 409
            self._seen.add(seen)
            self.signed_as = signature_form(signature, timestamp)
            if job_id in self._events:
                self.duplicates += 1
            else:
                self._events[job_id] = payload
            waiters = self._waiters.pop(job_id, [])
        for waiter in waiters:
            with contextlib.suppress(concurrent.futures.InvalidStateError):  # cancelled: it stopped waiting
                waiter.set_result(payload)
        return 200


def _handler(receiver: WebhookReceiver) -> Callable[..., BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # the sender keeps its connection: no connect and no thread per webhook
        timeout = _IDLE_SECONDS
        disable_nagle_algorithm = True  # the answer's headers and body leave at once, no delayed-ACK wait

        def setup(self) -> None:
            super().setup()
            with receiver._lock:
                receiver._connections.add(self.connection)

        def handle(self) -> None:
            with contextlib.suppress(ConnectionError):  # the sender went away, or stop() closed its connection
                super().handle()

        def finish(self) -> None:
            with receiver._lock:
                receiver._connections.discard(self.connection)
            super().finish()

        def do_POST(self) -> None:
            length = self.headers.get("Content-Length", "")
            if self.path != receiver.path or not length.isdigit() or int(length) > MAX_BODY_BYTES:
                self.close_connection = True  # its body is left unread: the connection cannot carry another call
                self._answer(404 if self.path != receiver.path else 413)
                return
            body = self.rfile.read(int(length))
            status = receiver.receive(
                body, self.headers.get(contract.HEADER_SIGNATURE), self.headers.get(contract.HEADER_TIMESTAMP)
            )
            self._answer(status)

        def do_GET(self) -> None:
            self._answer(200 if self.path == receiver.path else 404, receiver.token)

        def _answer(self, status: int, text: str = "") -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet: a notebook is no server log
            pass

    return Handler

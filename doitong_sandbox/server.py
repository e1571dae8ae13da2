"""`Sandbox`: the API and CDN servers on loopback, one event loop in a daemon thread, as a context manager.

In memory and fresh by default (what tests want); given `state_dir`, it keeps its state there (state.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from doitong_sandbox.app import api_app, cdn_app
from doitong_sandbox.dialects import Dialect
from doitong_sandbox.dialects import dialect as as_dialect
from doitong_sandbox.engine import Engine
from doitong_sandbox.faults import Faults
from doitong_sandbox.state import Endpoint, StateFile, claim, restore, snapshot

T = TypeVar("T")
_START_TIMEOUT = 10.0


class Sandbox:
    """A fake Doitong service: `base_url` speaks the API, `cdn_url` serves outputs, `api_key` is funded.

    `speed` divides every duration (generation, rate windows, backoff, Retry-After); inf means no waiting.
    With `state_dir` its jobs, keys and balances outlive it: a sandbox started later on the same folder goes on
    from them (`plan` still applies; `credits` and `api_key` only to a new state), and while one runs on the folder
    another's `start()` raises `state.StateInUse` naming it. `clock` is the service's time in Unix seconds (job
    progress, rate windows, timestamps): a test may pass one it moves itself.
    """

    def __init__(
        self,
        plan: str = "pro",
        credits: int = 1000,
        speed: float = 1.0,
        faults: Faults | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        cdn_port: int = 0,
        api_key: str | None = None,
        dialect: str | Dialect | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dialect = as_dialect(dialect)  # how this sandbox differs from CONTRACT.md (dialects.py)
        self.plan, self.credits, self.speed = plan, credits, speed
        self.host, self.port, self.cdn_port = host, port, cdn_port
        self._initial_faults = faults or Faults()
        self._requested_key = api_key
        self.state_dir = state_dir
        self.clock = clock
        self._store: StateFile | None = None
        self._engine: Engine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[uvicorn.Server] = []
        self.base_url = self.cdn_url = self.api_key = self.webhook_secret = ""

    def __repr__(self) -> str:
        state = f"base_url={self.base_url!r}, cdn_url={self.cdn_url!r}" if self._thread else "stopped"
        dialect = "" if self.dialect.default else f", dialect={self.dialect.name!r}"
        return f"Sandbox({state}, plan={self.plan!r}, speed={self.speed!r}{dialect})"

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> Sandbox:
        """Bind both ports and return once both servers accept connections."""
        if self._thread is not None:
            raise RuntimeError("this Sandbox is already running")
        if self.state_dir is None:
            return self._serve()
        with claim(self.state_dir) as store:
            self._store = store
            try:
                self._serve()
            except BaseException:
                self._store = None  # claim() lets it go
                raise
            self._call(self._save)  # a new state's key, before anyone is told it
            store.announce(
                Endpoint(self.base_url, self.cdn_url, os.getpid(), self.speed, self.api_key, self.webhook_secret)
            )
        return self

    def _serve(self) -> Sandbox:
        # a kept state's sandbox takes its last ports again when they are free: a client still holding the address of
        # a sandbox that died (another kernel's) goes on working with its successor
        last = (self._store.data or {}).get("ports", [0, 0]) if self._store else [0, 0]
        sockets = [_bind_again(self.host, self.port, last[0])]
        try:
            sockets.append(_bind_again(self.host, self.cdn_port, last[1]))
            self._prepare(sockets)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(sockets, ready, failure), name="doitong-sandbox", daemon=True
        )
        self._thread.start()
        if not ready.wait(_START_TIMEOUT) or failure:
            self.stop()
            raise RuntimeError(f"the sandbox did not start: {failure[0] if failure else 'timed out'}")
        return self

    def _prepare(self, sockets: list[socket.socket]) -> None:
        """The engine, the default key and both (not yet running) servers."""
        self.base_url, self.cdn_url = (_url(self.host, s.getsockname()[1]) for s in sockets)
        self._engine = Engine(
            speed=self.speed, cdn_url=self.cdn_url, faults=self._initial_faults, clock=self.clock, dialect=self.dialect
        )
        saved = self._store.data if self._store else None
        if saved is None:
            key = self._requested_key or "sbx_" + secrets.token_hex(16)
            account = self._engine.add_key(self.plan, self.credits, key)
        elif self._requested_key not in (None, saved["api_key"]):
            raise ValueError(f"the state in {self.state_dir} has a key of its own; reset it to use another")
        else:
            account = restore(self._engine, saved, self.plan)
        self.api_key, self.webhook_secret = account.key, account.webhook_secret
        config = dict(lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=1)
        apps = [api_app(self._engine), cdn_app(self._engine)]
        self._servers = [uvicorn.Server(uvicorn.Config(self._saving(app), **config)) for app in apps]

    def _saving(self, app: ASGIApp) -> ASGIApp:
        """`app`, saving the state (if kept) before each answer starts, so what a client was told survives a crash,
        and after it ends."""
        if self._store is None:
            return app

        async def saving(scope: Scope, receive: Receive, send: Send) -> None:
            async def sent(message: dict[str, object]) -> None:
                if message["type"] == "http.response.start":
                    self._save()
                await send(message)

            try:
                await app(scope, receive, sent)
            finally:
                self._save()

        return saving

    def _save(self) -> None:
        if self._store is not None and self._engine is not None:
            ports = [int(url.rpartition(":")[2]) for url in (self.base_url, self.cdn_url)]
            self._store.save({**snapshot(self._engine, self.api_key), "ports": ports})

    def _run(self, sockets: list[socket.socket], ready: threading.Event, failure: list[BaseException]) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            assert self._engine is not None
            self._engine.finish_restored()
            tasks = [
                asyncio.create_task(server.serve(sockets=[sock]))
                for server, sock in zip(self._servers, sockets, strict=True)
            ]
            try:
                while not all(server.started for server in self._servers):
                    done = [t for t in tasks if t.done()]
                    if done:
                        raise RuntimeError(f"server exited during startup: {done[0].exception()!r}")
                    await asyncio.sleep(0.002)
                ready.set()
                await asyncio.gather(*tasks)
            finally:
                assert self._engine is not None
                await self._engine.aclose()

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to start(); nothing else can see this thread
            failure.append(exc)
        finally:
            for sock in sockets:
                sock.close()
            ready.set()

    def stop(self) -> None:
        """Stop both servers, close the ports and join the thread (safe to call twice)."""
        thread = self._thread
        if thread is None:
            return
        for server in self._servers:
            server.should_exit = True  # uvicorn polls this flag; its own signal handler sets it the same way
        thread.join()
        self._thread = self._loop = None
        if self._store is not None:
            self._save()
            self._store.close()
            self._store = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- keys, faults, observation ----------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        return self._engine.faults if self._engine else self._initial_faults

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._initial_faults = value
        if self._engine is not None:
            self._engine.faults = value

    def add_key(self, plan: str = "pro", credits: int = 1000) -> str:
        """A new funded API key with its own webhook secret."""
        key = self._call(lambda: self._live().add_key(plan, credits).key)
        self._call(self._save)
        return key

    def webhook_secret_for(self, key: str) -> str:
        return self._call(lambda: self._live().accounts[key].webhook_secret)

    def stats(self, api_key: str | None = None) -> dict[str, Any]:
        """`{"total": {...}, "keys": {key: {...}}, "faults": {kind: fired}}`, or one key's counters given `api_key`."""
        stats = self._call(lambda: self._live().stats())
        return stats if api_key is None else stats["keys"][api_key]

    @property
    def cdn_requests(self) -> list[dict[str, str]]:
        """The headers of every CDN request, verbatim, and its request target (path and query) as `:path`."""
        return self._call(lambda: list(self._live().cdn_requests))

    @property
    def served_sha256(self) -> dict[str, str]:
        """Job id -> sha256 of the image bytes the CDN last served whole (a truncated answer is not counted)."""
        return self._call(lambda: dict(self._live().served_sha256))

    @property
    def webhook_log(self) -> list[dict[str, Any]]:
        """Every webhook attempt: job_id, url, attempt, status, error, skipped, headers, body."""
        return self._call(lambda: list(self._live().webhooks.log))

    @property
    def api_request_log(self) -> list[dict[str, Any]]:
        """Every API-host request: method, path, header names (no values), has_auth, and the server's times:
        `at` (Unix seconds it arrived), `status` and `retry_after` (seconds, or None) of its answer."""
        return self._call(lambda: list(self._live().api_request_log))

    # --- test hooks: the order of events made explicit, never left to speed ------------------------
    @contextlib.contextmanager
    def jobs_held(self) -> Iterator[None]:
        """Jobs submitted inside the block stay unfinished (uncharged, no webhook) until it ends, however fast the
        sandbox; then each finishes at its own time, or at once if that has passed."""
        self._call(self._live().hold)
        try:
            yield
        finally:
            self._call(self._live().release)

    def wait_for_webhooks(self, timeout: float = 60.0) -> None:
        """Return once every webhook delivery started so far has ended: delivered, or given up after its retries."""
        loop = self._loop
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._live().webhooks.drain(), loop).result(timeout)

    def _live(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the sandbox has not been started")
        return self._engine

    def _call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's loop, where the engine's state lives."""
        loop = self._loop
        if loop is None or loop.is_closed() or self._thread is None:
            return fn()

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(_START_TIMEOUT)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off only on sockets that
    # say they are TCP, and with it on every keep-alive answer waits ~40 ms for a delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _bind_again(host: str, port: int, last: int) -> socket.socket:
    """`last` (the port a kept state's sandbox had) when `port` is 0 (any) and `last` is free, else `port`."""
    if last and not port:
        with contextlib.suppress(OSError):
            return _bind(host, last)
    return _bind(host, port)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

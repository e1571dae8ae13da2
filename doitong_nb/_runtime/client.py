"""Flux and AsyncFlux: the Python face of the engine, over httpx.

One driver carries out the engine's flows (_engine/engine.py): AsyncFlux, on the caller's event loop. Flux is the
same driver on a loop thread of its own, so sync and async users, batches, grids and the panel all run on
one runtime. API calls never follow redirects (a custom auth header would follow them to another host);
downloads go through a second client that holds no credentials at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import json
import os
import re
import ssl
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from doitong_nb._core import i18n
from doitong_nb._core.errors import DoitongError, DownloadError, UnsafeResponseError
from doitong_nb._core.request import GenerationRequest, as_request
from doitong_nb._core.result import ImageResult, Job
from doitong_nb._core.settings import HTTP_TIMEOUT, Settings
from doitong_nb._core.steps import (
    ConnectFailed,
    Fetch,
    Fetched,
    Flow,
    HttpCall,
    Listener,
    Progress,
    Reply,
    Send,
    Sleep,
    Step,
    WaitFor,
    Work,
)
from doitong_nb._engine.engine import Engine, Quote
from doitong_nb._runtime.batch import BatchOptions, BatchResult, BatchStats, run_async
from doitong_nb._runtime.sandbox import connect
from doitong_nb._runtime.settings import resolve
from doitong_nb._version import __version__
from doitong_nb._wire import Account, StatusQuery

if TYPE_CHECKING:
    from doitong_nb._runtime.webhooks import WebhookReceiver

_CHUNK = 1 << 16
T = TypeVar("T")
C = TypeVar("C", bound="_Base")


def _reply(response: httpx.Response) -> Reply:
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    return Reply(response.status_code, response.headers, body, response.content)


def _content_length(response: httpx.Response, max_bytes: int) -> int | None:
    value = response.headers.get("Content-Length")
    length = int(value) if value is not None and value.isdigit() else None
    if length is not None and length > max_bytes:
        raise DownloadError(
            i18n._("the output announces {length} bytes, more than the {limit} allowed").format(
                length=length, limit=max_bytes
            )
        )
    return length


def _write_chunk(handle: Any, chunk: bytes, written: int, max_bytes: int) -> int:
    written += len(chunk)
    if written > max_bytes:
        raise DownloadError(i18n._("the output is larger than the {limit} bytes allowed").format(limit=max_bytes))
    handle.write(chunk)
    return written


class _Base:
    """What Flux and AsyncFlux share: settings, the engine, and the public read-outs."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        transport: str | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        *,
        mutation: str | None = None,
        replay: bool | None = None,
        max_credits: int | None = None,
        http_transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        plan: str | None = None,
        status_query: str | None = None,
        statuses: str | None = None,
        on_missing: str | None = None,
        language: str | None = None,
    ) -> None:
        """An argument left None comes from the environment, else its default (the README's Settings); `transport`
        is the wire format ("graphql" or "rest"); `http_transport` an httpx transport for both the API and the
        CDN (e.g. `httpx.MockTransport(handler)` in your own tests)."""
        settings = resolve(
            api_key=api_key,
            base_url=base_url,
            transport=transport,
            output_dir=output_dir,
            timeout=timeout,
            mutation=mutation,
            replay=replay,
            max_credits=max_credits,
            plan=plan,
            status_query=status_query,
            statuses=statuses,
            on_missing=on_missing,
            language=language,
        )
        if language is not None or not i18n.chosen():  # the process's messages (a notebook: until a source changes)
            i18n.use(settings.language)
        self._start(settings, http_transport)

    @classmethod
    def _of(cls: type[C], settings: Settings) -> C:
        """A client on settings resolved elsewhere (the magics', with `%config Flux.*`)."""
        client = cls.__new__(cls)
        client._start(settings, None)
        return client

    def _start(self, settings: Settings, http_transport: Any) -> None:
        settings = connect(settings)
        self.engine = Engine(
            settings, mutation=settings.mutation, replay=settings.replay, max_credits=settings.max_credits
        )
        self.engine.on_missing = settings.on_missing
        if settings.plan is not None:  # a service that sends no X-RateLimit-* headers is paced at the plan named
            self.engine.use_plan(settings.plan)
        if settings.status_query is not None:  # a status query that is not `job(id:)` and cannot be discovered
            self.engine.use_status_query(settings.status_query)
        self._headers = {"User-Agent": f"doitong-nb/{__version__}"}
        self._api, self._cdn = self._clients(http_transport)

    def _adopt(self, settings: Settings) -> None:
        """Take the `live` options of `settings` (replay, budget, timeout, sizes), which need no new connection:
        a `%config` change reaches the next cell without closing this client and its background jobs. Its other
        settings (`Settings.service()`) are this client's."""
        self.engine.settings = connect(settings)
        self.engine.replay, self.engine.max_credits = settings.replay, settings.max_credits
        self.engine.on_missing = settings.on_missing

    def _clients(self, http_transport: Any) -> tuple[Any, Any]:
        """The API's client and the CDN's; the CDN's carries no credentials, ever (the output host is not the API's)."""
        raise NotImplementedError

    @property
    def settings(self) -> Settings:
        return self.engine.settings

    @property
    def store(self) -> Any:
        return self.engine.store

    @property
    def session_credits(self) -> int:
        """Credits spent by this client in this session (refunds deducted)."""
        return self.engine.session_credits

    @property
    def balance(self) -> int | None:
        """The account's credits as last heard (an account query, less what this session spent since); None
        until the service has said."""
        return self.engine.balance

    @property
    def plan(self) -> str | None:
        """The plan's name, from the account or the rate headers; None until the service has said."""
        return self.engine.plan

    # --- what the faces use: the engine's rules, flows and events, never its state --------------------
    def quote(
        self,
        requests: Sequence[GenerationRequest | tuple[GenerationRequest, int]],
        *,
        refresh: bool = False,
        max_credits: int | None = None,
        spent: int | None = None,
        budget_name: str = "max_credits",
    ) -> Quote:
        """What these images would cost now (stored ones and paid repeats at 0) and the budget's verdict: the one
        quote behind `--dry-run`, the cell's gate, the panel's and a grid's. Sends nothing."""
        return self.engine.quote(
            requests, refresh=refresh, max_credits=max_credits, spent=spent, budget_name=budget_name
        )

    def admit(self, quote: Quote) -> None:
        """Raise the quote's refusal (a BudgetExceededError that says what to change), before anything is sent."""
        self.engine.admit(quote)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hear every engine `Event` (submitted, status, completed, failed, charged, refused) until the returned
        function is called; the listener runs on the loop thread and must be quick."""
        return self.engine.subscribe(listener)

    def generation(
        self,
        request: GenerationRequest,
        *,
        variant: int = 0,
        refresh: bool = False,
        progress: Progress | None = None,
        transport: str | None = None,
        timeout: float | None = None,
    ) -> Flow[ImageResult]:
        """One image's flow, to `run` or `start` on this client: a face's way to show its own progress."""
        via = self.engine.transport_named(transport)
        return self.engine.generate(
            request, variant=variant, refresh=refresh, progress=progress, via=via, timeout=timeout
        )

    def unfinished_job(self, request: GenerationRequest, variant: int = 0) -> str | None:
        """The id of this request's job that was sent and not yet delivered (the journal's), if the service named
        one."""
        entry = self.engine.unfinished(request.key(variant))
        return entry.job_id if entry is not None else None

    def unfinished_submission(self, request: GenerationRequest, variant: int = 0) -> str | None:
        """The idempotency key of this request's journaled, unfinished submission (with or without a job id yet)."""
        entry = self.engine.unfinished(request.key(variant))
        return entry.idempotency_key if entry is not None else None

    def predicted_seconds(self, request: GenerationRequest) -> float | None:
        """How long this image should take, from this session's jobs; None before the first one."""
        return self.engine.durations.predict(request.width * request.height)

    def submissions(self, requests: Sequence[GenerationRequest], transport: str | None = None) -> list[HttpCall]:
        """The HTTP calls that would submit these requests (`--dry-run` shows them); sends nothing."""
        via = self.engine.transport_named(transport)
        return [via.submit(request) for request in requests]

    def auth_header_names(self, transport: str | None = None) -> list[str]:
        """The names of the headers that carry the key (a dry run shows them with a placeholder, never the key)."""
        return list(self.engine.transport_named(transport).auth_headers(""))

    def status_call(self, job_id: str) -> HttpCall:
        """The HTTP call that reads one job, in the query this client uses (the contract's, named or discovered)."""
        return self.engine.transport.status(job_id)

    @property
    def status_query(self) -> tuple[StatusQuery | None, bool]:
        """(the GraphQL status query in use, None for the contract's; whether the user named it)."""
        return self.engine.status_query, self.engine.status_query_named

    def carry_tally(self, previous: _Base) -> None:
        """Go on counting from `previous` (a client of the same account the settings replaced): the session's
        credits and the balance as last heard."""
        self.engine.session_credits = previous.session_credits
        self.engine.balance = previous.balance

    def discovered(self) -> dict[str, Any]:
        """What this client's folder has learned about its service (status query, webhook form, submission cost)."""
        return dict(self.engine.discovery.get(self.settings.origin))

    def __repr__(self) -> str:
        s = self.settings
        where = "sandbox" if s.sandbox else s.base_url
        return f"<{type(self).__name__} {where} transport={s.transport} output_dir={str(s.output_dir)!r} api_key=<set>>"

    def _deadline(self) -> float:
        return time.monotonic() + self.settings.timeout

    def jobs(self) -> list[PendingJob]:
        """Paid jobs this client's service has not delivered yet (stopped waiting, crash, Ctrl-C, a status or
        URL the client could not read): the journal keeps them; `resume(job_id)` fetches one at no new cost."""
        return [PendingJob.of(entry) for entry in self.engine.pending()]


@dataclass(frozen=True)
class PendingJob:
    """One journal entry still waiting for its image."""

    job_id: str | None  # None: no answer named a job (it may exist: `resume(key, resend=True)` sends it again)
    prompt: str
    size: str
    seed: int | None
    submitted_at: str
    state: str
    idempotency_key: str
    note: str | None = None  # why it is unfinished, when the journal knows (e.g. "answer unclear: may be charged")

    @classmethod
    def of(cls, entry: Any) -> PendingJob:
        request = entry.request
        when = datetime.fromtimestamp(entry.created_at, timezone.utc).isoformat(timespec="seconds")
        size = f"{request.get('width')}x{request.get('height')}"
        return cls(
            entry.job_id,
            str(request.get("prompt", "")),
            size,
            request.get("seed"),
            when,
            entry.state,
            entry.idempotency_key,
            entry.error,
        )

    def __str__(self) -> str:
        prompt = self.prompt if len(self.prompt) <= 48 else self.prompt[:47] + "…"
        line = f"{self.job_id or self.idempotency_key}  {self.submitted_at}  {self.size}  {prompt!r}"
        if self.job_id is None:  # no answer named a job: it may exist, and only the user's word sends it again
            why = i18n._(self.note) if self.note else i18n._("no answer kept")  # the journal keeps the English
            said = i18n._("(no job id: {why}; `%flux_resume {key} --resend`)")
            line += "  " + said.format(why=why, key=self.idempotency_key)
        return line


def _connect_failed(exc: httpx.ConnectError) -> ConnectFailed:
    """The driver's word for "no connection": the reason without the library's wording around it, and its errno
    (the error's name where the reason cannot be shown in the user's language)."""
    number = re.match(r"^\[Errno (-?\d+)\] ", str(exc))
    reason = str(exc)[number.end() if number else 0 :] or type(exc).__name__
    reason = reason[:1].lower() + reason[1:]
    return ConnectFailed(int(number[1]), reason) if number else ConnectFailed(reason)


def _for_the_flow(step: Step, exc: Exception) -> bool:
    """Whether a step's failure is thrown into its flow, which handles it (a retry, or a clear error):
    any failure of a Work step, and the I/O failures of an HTTP step; anything else is a bug."""
    handled = (httpx.TransportError, DownloadError, UnsafeResponseError, OSError)
    return isinstance(step, Work) or isinstance(exc, handled)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: making one reads the CA bundle (~40 ms), and every client needs it."""
    return httpx.create_ssl_context()


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """Run `loop` until it is stopped. A KeyboardInterrupt raised inside a flow (a progress callback's way
    to stop a batch) escapes asyncio's run_forever after its task has recorded it: keep serving, so that
    the task's caller receives it and the other flows wind down."""
    while True:
        try:
            loop.run_forever()
            return
        except (KeyboardInterrupt, SystemExit):
            continue


class _LoopThread:
    """The sync face's runtime: one asyncio loop in a daemon thread, started on first use.

    Every blocking call (generate, batch, -n grids, the panel's jobs) runs its flows as coroutines on this
    loop, so sleeps and downloads overlap whatever thread asked, a running Jupyter loop is never touched
    (no nest_asyncio), and Ctrl-C in the caller cancels the waiting, never a paid job (it stays journaled).
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _running(self) -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=_serve, args=(loop,), name="doitong-nb-loop", daemon=True)
                self._thread.start()
                self._loop = loop
            return self._loop, self._thread

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `coroutine` on the loop; the future can be waited on (or cancelled) from any thread."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._running()[0])

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` to its end; Ctrl-C cancels it and waits until it has cleaned up, then re-raises."""
        ended = threading.Event()

        async def tracked() -> T:
            try:
                return await coroutine
            finally:
                ended.set()

        loop, thread = self._running()
        future = asyncio.run_coroutine_threadsafe(tracked(), loop)
        try:
            while True:  # short waits: the caller's thread stays responsive to Ctrl-C everywhere
                with contextlib.suppress(concurrent.futures.TimeoutError):
                    return future.result(timeout=0.1)
                if not thread.is_alive():  # closed from another thread before this call could finish
                    future.cancel()
                    raise DoitongError(
                        i18n._("the client was closed while this call ran; a paid job stays in the journal")
                    )
        except KeyboardInterrupt:  # Ctrl-C here, or raised by a flow's callback on the loop
            future.cancel()
            ended.wait(5)
            raise

    def close(self) -> None:
        """Cancel what still runs on the loop (its callers hear CancelledError, never hang), stop it, end the thread."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is None or thread is None:
            return
        if thread is threading.current_thread():  # closed from a flow's own callback: just stop
            loop.call_soon(loop.stop)
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_cancel_the_rest(), loop).result(timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        if not thread.is_alive():
            loop.close()


async def _settled(step: WaitFor) -> Any:
    """The future's result once it is resolved, or None when `step.seconds` pass first (the future is then
    cancelled: whoever resolves it must allow for that).

    The flow wakes in as few turns of the loop as there can be (each turn may wait for the interpreter while
    other threads store images): one when the loop's own thread resolves the future (a batch's slot freed),
    two from another thread (the webhook receiver's), and none when it is resolved already."""
    future = step.future
    if future.done():
        return future.result()
    loop = asyncio.get_running_loop()
    woken = loop.create_future()
    home = threading.get_ident()

    def wake(_: object = None) -> None:
        if not woken.done():
            woken.set_result(None)

    def resolved(_: concurrent.futures.Future[Any]) -> None:  # on the thread that resolved it
        if threading.get_ident() == home:
            wake()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(wake)

    future.add_done_callback(resolved)
    timer = loop.call_later(step.seconds, wake)
    try:
        await woken
    finally:
        timer.cancel()
        future.cancel()  # a no-op once resolved; else the waiting ended (deadline, or the flow was cancelled)
    return None if future.cancelled() else future.result()


async def _cancel_the_rest() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=4)


class Flux(_Base):
    """Blocking client: `Flux().generate("a prompt", size="2048x2048", seed=7)`.

    A facade over AsyncFlux: the same engine, run on the client's own loop thread (see `_LoopThread`).
    """

    def _clients(self, http_transport: Any) -> tuple[Any, Any]:
        self._runtime = _LoopThread()
        weakref.finalize(self, self._runtime.close)  # a client dropped without close() ends its thread too
        self._async = AsyncFlux._sharing(self.engine, self._headers, http_transport)
        return self._async._api, self._async._cdn

    def run(self, flow: Flow[Any]) -> Any:
        """Carry out one flow to its end."""
        return self._runtime.run(self._async.run(flow))

    def run_many(self, flows: Iterable[Flow[Any]], *, return_exceptions: bool = False) -> list[Any]:
        """Carry out several flows at once: their sleeps, requests and downloads overlap."""
        return self._runtime.run(self._async.run_many(flows, return_exceptions=return_exceptions))

    def start(self, flow: Flow[T]) -> concurrent.futures.Future[T]:
        """Start a flow and return at once: the panel's and background cells' way (same runtime, same budget)."""
        return self._runtime.submit(self._async.run(flow))

    def generate(
        self,
        prompt: str | GenerationRequest,
        *,
        refresh: bool = False,
        progress: Progress | None = None,
        **options: Any,
    ) -> ImageResult:
        """One image: replayed from the store when this exact request was made before, else generated."""
        request = as_request(prompt, options)
        return self.run(self.engine.generate(request, refresh=refresh, progress=progress))

    def grid(self, prompt: str, *, refresh: bool = False, **options: Any) -> Any:
        """A sweep as a labelled grid: `flux.grid("a fox", seed=[1, 2, 3], aspect_ratio=["1:1", "16:9"])`.

        Options given as lists are the axes (rows, then columns); the cost is printed before sending (_runtime/grid.py).
        """
        from doitong_nb._runtime.grid import sweep

        return sweep(self, prompt, refresh=refresh, **options)

    def generate_many(self, prompts: Sequence[str | GenerationRequest], **keywords: Any) -> BatchResult:
        """Many images at once, paced at the plan's limits (its job slots and requests a minute, so the free plan
        meets no "too many jobs" refusal); outcomes in input order, each failure in its place.

        `options` apply to every prompt (`size="512x512"`, `seed=3`); a GenerationRequest keeps its own. See
        doitong_nb._runtime.batch: `max_credits` refuses items that would cross it before sending them, a re-run resumes
        submitted jobs and skips finished ones, `webhook_url=True` (or a URL with its `receiver=`) waits for signed
        webhooks instead of reading job status. `transport` ("graphql" or "rest") and `timeout` (seconds to wait
        for each job) override the client's for these images. `progress` is a bar, a callback of the batch's
        stats, or False; `item_progress(i)` gives input i's own status callback, `item_done(i, outcome)` is called
        as each input's image (or error) is ready.
        """
        return self._runtime.run(self._async.generate_many(prompts, **keywords))

    batch = generate_many  # the earlier name

    def submit(self, prompt: str | GenerationRequest, *, idempotency_key: str | None = None, **options: Any) -> Job:
        """Submit without waiting (no store, no journal): the low-level call."""
        request = as_request(prompt, options)
        self.engine.admit(request.estimated_credits)
        return self.run(self.engine.submit(request, idempotency_key or str(uuid.uuid4()), self._deadline()))

    def status(self, job_id: str) -> Job:
        return self.run(self.engine.status(job_id, self._deadline()))

    def account(self) -> Account:
        """Plan and credit balance (one API request)."""
        return self.run(self.engine.account())

    def resume(self, job_id: str, *, progress: Progress | None = None, resend: bool = False) -> ImageResult:
        """Fetch a pending job (`jobs()` lists them) and store it under its original request: no new charge.
        `resend=True` sends a submission whose answer was unclear again, with its key (it may charge again)."""
        return self.run(self.engine.resume(job_id, progress=progress, resend=resend))

    def resume_all(self) -> list[ImageResult | DoitongError]:
        """Every pending job, each outcome in its place (an error where one still cannot be finished)."""
        ids = [p.job_id or p.idempotency_key for p in self.jobs()]
        return self.run_many([self.engine.resume(i) for i in ids], return_exceptions=True)

    def close(self) -> None:
        """Close the connections, the loop thread and the journal's files (a long-lived kernel must not
        collect descriptors or threads)."""
        self._runtime.run(self._async.aclose())
        self._runtime.close()

    def __enter__(self) -> Flux:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncFlux(_Base):
    """The same client as coroutines: `await AsyncFlux().generate(...)`."""

    def _clients(self, http_transport: Any) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
        api = httpx.AsyncClient(
            base_url=self.settings.base_url,
            timeout=HTTP_TIMEOUT,
            follow_redirects=False,
            headers=self._headers,
            verify=_tls(),
            transport=http_transport,
        )
        cdn_transport = http_transport
        if cdn_transport is None:  # a real network: connect only to addresses the output URL policy allows
            from doitong_nb._runtime.pinned import PinnedTransport

            cdn_transport = PinnedTransport(self.settings.base_url, httpx.AsyncHTTPTransport(verify=_tls()))
        cdn = httpx.AsyncClient(
            timeout=HTTP_TIMEOUT,
            follow_redirects=True,
            headers=self._headers,
            verify=_tls(),
            transport=cdn_transport,
        )
        return api, cdn

    @classmethod
    def _sharing(cls, engine: Engine, headers: dict[str, str], http_transport: Any) -> AsyncFlux:
        """The driver behind a Flux: the Flux's own engine (one budget, journal and credit count)."""
        driver = cls.__new__(cls)
        driver.engine, driver._headers = engine, headers
        driver._api, driver._cdn = driver._clients(http_transport)
        return driver

    async def run_many(self, flows: Iterable[Flow[Any]], *, return_exceptions: bool = False) -> list[Any]:
        """Carry out several flows at once on the running event loop, results in their order."""
        return list(await asyncio.gather(*(self.run(f) for f in flows), return_exceptions=return_exceptions))

    async def run(self, flow: Flow[Any]) -> Any:
        """Carry out one flow to its end on the running event loop."""
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                try:
                    step = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    return stop.value
                value, error = None, None
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    continue
                if isinstance(step, WaitFor):
                    value = await _settled(step)
                    continue
                try:
                    value = await (asyncio.to_thread(step.fn) if isinstance(step, Work) else self._execute(step))
                except Exception as exc:
                    if not _for_the_flow(step, exc):
                        raise
                    error = exc
        finally:
            flow.close()

    async def _execute(self, step: Step) -> Any:
        if isinstance(step, Send):
            try:
                response = await self._api.request(
                    step.call.method, step.call.path, json=step.call.json, headers=step.headers
                )
            except httpx.ConnectError as exc:
                raise _connect_failed(exc) from exc
            return _reply(response)
        assert isinstance(step, Fetch)
        async with self._cdn.stream("GET", step.url, headers={"Accept-Encoding": "identity"}) as response:
            length = _content_length(response, step.max_bytes)
            written = 0
            if response.status_code == 200:
                with open(step.dest, "wb") as handle:
                    async for chunk in response.aiter_raw(_CHUNK):
                        written = _write_chunk(handle, chunk, written, step.max_bytes)
            return Fetched(response.status_code, length, written)

    async def generate(
        self,
        prompt: str | GenerationRequest,
        *,
        refresh: bool = False,
        progress: Progress | None = None,
        **options: Any,
    ) -> ImageResult:
        """One image: replayed from the store when this exact request was made before, else generated."""
        request = as_request(prompt, options)
        return await self.run(self.engine.generate(request, refresh=refresh, progress=progress))

    async def generate_many(
        self,
        prompts: Sequence[str | GenerationRequest],
        *,
        max_credits: int | None = None,
        refresh: bool = False,
        progress: bool | Callable[[BatchStats], None] = True,
        webhook_url: str | bool | None = None,
        webhook_secret: str | None = None,
        receiver: WebhookReceiver | None = None,
        transport: str | None = None,
        timeout: float | None = None,
        item_progress: Callable[[int], Progress] | None = None,
        item_done: Callable[[int, ImageResult | DoitongError], None] | None = None,
        **options: Any,
    ) -> BatchResult:
        """Many images at once on the running loop, paced at the plan's limits; `Flux.generate_many` says more."""
        how = BatchOptions.of(locals())
        return await run_async(self.engine, self.run, prompts, options, how)

    batch = generate_many  # the earlier name

    async def submit(
        self, prompt: str | GenerationRequest, *, idempotency_key: str | None = None, **options: Any
    ) -> Job:
        request = as_request(prompt, options)
        self.engine.admit(request.estimated_credits)
        return await self.run(self.engine.submit(request, idempotency_key or str(uuid.uuid4()), self._deadline()))

    async def status(self, job_id: str) -> Job:
        return await self.run(self.engine.status(job_id, self._deadline()))

    async def account(self) -> Account:
        return await self.run(self.engine.account())

    async def resume(self, job_id: str, *, progress: Progress | None = None, resend: bool = False) -> ImageResult:
        """Fetch a pending job (`jobs()` lists them) and store it under its original request: no new charge.
        `resend=True` sends a submission whose answer was unclear again, with its key (it may charge again)."""
        return await self.run(self.engine.resume(job_id, progress=progress, resend=resend))

    async def resume_all(self) -> list[ImageResult | BaseException]:
        ids = [p.job_id or p.idempotency_key for p in self.jobs()]
        return await asyncio.gather(*(self.resume(i) for i in ids), return_exceptions=True)

    async def aclose(self) -> None:
        await self._api.aclose()
        await self._cdn.aclose()
        self.store.close()

    async def __aenter__(self) -> AsyncFlux:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# The sync face takes the async face's keywords, spelled once there: help() and Jupyter's tooltips show them.
Flux.generate_many.__signature__ = inspect.signature(AsyncFlux.generate_many)  # type: ignore[attr-defined]

__all__ = ["AsyncFlux", "Flux", "PendingJob"]

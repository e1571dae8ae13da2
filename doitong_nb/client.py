"""Flux and AsyncFlux: the Python face of the engine, over httpx.

Both run the engine's flows (engine.py); they differ only in how a step is carried out. API calls
never follow redirects (a custom auth header would follow them to another host); downloads go
through a second client that holds no credentials at all.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import json
import os
import re
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import httpx

from .config import HTTP_TIMEOUT, resolve
from .engine import ConnectFailed, Engine, Fetch, Fetched, Flow, Progress, Reply, Send, Sleep, Step, Work
from .errors import DoitongError, DownloadError
from .request import GenerationRequest, as_request
from .result import ImageResult, Job
from .transport import Account

if TYPE_CHECKING:
    from .batch import BatchResult, BatchStats
    from .webhooks import WebhookReceiver

_CHUNK = 1 << 16


def _reply(response: httpx.Response) -> Reply:
    try:
        body = json.loads(response.content) if response.content else None
    except ValueError:
        body = None
    return Reply(response.status_code, response.headers, body)


def _content_length(response: httpx.Response, max_bytes: int) -> int | None:
    value = response.headers.get("Content-Length")
    length = int(value) if value is not None and value.isdigit() else None
    if length is not None and length > max_bytes:
        raise DownloadError(f"the output announces {length} bytes, more than the {max_bytes} allowed")
    return length


def _write_chunk(handle: Any, chunk: bytes, written: int, max_bytes: int) -> int:
    written += len(chunk)
    if written > max_bytes:
        raise DownloadError(f"the output is larger than the {max_bytes} bytes allowed")
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
        mutation: str = "generate",
        replay: bool = True,
        max_credits: int | None = None,
        plan: str | None = None,
        status_query: str | None = None,
    ) -> None:
        settings = resolve(
            api_key=api_key, base_url=base_url, transport=transport, output_dir=output_dir, timeout=timeout
        )
        self.engine = Engine(settings, mutation=mutation, replay=replay, max_credits=max_credits)
        if plan is not None:  # a service that sends no X-RateLimit-* headers is paced at the plan the user names
            self.engine.use_plan(plan)
        if status_query is not None:  # a service whose status query is not `job(id:)` and cannot be discovered
            self.engine.use_status_query(status_query)
        self._headers = {"User-Agent": "doitong-nb/0.1"}

    @property
    def settings(self) -> Any:
        return self.engine.settings

    @property
    def store(self) -> Any:
        return self.engine.store

    @property
    def session_credits(self) -> int:
        """Credits spent by this client in this session (refunds deducted)."""
        return self.engine.session_credits

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

    job_id: str | None  # None: the submission may not have reached the service (resuming resends it, same key)
    prompt: str
    size: str
    seed: int | None
    submitted_at: str
    state: str
    idempotency_key: str

    @classmethod
    def of(cls, entry: Any) -> PendingJob:
        request = entry.request
        when = datetime.fromtimestamp(entry.created_at, timezone.utc).isoformat(timespec="seconds")
        size = f"{request.get('width')}x{request.get('height')}"
        return cls(
            entry.job_id, str(request.get("prompt", "")), size, request.get("seed"), when, entry.state,
            entry.idempotency_key,
        )

    def __str__(self) -> str:
        prompt = self.prompt if len(self.prompt) <= 48 else self.prompt[:47] + "…"
        return f"{self.job_id or '(not confirmed)'}  {self.submitted_at}  {self.size}  {prompt!r}"


def _connect_failed(exc: httpx.ConnectError) -> ConnectFailed:
    """The driver's word for "no connection": the reason without the library's wording around it."""
    reason = re.sub(r"^\[Errno -?\d+\] ", "", str(exc)) or type(exc).__name__
    return ConnectFailed(reason[:1].lower() + reason[1:])


def _for_the_flow(step: Step, exc: Exception) -> bool:
    """Whether a step's failure is thrown into its flow, which handles it (a retry, or a clear error):
    any failure of a Work step, and the I/O failures of an HTTP step; anything else is a bug."""
    return isinstance(step, Work) or isinstance(exc, (httpx.TransportError, DownloadError, OSError))


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context per process: making one reads the CA bundle (~40 ms), and every client needs it."""
    return httpx.create_ssl_context()


def _blocking_transport() -> httpx.HTTPTransport:
    """Nagle's algorithm off, as asyncio does by itself: a POST leaves in two writes, and with Nagle
    the second waits a round trip (or a 40 ms delayed ACK) for the first to be acknowledged."""
    return httpx.HTTPTransport(verify=_tls(), socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])


class Flux(_Base):
    """Blocking client: `Flux().generate("a prompt", size="2048x2048", seed=7)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._api = httpx.Client(
            base_url=self.settings.base_url,
            timeout=HTTP_TIMEOUT,
            follow_redirects=False,
            headers=self._headers,
            transport=_blocking_transport(),
        )
        self._cdn = httpx.Client(
            timeout=HTTP_TIMEOUT, follow_redirects=True, headers=self._headers, transport=_blocking_transport()
        )

    def run(self, flow: Flow[Any]) -> Any:
        """Carry out one flow to its end."""
        return self.run_many([flow])[0]

    def run_many(self, flows: Iterable[Flow[Any]], *, return_exceptions: bool = False) -> list[Any]:
        """Interleave several flows in this thread: HTTP steps run as they come, sleeps overlap."""
        flows = list(flows)
        results: list[Any] = [None] * len(flows)
        ready: list[tuple[float, int, int, Any, BaseException | None]] = [
            (0.0, i, i, None, None) for i in range(len(flows))
        ]
        order = len(flows)
        try:
            while ready:
                wake, _, index, value, error = heapq.heappop(ready)
                pause = wake - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                flow = flows[index]
                try:
                    step = flow.throw(error) if error is not None else flow.send(value)
                except StopIteration as stop:
                    results[index] = stop.value
                    continue
                except Exception as exc:
                    if not return_exceptions:
                        raise
                    results[index] = exc
                    continue
                order += 1
                if isinstance(step, Sleep):
                    heapq.heappush(ready, (time.monotonic() + step.seconds, order, index, None, None))
                    continue
                try:
                    outcome, failure = (step.fn() if isinstance(step, Work) else self._execute(step)), None
                except Exception as exc:
                    if not _for_the_flow(step, exc):
                        raise
                    outcome, failure = None, exc
                heapq.heappush(ready, (0.0, order, index, outcome, failure))
        finally:
            for flow in flows:
                flow.close()
        return results

    def _execute(self, step: Step) -> Any:
        if isinstance(step, Send):
            try:
                response = self._api.request(
                    step.call.method, step.call.path, json=step.call.json, headers=step.headers
                )
            except httpx.ConnectError as exc:
                raise _connect_failed(exc) from exc
            return _reply(response)
        with self._cdn.stream("GET", step.url, headers={"Accept-Encoding": "identity"}) as response:
            length = _content_length(response, step.max_bytes)
            written = 0
            if response.status_code == 200:
                with open(step.dest, "wb") as handle:
                    for chunk in response.iter_raw(_CHUNK):
                        written = _write_chunk(handle, chunk, written, step.max_bytes)
            return Fetched(response.status_code, length, written)

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

    def batch(
        self,
        prompts: Sequence[str | GenerationRequest],
        *,
        max_credits: int | None = None,
        refresh: bool = False,
        progress: bool | Callable[[BatchStats], None] = True,
        webhook_url: str | bool | None = None,
        webhook_secret: str | None = None,
        receiver: WebhookReceiver | None = None,
        **options: Any,
    ) -> BatchResult:
        """Many images, paced at the plan's limits; outcomes in input order, each failure in its place.

        See doitong_nb.batch: `max_credits` refuses items that would cross the budget before sending them,
        a re-run resumes submitted jobs and skips finished ones, `webhook_url=True` (or a URL with its
        `receiver=`) waits for signed webhooks instead of reading job status.
        """
        from .batch import run_sync

        return run_sync(
            self,
            prompts,
            options,
            max_credits=max_credits,
            refresh=refresh,
            progress=progress,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            receiver=receiver,
        )

    def submit(self, prompt: str | GenerationRequest, *, idempotency_key: str | None = None, **options: Any) -> Job:
        """Submit without waiting (no store, no journal): the low-level call."""
        request = as_request(prompt, options)
        self.engine.check_budget(request)
        return self.run(self.engine.submit(request, idempotency_key or str(uuid.uuid4()), self._deadline()))

    def status(self, job_id: str) -> Job:
        return self.run(self.engine.status(job_id, self._deadline()))

    def account(self) -> Account:
        """Plan and credit balance (one API request)."""
        return self.run(self.engine.account())

    def resume(self, job_id: str, *, progress: Progress | None = None) -> ImageResult:
        """Fetch a pending job (`jobs()` lists them) and store it under its original request: no new charge."""
        return self.run(self.engine.resume(job_id, progress=progress))

    def resume_all(self) -> list[ImageResult | DoitongError]:
        """Every pending job, each outcome in its place (an error where one still cannot be finished)."""
        ids = [p.job_id or p.idempotency_key for p in self.jobs()]
        return self.run_many([self.engine.resume(i) for i in ids], return_exceptions=True)

    def close(self) -> None:
        """Close the connections and the journal's files (a long-lived kernel must not collect descriptors)."""
        self._api.close()
        self._cdn.close()
        self.store.close()

    def __enter__(self) -> Flux:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncFlux(_Base):
    """The same client as coroutines: `await AsyncFlux().generate(...)`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._api = httpx.AsyncClient(
            base_url=self.settings.base_url,
            timeout=HTTP_TIMEOUT,
            follow_redirects=False,
            headers=self._headers,
            verify=_tls(),
        )
        self._cdn = httpx.AsyncClient(timeout=HTTP_TIMEOUT, follow_redirects=True, headers=self._headers, verify=_tls())

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

    async def batch(
        self,
        prompts: Sequence[str | GenerationRequest],
        *,
        max_credits: int | None = None,
        refresh: bool = False,
        progress: bool | Callable[[BatchStats], None] = True,
        webhook_url: str | bool | None = None,
        webhook_secret: str | None = None,
        receiver: WebhookReceiver | None = None,
        **options: Any,
    ) -> BatchResult:
        """Many images, paced at the plan's limits; outcomes in input order, each failure in its place.

        See doitong_nb.batch: `max_credits` refuses items that would cross the budget before sending them,
        a re-run resumes submitted jobs and skips finished ones, `webhook_url=True` (or a URL with its
        `receiver=`) waits for signed webhooks instead of reading job status.
        """
        from .batch import run_async

        return await run_async(
            self,
            prompts,
            options,
            max_credits=max_credits,
            refresh=refresh,
            progress=progress,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            receiver=receiver,
        )

    async def submit(
        self, prompt: str | GenerationRequest, *, idempotency_key: str | None = None, **options: Any
    ) -> Job:
        request = as_request(prompt, options)
        self.engine.check_budget(request)
        return await self.run(self.engine.submit(request, idempotency_key or str(uuid.uuid4()), self._deadline()))

    async def status(self, job_id: str) -> Job:
        return await self.run(self.engine.status(job_id, self._deadline()))

    async def account(self) -> Account:
        return await self.run(self.engine.account())

    async def resume(self, job_id: str, *, progress: Progress | None = None) -> ImageResult:
        """Fetch a pending job (`jobs()` lists them) and store it under its original request: no new charge."""
        return await self.run(self.engine.resume(job_id, progress=progress))

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


__all__ = ["AsyncFlux", "Flux", "PendingJob"]

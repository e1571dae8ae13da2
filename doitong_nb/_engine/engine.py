"""The engine: every operation written once, as a generator of I/O steps.

A flow yields `Send`, `Fetch`, `Sleep`, `Work` and `WaitFor` steps (`_steps`) and receives their outcomes;
`_client.AsyncFlux` carries them out on an event loop, and `_client.Flux` is the same driver on a loop thread. So
retries, polling, the journal and replay are the same code in sync and async use, and can be tested once, without
I/O.

What happens is published as `Event`s (`Engine.subscribe`), and what images would cost is asked of `Engine.quote`
and let through by `Engine.admit`: the faces (magics, panel, batches) build requests and show results, and read
neither replies nor the store's bookkeeping themselves.
"""

from __future__ import annotations

import ipaddress
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

from doitong_nb import _contract as contract
from doitong_nb._core import i18n
from doitong_nb._core.env import ENV_BASE_URL
from doitong_nb._core.errors import (
    BudgetExceededError,
    DoitongError,
    DownloadError,
    GenerationFailedError,
    InvalidRequestError,
    JobTimeoutError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    SchemaMismatchError,
    ServerError,
    StorageError,
    UnclearSubmissionError,
    UnknownStatusError,
    UnsafeResponseError,
    is_storage_failure,
    resume_hint,
    system_reason,
)
from doitong_nb._core.limits import RateBudget
from doitong_nb._core.polling import DurationModel, expected_seconds
from doitong_nb._core.redaction import redact
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import ImageResult, Job
from doitong_nb._core.settings import Settings, parse_statuses
from doitong_nb._core.steps import (
    Completion,
    ConnectFailed,
    Event,
    EventKind,
    Fetch,
    Fetched,
    Flow,
    Listener,
    Progress,
    Reply,
    Send,
    Sleep,
    WaitFor,
    Work,
)
from doitong_nb._engine.ports import DiscoveryPort, StorePort
from doitong_nb._store.discovery_cache import DiscoveryCache
from doitong_nb._store.journal import ORIGIN, SUBMITTED, JournalEntry
from doitong_nb._store.store import Store
from doitong_nb._wire import Account, HttpCall, StatusQuery, Transport, make_transport
from doitong_nb._wire.base import account_from
from doitong_nb._wire.discovery import INTROSPECTION, query_names, status_query_from
from doitong_nb._wire.replies import from_response, job_id_in, schema_mismatch, unclear_submission

Waiting = Callable[[str], None]  # told why a request waits, before the wait
WAITING_FOR_RATE = "waiting for the plan's rate limit"
WAITING_FOR_SLOT = "waiting for a free job slot"

MAX_ATTEMPTS = 8
BACKOFF_BASE, BACKOFF_CAP = 0.25, 20.0
DOWNLOAD_ATTEMPTS = 4
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024  # a 4096x4096 PNG is at most ~50 MB
WEBHOOK_GRACE = 4.0  # no webhook after this many predicted durations, plus the slack below: read the status
WEBHOOK_SLACK = 5.0  # seconds a delivery may take on top (network, the sender's queue)


@dataclass(frozen=True)
class Priced:
    """One distinct image of a `Quote`."""

    index: int  # its (first) position in the quoted list
    request: GenerationRequest
    variant: int
    cost: int  # credits it may charge now: 0 for a replay, or for a journaled job that was paid already
    replay: bool  # the store has it (or the lock records it): returned with no job and no charge
    copies: tuple[int, ...] = ()  # later positions asking for the same seeded image: they share its job

    @property
    def key(self) -> str:
        return self.request.key(self.variant)


@dataclass(frozen=True)
class Quote:
    """What images would cost now, asked before anything is sent, with the budget's verdict on them together."""

    items: tuple[Priced, ...]
    refusal: BudgetExceededError | None = None  # None: the budget lets them all go (or there is none)

    @property
    def total(self) -> int:
        return sum(item.cost for item in self.items)

    @property
    def costs(self) -> list[int]:
        """The cost of each quoted position, in order (a shared seeded repeat costs nothing of its own)."""
        costs = [0] * sum(1 + len(item.copies) for item in self.items)
        for item in self.items:
            costs[item.index] = item.cost
        return costs


class UnclearAnswer(Exception):
    """Inside the engine: a submission's answer that does not say clearly whether a job was made (see `submit`)."""

    def __init__(self, why: str, reply: Reply | None = None) -> None:
        super().__init__(why)
        self.why, self.reply = why, reply

    def job_id(self) -> str | None:
        return None if self.reply is None else job_id_in(self.reply)


def seconds_text(seconds: float) -> str:
    """'0.5 s', '12 s': a short wait is not "0 s"."""
    return (
        i18n._("{seconds:.1f} s").format(seconds=seconds)
        if seconds < 10
        else i18n._("{seconds:.0f} s").format(seconds=seconds)
    )


def backoff(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with jitter (the doc's advice, without synchronised retries)."""
    return rng.uniform(0.5, 1.0) * min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)


def _local(host: str) -> bool:
    """A name or address that is not on the public internet: loopback, private, link-local, reserved."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal", ".lan", ".home.arpa")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." not in host  # a bare intranet name
    return not address.is_global or address.is_multicast


def _loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_output_url(url: Any, base_url: str) -> str:
    """The output URL policy [assumed], for a URL resolved against the API's base (a path or a scheme-relative URL
    is the service's own way of naming it): https on any public host (outputs may live on another domain, e.g.
    signed object-storage URLs); the API's own scheme and host; loopback only when the API itself is on
    loopback (a sandbox). Refused: other schemes, credentials in the URL, private, loopback and link-local
    addresses. The download client never carries the API key, whatever the host. This judges the name; the
    download client's transport (`_pinned.PinnedTransport`) then checks every address it resolves to and connects
    to the checked one, redirects included."""
    if isinstance(url, str) and url.startswith("/"):  # a path on the API host, or scheme-relative (//cdn/...)
        url = urljoin(base_url, url)
    parts = urlsplit(str(url or ""))
    api = urlsplit(base_url)
    host, api_host = (parts.hostname or ""), (api.hostname or "")
    if parts.scheme not in ("https", "http") or (api.scheme == "https" and parts.scheme != "https"):
        raise UnsafeResponseError(
            i18n._("refusing output URL with scheme {scheme!r}; expected {expected}").format(
                scheme=parts.scheme, expected=api.scheme
            )
        )
    if parts.username is not None or parts.password is not None:
        raise UnsafeResponseError(i18n._("refusing output URL that carries credentials (user:password@host)"))
    if not host:
        raise UnsafeResponseError(i18n._("refusing output URL without a host"))
    if _loopback(host):
        ok = _loopback(api_host)
    elif _local(host):
        ok = host == api_host
    else:
        ok = parts.scheme == "https" or host == api_host or host.endswith(".doitong.com")
    if not ok:
        raise UnsafeResponseError(
            i18n._(
                "refusing output URL on host {host!r}: outputs are fetched over https from public hosts, or from the "
                "service's own host"
            ).format(host=host)
        )
    return str(url)


class Engine:
    """State shared by every face: settings, the rate budget, the duration model, the store."""

    def __init__(
        self,
        settings: Settings,
        *,
        mutation: str = "generate",
        replay: bool = True,
        max_credits: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        store: StorePort | None = None,
        discovery: DiscoveryPort | None = None,
    ) -> None:
        """`clock`, `rng`, `store` and `discovery` are injected, so a scripted driver can run every flow without
        I/O, real time or a folder (tests/test_engine_scripted.py, tests/_memory_store.py); the defaults are the
        real ones (`_store.Store` and `DiscoveryCache` in the output folder)."""
        self.settings = settings
        self.clock, self.rng = clock, rng or random.Random()
        self._mutation = mutation
        self.discovery: DiscoveryPort = discovery or DiscoveryCache(settings.output_dir)
        found = self.discovery.get(settings.origin)  # what an earlier session found this service calls things
        self.status_query: StatusQuery | None = _status_query_or_none(found.get("status_query"))
        self.status_query_named = False  # the user named it (then it is never replaced by a discovery)
        self.rest_job_path: str | None = found.get("rest_job_path")
        self.transport = self._make(settings.transport)
        self.store: StorePort = store or Store(settings.output_dir, lock=settings.lock_file, remote=settings.store)
        self.on_missing = "error"  # a request the lock records but whose image is nowhere: "error" | "regenerate"
        self.replay = replay
        self.max_credits = max_credits
        self.budget = RateBudget(clock=clock)
        self.durations = DurationModel()
        self.session_credits = 0
        self._charged: dict[str, int] = {}  # job id -> credits in session_credits (a resent submission: one job)
        self._uncertain: dict[str, int] = {}  # idempotency key -> credits counted as possibly charged (unclear)
        self.idempotency_honoured = found.get("idempotency") in ("echoed", "replayed")  # the service has shown it
        self.balance: int | None = None
        self.plan: str | None = None
        self.requests: Counter[str] = Counter()
        self._submission_cost: str | None = None  # "present"/"absent": a creditCost in the last submission's answer
        self.reached = False  # the service has answered once: from then on a failed connection is retried
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Hear every `Event` of this engine's flows, on the thread that runs them, until the returned function is
        called. A listener must be quick; what it raises goes into the flow it was told about (a KeyboardInterrupt
        stops a batch, as from a progress callback)."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            with suppress(ValueError):
                self._listeners.remove(listener)

        return unsubscribe

    def _emit(self, kind: EventKind, **fields: Any) -> None:
        event = Event(kind, **fields)
        for listener in tuple(self._listeners):
            listener(event)

    def use_plan(self, name: str) -> None:
        """Pace at a named plan's limits until the service's headers say otherwise."""
        plan = contract.PLANS.get(str(name).lower())
        if plan is None:
            raise InvalidRequestError(
                i18n._("plan {name!r} is unknown; use one of: {plans}").format(
                    name=name, plans=", ".join(contract.PLANS)
                ),
                field="plan",
                value=name,
            )
        self.plan, self.budget.limit = plan.name, plan.requests_per_minute

    def use_status_query(self, text: str) -> None:
        """`getJob(jobId)` or `generation`: the GraphQL query (and argument) that reads a job."""
        self.status_query, self.status_query_named = StatusQuery.parse(text), True
        self.transport = self._make(self.transport.name)

    def _make(self, name: str) -> Transport:
        return make_transport(
            name, mutation=self._mutation, status_query=self.status_query, rest_job_path=self.rest_job_path
        )

    # --- one API call, with retries -------------------------------------------------------------
    def call(
        self,
        call: HttpCall,
        *,
        deadline: float,
        idempotency_key: str | None = None,
        via: Transport | None = None,
        waiting: Waiting | None = None,
    ) -> Flow[dict[str, Any]]:
        """Send `call`, retrying 429, 5xx and network errors with backoff until `deadline`.

        `waiting(why)` hears of each wait for the plan's limits, so a progress line can say what it waits for.
        """
        headers = {"Accept": "application/json", **(via or self.transport).auth_headers(self.settings.api_key)}
        if idempotency_key:
            headers[contract.HEADER_IDEMPOTENCY] = idempotency_key
        submitting = call.kind == "submit"
        for attempt in range(MAX_ATTEMPTS):
            slot = self.budget.reserve()
            if slot.wait > 0:
                if self.clock() + slot.wait > deadline:  # never past the caller's timeout, whatever a header said
                    self.budget.cancel(slot)
                    raise RateLimitError(
                        i18n._(
                            "the plan's rate limit lets the next request go in {seconds:.1f} s, after this call's "
                            "timeout; nothing more was sent: raise the timeout, or try again later"
                        ).format(seconds=slot.wait),
                        retry_after=slot.wait,
                    )
                if waiting:
                    waiting(WAITING_FOR_RATE)
                yield Sleep(slot.wait)
            slot = self.budget.sent(slot)
            self.requests[call.kind] += 1
            try:
                reply: Reply = yield Send(call, headers)
            except Exception as exc:  # the driver throws transport failures (httpx.TransportError) in here
                self.budget.answered(slot)
                if isinstance(exc, ConnectFailed) and not self.reached:
                    raise NetworkError(
                        i18n._(
                            "cannot connect to {host} ({reason}): check the network, or set {variable} to the API's "
                            "address; nothing was sent or charged"
                        ).format(
                            host=urlsplit(self.settings.base_url).netloc,
                            reason=system_reason(exc),
                            variable=ENV_BASE_URL,
                        )
                    ) from None
                if submitting and not isinstance(exc, ConnectFailed):  # it may have arrived: never resent here
                    raise UnclearAnswer(
                        i18n._("the connection broke after it was sent ({name})").format(name=type(exc).__name__)
                    ) from None
                error: DoitongError = NetworkError(
                    redact(
                        i18n._("could not reach {url} ({reason})").format(
                            url=self.settings.base_url, reason=system_reason(exc, typed=True)
                        ),
                        self.settings.api_key,
                    )
                )
                delay = backoff(attempt, self.rng)
            else:
                self.reached = True
                self.budget.answered(slot)
                self.budget.observe(reply.headers)
                if self.budget.window_told:  # a speed-scaled service is as much faster as its window is shorter
                    self.durations.assume(self.budget.window / contract.RATE_WINDOW_SECONDS)
                if self.plan is None and (plan := contract.plan_with_rate(self.budget.limit)) is not None:
                    self.plan = plan.name  # each plan's X-RateLimit-Limit is its own
                body = reply.body if isinstance(reply.body, dict) else {}
                if submitting and (why := unclear_submission(reply)):
                    raise UnclearAnswer(why, reply)
                if reply.status < 400 and not body.get("errors") and reply.body is not None:
                    if submitting:
                        self._learn_idempotency(reply, idempotency_key)
                    return body
                mismatch = schema_mismatch(reply.body) if call.kind in ("status", "discover") else None
                if mismatch:  # the service has no such query: discovered (or named) once, never retried
                    raise SchemaMismatchError(mismatch)
                error = from_response(reply.status, reply.body, _retry_after(reply.headers))
                self._emit("refused", error=error)
                if isinstance(error, RateLimitError):
                    self.requests["429"] += 1
                    delay = error.retry_after if error.retry_after is not None else backoff(attempt, self.rng)
                    if error.code != contract.CONCURRENCY_LIMITED:  # no free job slot: status reads may go on
                        self.budget.block_for(delay)
                elif isinstance(error, ServerError) or (reply.status < 400 and reply.body is None):
                    delay = backoff(attempt, self.rng)
                else:
                    raise error
            if self.clock() + delay > deadline or attempt == MAX_ATTEMPTS - 1:
                raise error
            self.requests["retries"] += 1
            if waiting and isinstance(error, RateLimitError):
                waiting(WAITING_FOR_SLOT if error.code == contract.CONCURRENCY_LIMITED else WAITING_FOR_RATE)
            elif waiting:  # a network error or a 5xx: say that it is being retried, and how often it may be
                waiting(f"retrying ({attempt + 1}/{MAX_ATTEMPTS - 1})")
            yield Sleep(delay)
        raise AssertionError("unreachable")

    def transport_named(self, name: str | None) -> Transport:
        """The engine's transport, or another one for a single call (`%%flux --transport rest`)."""
        if name is None or name == self.transport.name:
            return self.transport
        return self._make(name)

    def submit(
        self,
        request: GenerationRequest,
        idempotency_key: str,
        deadline: float,
        via: Transport | None = None,
        waiting: Waiting | None = None,
    ) -> Flow[Job]:
        """Submit once and count its cost, by the submission rule (ARCHITECTURE.md, "The submission rule"): an
        unclear answer is never simply sent again. What the answer gives (a job id in a cut body, a `Location`) is
        followed and the job read; the same key is sent again only when the service has shown that it honours it;
        otherwise UnclearSubmissionError, with the send counted as possibly charged (`_carry` asks for the user's
        word before an earlier unclear submission is sent once more)."""
        via = via or self.transport
        cost = request.estimated_credits
        for _ in range(MAX_ATTEMPTS):
            try:
                body = yield from self.call(
                    via.submit(request), deadline=deadline, idempotency_key=idempotency_key, via=via, waiting=waiting
                )
                try:
                    job = self._meaning(via.parse_job(body))
                except ServerError:
                    raise UnclearAnswer(i18n._("its answer carried no job")) from None
            except UnclearAnswer as unclear:
                job_id = unclear.job_id()
                if job_id is not None:
                    job = yield from self._follow(unclear, job_id, idempotency_key, cost, deadline, via, waiting)
                    break
                self._possibly_charged(idempotency_key, cost)
                if not self.idempotency_honoured or self.clock() > deadline:
                    raise self._unclear(unclear.why, idempotency_key, cost) from None
                self.requests["resent"] += 1
                continue
            break
        else:
            raise self._unclear(i18n._("every answer was unclear"), idempotency_key, cost)
        cost_form = "absent" if job.credit_cost is None else "present"
        if cost_form != self._submission_cost:  # for doctor: whether the submission's answer names its cost
            self._submission_cost = cost_form
            self.discovery.put(self.settings.origin, submission_cost=cost_form)
        if job.id not in self._charged:  # the same Idempotency-Key sent again is answered with the first job
            charge = job.credit_cost if job.credit_cost is not None else cost  # cost-late: the quote
            self._charged[job.id] = charge
            honoured = self.idempotency_honoured  # then this is the job an unclear send made, counted already
            self._charge(charge - (self._uncertain.pop(idempotency_key, 0) if honoured else 0), job.id)
        return job

    def _follow(
        self,
        unclear: UnclearAnswer,
        job_id: str,
        idempotency_key: str,
        cost: int,
        deadline: float,
        via: Transport,
        waiting: Waiting | None,
    ) -> Flow[Job]:
        """An unclear answer that named its job (a cut body, a 202's Location): read the job instead of resending."""
        self.requests["followed"] += 1
        self.discovery.put(self.settings.origin, unclear_submission=unclear.why)
        try:
            return (yield from self.status(job_id, deadline, via, waiting))
        except NotFoundError:
            self._possibly_charged(idempotency_key, cost)
            why = i18n._("{why}; it named job {job_id}, which the service does not know")
            raise self._unclear(why.format(why=unclear.why, job_id=job_id), idempotency_key, cost) from None

    def _possibly_charged(self, idempotency_key: str, credits: int) -> None:
        """A send whose answer was unclear may have been charged, and is counted so a budget is never crossed by
        resends: once per key when the service honours keys (it charges a key once), else once per send."""
        if idempotency_key in self._uncertain and self.idempotency_honoured:
            return
        self._uncertain[idempotency_key] = self._uncertain.get(idempotency_key, 0) + credits
        self._charge(credits, None)

    def _unclear(self, why: str, idempotency_key: str, credits: int) -> UnclearSubmissionError:
        self.discovery.put(self.settings.origin, unclear_submission=why)
        return UnclearSubmissionError(
            i18n._(
                "the answer to the submission was unclear ({why}), so the job may exist and be charged ({credits} "
                "credits, counted as possibly charged in this session). It was not sent again: the service has not "
                "shown that it honours {header}. The submission is kept in the journal (`%flux_jobs` lists it); "
                "look for the job in your Doitong account, or run `%flux_resume {key} --resend` "
                "(`Flux().resume({key!r}, resend=True)`) to send it again, which may charge a second time"
            ).format(why=why, credits=credits, header=contract.HEADER_IDEMPOTENCY, key=idempotency_key),
            idempotency_key=idempotency_key,
            credits=credits,
        )

    def _learn_idempotency(self, reply: Reply, idempotency_key: str | None) -> None:
        """A submission's clear answer that echoes its key (or says it replayed) is the service's word that it
        honours keys [assumed]: from then on an unclear answer may be resent with the same key."""
        headers = reply.headers
        echoed = idempotency_key is not None and headers.get(contract.HEADER_IDEMPOTENCY) == idempotency_key
        replayed = str(headers.get(contract.HEADER_IDEMPOTENT_REPLAYED, "")).lower() == "true"
        if (echoed or replayed) and not self.idempotency_honoured:
            self.idempotency_honoured = True
            self.discovery.put(self.settings.origin, idempotency="echoed" if echoed else "replayed")

    def status(
        self, job_id: str, deadline: float, via: Transport | None = None, waiting: Waiting | None = None
    ) -> Flow[Job]:
        via = via or self.transport
        try:
            body = yield from self.call(via.status(job_id), deadline=deadline, via=via, waiting=waiting)
        except SchemaMismatchError as exc:
            if via.name != "graphql":
                raise
            via = yield from self._discover_status_query(str(exc), job_id, deadline)
            body = yield from self.call(via.status(job_id), deadline=deadline, via=via, waiting=waiting)
        except NotFoundError:
            if via.name != "rest" or self.rest_job_path is not None:
                raise
            via, body = yield from self._find_rest_job_path(job_id, deadline)
        if via.name == "rest" and self.rest_job_path is None:
            self.rest_job_path = getattr(via, "job_path", None)
        job = self._meaning(via.parse_job(body))
        self._emit("status", job_id=job.id, status=job.status)
        return job

    def _meaning(self, job: Job) -> Job:
        """A status no reading knows, mapped by the `statuses` setting when the user named it."""
        return job.named(parse_statuses(self.settings.statuses)) if self.settings.statuses and not job.known else job

    def discover(self, deadline: float) -> Flow[tuple[StatusQuery | None, str]]:
        """One introspection request: the schema's status query (None if it has none we recognise), and what
        the service said ("" when it answered, else its refusal, e.g. introspection disabled)."""
        call = HttpCall("POST", contract.GRAPHQL_PATH, {"query": INTROSPECTION}, kind="discover")
        try:
            body = yield from self.call(call, deadline=deadline, via=self._make("graphql"))
        except (SchemaMismatchError, InvalidRequestError, NotFoundError) as exc:
            return None, str(exc)
        except DoitongError as exc:
            if exc.status is not None and exc.status < 500 and exc.status != 429:
                return None, str(exc)
            raise
        schema = (body.get("data") or {}).get("__schema") or {}
        found = status_query_from(schema)
        names = ", ".join(query_names(schema)) or i18n._("none")
        return found, "" if found else i18n._("its queries are: {names}").format(names=names)

    def _discover_status_query(self, refusal: str, job_id: str, deadline: float) -> Flow[Transport]:
        """The contract's (or the named) status query is refused: find the service's own, once per host."""
        asked = self.status_query or StatusQuery()
        advice = i18n._(
            'name it with `%config Flux.status_query = "getJob(jobId)"` or `Flux(status_query="getJob(jobId)")` '
            "(its name and argument); {hint}"
        ).format(hint=resume_hint(job_id))
        if self.status_query_named:
            raise SchemaMismatchError(
                i18n._("the service refuses the status query you named, {query} ({refusal}); {advice}").format(
                    query=asked, refusal=refusal, advice=advice
                ),
                job_id=job_id,
            )
        found, said = yield from self.discover(deadline)
        if found is None or found.same_call(asked):
            why = (
                i18n._("does not answer introspection")
                if "introspection" in said.lower()
                else i18n._("did not tell which one")
            )
            raise SchemaMismatchError(
                i18n._(
                    "the service has no `{query}` query to read a job's status ({refusal}), and {why} ({said}); "
                    "{advice}"
                ).format(query=asked, refusal=refusal, why=why, said=said, advice=advice),
                job_id=job_id,
            )
        self.status_query = found
        self.discovery.put(self.settings.origin, status_query=str(found))
        self.transport = self._make(self.transport.name)
        return self._make("graphql")

    def _find_rest_job_path(self, job_id: str, deadline: float) -> Flow[tuple[Transport, dict[str, Any]]]:
        """REST_JOB_PATH does not know a job the service just named: try the other plausible paths, once."""
        for path in contract.REST_JOB_PATHS[1:]:
            via = make_transport("rest", rest_job_path=path)
            try:
                body = yield from self.call(via.status(job_id), deadline=deadline, via=via)
            except NotFoundError:
                continue
            self.rest_job_path = path
            self.discovery.put(self.settings.origin, rest_job_path=path)
            self.transport = self._make(self.transport.name)
            return via, body
        raise NotFoundError(
            i18n._(
                "no REST path of the service knows job {job_id} (tried {paths}); try the GraphQL transport, or {hint}"
            ).format(job_id=job_id, paths=", ".join(contract.REST_JOB_PATHS), hint=resume_hint(job_id)),
            job_id=job_id,
        )

    def account(self) -> Flow[Account]:
        body = yield from self.call(self.transport.account(), deadline=self.clock() + self.settings.timeout)
        account = account_from(body)
        self.balance, self.plan = account.credits, account.plan
        return account

    # --- waiting and fetching -------------------------------------------------------------------
    def wait(
        self,
        job: Job,
        pixels: int,
        deadline: float,
        accepted_at: float,
        progress: Progress | None = None,
        via: Transport | None = None,
        completion: Completion | None = None,
    ) -> Flow[Job]:
        """Read the job's status when it is predicted to be done; raise JobTimeoutError at the deadline.

        With `completion` (webhook mode) the job's webhook says when it is done, so no status is read
        unless the webhook is lost.
        """
        if completion is not None and not job.done:
            job = yield from self._await_webhook(job, pixels, deadline, accepted_at, completion)
        reads = 0
        waiting = None if progress is None else (lambda why: progress(why, self.clock() - accepted_at, ""))
        unknown_since: float | None = None
        while not job.done:
            elapsed = self.clock() - accepted_at
            if progress:
                progress(job.status, elapsed, f"{reads} status reads")
            if job.known:
                unknown_since = None
            else:  # a status nobody listed: still running, for a while (see contract.UNKNOWN_STATUS_PATIENCE_*)
                unknown_since = self.clock() if unknown_since is None else unknown_since
                expected = self.durations.predict(pixels) or expected_seconds(pixels)
                patience = max(
                    contract.UNKNOWN_STATUS_PATIENCE_DURATIONS * expected,
                    min(contract.UNKNOWN_STATUS_PATIENCE_SECONDS, self.settings.timeout / 2),
                )
                if self.clock() - unknown_since > patience:
                    raise UnknownStatusError(
                        i18n._(
                            "the service reports job {job_id} as {status!r}, a status this client does not know, "
                            'for {waited}: say what it means with `%config Flux.statuses = "{status}=processing"` '
                            "(or completed, failed; `Flux(statuses=...)`), then {hint}"
                        ).format(
                            job_id=job.id,
                            status=job.raw_status,
                            waited=seconds_text(self.clock() - unknown_since),
                            hint=resume_hint(job.id),
                        ),
                        job_id=job.id,
                    )
            delay = self.durations.next_delay(pixels, elapsed, reads)
            if self.clock() + delay > deadline:
                raise JobTimeoutError(
                    i18n._(
                        "stopped waiting for job {job_id} after {waited} ({status}); it goes on at Doitong: {hint}"
                    ).format(
                        job_id=job.id,
                        waited=seconds_text(elapsed),
                        status=job.raw_status or job.status,
                        hint=resume_hint(job.id),
                    ),
                    job_id=job.id,
                )
            yield Sleep(delay)
            job = yield from self.status(job.id, deadline, via, waiting)
            reads += 1
        if job.status == contract.STATUS_COMPLETED and job.duration is not None:
            self.durations.observe(pixels, job.duration)
        return job

    def _with_url(self, job: Job, deadline: float, via: Transport | None) -> Flow[Job]:
        """A completed job whose url is still null (a service that writes it a moment later): read it again with
        backoff until it comes or the deadline, then say so with the job id and the resume command."""
        reads = 0
        while not job.url:
            delay = backoff(reads, self.rng)
            if self.clock() + delay > deadline:
                said = i18n.ngettext(
                    "job {job_id} is completed, but the service has given no image URL for it yet (read {n} time); "
                    "{hint}",
                    "job {job_id} is completed, but the service has given no image URL for it yet (read {n} times); "
                    "{hint}",
                    reads + 1,
                )
                raise DownloadError(said.format(job_id=job.id, n=reads + 1, hint=resume_hint(job.id)), job_id=job.id)
            yield Sleep(delay)
            job = yield from self.status(job.id, deadline, via)
            reads += 1
        if reads:  # for doctor: this service writes a finished job's url a moment late
            self.discovery.put(self.settings.origin, url_late=reads)
        return job

    def _await_webhook(
        self, job: Job, pixels: int, deadline: float, accepted_at: float, completion: Completion
    ) -> Flow[Job]:
        """Wait for the job's webhook (no API request) until it comes or the grace period ends; then the job as it
        told, or as it was (the caller reads its status: the webhook may be lost)."""
        expected = self.durations.predict(pixels) or expected_seconds(pixels)
        give_up = min(deadline, accepted_at + WEBHOOK_GRACE * expected + WEBHOOK_SLACK)
        payload = yield WaitFor(completion(job.id), max(0.0, give_up - self.clock()))
        if payload is None:
            return job
        metadata = {**job.metadata, **(payload.get("metadata") or {})}
        done = self._meaning(Job.from_payload({**payload, "metadata": metadata}))
        done = replace(done, id=job.id, credit_cost=job.credit_cost, created_at=done.created_at or job.created_at)
        self._emit("status", job_id=job.id, status=done.status)
        return done

    def download(self, job: Job, request: GenerationRequest, deadline: float) -> Flow[Path]:
        """Stream the output to the store's partial folder and check it is the whole, decodable image."""
        url = check_output_url(job.url, self.settings.base_url)
        suffix = Path(urlsplit(url).path).suffix.lower().lstrip(".")
        ext = suffix if suffix in ("jpg", "jpeg", "png") else ("png" if request.output_format == "png" else "jpg")
        dest = self.store.partial_path(job.id, ext)
        refreshed = False
        for attempt in range(DOWNLOAD_ATTEMPTS):
            try:
                fetched: Fetched = yield Fetch(url, dest, MAX_DOWNLOAD_BYTES)
                if fetched.status in contract.EXPIRED_URL_STATUSES and not refreshed:  # a signed URL expired: ask again
                    refreshed = True
                    fresh = yield from self.status(job.id, deadline)
                    if fresh.url and fresh.url != url:
                        url = check_output_url(fresh.url, self.settings.base_url)
                        fetched = yield Fetch(url, dest, MAX_DOWNLOAD_BYTES)
                if fetched.status != 200:
                    raise DownloadError(i18n._("the CDN answered HTTP {status}").format(status=fetched.status))
                if fetched.content_length is not None and fetched.written != fetched.content_length:
                    raise DownloadError(
                        i18n._("got {written} of {length} bytes").format(
                            written=fetched.written, length=fetched.content_length
                        )
                    )
                yield Work(partial(self.store.check, dest, job))
                return dest
            except UnsafeResponseError:
                self.store.discard(dest)
                raise
            except Exception as exc:
                self.store.discard(dest)
                if is_storage_failure(exc):  # the disk, not the network: trying again would not help
                    raise StorageError.from_os(exc, self.store.root, i18n._("downloading the image")) from None
                if attempt == DOWNLOAD_ATTEMPTS - 1 or self.clock() > deadline:
                    reason = exc.message if isinstance(exc, DoitongError) else system_reason(exc)
                    raise DownloadError(
                        i18n._("job {job_id} is done, but its image could not be downloaded ({reason}); {hint}").format(
                            job_id=job.id, reason=redact(reason, self.settings.api_key), hint=resume_hint(job.id)
                        ),
                        job_id=job.id,
                    ) from None
                yield Sleep(backoff(attempt, self.rng))
        raise AssertionError("unreachable")

    # --- what it costs, and whether it may go -------------------------------------------------------
    def quote(
        self,
        requests: Sequence[GenerationRequest | tuple[GenerationRequest, int]],
        *,
        refresh: bool = False,
        max_credits: int | None = None,
        spent: int | None = None,
        budget_name: str = "max_credits",
    ) -> Quote:
        """What `generate` would charge now for these images, before anything is sent, and the budget's verdict.

        Each distinct image is priced once: a seeded repeat shares the first one's job, an unseeded repeat is the
        next variant, a (request, variant) pair keeps its variant. One the store has (or the lock records) replays
        for nothing, and a journaled job that was paid is picked up for nothing. `refusal` weighs the total against
        `max_credits` (default: the session's) over `spent` (default: what the session spent). Asked first, so a
        folder that cannot take the images is refused here already.
        """
        self.store.prepare()
        items: list[Priced] = []
        firsts: dict[str, int] = {}  # a request's key without variant -> its item, which seeded repeats share
        copies: dict[int, list[int]] = {}
        variants: dict[str, int] = {}
        for index, asked in enumerate(requests):
            request, variant = asked if isinstance(asked, tuple) else (asked, None)
            if variant is None:
                base = request.key()
                if base in firsts and request.seed is not None:
                    copies[firsts[base]].append(index)
                    continue
                variant = variants[base] = variants.get(base, -1) + 1
                firsts.setdefault(base, len(items))
            key = request.key(variant)
            replay = self.replay and not refresh and self._replays(key)
            entry = None if replay else self.unfinished(key)
            cost = 0 if replay or (entry is not None and entry.job_id) else request.estimated_credits
            copies[len(items)] = []
            items.append(Priced(index, request, variant, cost, replay))
        priced = tuple(replace(item, copies=tuple(copies[n])) for n, item in enumerate(items))
        refusal = budget_refusal(
            [item.cost for item in priced if item.cost],
            self.session_credits if spent is None else spent,
            self.max_credits if max_credits is None else max_credits,
            budget_name,
        )
        return Quote(priced, refusal)

    def admit(self, charge: Quote | int) -> None:
        """The gate before anything is sent: raise a quote's refusal, or refuse one image's `charge` that would take
        the session past its budget (every flow's own last check, just before it submits)."""
        refusal = (
            charge.refusal
            if isinstance(charge, Quote)
            else budget_refusal([charge], self.session_credits, self.max_credits)
        )
        if refusal is not None:
            raise refusal

    def _replays(self, key: str) -> bool:
        """`generate` returns `key` with no job: the store has it (an unreadable one too: it fails in its place), or
        the lock records it."""
        try:
            return self.store.find(key, self.settings.origin) is not None or self._locked(key)
        except DoitongError:
            return True

    # --- the whole thing ------------------------------------------------------------------------
    def generate(
        self,
        request: GenerationRequest,
        *,
        variant: int = 0,
        refresh: bool = False,
        progress: Progress | None = None,
        via: Transport | None = None,
        completion: Completion | None = None,
        timeout: float | None = None,
    ) -> Flow[ImageResult]:
        """Replay from the store, resume a journaled job, or submit anew; then wait, fetch and store.

        `timeout` overrides the settings' wait for this one call (`%%flux --timeout`).
        """
        key = request.key(variant)
        origin = self.settings.origin
        self.store.prepare()  # a folder that cannot take the image is refused before anything is sent
        journal = self.store.journal
        entry = journal.unfinished(key, origin)
        if self.replay and not refresh:
            stored = self.store.find(key, origin)
            if stored is None and self._locked(key):  # made elsewhere: fetched from the shared store by sha256
                stored = yield Work(partial(self.store.restore, key, origin, self.on_missing))
            if stored is not None:
                if entry is not None:  # stored, but the process died before the journal heard of it
                    with suppress(StorageError):  # the sidecar says it is stored; the journal can learn it later
                        journal.mark_done(entry.idempotency_key)
                return self._annotate(stored)
        deadline = self.clock() + (self.settings.timeout if timeout is None else timeout)
        return (
            yield from self._carry(
                key, request, entry, deadline, progress, via, completion, refresh=refresh, resend=refresh
            )
        )

    def resume(
        self, job_id: str, *, progress: Progress | None = None, timeout: float | None = None, resend: bool = False
    ) -> Flow[ImageResult]:
        """Fetch a paid job the journal keeps as pending (`jobs()` lists them) and store it under its
        original request: a status read, the download, no new submission and no new charge. A submission whose
        answer was unclear (no job id) is sent again, with its key, only with `resend` (it may charge again)."""
        entry = next((e for e in self.pending() if job_id in (e.job_id, e.idempotency_key)), None)
        if entry is None:
            stored = next((r for r in self.store.history() if r.job_id == job_id), None)
            if stored is not None:
                return self._annotate(stored)
            raise NotFoundError(
                i18n._(
                    "job {job_id} is not among this client's pending jobs (for {origin}); "
                    "`%flux_jobs` or `Flux().jobs()` lists them"
                ).format(job_id=job_id, origin=self.settings.origin)
            )
        request = _request_of(entry.request)
        deadline = self.clock() + (self.settings.timeout if timeout is None else timeout)
        return (yield from self._carry(entry.key, request, entry, deadline, progress, None, None, resend=resend))

    def pending(self) -> list[Any]:
        """The journal's unfinished submissions to this engine's service, oldest first."""
        origin = self.settings.origin
        return [e for e in self.store.journal.pending() if e.request.get(ORIGIN, origin) == origin]

    def _carry(
        self,
        key: str,
        request: GenerationRequest,
        entry: Any,
        deadline: float,
        progress: Progress | None,
        via: Transport | None,
        completion: Completion | None,
        *,
        refresh: bool = False,
        resend: bool = False,
    ) -> Flow[ImageResult]:
        """From a journal entry (or none) to a stored result: resume or submit, wait, fetch, store.

        A journaled job the service does not know is replaced only with `refresh`; an entry whose earlier send got
        no answer is sent again (with its key) only with `resend` or when the service honours keys."""
        journal, origin = self.store.journal, self.settings.origin
        job: Job | None = None
        if entry is not None and entry.job_id is not None:
            try:
                job = yield from self.status(entry.job_id, deadline, via)
            except NotFoundError:  # paid, journaled, and unknown to the service: never replaced without a word
                if not refresh:
                    raise NotFoundError(
                        i18n._(
                            "job {job_id} is paid for and journaled, but the service does not know it (expired, "
                            "or another service answers at {url}). Nothing new was sent or charged: "
                            "run `%flux_resume {job_id}` later if the service comes back, or re-run with "
                            "`--refresh` (`refresh=True`) to pay for a new image"
                        ).format(job_id=entry.job_id, url=self.settings.base_url),
                        job_id=entry.job_id,
                    ) from None
                journal.mark_failed(entry.idempotency_key, "job unknown to the service; replaced by --refresh")
                entry = None
        elif entry is not None and not (resend or self.idempotency_honoured):
            raise self._unclear(
                i18n._("an earlier send of this image got no answer that was kept"),
                entry.idempotency_key,
                self._uncertain.get(entry.idempotency_key, request.estimated_credits),
            )
        if entry is None:
            self.admit(request.estimated_credits)
            entry = yield Work(partial(journal.begin, key, request, origin))  # the disk's flush off the loop
        resumed = job is not None  # submitted, and paid for, before an interrupt or in an earlier session
        if job is None:
            waiting = None if progress is None else (lambda why: progress(why, 0.0, ""))  # 0 s: not accepted yet
            try:
                job = yield from self.submit(request, entry.idempotency_key, deadline, via, waiting)
            except UnclearSubmissionError:
                with suppress(StorageError):  # the entry stays unfinished, with the reason: `jobs()` shows it
                    journal.note(entry.idempotency_key, i18n.N_("answer unclear: may be charged"))  # shown translated
                raise
            except DoitongError as refused:  # a clear refusal made no job: nothing is pending
                if entry.idempotency_key not in self._uncertain:
                    with suppress(StorageError):
                        journal.mark_failed(entry.idempotency_key, f"refused: {refused.code}")
                raise
            try:
                yield Work(partial(journal.mark_submitted, entry.idempotency_key, job.id))
            except StorageError as exc:
                raise self._not_stored(exc, entry, job.id) from None
            finally:  # told even when the journal failed: the job is accepted and paid for all the same
                self._emit("submitted", key=key, job_id=job.id)
        try:
            return (yield from self._finish(key, request, entry, job, resumed, deadline, progress, via, completion))
        except DoitongError as exc:
            raise _naming(exc, job.id) from None

    def _finish(
        self,
        key: str,
        request: GenerationRequest,
        entry: Any,
        job: Job,
        resumed: bool,
        deadline: float,
        progress: Progress | None,
        via: Transport | None,
        completion: Completion | None,
    ) -> Flow[ImageResult]:
        """A submitted (paid) job to a stored result: wait, fetch, store; its failure is the service's, refunded."""
        journal, origin = self.store.journal, self.settings.origin
        accepted_at = self.clock()
        pixels = request.width * request.height
        job = yield from self.wait(job, pixels, deadline, accepted_at, progress, via, completion)
        if job.status == contract.STATUS_FAILED:
            with suppress(StorageError):  # unrecorded, a re-run reads the same failure again: nothing is lost
                journal.mark_failed(entry.idempotency_key, job.error_code or contract.GENERATION_FAILED)
            if job.id in self._charged:  # a job resumed from an earlier session was not counted in this one
                self._charge(-self._charged.pop(job.id), job.id)
            advice = (
                i18n._("rephrase the prompt")
                if job.error_code == contract.CONTENT_MODERATED
                else i18n._("try again, perhaps with another seed or prompt")
            )
            failure = GenerationFailedError(
                i18n._("job {job_id} failed ({code}: {message}); its credits are refunded: {advice}").format(
                    job_id=job.id, code=job.error_code, message=job.error_message, advice=advice
                ),
                code=job.error_code or contract.GENERATION_FAILED,
                job_id=job.id,
            )
            self._emit("failed", key=key, job_id=job.id, error=failure)
            raise failure
        job = yield from self._with_url(job, deadline, via)
        self._emit("completed", key=key, job_id=job.id)
        charged = self._charged.get(job.id)
        if charged is not None and job.credit_cost is not None and job.credit_cost != charged:  # the cost came late
            self._charged[job.id] = job.credit_cost
            self._charge(job.credit_cost - charged, job.id)
        if progress:
            progress("downloading", self.clock() - accepted_at, "")
        try:
            path = yield from self.download(job, request, deadline)
            result: ImageResult = yield Work(partial(self.store.put, key, request, job, path, origin))
        except StorageError as exc:
            raise self._not_stored(exc, entry, job.id) from None
        if resumed:
            result.resumed, result.credits = True, 0
        with suppress(StorageError):  # stored: the sidecar says so, and the next run sets the journal right
            yield Work(partial(journal.mark_done, entry.idempotency_key))
        return self._annotate(result)

    def _not_stored(self, exc: StorageError, entry: JournalEntry, job_id: str) -> StorageError:
        """The storage failure of a paid job, told with its job id and how many paid jobs wait to be fetched.

        While the journal file is there it holds the job (or at least its idempotency key, which the service
        answers with this same job, charged once). When the folder is gone the session keeps the job in
        memory, and the store writes it into the folder's new journal once the folder is back.
        """
        journaled = exc.kind != "gone"
        if not journaled:
            self.store.rescue(replace(entry, job_id=job_id, state=SUBMITTED))
        waiting = self.paid_waiting([job_id])
        return exc.with_context(job_id=job_id, paid=True, journaled=journaled, waiting=waiting)

    def paid_waiting(self, also: Iterable[str] = ()) -> int:
        """Jobs of this service that are paid and not yet stored: unfinished in the journal, kept in memory, or
        named in `also` (jobs whose id the journal could not record)."""
        origin = self.settings.origin
        ids = {*also, *(e.job_id for e in self.store.rescued_entries() if e.job_id)}
        with suppress(StorageError):
            pending = self.store.journal.pending()
            ids |= {e.job_id for e in pending if e.job_id and e.request.get(ORIGIN, origin) == origin}
        return len(ids)

    def _locked(self, key: str) -> bool:
        """The lock file records `key` for this engine's service (its image may still have to be fetched)."""
        return self.store.locked(key, self.settings.origin)

    def unfinished(self, key: str) -> Any:
        """The journal's unfinished submission of `key` to this engine's service, if any."""
        return self.store.journal.unfinished(key, self.settings.origin)

    def _charge(self, credits: int, job_id: str | None) -> None:
        self.session_credits += credits
        if self.balance is not None:
            self.balance -= credits
        self._emit("charged", job_id=job_id, credits=credits)

    def _annotate(self, result: ImageResult) -> ImageResult:
        result.session_credits = self.session_credits
        result.balance = self.balance
        return result


def budget_refusal(
    costs: list[int],
    spent: int,
    budget: int | None,
    name: str = "max_credits",
    whose: str = i18n.N_("the session has spent"),
) -> BudgetExceededError | None:
    """The refusal of images that would cross a budget, with the advice its numbers allow, or None: the one rule,
    for the session's budget, the panel's and a batch's (`whose` says which spent what)."""
    total = sum(costs)
    if budget is None or spent + total <= budget:
        return None
    left = max(0, budget - spent)
    if len(costs) == 1:
        what = i18n._("this image costs {total} credits").format(total=total)
    else:
        what = i18n._("these {n} images cost {total} credits").format(n=len(costs), total=total)
    fit = max(k for k in range(len(costs) + 1) if sum(costs[:k]) <= left)
    cheapest = contract.credit_cost(contract.MIN_SIDE, contract.MIN_SIDE)
    if fit:
        advice = i18n._("{fit} of them fit: ask for fewer or raise {name}").format(fit=fit, name=name)
    elif left >= cheapest:
        advice = i18n._("a smaller size fits (from {cheapest} credits an image) or raise {name}").format(
            cheapest=cheapest, name=name
        )
    else:
        advice = i18n._("raise {name}").format(name=name)
    said = i18n._("{what} and {whose} {spent} of its {budget}-credit budget, {left} left: {advice}")
    return BudgetExceededError(
        said.format(what=what, whose=i18n._(whose), spent=spent, budget=budget, left=left, advice=advice)
    )


def _naming(exc: DoitongError, job_id: str) -> DoitongError:
    """An error met after a job was submitted (paid), naming the job and the command that fetches it later: the
    same error, its message completed (a refund's or storage's message says so already)."""
    if isinstance(exc, (GenerationFailedError, StorageError)) or exc.job_id is not None:
        return exc
    exc.job_id, exc.message = job_id, f"{exc.message}; {resume_hint(job_id)}"
    exc.args = (exc.message,)
    return exc


def _status_query_or_none(text: Any) -> StatusQuery | None:
    try:
        return StatusQuery.parse(text) if isinstance(text, str) else None
    except DoitongError:
        return None


def _request_of(data: dict[str, Any]) -> GenerationRequest:
    """The request a journal entry recorded (its canonical form, plus the webhook URL)."""
    from dataclasses import fields

    names = {f.name for f in fields(GenerationRequest)}
    return GenerationRequest(**{k: v for k, v in data.items() if k in names})


def _retry_after(headers: Any) -> float | None:
    from doitong_nb._core.limits import retry_after_seconds

    return retry_after_seconds(headers.get("Retry-After"))

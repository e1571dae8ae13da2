"""Batches at the plan's ceiling: many images from a list of prompts, paced by the plan's limits.

The engine's `generate` flow already replays, resumes from the journal, submits idempotently,
waits, downloads and stores one image, and `Engine.quote` prices the items; this module only
decides when each item's flow may run. A few worker flows pull items in input order; an item
holds one of the plan's concurrent-job slots from its first API request until its job is final
(the engine's `completed` event: its download no longer counts), and the engine's RateBudget
paces every request, status reads included. So a batch meets no 429 in normal operation, and
when the same key is busy elsewhere it learns so from the X-RateLimit-* headers (requests) and
from the engine's `refused` events (a CONCURRENCY_LIMITED answer: jobs), and slows down.

Budget: an item whose quoted cost would take the batch past `max_credits` is refused before
anything is sent (its place holds a BudgetExceededError); later, cheaper items still go when they
fit. Replayed items cost nothing, and resumed ones were paid for in the run that submitted them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import time
import warnings
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import urlsplit

from doitong_nb import _contract as contract
from doitong_nb._core.env import ENV_WEBHOOK_SECRET
from doitong_nb._core.errors import (
    AuthenticationError,
    BudgetExceededError,
    DoitongError,
    GenerationFailedError,
    InvalidRequestError,
    RateLimitError,
    StorageError,
    is_storage_failure,
)
from doitong_nb._core.i18n import N_, _, ngettext
from doitong_nb._core.request import GenerationRequest, as_request
from doitong_nb._core.result import ImageResult
from doitong_nb._core.steps import Completion, Event, Flow, Progress, WaitFor
from doitong_nb._engine.engine import Engine, Priced, budget_refusal
from doitong_nb._runtime.webhooks import WebhookReceiver

Outcome = ImageResult | DoitongError
_WAKE_BOUND = 5.0  # seconds: a waiting worker looks again after this even if no change woke it
_WORKERS_PER_SLOT = 2  # so one item downloads while the next one's job already runs


@dataclass
class BatchStats:
    """What a batch did; `requests` and `rate_limited` count API requests (downloads excluded)."""

    total: int
    done: int = 0
    failed: int = 0
    replayed: int = 0
    submitted: int = 0
    credits: int = 0
    requests: int = 0
    rate_limited: int = 0
    elapsed: float = 0.0
    webhooks: bool = False


class BatchResult(list):  # type: ignore[type-arg]
    """The batch's outcomes in input order: an ImageResult, or the error of that item, in its place."""

    def __init__(self, outcomes: Sequence[Outcome], stats: BatchStats) -> None:
        super().__init__(outcomes)
        self.stats = stats

    @property
    def images(self) -> list[ImageResult]:
        return [o for o in self if isinstance(o, ImageResult)]

    @property
    def errors(self) -> dict[int, DoitongError]:
        return {i: o for i, o in enumerate(self) if isinstance(o, DoitongError)}


class _Batch:
    """The scheduling state shared by the worker flows (one thread or one event loop: no locks)."""

    def __init__(
        self,
        engine: Engine,
        requests: list[GenerationRequest],
        *,
        max_credits: int | None,
        refresh: bool,
        progress: bool | Callable[[BatchStats], None],
        completion: Completion | None,
        transport: str | None = None,
        timeout: float | None = None,
        item_progress: Callable[[int], Progress] | None = None,
        item_done: Callable[[int, Outcome], None] | None = None,
    ) -> None:
        self.engine, self.refresh, self.completion = engine, refresh, completion
        self.item_progress, self.item_done = item_progress, item_done
        self.via, self.timeout = engine.transport_named(transport), timeout
        self.max_credits = max_credits
        self.stats = BatchStats(total=len(requests), webhooks=completion is not None)
        self.outcomes: list[Outcome | None] = [None] * len(requests)
        self.items = engine.quote(requests, refresh=refresh).items
        self.queue = deque(self.items)
        self.holding: dict[str, Priced] = {}  # replay key -> the item holding a job slot for it
        self.submitted: set[int] = set()  # items whose submission the service accepted (charged, unless refunded)
        self.cap = self.plan_cap = 1  # until the plan is known (see prepare)
        self.plan_known = False
        self.ask_account = False  # the first reply did not name a plan: one worker asks the account
        self.daily_limit: int | None = None
        self.charged = 0  # items admitted that may charge (the daily cap counts them)
        self.active = self.committed = 0
        self.closed: DoitongError | None = None  # the daily cap was reached, or the key is refused: send no more
        self._waiting: list[concurrent.futures.Future[None]] = []  # workers waiting for a slot or for the plan
        self._callback = progress if callable(progress) else None
        self._bar = _bar(len(requests)) if progress is True else None
        self._start = time.monotonic()
        self._credits0 = engine.session_credits
        self._requests0 = _api_requests(engine)
        self._limited0 = engine.requests["429"]

    # --- driven by Flux / AsyncFlux ----------------------------------------------------------------
    def prepare(self) -> None:
        """Use the plan this session already knows; else the first item goes alone and its reply's
        X-RateLimit-Limit names the plan, so a batch spends none of its plan's requests on asking."""
        plan = contract.PLANS.get(self.engine.plan or "")
        if plan is not None:
            self._use_plan(plan)

    def workers(self) -> list[Flow[None]]:
        """Enough for any plan; those beyond what the plan needs end once it is known."""
        most = max(p.concurrent_jobs for p in contract.PLANS.values()) if not self.plan_known else self.plan_cap
        return [self._worker(n) for n in range(min(len(self.queue), _WORKERS_PER_SLOT * most))]

    def result(self) -> BatchResult:
        self._settle_storage_errors()
        self._refresh_stats()
        if self._bar is not None:
            self._bar.close()
        return BatchResult(self.outcomes, self.stats)  # type: ignore[arg-type]

    def interrupted(self) -> None:
        if self._bar is not None:
            self._bar.close()
        said = ngettext(
            "Batch stopped: {n} submitted job goes on at Doitong and is paid for. Run the same "
            "batch again to pick it up and skip the finished ones: nothing is charged twice.",
            "Batch stopped: {n} submitted jobs go on at Doitong and are paid for. Run the same "
            "batch again to pick them up and skip the finished ones: nothing is charged twice.",
            self.stats.submitted,
        )
        print(said.format(n=self.stats.submitted), file=sys.stderr)

    # --- the worker flows --------------------------------------------------------------------------
    def _worker(self, number: int) -> Flow[None]:
        """Worker 0 alone while the plan is unknown; then as many as the plan's slots need, the rest end."""
        while self.queue:
            if self.ask_account:
                yield from self._ask_plan()
            if not self.plan_known and number > 0:
                yield from self._until_changed()
                continue
            if number >= _WORKERS_PER_SLOT * self.plan_cap:
                return
            item = self.queue.popleft()
            try:
                outcome: Outcome = yield from self._run(item)
            except DoitongError as exc:
                outcome = exc
                # every other item would meet it too: send no more (a refused key; a folder with no room)
                if isinstance(exc, (AuthenticationError, StorageError)):
                    self.closed = exc
            except OSError as exc:  # a disk failure no step turned into a StorageError: still this item's alone
                if not is_storage_failure(exc):
                    raise
                outcome = self.closed = StorageError.from_os(
                    exc, self.engine.store.root, _("working on item {index}").format(index=item.index)
                )
            self._finish(item, outcome)

    def _ask_plan(self) -> Flow[None]:
        """The first reply named no plan we know: ask the account, once (one slot if that fails too)."""
        self.ask_account = False
        try:
            account = yield from self.engine.account()
        except DoitongError:
            self._use_plan(None)
            return
        self._use_plan(contract.PLANS.get(account.plan))

    def _run(self, item: Priced) -> Flow[ImageResult]:
        if item.replay:
            if isinstance(self.closed, StorageError) and self.closed.kind == "gone":  # it went with the folder
                raise _unsent(self.closed)
            return (
                yield from self.engine.generate(
                    item.request, variant=item.variant, via=self.via, progress=self._progress(item)
                )
            )
        self._admit(item)
        while self.active >= self.cap:
            yield from self._until_changed()
        if isinstance(self.closed, StorageError):  # the folder failed while this item waited for a slot
            self.committed -= item.cost
            raise _unsent(self.closed)
        self.active += 1
        self.holding[item.key] = item
        try:
            return (
                yield from self.engine.generate(
                    item.request,
                    variant=item.variant,
                    refresh=self.refresh,
                    completion=self.completion,
                    via=self.via,
                    timeout=self.timeout,
                    progress=self._progress(item),
                )
            )
        except DoitongError as exc:
            if item.index not in self.submitted or isinstance(exc, GenerationFailedError):  # never charged, or refunded
                self.committed -= item.cost
            raise
        finally:
            self._release(item)

    def _progress(self, item: Priced) -> Progress | None:
        return self.item_progress(item.index) if self.item_progress is not None else None

    def _release(self, item: Priced) -> None:
        """The item's job is final (or its flow ended): its slot is free again."""
        if self.holding.pop(item.key, None) is not None:
            self.active -= 1
            self._changed()

    def _until_changed(self) -> Flow[None]:
        """Wait until a slot frees, the plan is known or an item ends: whatever changes that wakes the waiting
        workers at once (`_changed`), so a webhook's job done starts the next item without a scheduler tick."""
        wake: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._waiting.append(wake)
        yield WaitFor(wake, _WAKE_BOUND)

    def _changed(self) -> None:
        """Wake every waiting worker, in the order they began to wait; each looks again (on the loop's thread)."""
        waiting, self._waiting = self._waiting, []
        for wake in waiting:
            with suppress(concurrent.futures.InvalidStateError):  # it stopped waiting (its bound passed)
                wake.set_result(None)

    def _admit(self, item: Priced) -> None:
        """Refuse, before sending, an item past the daily cap or the batch's credit budget."""
        if isinstance(self.closed, StorageError):
            raise _unsent(self.closed)
        if self.closed is not None:
            raise self.closed
        if item.cost and self.daily_limit is not None and self.charged >= self.daily_limit:
            raise RateLimitError(
                _("the plan's daily limit of jobs is reached by this batch; nothing was sent for this item"),
                code=contract.DAILY_LIMIT_REACHED,
            )
        refusal = budget_refusal([item.cost], self.committed, self.max_credits, whose=N_("the batch has committed"))
        if refusal is not None:
            raise BudgetExceededError(
                _("item {index} ({size}): {refusal}; nothing was sent for it").format(
                    index=item.index, size=item.request.size, refusal=refusal
                )
            )
        self.committed += item.cost
        self.charged += 1 if item.cost else 0

    def _use_plan(self, plan: contract.Plan | None) -> None:
        """Job slots and the daily cap from the plan (one slot for a plan we do not know)."""
        self.plan_known = True
        self.cap = self.plan_cap = plan.concurrent_jobs if plan else 1
        self.daily_limit = plan.daily_limit if plan else None
        self._changed()

    def heard(self, event: Event) -> None:
        """The engine's events (`Engine.subscribe`): the first answer names the plan (or asks for the account), an
        accepted submission counts, a job done frees its slot, a refusal of jobs or of the day narrows the batch."""
        if event.kind == "charged":
            return
        if not self.plan_known and not self.ask_account:
            plan = contract.PLANS.get(self.engine.plan or "")  # the engine names it from the answer's rate
            if plan is not None:
                self._use_plan(plan)
            elif event.kind != "refused":  # the service answered and named no plan we know
                self.ask_account = True
        item = self.holding.get(event.key or "")
        if event.kind == "submitted" and item is not None:
            self.submitted.add(item.index)
            self.stats.submitted += 1
            self._notify()
        elif event.kind == "completed" and item is not None:
            self._release(item)
        elif event.kind == "refused" and event.error is not None:
            if event.error.code == contract.CONCURRENCY_LIMITED:  # jobs of this key run elsewhere: fewer slots for us
                self.cap = max(1, self.active - 1)
            elif event.error.code == contract.DAILY_LIMIT_REACHED:
                self.closed = event.error

    def _finish(self, item: Priced, outcome: Outcome) -> None:
        for index in (item.index, *item.copies):
            self.outcomes[index] = outcome
            if self.item_done is not None:
                self.item_done(index, outcome)
        count = 1 + len(item.copies)
        if isinstance(outcome, ImageResult):
            self.stats.done += count
            self.stats.replayed += count if outcome.replayed else 0
            self.cap = min(self.plan_cap, self.cap + 1)
        else:
            self.stats.failed += count
        self._changed()
        self._refresh_stats()
        if self._bar is not None:
            self._bar.set_postfix(done=self.stats.done, failed=self.stats.failed, credits=self.stats.credits)
            self._bar.update(count)
        self._notify()

    def _settle_storage_errors(self) -> None:
        """Every paid item the disk failed tells the same, final count of jobs paid and waiting."""
        failed = {id(o): o for o in self.outcomes if isinstance(o, StorageError) and o.paid}
        if not failed:
            return
        waiting = self.engine.paid_waiting(e.job_id for e in failed.values() if e.job_id)
        settled = {key: error.with_context(waiting=waiting) for key, error in failed.items()}
        self.outcomes = [settled.get(id(o), o) for o in self.outcomes]

    def _notify(self) -> None:
        if self._callback is not None:
            self._refresh_stats()
            self._callback(self.stats)

    def _refresh_stats(self) -> None:
        self.stats.credits = self.engine.session_credits - self._credits0
        self.stats.requests = _api_requests(self.engine) - self._requests0
        self.stats.rate_limited = self.engine.requests["429"] - self._limited0
        self.stats.elapsed = time.monotonic() - self._start


def _unsent(cause: StorageError) -> StorageError:
    """What an item not sent because of an earlier storage failure holds in its place."""
    remedy = _("{remedy}, then re-run the same cell (or call)").format(remedy=cause.remedy)
    return StorageError(cause.problem, remedy=remedy, kind=cause.kind)


def _api_requests(engine: Engine) -> int:
    return sum(engine.requests[kind] for kind in ("submit", "status", "account"))


def _bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", desc="flux batch", dynamic_ncols=True)


def _requests(prompts: Sequence[str | GenerationRequest], options: dict[str, Any]) -> list[GenerationRequest]:
    if isinstance(prompts, (str, GenerationRequest)):
        raise InvalidRequestError(_("batch takes a list of prompts; for one image use generate()"), field="prompts")
    return [as_request(prompt, options) for prompt in prompts]


def _webhook_secret(engine: Engine, given: str | None) -> str:
    secret = given or engine.settings.webhook_secret  # the environment's, or the bundled sandbox's
    if not secret:
        raise InvalidRequestError(
            _("webhook mode needs the account's webhook secret: pass webhook_secret= or set {variable}").format(
                variable=ENV_WEBHOOK_SECRET
            ),
            field="webhook_secret",
        )
    return secret


@dataclass(frozen=True)
class BatchOptions:
    """How a batch runs, beside what each image is (`Flux.generate_many`'s keywords, said once for both faces)."""

    max_credits: int | None = None
    refresh: bool = False
    progress: bool | Callable[[BatchStats], None] = True
    webhook_url: str | bool | None = None
    webhook_secret: str | None = None
    receiver: WebhookReceiver | None = None
    transport: str | None = None
    timeout: float | None = None
    item_progress: Callable[[int], Progress] | None = None
    item_done: Callable[[int, Outcome], None] | None = None

    @classmethod
    def of(cls, arguments: dict[str, Any]) -> BatchOptions:
        """The options among a call's arguments (`locals()` of `generate_many`)."""
        return cls(**{f.name: arguments[f.name] for f in fields(cls)})


Run = Callable[[Flow[Any]], Awaitable[Any]]  # the async driver: runs one flow on the client's loop


@contextmanager
def _batch(
    engine: Engine, prompts: Sequence[str | GenerationRequest], request_options: dict[str, Any], how: BatchOptions
) -> Iterator[_Batch]:
    """Build the batch; in webhook mode run (or use) a receiver for its lifetime."""
    requests = _requests(prompts, request_options)
    receiver, webhook_url = how.receiver, how.webhook_url
    engine.store.prepare()  # a folder that cannot take the images is refused before anything is sent
    completion: Completion | None = None
    own: WebhookReceiver | None = None
    if webhook_url:
        if receiver is None:
            own = receiver = _local_receiver(webhook_url, _webhook_secret(engine, how.webhook_secret))
        url = webhook_url if isinstance(webhook_url, str) else receiver.url
        if url == receiver.url or receiver.reachable(url):  # a URL of our own needs no test call
            completion = receiver.future
            requests = [replace(r, webhook_url=url) for r in requests]
        else:
            warnings.warn(
                _("webhook_url {url} does not reach the receiver: polling instead").format(url=url), stacklevel=4
            )
    batch = _Batch(
        engine,
        requests,
        max_credits=how.max_credits,
        refresh=how.refresh,
        progress=how.progress,
        completion=completion,
        transport=how.transport,
        timeout=how.timeout,
        item_progress=how.item_progress,
        item_done=how.item_done,
    )
    unsubscribe = engine.subscribe(batch.heard)
    try:
        yield batch
    finally:
        unsubscribe()
        if own is not None:
            own.stop()
        if completion is not None and receiver is not None and receiver.signed_as:  # for doctor: how it signs
            engine.discovery.put(engine.settings.origin, webhook_signature=receiver.signed_as)


def _local_receiver(webhook_url: str | bool, secret: str) -> WebhookReceiver:
    """A receiver on loopback: at `webhook_url` when that names this machine, else on a free port."""
    if not isinstance(webhook_url, str):
        return WebhookReceiver(secret).start()
    parts = urlsplit(webhook_url)
    if parts.hostname not in ("127.0.0.1", "localhost") or parts.scheme != "http":
        raise InvalidRequestError(
            _(
                "webhook_url {url!r} is not on this machine: pass the WebhookReceiver it leads to as "
                "receiver=, or use webhook_url=True for a local one"
            ).format(url=webhook_url),
            field="webhook_url",
        )
    return WebhookReceiver(secret, host=parts.hostname, port=parts.port or 80, path=parts.path or "/").start()


async def run_async(
    engine: Engine,
    run: Run,
    prompts: Sequence[str | GenerationRequest],
    request_options: dict[str, Any],
    how: BatchOptions,
) -> BatchResult:
    """AsyncFlux.generate_many: the worker flows as tasks on the running loop, each run by the client's driver."""
    with _batch(engine, prompts, request_options, how) as batch:
        try:
            batch.prepare()
            await asyncio.gather(*(run(worker) for worker in batch.workers()))
        except (KeyboardInterrupt, asyncio.CancelledError):
            batch.interrupted()
            raise
        return batch.result()

"""The engine's submission rule, idempotency, budget and pacing, pinned where the mutation run of issue 22 found
them unpinned (benchmarks/MUTATION.md): an unclear answer that names its job, a service that says it replayed, the
counting of possibly charged sends, the user's word to resend, the lock's restore, the call's own edges.

All on the scripted driver (tests/_scripted.py), with the fake clock where a deadline is at stake.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from _memory_store import MemoryDiscovery, MemoryStore
from _scripted import Script as _Script
from _scripted import jpeg

from doitong_nb import _contract as contract
from doitong_nb._core.errors import (
    InvalidRequestError,
    RateLimitError,
    SchemaMismatchError,
    StorageError,
    UnclearSubmissionError,
)
from doitong_nb._core.polling import expected_seconds
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import ImageResult
from doitong_nb._core.settings import Settings
from doitong_nb._core.steps import Fetch, Fetched, Reply
from doitong_nb._engine.engine import MAX_ATTEMPTS, WAITING_FOR_RATE, Engine, _naming

KEY = "sk-mutants-0123456789abcdef"
BASE = "http://127.0.0.1:9"
SIZE = 256
REQUEST = GenerationRequest.build("a heron in the reeds", size=f"{SIZE}x{SIZE}", seed=5)  # 10 credits
JPEG = jpeg(SIZE)


class Script(_Script):
    """The scripted driver, writing into a memory store; `fetches` answers the first Fetches with other statuses."""

    def __init__(self, *answers: Any, store: MemoryStore | None, fetches: tuple[int, ...] = ()) -> None:
        super().__init__(*answers, image=JPEG, sink=None if store is None else store.files.__setitem__)
        self.fetches = list(fetches)
        self.fetched: list[Fetch] = []

    def step(self, step: Any) -> tuple[Any, BaseException | None]:
        if isinstance(step, Fetch):
            self.fetched.append(step)
            if self.fetches:
                return Fetched(self.fetches.pop(0), 0, 0), None
        return super().step(step)


def job(job_id: str, status: str = "COMPLETED", cost: int | None = 10, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": job_id, "status": status, "creditCost": cost}
    if status == "COMPLETED":
        payload.update(url=f"{BASE}/outputs/{job_id}.jpg", metadata={"width": SIZE, "height": SIZE, "seed": 5})
    return {**payload, **extra}


def ok(payload: dict[str, Any], name: str = "generate", **headers: str) -> Reply:
    return Reply(200, httpx.Headers(headers), {"data": {name: payload}})


def refused(status: int, code: str, message: str = "no", **headers: str) -> Reply:
    body = {"errors": [{"message": message, "extensions": {"code": code}}]}
    return Reply(status, httpx.Headers(headers), body)


EMPTY = Reply(200, httpx.Headers({}), None)  # a 2xx cut short: unclear, names no job


def accepted(location: str) -> Reply:
    return Reply(202, httpx.Headers({"Location": location}), None)


def setup(*answers: Any, fetches: tuple[int, ...] = (), **engine: Any) -> tuple[Engine, Script, MemoryStore]:
    store = MemoryStore()
    script = Script(*answers, store=store, fetches=fetches)
    settings = Settings(KEY, BASE, "graphql", Path("/nonexistent/out"), 30.0, sandbox=False)
    made = Engine(settings, clock=script.clock, store=store, discovery=MemoryDiscovery(), **engine)
    return made, script, store


def found(engine: Engine) -> dict[str, Any]:
    return engine.discovery.get(engine.settings.origin)


def unclear_entry(engine: Engine, script: Script, request: GenerationRequest = REQUEST) -> str:
    """Generate `request` with an unclear answer: its journal entry stays, with no job id; its key is returned."""
    script.answers.insert(0, EMPTY)
    with pytest.raises(UnclearSubmissionError):
        script.run(engine.generate(request))
    [entry] = [e for e in engine.pending() if e.key == request.key()]
    assert entry.job_id is None
    return entry.idempotency_key


# --- an unclear answer that names its job is followed, never resent (_follow) ---------------------------------


def test_a_202_with_a_location_is_followed_by_a_status_read_over_the_same_transport() -> None:
    engine, script, store = setup(accepted("/v1/jobs/job_a"), refused(503, contract.INTERNAL), ok(job("job_a"), "job"))
    rest = engine.transport_named("rest")
    heard: list[str] = []
    entry = store.journal.begin(REQUEST.key(), REQUEST)
    got = script.run(engine.submit(REQUEST, entry.idempotency_key, 100.0, rest, heard.append))
    assert got.id == "job_a" and script.kinds() == ["submit", "status", "status"]
    assert [s.call.path for s in script.sent[1:]] == ["/v1/jobs/job_a"] * 2  # REST's job path, the job it named
    assert heard == [f"retrying (1/{MAX_ATTEMPTS - 1})"]  # the read's retry told to the same listener
    assert engine.requests["followed"] == 1 and engine.requests["resent"] == 0
    assert found(engine)["unclear_submission"] == "HTTP 202 Accepted with a Location"
    assert engine.session_credits == 10 and engine._uncertain == {}


def test_a_followed_job_the_service_does_not_know_is_unclear_and_counted_as_possibly_charged() -> None:
    engine, script, store = setup(accepted("/v1/jobs/job_x"), refused(404, contract.NOT_FOUND))
    entry = store.journal.begin(REQUEST.key(), REQUEST)
    with pytest.raises(UnclearSubmissionError) as caught:
        script.run(engine.submit(REQUEST, entry.idempotency_key, 100.0))
    assert script.sent[1].call.json["variables"]["id"] == "job_x"
    message = str(caught.value)
    assert "(HTTP 202 Accepted with a Location; it named job job_x, which the service does not know)" in message
    assert (caught.value.idempotency_key, caught.value.credits) == (entry.idempotency_key, 10)
    assert engine._uncertain == {entry.idempotency_key: 10} and engine.session_credits == 10


def test_each_followed_answer_is_counted() -> None:
    engine, script, _ = setup(accepted("/v1/jobs/job_a"), ok(job("job_a"), "job"))
    script.answers += [accepted("/v1/jobs/job_b"), ok(job("job_b"), "job")]
    for seed in (1, 2):
        script.run(engine.generate(REQUEST.with_seed(seed)))
    assert engine.requests["followed"] == 2 and engine.session_credits == 20


def test_an_unclear_entry_of_an_earlier_session_counts_its_quote_as_possibly_charged() -> None:
    engine, script, store = setup()
    key = unclear_entry(engine, script)
    later = Engine(engine.settings, clock=script.clock, store=store, discovery=MemoryDiscovery())
    with pytest.raises(UnclearSubmissionError) as caught:
        script.run(later.generate(REQUEST))
    assert (caught.value.idempotency_key, caught.value.credits) == (key, REQUEST.estimated_credits)
    assert f"({REQUEST.estimated_credits} credits, counted as possibly charged" in str(caught.value)


# --- what an unclear answer says, and how often it is counted -------------------------------------------------


def test_an_answer_with_no_job_in_it_is_unclear_and_says_so() -> None:
    engine, script, _ = setup(ok(None))  # type: ignore[arg-type]
    with pytest.raises(UnclearSubmissionError, match=r"was unclear \(its answer carried no job\)"):
        script.run(engine.generate(REQUEST))


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (httpx.ReadError("gone"), "the connection broke after it was sent (ReadError)"),
        (Reply(502, httpx.Headers({}), None), "HTTP 502 without the service's error body"),
    ],
)
def test_an_unclear_answer_names_its_reason(answer: Any, why: str) -> None:
    engine, script, _ = setup(answer)
    engine.reached = True
    with pytest.raises(UnclearSubmissionError) as caught:
        script.run(engine.generate(REQUEST))
    assert f"was unclear ({why})" in str(caught.value) and found(engine)["unclear_submission"] == why


def test_a_service_that_honours_keys_counts_a_key_once_however_often_it_is_resent() -> None:
    engine, script, store = setup(*[EMPTY] * MAX_ATTEMPTS)
    engine.idempotency_honoured = True
    entry = store.journal.begin(REQUEST.key(), REQUEST)
    with pytest.raises(UnclearSubmissionError, match=r"\(every answer was unclear\)") as caught:
        script.run(engine.submit(REQUEST, entry.idempotency_key, 100.0))
    assert len(script.sent) == MAX_ATTEMPTS and len(set(script.keys())) == 1
    assert engine.requests["resent"] == MAX_ATTEMPTS
    assert (caught.value.idempotency_key, caught.value.credits) == (entry.idempotency_key, 10)
    assert engine.session_credits == 10 and engine._uncertain == {entry.idempotency_key: 10}


def test_a_key_resent_at_its_very_deadline_still_goes() -> None:
    engine, script, store = setup(EMPTY, ok(job("job_a")))
    engine.idempotency_honoured = True
    entry = store.journal.begin(REQUEST.key(), REQUEST)
    assert script.run(engine.submit(REQUEST, entry.idempotency_key, 0.0)).id == "job_a"  # the clock is at 0
    assert engine.requests["resent"] == 1 and engine.session_credits == 10


def test_a_resend_by_the_users_word_counts_every_send_when_keys_are_not_honoured() -> None:
    engine, script, _ = setup()
    key = unclear_entry(engine, script)
    assert engine.session_credits == 10
    script.answers[:] = [EMPTY]
    with pytest.raises(UnclearSubmissionError):
        script.run(engine.resume(key, resend=True))  # the user's word: sent again, unclear again
    assert engine.session_credits == 20 and engine._uncertain == {key: 20}
    script.answers[:] = []
    with pytest.raises(UnclearSubmissionError, match="an earlier send of this image got no answer") as caught:
        script.run(engine.generate(REQUEST))  # no word: nothing is sent
    assert (caught.value.idempotency_key, caught.value.credits) == (key, 20)
    assert "20 credits" in str(caught.value) and len(script.sent) == 2
    script.answers[:] = [ok(job("job_a"))]
    assert script.run(engine.resume(key, resend=True)).job_id == "job_a"
    assert engine.session_credits == 30  # the unclear sends may each have made a job: none is taken back


def test_resume_and_generate_send_an_unclear_entry_again_only_with_the_users_word() -> None:
    engine, script, _ = setup()
    key = unclear_entry(engine, script)
    with pytest.raises(UnclearSubmissionError, match=r"^the answer to the submission was unclear \(an earlier send"):
        script.run(engine.resume(key))
    assert len(script.sent) == 1
    script.answers[:] = [ok(job("job_a"))]
    assert script.run(engine.generate(REQUEST, refresh=True)).job_id == "job_a"  # --refresh is a word too
    assert script.keys() == [key, key]
    other = unclear_entry(engine, script, REQUEST.with_seed(6))
    script.answers[:] = [ok(job("job_b"))]
    assert script.run(engine.resume(other, resend=True)).job_id == "job_b"


def test_an_honouring_service_gets_an_unclear_entry_again_without_a_word() -> None:
    engine, script, _ = setup()
    key = unclear_entry(engine, script)
    engine.idempotency_honoured = True
    script.answers[:] = [ok(job("job_a"))]
    assert script.run(engine.generate(REQUEST)).job_id == "job_a" and script.keys() == [key, key]
    assert engine.session_credits == 10  # the key's job, counted once


def test_a_journal_that_cannot_note_an_unclear_answer_or_a_refusal_still_raises_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def fail(*args: Any) -> None:
        raise StorageError("the output folder is full", remedy="free some space", kind="full")

    engine, script, store = setup(EMPTY, refused(400, contract.BAD_USER_INPUT))
    monkeypatch.setattr(store.journal, "note", fail)
    with pytest.raises(UnclearSubmissionError):
        script.run(engine.generate(REQUEST))
    monkeypatch.setattr(store.journal, "mark_failed", fail)
    with pytest.raises(InvalidRequestError):
        script.run(engine.generate(REQUEST.with_seed(6)))


def test_a_clear_refusal_is_journaled_with_its_code() -> None:
    engine, script, store = setup(refused(400, contract.BAD_USER_INPUT))
    with pytest.raises(InvalidRequestError):
        script.run(engine.generate(REQUEST))
    assert [e.error for e in store.journal.entries.values()] == [f"refused: {contract.BAD_USER_INPUT}"]


def test_a_paid_job_the_service_forgot_is_named_in_the_refusal() -> None:
    from doitong_nb._core.errors import NotFoundError

    engine, script, store = setup(refused(404, contract.NOT_FOUND))
    entry = store.journal.begin(REQUEST.key(), REQUEST)
    store.journal.mark_submitted(entry.idempotency_key, "job_gone")
    with pytest.raises(
        NotFoundError,
        match=r"run `%flux_resume job_gone` later.*`--refresh` \(`refresh=True`\) to pay "
        r"for a new image$",
    ) as caught:
        script.run(engine.generate(REQUEST))
    assert caught.value.job_id == "job_gone"


# --- what the service says about keys and costs (_learn_idempotency, doctor's findings) ------------------------


@pytest.mark.parametrize("value", ["true", "True", "TRUE"])
def test_an_answer_that_says_it_replayed_teaches_that_keys_are_honoured(value: str) -> None:
    engine, script, _ = setup(ok(job("job_a"), **{contract.HEADER_IDEMPOTENT_REPLAYED: value}))
    script.run(engine.generate(REQUEST))
    assert engine.idempotency_honoured and found(engine)["idempotency"] == "replayed"


def test_an_answer_that_echoes_the_key_teaches_it_and_an_unrelated_header_does_not() -> None:
    engine, script, _ = setup(ok(job("job_a"), **{contract.HEADER_IDEMPOTENT_REPLAYED: "no"}))
    script.run(engine.generate(REQUEST))
    assert not engine.idempotency_honoured and "idempotency" not in found(engine)
    script.before_send = lambda send: script.answers.insert(
        0, ok(job("job_b"), **{contract.HEADER_IDEMPOTENCY: send.headers[contract.HEADER_IDEMPOTENCY]})
    )
    script.run(engine.generate(REQUEST.with_seed(6)))
    assert engine.idempotency_honoured and found(engine)["idempotency"] == "echoed"


def test_whether_a_submissions_answer_names_its_cost_is_noted_when_it_changes() -> None:
    engine, script, _ = setup(ok(job("job_a")), ok(job("job_b")), ok(job("job_c", cost=None)))
    puts: list[Any] = []
    put = engine.discovery.put
    engine.discovery.put = lambda origin, **kw: (puts.append((origin, kw)), put(origin, **kw))  # type: ignore
    for seed in (1, 2):
        script.run(engine.generate(REQUEST.with_seed(seed)))
    assert found(engine)["submission_cost"] == "present"
    script.run(engine.generate(REQUEST.with_seed(3)))
    assert found(engine)["submission_cost"] == "absent"
    origin = engine.settings.origin
    assert puts == [(origin, {"submission_cost": "present"}), (origin, {"submission_cost": "absent"})]


# --- the lock's restore, and flows after a job is accepted -----------------------------------------------------


class LockedStore(MemoryStore):
    """A store whose lock records some keys, restoring them from elsewhere (a shared store) with no job."""

    def __init__(self, locks: set[str]) -> None:
        super().__init__()
        self.locks = locks
        self.restored: list[tuple[str, str, str]] = []

    def locked(self, key: str, origin: str) -> bool:
        return key in self.locks

    def restore(self, key: str, origin: str, on_missing: str = "error") -> ImageResult | None:
        self.restored.append((key, origin, on_missing))
        stored = self.results.get(("elsewhere", origin))
        return None if stored is None else replace(stored, replayed=True)


def test_a_locked_image_is_restored_with_no_request_and_a_stored_one_is_not_restored() -> None:
    store = LockedStore({REQUEST.key()})
    script = Script(ok(job("job_e")), store=store)
    settings = Settings(KEY, BASE, "graphql", Path("/nonexistent/out"), 30.0, sandbox=False)
    engine = Engine(settings, clock=script.clock, store=store, discovery=MemoryDiscovery())
    made = script.run(engine.generate(REQUEST.with_seed(9)))  # not locked: made here
    store.results[("elsewhere", engine.settings.origin)] = store.results.pop(
        (REQUEST.with_seed(9).key(), engine.settings.origin)
    )
    engine.on_missing = "regenerate"
    restored = script.run(engine.generate(REQUEST))
    assert store.restored == [(REQUEST.key(), engine.settings.origin, "regenerate")] and len(script.sent) == 1
    assert restored.replayed and restored.job_id == made.job_id
    store.results[(REQUEST.key(), engine.settings.origin)] = made  # stored here now, and still locked
    script.run(engine.generate(REQUEST))
    assert len(store.restored) == 1 and len(script.sent) == 1


def test_a_refund_and_a_late_cost_are_told_with_their_job() -> None:
    failed = job("job_f", "FAILED", error={"code": contract.GENERATION_FAILED, "message": "no"})
    engine, script, _ = setup(ok(job("job_f", "PROCESSING")), ok(failed, "job"))
    events: list[tuple[str, Any, int]] = []
    engine.subscribe(lambda e: events.append((e.kind, e.job_id, e.credits)) if e.kind == "charged" else None)
    with pytest.raises(Exception, match="refunded"):
        script.run(engine.generate(REQUEST))
    script.answers[:] = [ok(job("job_l", "PROCESSING", cost=None)), ok(job("job_l", cost=13), "job")]
    script.run(engine.generate(REQUEST.with_seed(6)))
    assert events == [
        ("charged", "job_f", 10),
        ("charged", "job_f", -10),
        ("charged", "job_l", 10),
        ("charged", "job_l", 3),
    ]


def test_a_timed_job_teaches_the_duration_of_its_own_pixel_count() -> None:
    big = GenerationRequest.build("a heron in the reeds", size="2048x2048", seed=5)  # past 1 MP: durations differ
    done = job("job_a", metadata={"width": 2048, "height": 2048, "seed": 5, "duration": 12.0})
    engine, script, _ = setup(ok(job("job_a", "PROCESSING")), ok(done, "job"))
    script.run(engine.generate(big))
    assert engine.durations.predict(2048 * 2048) == pytest.approx(12.0)
    assert engine.durations.predict(SIZE * SIZE) == pytest.approx(
        12.0 * expected_seconds(SIZE * SIZE) / expected_seconds(2048 * 2048)
    )


def test_a_late_url_is_read_again_over_the_same_transport_within_the_deadline() -> None:
    late = {**job("job_a"), "url": None}
    engine, script, _ = setup(ok(job("job_a", "PROCESSING")), ok(late, "job"), ok(job("job_a"), "job"))
    rest = engine.transport_named("rest")
    script.run(engine.generate(REQUEST, via=rest))
    assert [s.call.path for s in script.sent[1:]] == ["/v1/jobs/job_a"] * 2 and found(engine)["url_late"] == 1


def test_a_url_with_no_suffix_is_stored_in_the_requested_format_after_a_failed_fetch(tmp_path: Path) -> None:
    no_suffix = {**job("job_a"), "url": f"{BASE}/outputs/job_a"}
    script = Script(ok(no_suffix), store=None, fetches=(500,))  # a real folder: a failed fetch's file is discarded
    settings = Settings(KEY, BASE, "graphql", tmp_path, 30.0, sandbox=False)
    engine = Engine(settings, clock=script.clock, discovery=MemoryDiscovery())
    result = script.run(engine.generate(REQUEST))
    assert [f.dest.name for f in script.fetched] == ["job_a.jpg"] * 2
    assert result.path.suffix == ".jpg" and len(script.slept) == 1


def test_naming_leaves_a_refund_or_storage_error_as_it_is() -> None:
    storage = StorageError("the output folder is full", remedy="free some space", kind="full")
    text = str(storage)
    assert _naming(storage, "job_a") is storage and storage.job_id is None and str(storage) == text


# --- one call's edges (Engine.call) -----------------------------------------------------------------------------


def test_a_call_asks_for_json() -> None:
    engine, script, _ = setup(ok(job("a")))
    script.run(engine.call(engine.transport.account(), deadline=10))
    assert script.sent[0].headers["Accept"] == "application/json"


def test_a_rate_wait_past_the_deadline_is_refused_with_its_wait_and_a_shorter_one_is_told() -> None:
    from doitong_nb._core.limits import RateBudget

    engine, script, _ = setup(ok(job("a")), ok(job("b")))
    engine.budget = RateBudget(limit=1, window=2.0, clock=script.clock)
    heard: list[str] = []
    script.run(engine.call(engine.transport.account(), deadline=10))
    with pytest.raises(RateLimitError) as caught:
        script.run(engine.call(engine.transport.account(), deadline=1.0))
    assert caught.value.retry_after == pytest.approx(2.0, abs=0.1)
    script.run(engine.call(engine.transport.account(), deadline=10, waiting=heard.append))
    assert heard == [WAITING_FOR_RATE]


def test_a_429_retried_at_its_very_deadline_still_goes_and_every_429_is_counted() -> None:
    limited = refused(429, contract.RATE_LIMITED, **{"Retry-After": "2"})
    engine, script, _ = setup(limited, limited, ok(job("a")))
    heard: list[str] = []
    script.run(engine.call(engine.transport.account(), deadline=4.0, waiting=heard.append))
    assert script.sent_at == [0.0, 2.0, 4.0]
    assert (engine.requests["429"], engine.requests["retries"]) == (2, 2)
    assert heard[0] == WAITING_FOR_RATE  # a 429 of the rate limit: not "a free job slot"


def test_a_2xx_with_no_body_to_a_read_is_retried() -> None:
    engine, script, _ = setup(Reply(200, httpx.Headers({}), None), ok(job("a")))
    assert script.run(engine.call(engine.transport.status("a"), deadline=10)) == ok(job("a")).body
    assert len(script.sent) == 2


def test_a_schema_mismatch_is_raised_for_reads_and_discovery_only() -> None:
    text = 'Cannot query field "job" on type "Query".'
    mismatch = refused(400, contract.GRAPHQL_VALIDATION_FAILED, text)
    engine, script, _ = setup(mismatch, mismatch, mismatch)
    for call in (engine.transport.status("a"), replace(engine.transport.status("a"), kind="discover")):
        with pytest.raises(SchemaMismatchError, match=f"^{text}$"):
            script.run(engine.call(call, deadline=10))
    with pytest.raises(InvalidRequestError) as caught:
        script.run(engine.call(engine.transport.account(), deadline=10))
    assert not isinstance(caught.value, SchemaMismatchError)


def test_a_speed_scaled_service_is_assumed_as_much_faster_as_its_window_is_shorter() -> None:
    told = ok(job("a"), **{contract.HEADER_RATE_WINDOW: "6"})
    engine, script, _ = setup(told)
    script.run(engine.call(engine.transport.account(), deadline=10))
    assert engine.durations.predict(SIZE * SIZE) == pytest.approx(expected_seconds(SIZE * SIZE) / 10)


def test_a_rate_wait_that_ends_at_the_very_deadline_is_waited() -> None:
    from doitong_nb._core.limits import RateBudget

    engine, script, _ = setup(ok(job("a")), ok(job("b")))
    engine.budget = RateBudget(limit=1, window=2.0, clock=script.clock)
    script.run(engine.call(engine.transport.account(), deadline=10))
    probe = engine.budget.reserve()
    engine.budget.cancel(probe)
    script.run(engine.call(engine.transport.account(), deadline=script.now + probe.wait))
    assert script.slept == [probe.wait]


def test_a_quote_over_the_session_budget_names_max_credits() -> None:
    engine, _, _ = setup(max_credits=15)
    refusal = engine.quote([REQUEST, REQUEST.with_seed(6)]).refusal
    assert str(refusal).endswith("1 of them fit: ask for fewer or raise max_credits")

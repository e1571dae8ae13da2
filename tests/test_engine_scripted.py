"""Idempotency, the session budget and redaction in the engine's flows, driven by a script: no server, no I/O
but the output folder (issue 16: written to kill the mutants that the sandbox tests alone did not).

`Script` answers each step an engine flow yields: a `Send` with the next prepared `Reply` (or a transport
failure), a `Sleep` by skipping it, a `Work` by running it, a `Fetch` by writing a small JPEG.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from _scripted import Answer, jpeg
from _scripted import Script as _Script

from doitong_nb import _contract as contract
from doitong_nb._core.errors import (
    AuthenticationError,
    BudgetExceededError,
    DoitongError,
    GenerationFailedError,
    NetworkError,
    NotFoundError,
    StorageError,
    UnclearSubmissionError,
)
from doitong_nb._core.keys import checked_api_key
from doitong_nb._core.redaction import redact
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.settings import Settings
from doitong_nb._core.steps import Reply, Send, Sleep, Work
from doitong_nb._engine.engine import Engine, budget_refusal
from doitong_nb._store.journal import DONE, FAILED, SUBMITTED, SUBMITTING

KEY = "sk-scripted-0123456789abcdef"
BASE = "http://127.0.0.1:9"
SIZE = 256
REQUEST = GenerationRequest.build("a kite over a dune", size=f"{SIZE}x{SIZE}", seed=5)  # 10 credits


JPEG = jpeg(SIZE)


def Script(*answers: Answer) -> _Script:
    return _Script(*answers, image=JPEG)


def job(job_id: str, status: str = "COMPLETED", cost: int | None = 10, **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"id": job_id, "status": status, "creditCost": cost, **extra}
    if status == "COMPLETED":
        payload.update(url=f"{BASE}/outputs/{job_id}.jpg", metadata={"width": SIZE, "height": SIZE, "seed": 5})
    return payload


def ok(job_payload: dict[str, Any], name: str = "generate") -> Reply:
    return Reply(200, httpx.Headers({}), {"data": {name: job_payload}})


def refused(status: int, code: str, message: str = "no") -> Reply:
    return Reply(status, httpx.Headers({}), {"errors": [{"message": message, "extensions": {"code": code}}]})


def make_engine(out: Path, max_credits: int | None = None, clock: Any = time.monotonic) -> Engine:
    return Engine(Settings(KEY, BASE, "graphql", out, 30.0, sandbox=False), max_credits=max_credits, clock=clock)


def errors(engine: Engine) -> list[str | None]:
    return [row[0] for row in engine.store.journal._read("SELECT error FROM jobs ORDER BY created_at")]


def cost(engine: Engine, request: GenerationRequest, refresh: bool = False) -> int:
    """What the engine quotes for one image now."""
    return engine.quote([request], refresh=refresh).total


def entries(engine: Engine) -> list[tuple[str, str | None]]:
    rows = engine.store.journal._read("SELECT state, job_id FROM jobs ORDER BY created_at")
    return [(state, job_id) for state, job_id in rows]


# --- idempotency ------------------------------------------------------------------------------------


def test_a_submission_is_journaled_before_it_is_sent_and_marked_done_once_stored(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    seen: list[list[tuple[str, str | None]]] = []
    script = Script(ok(job("job_a")))
    script.before_send = lambda send: seen.append(entries(engine))
    result = script.run(engine.generate(REQUEST))
    assert seen == [[(SUBMITTING, None)]]  # written down (durably) before the request left
    idempotency_key = engine.store.journal._read("SELECT idempotency_key FROM jobs")[0][0]
    assert script.keys() == [idempotency_key]
    assert entries(engine) == [(DONE, "job_a")]
    assert (result.job_id, result.credits, result.resumed) == ("job_a", 10, False)
    assert engine.session_credits == 10


def test_a_retried_submission_carries_the_same_key_and_is_charged_once(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    engine.idempotency_honoured = True  # the service has shown it (test_engine_pacing: an echoed key)
    script = Script(refused(503, contract.INTERNAL), httpx.ReadError("connection dropped"), ok(job("job_a")))
    script.run(engine.generate(REQUEST))
    assert script.kinds()[:3] == ["submit"] * 3
    assert len(set(script.keys()[:3])) == 1 and script.keys()[0]
    assert engine.session_credits == 10
    # the service answers a key it has seen with the job it made: counted once, whoever asks again
    engine.store.journal.begin(REQUEST.key(), REQUEST)
    assert Script(ok(job("job_a"))).run(engine.submit(REQUEST, "same-key", float("inf"))).id == "job_a"
    assert engine.session_credits == 10


def test_an_interrupted_job_resumes_from_the_journal_with_no_new_submission_or_charge(tmp_path: Path) -> None:
    first = make_engine(tmp_path)
    flow = first.generate(REQUEST)
    step = next(flow)
    while isinstance(step, Work):  # the journal's writes
        step = flow.send(step.fn())
    assert isinstance(step, Send) and step.call.kind == "submit"
    step = flow.send(ok(job("job_a", "PROCESSING")))
    while isinstance(step, Work):
        step = flow.send(step.fn())
    assert isinstance(step, Sleep)  # accepted and journaled; waiting for it
    flow.close()  # Ctrl-C while waiting: the job is paid and journaled
    assert entries(first) == [(SUBMITTED, "job_a")] and first.session_credits == 10
    assert first.store.journal.unfinished(REQUEST.key(), "https://another.example") is None  # its origin is kept

    again = make_engine(tmp_path)  # a new session (or a re-run cell): nothing charged yet
    assert cost(again, REQUEST) == 0
    assert cost(again, REQUEST.with_seed(6)) == REQUEST.estimated_credits
    resumed = Script(ok(job("job_a"), name="job"))
    result = resumed.run(again.generate(REQUEST))
    assert resumed.kinds() == ["status"]  # read, not submitted again
    assert resumed.sent[0].call.json["variables"]["id"] == "job_a"
    assert (result.job_id, result.resumed, result.credits) == ("job_a", True, 0)
    assert again.session_credits == 0
    assert entries(again) == [(DONE, "job_a")]
    assert cost(again, REQUEST) == 0  # stored now: a replay
    assert cost(again, REQUEST, refresh=True) == REQUEST.estimated_credits


def test_a_paid_job_the_service_forgot_is_never_replaced_without_the_users_word(tmp_path: Path) -> None:
    """Issue 24: after a restart against another service the journaled, paid job was silently paid for again."""
    engine = make_engine(tmp_path)
    old = engine.store.journal.begin(REQUEST.key(), REQUEST, engine.settings.origin)
    engine.store.journal.mark_submitted(old.idempotency_key, "job_gone")
    script = Script(refused(404, contract.NOT_FOUND))
    with pytest.raises(NotFoundError, match=r"job job_gone is paid for.*`%flux_resume job_gone`.*`--refresh`"):
        script.run(engine.generate(REQUEST))
    assert script.kinds() == ["status"] and engine.session_credits == 0
    assert entries(engine) == [(SUBMITTED, "job_gone")]  # still pending: resumable when the service is back
    with pytest.raises(NotFoundError, match=r"`%flux_resume job_gone`"):
        Script(refused(404, contract.NOT_FOUND)).run(engine.resume("job_gone"))
    assert [e.job_id for e in engine.pending()] == ["job_gone"]
    script = Script(refused(404, contract.NOT_FOUND), ok(job("job_b")))
    result = script.run(engine.generate(REQUEST, refresh=True))  # the user's word: pay for a new one
    assert script.kinds() == ["status", "submit"] and script.keys()[1] not in (None, old.idempotency_key)
    assert entries(engine) == [(FAILED, "job_gone"), (DONE, "job_b")]
    assert errors(engine) == ["job unknown to the service; replaced by --refresh", None]
    assert result.job_id == "job_b" and engine.session_credits == 10


def test_a_failed_job_is_refunded_and_a_rerun_pays_again(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    failed = job("job_a", "FAILED", error={"code": contract.GENERATION_FAILED, "message": "boom"})
    with pytest.raises(GenerationFailedError, match=r"job job_a failed .*refunded"):
        Script(ok(job("job_a", "PROCESSING")), ok(failed, name="job")).run(engine.generate(REQUEST))
    assert engine.session_credits == 0
    assert entries(engine) == [(FAILED, "job_a")]
    assert cost(engine, REQUEST) == REQUEST.estimated_credits


def test_a_cost_told_late_replaces_the_quote(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    script = Script(ok(job("job_a", "PROCESSING", cost=None)), ok(job("job_a", cost=13), name="job"))
    result = script.run(engine.generate(REQUEST))
    assert engine.session_credits == 13 and result.job_id == "job_a"


def test_a_stored_result_replays_without_a_request_and_settles_a_stale_journal_entry(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    Script(ok(job("job_a"))).run(engine.generate(REQUEST))
    stale = engine.store.journal.begin(REQUEST.key(), REQUEST, engine.settings.origin)  # died before mark_done
    engine.store.journal.mark_submitted(stale.idempotency_key, "job_a")
    replay = Script()
    result = replay.run(engine.generate(REQUEST))
    assert replay.sent == [] and result.job_id == "job_a"
    assert entries(engine) == [(DONE, "job_a"), (DONE, "job_a")]
    assert engine.session_credits == 10


# --- the session budget -------------------------------------------------------------------------------


def test_a_job_over_the_budget_is_refused_before_anything_is_journaled_or_sent(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, max_credits=19)
    Script(ok(job("job_a"))).run(engine.generate(REQUEST))
    with pytest.raises(BudgetExceededError, match="spent 10 of its 19-credit budget, 9 left"):
        Script().run(engine.generate(REQUEST.with_seed(6)))
    assert entries(engine) == [(DONE, "job_a")]
    engine.max_credits = 20  # exactly up to the budget is allowed
    Script(ok(job("job_b"))).run(engine.generate(REQUEST.with_seed(6)))
    assert engine.session_credits == 20


def test_one_quote_weighs_the_whole_cell_against_the_budget(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, max_credits=30)
    fits = engine.quote([REQUEST.with_seed(s) for s in (1, 2, 3)])
    assert (fits.costs, fits.total, fits.refusal) == ([10, 10, 10], 30, None)
    engine.admit(fits)
    over = engine.quote([REQUEST.with_seed(s) for s in range(4)])
    assert str(over.refusal).startswith("these 4 images cost 40 credits and the session has spent 0 of its 30")
    with pytest.raises(BudgetExceededError, match="3 of them fit"):
        engine.admit(over)
    engine.max_credits = None
    engine.admit(engine.quote([REQUEST.with_seed(s) for s in range(100)]))


@pytest.mark.parametrize(
    ("costs", "spent", "budget", "text"),
    [
        ([10], 0, 10, None),
        (
            [10],
            1,
            10,
            "this image costs 10 credits and the session has spent 1 of its 10-credit budget, 9 left: "
            "raise max_credits",
        ),
        (
            [10, 10, 10],
            5,
            30,
            "these 3 images cost 30 credits and the session has spent 5 of its 30-credit budget, "
            "25 left: 2 of them fit: ask for fewer or raise max_credits",
        ),
        (
            [20],
            0,
            15,
            "this image costs 20 credits and the session has spent 0 of its 15-credit budget, 15 left: "
            "a smaller size fits (from 10 credits an image) or raise max_credits",
        ),
        ([20], 0, 10, "10 left: a smaller size fits (from 10 credits an image) or raise max_credits"),
        ([20], 12, 10, "spent 12 of its 10-credit budget, 0 left: raise max_credits"),
        ([10], 0, 9, "9 left: raise max_credits"),
    ],
)
def test_the_budget_refusal_names_the_numbers_and_what_fits(
    costs: list[int], spent: int, budget: int, text: str | None
) -> None:
    refusal = budget_refusal(costs, spent, budget)
    if text is None:
        assert refusal is None
    else:
        assert isinstance(refusal, BudgetExceededError) and str(refusal).endswith(text)


def test_the_budget_refusal_names_the_setting_it_was_given() -> None:
    refusal = budget_refusal([10], 0, 5, name="batch max_credits")
    assert str(refusal).endswith("raise batch max_credits")
    assert budget_refusal([10], 0, None) is None


# --- redaction --------------------------------------------------------------------------------------


def test_a_network_error_in_a_flow_never_carries_the_key(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    engine.settings = Settings(KEY, f"http://user:{KEY}@127.0.0.1:9", "graphql", tmp_path, 0.0, sandbox=False)
    engine.reached = True
    with pytest.raises(NetworkError) as caught:
        Script(httpx.ConnectError(f"failed for Bearer {KEY}")).run(engine.call(engine.transport.account(), deadline=0))
    assert KEY not in str(caught.value) and "<redacted>" in str(caught.value)


def test_redact_replaces_every_encoding_and_keeps_the_rest() -> None:
    import base64
    from urllib.parse import quote

    text = f"a {KEY} b {quote(KEY, safe='')} c {base64.b64encode(f'Bearer {KEY}'.encode()).decode()} d"
    assert redact(text, KEY) == "a <redacted> b <redacted> c <redacted> d"
    assert redact("plain", "") == "plain"


def test_checked_api_key_strips_refuses_by_position_and_remembers_the_key() -> None:
    assert checked_api_key(None) is None
    assert checked_api_key("  \n") is None
    assert checked_api_key(f" {KEY}\n") == KEY
    with pytest.raises(AuthenticationError, match=r"\(a space\) at position 4 of 9;") as caught:
        checked_api_key("abc defgh")
    assert "abc" not in str(caught.value)
    with pytest.raises(AuthenticationError, match=r"\(U\+00E9\) at position 1 of 5"):
        checked_api_key("\u00e9abcd")
    with pytest.raises(AuthenticationError, match="must be text, not int"):
        checked_api_key(1234)  # type: ignore[arg-type]
    later = f"sk-remembered-{uuid.uuid4().hex}"  # fresh in each process (mutmut forks after the clean run)
    checked_api_key(later)
    assert later not in str(DoitongError(f"echo {later}"))


# --- a batch's own budget: what each item may charge, admitted before it is sent ---------------------


def plan(engine: Engine, requests: list[GenerationRequest], max_credits: int | None = None) -> Any:
    from doitong_nb._runtime.batch import _Batch

    return _Batch(engine, requests, max_credits=max_credits, refresh=False, progress=False, completion=None)


def test_a_quote_counts_nothing_for_stored_or_paid_jobs_and_shares_seeded_duplicates(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    stored, paid, unsent, fresh = (REQUEST.with_seed(s) for s in (1, 2, 3, 4))
    Script(ok(job("job_s"))).run(engine.generate(stored))
    journal = engine.store.journal
    journal.mark_submitted(journal.begin(paid.key(), paid, engine.settings.origin).idempotency_key, "job_p")
    journal.begin(unsent.key(), unsent, engine.settings.origin)  # journaled, maybe never sent: may charge
    unseeded = GenerationRequest.build("a kite over a dune", size="256x256")
    quote = engine.quote([stored, paid, unsent, fresh, fresh, unseeded, unseeded])
    assert [(i.index, i.variant, i.cost, i.replay, i.copies) for i in quote.items] == [
        (0, 0, 0, True, ()),
        (1, 0, 0, False, ()),
        (2, 0, 10, False, ()),
        (3, 0, 10, False, (4,)),
        (5, 0, 10, False, ()),
        (6, 1, 10, False, ()),
    ]
    assert (quote.costs, quote.total) == ([0, 0, 10, 10, 0, 10, 10], 40)
    assert plan(engine, [stored, paid, unsent, fresh, fresh, unseeded, unseeded]).items == quote.items  # the batch's
    again = engine.quote([stored, paid], refresh=True)  # a new image of the stored one; the paid job is picked up
    assert [(i.cost, i.replay) for i in again.items] == [(10, False), (0, False)]


def test_a_quote_keeps_the_variant_of_each_pair_and_shares_nothing(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    Script(ok(job("job_s"))).run(engine.generate(REQUEST, variant=1))
    quote = engine.quote([(REQUEST, 0), (REQUEST, 1), (REQUEST, 0)])
    assert [(i.variant, i.cost, i.replay) for i in quote.items] == [(0, 10, False), (1, 0, True), (0, 10, False)]
    assert quote.items[1].key == REQUEST.key(1)


def test_a_quote_weighs_a_budget_of_its_own_over_what_it_is_told_was_spent(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, max_credits=1000)
    panel = engine.quote([REQUEST], max_credits=25, spent=20, budget_name="the budget")
    assert str(panel.refusal).endswith("spent 20 of its 25-credit budget, 5 left: raise the budget")
    assert engine.quote([REQUEST], max_credits=30, spent=20).refusal is None
    with pytest.raises(BudgetExceededError, match="raise the budget"):
        engine.admit(panel)


def test_admitting_one_image_weighs_it_against_the_session_budget(tmp_path: Path) -> None:
    engine = make_engine(tmp_path, max_credits=20)
    engine.session_credits = 10
    engine.admit(10)
    with pytest.raises(BudgetExceededError, match="this image costs 11 credits and the session has spent 10 of its 20"):
        engine.admit(11)


def test_a_batch_admits_items_exactly_up_to_its_budget_and_free_ones_past_it(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    Script(ok(job("job_s"))).run(engine.generate(REQUEST.with_seed(1)))
    batch = plan(engine, [REQUEST.with_seed(s) for s in (2, 3, 4, 1)], max_credits=20)
    first, second, third, replay = batch.items
    batch._admit(first)
    batch._admit(second)
    assert (batch.committed, batch.charged) == (20, 2)
    refused = r"^item 2 \(256x256\): this image costs 10 credits and the batch has committed 20 of its 20-credit budget"
    with pytest.raises(BudgetExceededError, match=refused + ", 0 left: raise max_credits; nothing was sent for it$"):
        batch._admit(third)
    batch._admit(replay)  # costs nothing
    assert (batch.committed, batch.charged) == (20, 2)


def test_a_batch_stops_charging_items_at_the_daily_cap(tmp_path: Path) -> None:
    from doitong_nb._core.errors import RateLimitError

    engine = make_engine(tmp_path)
    Script(ok(job("job_s"))).run(engine.generate(REQUEST.with_seed(1)))
    batch = plan(engine, [REQUEST.with_seed(s) for s in (2, 3, 1)])
    batch.daily_limit = 1
    batch._admit(batch.items[0])
    cap = "^the plan's daily limit of jobs is reached by this batch; nothing was sent for this item$"
    with pytest.raises(RateLimitError, match=cap) as caught:
        batch._admit(batch.items[1])
    assert caught.value.code == contract.DAILY_LIMIT_REACHED
    batch._admit(batch.items[2])  # a replay is no job: past the cap too
    assert batch.charged == 1


# --- more of the same flows: origins, replay off, deadlines, resume by id, failures, balance, transports ---


def test_a_job_journaled_for_another_service_is_not_resumed_here(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    other = engine.store.journal.begin(REQUEST.key(), REQUEST, "https://another.example")
    engine.store.journal.mark_submitted(other.idempotency_key, "job_elsewhere")
    script = Script(ok(job("job_here")))
    assert script.run(engine.generate(REQUEST)).job_id == "job_here"
    assert script.kinds() == ["submit"] and script.keys()[0] != other.idempotency_key


def test_with_replay_off_the_same_request_is_generated_again(tmp_path: Path) -> None:
    engine = Engine(Settings(KEY, BASE, "graphql", tmp_path, 30.0, sandbox=False), replay=False)
    script = Script(ok(job("job_a")), ok(job("job_b")))
    assert [script.run(engine.generate(REQUEST)).job_id for _ in range(2)] == ["job_a", "job_b"]
    assert engine.session_credits == 20


def test_a_call_timeout_ends_the_retries_at_its_deadline(tmp_path: Path) -> None:
    from doitong_nb._core.errors import ServerError

    engine = make_engine(tmp_path)
    script = Script(refused(503, contract.INTERNAL))
    with pytest.raises(ServerError):
        script.run(engine.generate(REQUEST, timeout=0.0))
    assert script.kinds() == ["submit"]


def test_resume_by_job_id_reads_and_stores_the_paid_job_under_its_request(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    Script(ok(job("job_b"))).run(engine.generate(REQUEST.with_seed(9)))  # another stored result
    entry = engine.store.journal.begin(REQUEST.key(), REQUEST, engine.settings.origin)
    engine.store.journal.mark_submitted(entry.idempotency_key, "job_a")
    script = Script(refused(503, contract.INTERNAL), ok(job("job_a"), name="job"))
    result = script.run(engine.resume("job_a"))
    assert script.kinds() == ["status", "status"] and engine.session_credits == 10  # job_b's only
    assert (result.job_id, result.resumed, result.credits, result.seed) == ("job_a", True, 0, 5)
    assert engine.store.find(REQUEST.key(), engine.settings.origin).job_id == "job_a" and engine.pending() == []
    again = Script()
    assert again.run(engine.resume("job_a")).job_id == "job_a" and again.sent == []  # stored: no request
    assert again.run(engine.resume("job_b")).job_id == "job_b"
    with pytest.raises(NotFoundError, match=r"`%flux_jobs` or `Flux\(\).jobs\(\)` lists them$"):
        again.run(engine.resume("job_unknown"))


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (contract.CONTENT_MODERATED, "rephrase the prompt"),
        (contract.GENERATION_FAILED, "try again, perhaps with another seed or prompt"),
    ],
)
def test_a_failed_job_says_why_with_its_code_and_id(tmp_path: Path, code: str, advice: str) -> None:
    engine = make_engine(tmp_path)
    engine.balance = 100
    failed = job("job_a", "FAILED", error={"code": code, "message": "no"})
    with pytest.raises(GenerationFailedError, match=f"are refunded: {advice}$") as caught:
        Script(ok(job("job_a", "PROCESSING")), ok(failed, name="job")).run(engine.generate(REQUEST))
    assert (caught.value.code, caught.value.job_id) == (code, "job_a")
    assert errors(engine) == [code]
    assert (engine.session_credits, engine.balance) == (0, 100)


def test_the_balance_follows_what_the_session_spends(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    engine.balance = 100
    Script(ok(job("job_a"))).run(engine.generate(REQUEST))
    assert engine.balance == 90


def test_a_submission_counts_the_cost_the_service_tells_at_once(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    entry = engine.store.journal.begin(REQUEST.key(), REQUEST)
    Script(ok(job("job_a", "PROCESSING", cost=13))).run(engine.submit(REQUEST, entry.idempotency_key, 1e12))
    assert engine.session_credits == 13  # not the 10-credit quote, even before the job is done


def test_a_call_on_another_transport_goes_there_throughout(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    rest = engine.transport_named("rest")
    script = Script(ok(job("job_a", "PROCESSING")), ok(job("job_a"), name="job"))
    script.run(engine.generate(REQUEST, via=rest))
    assert [(s.call.method, s.call.path.split("/")[1]) for s in script.sent] == [("POST", "v1"), ("GET", "v1")]
    assert script.sent[0].call.path == contract.REST_SUBMIT_PATH


def test_a_remembered_key_of_four_characters_is_scrubbed_from_every_error() -> None:
    import secrets

    from doitong_nb._core.redaction import remember_secret

    short = f"~{secrets.token_hex(1)}~"  # fresh in each process (mutmut forks after the clean run)
    remember_secret(short)
    assert short not in str(DoitongError(f"echo {short}"))


def test_the_edges_of_what_a_header_can_carry_are_accepted() -> None:
    assert checked_api_key("!abc~") == "!abc~"
    with pytest.raises(AuthenticationError, match="U\\+007F"):
        checked_api_key("abc\x7f")


def test_a_rest_call_carries_rest_auth_and_resumes_over_rest(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    rest = engine.transport_named("rest")
    script = Script(ok(job("job_a", "PROCESSING")), ok(job("job_a"), name="job"))
    script.run(engine.generate(REQUEST, via=rest))
    assert all(s.headers.get("X-API-Key") == KEY and "Authorization" not in s.headers for s in script.sent)
    paid = REQUEST.with_seed(6)
    entry = engine.store.journal.begin(paid.key(), paid, engine.settings.origin)
    engine.store.journal.mark_submitted(entry.idempotency_key, "job_p")
    resumed = Script(ok(job("job_p"), name="job"))
    assert resumed.run(engine.generate(paid, via=rest)).resumed
    assert [s.call.method for s in resumed.sent] == ["GET"]


def test_a_resume_keeps_its_own_timeout(tmp_path: Path) -> None:
    from doitong_nb._core.errors import ServerError

    engine = make_engine(tmp_path)
    entry = engine.store.journal.begin(REQUEST.key(), REQUEST, engine.settings.origin)
    engine.store.journal.mark_submitted(entry.idempotency_key, "job_a")
    with pytest.raises(ServerError):
        Script(refused(503, contract.INTERNAL)).run(engine.resume("job_a", timeout=0.0))


def test_progress_hears_the_wait_for_a_slot_each_status_and_the_download(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    heard: list[tuple[str, float, str]] = []
    busy = Reply(
        429,
        httpx.Headers({"Retry-After": "0.01"}),
        {"errors": [{"message": "busy", "extensions": {"code": contract.CONCURRENCY_LIMITED}}]},
    )
    script = Script(busy, ok(job("job_a", "PROCESSING")), ok(job("job_a"), name="job"))
    script.run(engine.generate(REQUEST, progress=lambda *said: heard.append(said)))
    assert heard[0] == ("waiting for a free job slot", 0.0, "")
    assert heard[1][0] == contract.STATUS_PROCESSING and heard[1][2] == "0 status reads"
    what, elapsed, detail = heard[-1]
    assert (what, detail) == ("downloading", "") and 0 <= elapsed < 60


def test_resume_reports_progress_too(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    entry = engine.store.journal.begin(REQUEST.key(), REQUEST, engine.settings.origin)
    engine.store.journal.mark_submitted(entry.idempotency_key, "job_a")
    heard: list[str] = []
    Script(ok(job("job_a"), name="job")).run(engine.resume("job_a", progress=lambda what, *_: heard.append(what)))
    assert heard == ["downloading"]


def _fail(*args: Any, **kwargs: Any) -> None:
    raise StorageError("the output folder is full", remedy="free some space", kind="full")


def test_a_paid_job_that_cannot_be_stored_is_named_with_what_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(tmp_path)
    monkeypatch.setattr(engine.store, "put", _fail)
    with pytest.raises(StorageError) as caught:
        Script(ok(job("job_a"))).run(engine.generate(REQUEST))
    assert (caught.value.job_id, caught.value.paid, caught.value.kind, caught.value.waiting) == (
        "job_a",
        True,
        "full",
        1,
    )
    assert "job job_a is done and paid for, but the output folder is full. 1 job is paid and waiting" in str(
        caught.value
    )


def test_a_job_id_the_journal_cannot_record_is_named_with_what_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(tmp_path)
    monkeypatch.setattr(engine.store.journal, "mark_submitted", _fail)
    with pytest.raises(StorageError) as caught:
        Script(ok(job("job_a", "PROCESSING"))).run(engine.generate(REQUEST))
    assert (caught.value.job_id, caught.value.paid, caught.value.waiting) == ("job_a", True, 1)


@pytest.mark.parametrize("step", ["put", "mark_submitted"])
def test_a_paid_job_whose_folder_is_gone_is_kept_by_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    engine = make_engine(tmp_path)

    def gone(*args: Any, **kwargs: Any) -> None:
        raise StorageError("the output folder is gone", remedy="make it available again", kind="gone")

    monkeypatch.setattr(engine.store if step == "put" else engine.store.journal, step, gone)
    with pytest.raises(StorageError) as caught:
        Script(ok(job("job_a"))).run(engine.generate(REQUEST))
    assert (caught.value.job_id, caught.value.journaled) == ("job_a", False)
    [kept] = engine.store.rescued_entries()
    assert (kept.job_id, kept.state, kept.key) == ("job_a", SUBMITTED, REQUEST.key())


def test_a_wait_for_a_slot_without_a_progress_line_is_silent(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    busy = Reply(
        429,
        httpx.Headers({"Retry-After": "0.01"}),
        {"errors": [{"message": "busy", "extensions": {"code": contract.CONCURRENCY_LIMITED}}]},
    )
    assert Script(busy, ok(job("job_a"))).run(engine.generate(REQUEST)).job_id == "job_a"


def test_a_journal_that_cannot_note_the_end_loses_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(tmp_path)
    monkeypatch.setattr(engine.store.journal, "mark_done", _fail)
    monkeypatch.setattr(engine.store.journal, "mark_failed", _fail)
    assert Script(ok(job("job_a"))).run(engine.generate(REQUEST)).job_id == "job_a"  # stored: the sidecar says so
    stale = engine.store.journal.begin(REQUEST.key(), REQUEST, engine.settings.origin)
    engine.store.journal.mark_submitted(stale.idempotency_key, "job_a")
    assert Script().run(engine.generate(REQUEST)).job_id == "job_a"  # a replay, whatever the journal says
    failed = job("job_f", "FAILED", error={"code": contract.GENERATION_FAILED, "message": "no"})
    with pytest.raises(GenerationFailedError):
        Script(ok(failed)).run(engine.generate(REQUEST.with_seed(8)))


def test_a_refused_key_is_remembered_all_the_same() -> None:
    bad = f"sk-{uuid.uuid4().hex} x"
    with pytest.raises(AuthenticationError):
        checked_api_key(bad)
    assert bad.split()[0] not in str(DoitongError(f"echo {bad}"))


def test_a_batch_whose_folder_failed_sends_no_more_items(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    batch = plan(engine, [REQUEST])
    batch.closed = StorageError("the output folder is full", remedy="free some space", kind="full")
    with pytest.raises(StorageError, match="nothing was sent or charged: free some space, then re-run") as caught:
        batch._admit(batch.items[0])
    assert caught.value.kind == "full" and batch.committed == 0


# --- one call's retries and pacing (Engine.call) ------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_429_with_retry_after_blocks_every_caller_for_exactly_that_long(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    limited = Reply(429, httpx.Headers({"Retry-After": "2"}), {"errors": [{"message": "slow down"}]})
    script = Script(limited, ok(job("job_a")))
    script.run(engine.generate(REQUEST))
    assert script.slept[0] == 2.0  # the retry's own wait
    assert script.slept[1] == pytest.approx(2.0, abs=0.5)  # and the budget is blocked for every booking meanwhile
    assert engine.budget._blocked_until - time.monotonic() > 1.0
    assert (engine.requests["429"], engine.requests["retries"], engine.requests["submit"]) == (1, 1, 2)


def test_a_429_without_retry_after_backs_off(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    limited = Reply(429, httpx.Headers({}), {"errors": [{"message": "slow down"}]})
    script = Script(limited, ok(job("job_a")))
    script.run(engine.generate(REQUEST))
    assert 0.125 <= script.slept[0] <= 0.25  # full jitter on the first backoff, which blocks the budget too
    assert len(script.slept) == 2 and script.slept[1] == pytest.approx(script.slept[0], abs=0.1)


def test_a_call_waits_for_its_booked_slot_even_a_short_one(tmp_path: Path) -> None:
    from doitong_nb._core.limits import RateBudget

    engine = make_engine(tmp_path)
    clock = Clock()
    engine.budget = RateBudget(limit=1, window=0.5, clock=clock)
    script = Script(ok(job("job_a")), ok(job("job_b")))
    script.run(engine.generate(REQUEST))
    clock.now += 0.25  # answered a quarter second later
    script.run(engine.generate(REQUEST.with_seed(6)))
    assert len(script.slept) == 1 and script.slept[0] == pytest.approx(0.5 + 0.005 - 0.25, abs=1e-6)


def test_a_call_gives_up_after_eight_attempts(tmp_path: Path) -> None:
    from doitong_nb._core.errors import ServerError
    from doitong_nb._engine.engine import MAX_ATTEMPTS

    engine = make_engine(tmp_path)
    script = Script(*[refused(503, contract.INTERNAL)] * 9)
    with pytest.raises(ServerError):
        script.run(engine.generate(REQUEST))
    assert len(script.sent) == MAX_ATTEMPTS == 8 and len(script.slept) == 7


def test_a_connection_refused_before_any_answer_fails_at_once_and_later_is_retried(tmp_path: Path) -> None:
    from doitong_nb._core.steps import ConnectFailed

    engine = make_engine(tmp_path)
    script = Script(ConnectFailed("refused"))
    with pytest.raises(NetworkError, match=r"^cannot connect to 127\.0\.0\.1:9 \(refused\)"):
        script.run(engine.generate(REQUEST))
    assert len(script.sent) == 1 and not engine.reached
    Script(ok(job("job_a"))).run(engine.generate(REQUEST))
    assert engine.reached
    again = Script(ConnectFailed("refused"), ok(job("job_b")))
    assert again.run(engine.generate(REQUEST.with_seed(6))).job_id == "job_b"


def test_a_refusal_in_the_service_shape_is_retried_and_an_unclear_answer_is_not(tmp_path: Path) -> None:
    """A 5xx in the service's error shape made no job: sent again. An empty 2xx or a proxy's bare 502 may stand for
    a charged job: never sent again on a guess, and counted as possibly charged."""
    engine = make_engine(tmp_path)
    script = Script(refused(503, contract.INTERNAL), ok(job("job_a")))
    assert script.run(engine.generate(REQUEST)).job_id == "job_a" and len(script.sent) == 2
    for n, unclear in enumerate((Reply(200, httpx.Headers({}), None), Reply(502, httpx.Headers({}), None))):
        script, spent = Script(unclear, ok(job("job_b"))), engine.session_credits
        with pytest.raises(UnclearSubmissionError, match=r"may exist and be charged"):
            script.run(engine.generate(REQUEST.with_seed(10 + n)))
        assert len(script.sent) == 1 and engine.session_credits == spent + REQUEST.estimated_credits
        assert [e.job_id for e in engine.pending()][-1] is None  # kept in the journal, for resume --resend
    engine.idempotency_honoured = True  # the service has shown it: the same key is sent again
    script = Script(Reply(200, httpx.Headers({}), None), ok(job("job_c")))
    assert script.run(engine.generate(REQUEST.with_seed(20))).job_id == "job_c" and len(script.sent) == 2
    assert len(set(script.keys())) == 1
    from doitong_nb._core.errors import InvalidRequestError

    bad_input = {"errors": [{"message": "bad", "extensions": {"code": contract.BAD_USER_INPUT}}]}
    for refusal in (
        Reply(400, httpx.Headers({}), {"message": "bad"}),
        Reply(400, httpx.Headers({}), None),
        Reply(200, httpx.Headers({}), bad_input),  # GraphQL's errors in a 200
    ):
        script = Script(refusal)
        with pytest.raises(InvalidRequestError):
            script.run(engine.generate(REQUEST.with_seed(6)))
        assert len(script.sent) == 1


def test_a_network_error_never_carries_a_key_not_yet_remembered(tmp_path: Path) -> None:
    fresh = f"sk-{uuid.uuid4().hex}"  # not remembered by any other test of this process
    engine = Engine(Settings(fresh, f"http://u:{fresh}@127.0.0.1:9", "graphql", tmp_path, 0.0, sandbox=False))
    engine.reached = True
    with pytest.raises(NetworkError) as caught:
        Script(httpx.ConnectError(f"for {fresh}")).run(engine.call(engine.transport.account(), deadline=0))
    assert fresh not in str(caught.value) and "httpx" not in str(caught.value) and "ConnectError" in str(caught.value)


# --- a webhook is one step; what happens is told as events ---------------------------------------------


def webhook(payload: dict[str, Any] | None) -> Any:
    """A completion source whose future for any job is resolved with `payload` (None: the webhook never comes)."""
    from concurrent.futures import Future

    def future(job_id: str) -> Future[dict[str, Any]]:
        pending: Future[dict[str, Any]] = Future()
        if payload is not None:
            pending.set_result(payload)
        return pending

    return future


def test_a_job_whose_webhook_comes_is_waited_for_in_one_step_with_no_status_read(tmp_path: Path) -> None:
    from doitong_nb._core.polling import expected_seconds
    from doitong_nb._engine.engine import WEBHOOK_GRACE, WEBHOOK_SLACK

    script = Script(ok(job("job_a", "PROCESSING")))
    engine = make_engine(tmp_path, clock=script.clock)
    result = script.run(engine.generate(REQUEST, completion=webhook(job("job_a")), timeout=100.0))
    assert script.kinds() == ["submit"] and result.job_id == "job_a" and result.path.is_file()
    assert script.waited == [pytest.approx(WEBHOOK_GRACE * expected_seconds(SIZE * SIZE) + WEBHOOK_SLACK)]
    assert script.slept == [] and script.now == 0.0  # woken by the webhook, not by a tick


def test_a_lost_webhook_is_waited_for_until_the_grace_ends_then_the_status_is_read(tmp_path: Path) -> None:
    from doitong_nb._core.polling import expected_seconds
    from doitong_nb._engine.engine import WEBHOOK_GRACE, WEBHOOK_SLACK

    grace = WEBHOOK_GRACE * expected_seconds(SIZE * SIZE) + WEBHOOK_SLACK
    script = Script(ok(job("job_a", "PROCESSING")), ok(job("job_a"), name="job"))
    engine = make_engine(tmp_path, clock=script.clock)
    result = script.run(engine.generate(REQUEST, completion=webhook(None), timeout=100.0))
    assert script.kinds() == ["submit", "status"] and result.job_id == "job_a"
    assert script.waited == [pytest.approx(grace)] and script.sent_at[1] >= grace


def test_the_webhook_wait_ends_at_the_call_deadline(tmp_path: Path) -> None:
    from doitong_nb._core.errors import JobTimeoutError

    script = Script(ok(job("job_a", "PROCESSING")))
    engine = make_engine(tmp_path, clock=script.clock)
    with pytest.raises(JobTimeoutError, match="stopped waiting for job job_a"):
        script.run(engine.generate(REQUEST, completion=webhook(None), timeout=3.0))
    assert script.waited == [pytest.approx(3.0)] and script.kinds() == ["submit"]


def heard(engine: Engine) -> list[tuple[Any, ...]]:
    """Every event the engine publishes, as (kind, key, job_id, status, credits, error code)."""
    events: list[tuple[Any, ...]] = []
    engine.subscribe(lambda e: events.append((e.kind, e.key, e.job_id, e.status, e.credits, e.error and e.error.code)))
    return events


def test_a_flow_tells_its_submission_charge_status_and_completion_as_events(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    events = heard(engine)
    Script(ok(job("job_a", "PROCESSING")), ok(job("job_a"), name="job")).run(engine.generate(REQUEST))
    key = REQUEST.key()
    assert events == [
        ("charged", None, "job_a", None, 10, None),
        ("submitted", key, "job_a", None, 0, None),
        ("status", None, "job_a", contract.STATUS_COMPLETED, 0, None),
        ("completed", key, "job_a", None, 0, None),
    ]
    events.clear()
    Script().run(engine.generate(REQUEST))  # a replay: nothing happens at the service
    assert events == []


def test_a_failed_job_is_told_with_its_refund_and_a_refusal_before_its_retry(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    events = heard(engine)
    failed = job("job_a", "FAILED", error={"code": contract.GENERATION_FAILED, "message": "boom"})
    busy = refused(429, contract.CONCURRENCY_LIMITED)
    with pytest.raises(GenerationFailedError):
        Script(busy, ok(job("job_a", "PROCESSING")), ok(failed, name="job")).run(engine.generate(REQUEST))
    assert [e[0] for e in events] == ["refused", "charged", "submitted", "status", "charged", "failed"]
    assert events[0][5] == contract.CONCURRENCY_LIMITED and events[4][4] == -10
    assert events[5][1:3] == (REQUEST.key(), "job_a") and events[5][5] == contract.GENERATION_FAILED


def test_an_unsubscribed_listener_hears_no_more(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    told: list[str] = []
    unsubscribe = engine.subscribe(lambda e: told.append(e.kind))
    Script(ok(job("job_a"))).run(engine.generate(REQUEST))
    unsubscribe()
    unsubscribe()  # twice is harmless
    Script(ok(job("job_b"))).run(engine.generate(REQUEST.with_seed(6)))
    assert told == ["charged", "submitted", "completed"]


def test_the_rate_header_names_the_plan(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    free = contract.PLANS["free"]
    limited = Reply(200, httpx.Headers({"X-RateLimit-Limit": str(free.requests_per_minute)}), ok(job("a")).body)
    Script(limited).run(engine.call(engine.transport.account(), deadline=10))
    assert engine.plan == "free"


def test_every_error_after_a_submission_names_the_job_and_how_to_fetch_it(tmp_path: Path) -> None:
    """Issue 20: errors met while waiting for a paid job (a refused status read, an unsafe URL) carried no job id."""
    from doitong_nb._core.errors import AuthenticationError, UnsafeResponseError

    engine = make_engine(tmp_path)
    script = Script(ok(job("job_a", "PROCESSING")), refused(401, contract.UNAUTHENTICATED))
    with pytest.raises(AuthenticationError, match=r"refused.*`%flux_resume job_a`") as caught:
        script.run(engine.generate(REQUEST))
    assert caught.value.job_id == "job_a"
    unsafe = {**job("job_b"), "url": "file:///etc/passwd"}
    with pytest.raises(UnsafeResponseError, match=r"scheme 'file'.*`%flux_resume job_b`"):
        Script(ok(unsafe)).run(engine.generate(REQUEST.with_seed(6)))

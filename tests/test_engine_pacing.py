"""Time in the engine's flows, on the scripted driver's fake clock: retries after a backoff, 429 pacing across
flows, timeouts, first contact. They run in milliseconds with no socket and no real waiting (the end-to-end
tests run the same flows against the sandbox; test_engine_scripted.py covers journal, idempotency and budget)."""

from __future__ import annotations

import random
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest
from _scripted import Script

from doitong_nb import _contract as contract
from doitong_nb._core.errors import JobTimeoutError, NetworkError, RateLimitError, UnclearSubmissionError
from doitong_nb._core.limits import reset_seconds
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.settings import Settings
from doitong_nb._core.steps import Reply, Send, Sleep
from doitong_nb._engine.engine import Engine

REQUEST = GenerationRequest.build("a lighthouse at dawn", size="512x512", seed=3)


def reply(data: dict[str, Any], status: int = 200, **headers: str) -> Reply:
    return Reply(status, httpx.Headers(headers), {"data": data} if status < 400 else data)


def job(status: str, job_id: str = "job_1", **fields: Any) -> Reply:
    return reply({"job": {"id": job_id, "status": status, "creditCost": 10, **fields}})


def error(status: int, code: str, message: str = "refused", **headers: str) -> Reply:
    return reply({"errors": [{"message": message, "extensions": {"code": code}}]}, status, **headers)


@pytest.fixture
def script() -> Script:
    return Script()


def engine_for(script: Script, tmp_path: Path, timeout: float = 600.0) -> Engine:
    settings = Settings("sk-scripted-0001", "https://api.doitong.com", "graphql", tmp_path / "out", timeout, False)
    engine = Engine(settings, clock=script.clock, rng=random.Random(7))
    engine.reached = True  # a service that has answered before: failed connections are retried
    return engine


def test_a_5xx_is_retried_after_a_backoff_and_the_answer_returned(script: Script, tmp_path: Path) -> None:
    script.answers.extend([error(503, contract.INTERNAL), reply({"account": {"credits": 90, "plan": "pro"}})])
    account = script.run(engine_for(script, tmp_path).account())
    assert account.credits == 90 and len(script.sent) == 2
    assert len(script.slept) == 1 and 0.5 * 0.25 <= script.slept[0] <= 0.25  # the first backoff, jittered


def test_a_429_holds_every_flow_back_until_its_retry_after_has_passed(script: Script, tmp_path: Path) -> None:
    engine = engine_for(script, tmp_path)
    script.answers.extend([error(429, contract.RATE_LIMITED, **{"Retry-After": "7"}), job("processing")])
    first = engine.status("job_1", deadline=1e9)
    refused, _ = script.step(next(first))  # sent at t=0, answered with the 429
    wait = first.send(refused)
    assert isinstance(wait, Sleep) and wait.seconds == pytest.approx(7.0)
    other = engine.status("job_2", deadline=1e9)
    held = next(other)  # another flow, started during the wait, is held back too
    assert isinstance(held, Sleep) and held.seconds == pytest.approx(7.0, abs=0.05)


def test_a_lost_answer_is_not_resent_until_the_service_has_shown_it_honours_the_key(
    script: Script, tmp_path: Path
) -> None:
    engine = engine_for(script, tmp_path)
    dropped = httpx.RemoteProtocolError("peer closed connection without sending a response")
    script.answers.append(dropped)
    with pytest.raises(UnclearSubmissionError, match=r"may exist and be charged \(10 credits.*--resend") as caught:
        script.run(engine.submit(REQUEST, "idem-42", deadline=1e9))
    assert script.keys() == ["idem-42"] and caught.value.idempotency_key == "idem-42"
    assert engine.session_credits == 10  # counted as possibly charged: a budget sees it


def test_a_resent_submission_carries_the_same_idempotency_key_and_is_charged_once(
    script: Script, tmp_path: Path
) -> None:
    engine = engine_for(script, tmp_path)
    echoed = job("queued", "job_0")
    echoed.headers[contract.HEADER_IDEMPOTENCY] = "idem-41"  # the service's word that it honours keys
    dropped = httpx.RemoteProtocolError("peer closed connection without sending a response")
    script.answers.extend([echoed, dropped, job("queued"), job("completed", url=None)])
    script.run(engine.submit(REQUEST, "idem-41", deadline=1e9))
    assert engine.idempotency_honoured and engine.session_credits == 10
    submitted = script.run(engine.submit(REQUEST, "idem-42", deadline=1e9))
    assert script.keys() == ["idem-41", "idem-42", "idem-42"] and submitted.id == "job_1"
    script.run(engine.submit(REQUEST, "idem-42", deadline=1e9))  # the service answers a resend with the same job
    assert engine.session_credits == 20  # two jobs, each charged once: the lost answer's count became job_1's


def test_a_journaled_job_is_resumed_by_a_status_read_never_submitted_again(script: Script, tmp_path: Path) -> None:
    engine = engine_for(script, tmp_path)
    engine.store.prepare()
    entry = engine.store.journal.begin(REQUEST.key(), REQUEST, engine.settings.origin)
    engine.store.journal.mark_submitted(entry.idempotency_key, "job_9")
    script.answers.append(job("processing", "job_9"))
    flow = engine.generate(REQUEST)
    step = next(flow)
    while not isinstance(step, Send):
        step = flow.send(script.step(step)[0])
    assert isinstance(step, Send) and step.call.kind != "submit"  # the first request reads job_9's status
    assert step.call.json["variables"] == {"id": "job_9"}
    flow.close()


def test_a_job_still_running_at_the_deadline_is_handed_back_by_id_without_real_waiting(
    script: Script, tmp_path: Path
) -> None:
    engine = engine_for(script, tmp_path, timeout=30)
    script.answers.extend([job("queued"), *(job("processing") for _ in range(50))])
    with pytest.raises(JobTimeoutError) as caught:
        script.run(engine.generate(REQUEST))
    assert caught.value.job_id == "job_1" and "flux_resume" in str(caught.value)
    assert 0 < script.now <= 30  # fake seconds: the test itself took milliseconds


def test_an_unreachable_host_at_first_contact_fails_without_a_retry(script: Script, tmp_path: Path) -> None:
    from doitong_nb._core.steps import ConnectFailed

    engine = engine_for(script, tmp_path)
    engine.reached = False
    script.answers.append(ConnectFailed("name or service not known"))
    with pytest.raises(NetworkError, match=r"cannot connect to api\.doitong\.com"):
        script.run(engine.account())
    assert len(script.sent) == 1 and script.slept == []


def test_a_retry_after_a_network_error_is_told_with_its_count(script: Script, tmp_path: Path) -> None:
    heard: list[str] = []
    dropped = httpx.ReadError("connection reset")
    script.answers.extend([dropped, dropped, job("processing")])
    script.run(engine_for(script, tmp_path).status("job_1", deadline=1e9, waiting=heard.append))
    assert heard == ["retrying (1/7)", "retrying (2/7)"]


@pytest.mark.parametrize(
    "reset",
    [
        lambda now: str(round((now + 30) * 1000)),  # a Unix time in milliseconds
        lambda now: formatdate(now + 30, usegmt=True),  # an HTTP date
        lambda now: "30",  # seconds from now
        lambda now: f"{now + 30:.3f}",  # the contract's Unix seconds
    ],
)
def test_an_x_ratelimit_reset_is_read_in_any_unit(reset: Any) -> None:
    """Issue 20: an X-RateLimit-Reset in epoch milliseconds was read as seconds, and the budget waited millennia."""
    now = time.time()
    assert reset_seconds(reset(now), now) == pytest.approx(30.0, abs=1.0)


def test_an_implausible_reset_is_clamped_to_the_window_and_noted(script: Script, tmp_path: Path) -> None:
    engine = engine_for(script, tmp_path)
    far = str(round((time.time() + 86_400 * 365) * 1000))  # a year away: no rate window resets that late
    headers = {contract.HEADER_RATE_LIMIT: "60", contract.HEADER_RATE_REMAINING: "0", contract.HEADER_RATE_RESET: far}
    script.answers.extend([reply({"account": {"credits": 90, "plan": "pro"}}, **headers), reply({"account": {}})])
    script.run(engine.account())
    script.run(engine.account())
    assert script.slept and max(script.slept) <= contract.RATE_WINDOW_SECONDS + 0.1
    assert engine.budget.implausible_reset == far


def test_a_rate_wait_past_the_callers_deadline_is_refused_before_it_starts(script: Script, tmp_path: Path) -> None:
    engine = engine_for(script, tmp_path)
    engine.budget.block_for(45.0)  # what a 429's Retry-After (or a spent budget) said
    with pytest.raises(RateLimitError, match=r"in 45.0 s, after this call's timeout; nothing more was sent"):
        script.run(engine.call(engine.transport.account(), deadline=script.clock() + 10))
    assert script.slept == [] and script.sent == []
    script.answers.append(reply({"account": {"credits": 90, "plan": "pro"}}))
    script.run(engine.call(engine.transport.account(), deadline=script.clock() + 60))  # the slot was given back
    assert script.slept == [pytest.approx(45.0)] and len(script.sent) == 1

"""Flux.batch / AsyncFlux.batch against a real sandbox on loopback: order, limits, budget, resume, webhooks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path

import httpx
import pytest

from doitong_nb import _contract as contract
from doitong_nb._core.errors import AuthenticationError, BudgetExceededError, GenerationFailedError
from doitong_nb._core.request import GenerationRequest
from doitong_nb._core.result import ImageResult
from doitong_nb._core.steps import Flow, Send, Sleep, Step, WaitFor
from doitong_nb._runtime.batch import BatchOptions, BatchStats, run_async
from doitong_nb._runtime.client import AsyncFlux, Flux
from doitong_nb._wire.graphql import GraphQLTransport
from doitong_sandbox import Faults, Sandbox

SPEED = 200


@pytest.fixture
def free_box() -> Iterator[Sandbox]:
    with Sandbox(plan="free", credits=1000, speed=SPEED) as box:
        yield box


@pytest.fixture
def pro_box() -> Iterator[Sandbox]:
    with Sandbox(plan="pro", credits=1000, speed=SPEED) as box:
        yield box


def client(box: Sandbox, out: Path) -> Flux:
    return Flux(api_key=box.api_key, base_url=box.base_url, output_dir=out)


def prompts(n: int) -> list[str]:
    return [f"a lighthouse at dusk, study {i}" for i in range(n)]


def test_results_come_back_in_input_order_with_a_failed_item_in_its_place(pro_box: Sandbox, tmp_path: Path) -> None:
    pro_box.faults = Faults(fail_job=1)  # the first job submitted fails
    with client(pro_box, tmp_path) as flux:
        results = flux.batch(prompts(6), size="256x256", seed=3, progress=False)
    assert len(results) == 6
    failed = [i for i, r in enumerate(results) if isinstance(r, GenerationFailedError)]
    assert len(failed) == 1 and list(results.errors) == failed
    for i, result in enumerate(results):
        if i not in failed:
            assert isinstance(result, ImageResult) and result.request.prompt == prompts(6)[i]
            assert result.path.exists()
    assert results.stats.done == 5 and results.stats.failed == 1
    assert results.stats.credits == 5 * 10  # the failed job was refunded


def test_a_free_plan_batch_stays_within_every_limit_and_meets_no_429(free_box: Sandbox, tmp_path: Path) -> None:
    with client(free_box, tmp_path) as flux:
        results = flux.batch(prompts(12), size="256x256", seed=0, progress=False)
    assert len(results.images) == 12
    total = free_box.stats()["total"]
    assert total["rate_limited"] == 0  # a request past 10/min or a second concurrent job would be a 429
    assert total["submissions"] == 12 and total["status_requests"] <= 12 * 2
    assert results.stats.rate_limited == 0 and results.stats.requests == total["api_requests"]


def test_max_credits_refuses_an_item_that_would_cross_it_before_sending_and_lets_a_cheaper_one_through(
    pro_box: Sandbox, tmp_path: Path
) -> None:
    sizes = ["1024x1024", "1024x1024", "1024x1024", "512x512"]  # 20 + 20 + 20 + 10 credits
    requests = [GenerationRequest.build(p, size=s, seed=1) for p, s in zip(prompts(4), sizes, strict=True)]
    with client(pro_box, tmp_path) as flux:
        results = flux.batch(requests, max_credits=50, progress=False)
    assert list(results.errors) == [2] and isinstance(results[2], BudgetExceededError)
    assert all(isinstance(results[i], ImageResult) for i in (0, 1, 3))
    total = pro_box.stats()["total"]
    assert total["submissions"] == 3 and total["credits_charged"] == 50


def test_a_batch_spends_exactly_its_max_credits_and_refuses_the_item_one_past_it(
    pro_box: Sandbox, tmp_path: Path
) -> None:
    with client(pro_box, tmp_path) as flux:
        results = flux.batch(prompts(5), size="256x256", seed=8, max_credits=40, progress=False)  # 10 credits each
    assert len(results.images) == 4 and [type(e) for e in results.errors.values()] == [BudgetExceededError]
    total = pro_box.stats()["total"]
    assert (total["submissions"], total["credits_charged"]) == (4, 40) and results.stats.credits == 40


def test_a_batch_that_meets_429s_mid_run_sends_nothing_until_each_retry_after_is_over(tmp_path: Path) -> None:
    """Three injected 429s hit a running batch; each says wait 2 s, and no flow may send in that time.

    Arrival times are the server's. Requests other flows sent before the 429 reached the client may still
    arrive after it was answered (the server works through them one by one), so the window is checked from a
    quarter of the wait on; a client that holds back only the refused flow sends far more than that.
    """
    with Sandbox(plan="pro", credits=1000, speed=10) as box:  # jobs of about 0.8 s
        with client(box, tmp_path) as flux, ThreadPoolExecutor(1) as pool:
            running = pool.submit(flux.batch, prompts(30), size="256x256", seed=15, progress=False)
            deadline = time.monotonic() + 60
            while box.stats()["total"]["jobs_created"] < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            box.faults = Faults(rate_limit_429=3, rate_limit_seconds=20.0)  # Retry-After: 2 s at speed 10
            results = running.result(timeout=120)
        log, fired = box.api_request_log, box.stats()["faults"]
    assert len(results.images) == 30 and fired == {"rate_limit_429": 3}
    refusals = [e for e in log if e["status"] == 429]
    assert len(refusals) == 3 and results.stats.rate_limited == 3
    assert all(r["retry_after"] == pytest.approx(2.0) for r in refusals)
    for refusal in refusals:
        start, end = refusal["at"] + refusal["retry_after"] / 4, refusal["at"] + refusal["retry_after"]
        inside = [round(e["at"] - refusal["at"], 3) for e in log if start < e["at"] < end]
        assert inside == [], f"requests arrived this many seconds after a 429 that said wait 2 s: {inside}"
    assert any(e["at"] > refusals[-1]["at"] + 2.0 for e in log)  # the batch ran on after the last window


def test_an_interrupted_batch_resumes_without_submitting_anything_twice(free_box: Sandbox, tmp_path: Path) -> None:
    def stop_after_three(stats: BatchStats) -> None:
        if stats.submitted >= 3:
            raise KeyboardInterrupt

    with client(free_box, tmp_path) as flux, pytest.raises(KeyboardInterrupt):
        flux.batch(prompts(8), size="256x256", seed=5, progress=stop_after_three)
    assert free_box.stats()["total"]["submissions"] == 3
    with client(free_box, tmp_path) as flux:  # a new session: the journal is all it knows
        results = flux.batch(prompts(8), size="256x256", seed=5, progress=False)
    assert len(results.images) == 8
    total = free_box.stats()["total"]
    assert total["submissions"] == 8 and total["jobs_created"] == 8 and total["credits_charged"] == 8 * 10
    assert results.stats.credits == 5 * 10  # the three resumed jobs were paid for in the first run


def test_a_finished_batch_replays_from_the_store_without_any_request(pro_box: Sandbox, tmp_path: Path) -> None:
    with client(pro_box, tmp_path) as flux:
        first = flux.batch(prompts(4), size="256x256", seed=2, progress=False)
        before = pro_box.stats()["total"]["api_requests"]
        again = flux.batch(prompts(4), size="256x256", seed=2, progress=False)
    assert pro_box.stats()["total"]["api_requests"] == before
    assert again.stats.replayed == 4 and [r.job_id for r in again] == [r.job_id for r in first]


def test_a_seeded_duplicate_prompt_shares_one_job(pro_box: Sandbox, tmp_path: Path) -> None:
    with client(pro_box, tmp_path) as flux:
        results = flux.batch(["a red kite", "a blue kite", "a red kite"], size="256x256", seed=9, progress=False)
    assert results[0].job_id == results[2].job_id != results[1].job_id
    assert pro_box.stats()["total"]["submissions"] == 2


def test_webhook_mode_reads_no_job_status(pro_box: Sandbox, tmp_path: Path) -> None:
    pro_box.faults = Faults(fail_job=1)
    with client(pro_box, tmp_path) as flux:
        results = flux.batch(
            prompts(6), size="256x256", seed=4, progress=False, webhook_url=True, webhook_secret=pro_box.webhook_secret
        )
    total = pro_box.stats()["total"]
    assert total["status_requests"] == 0 and total["rate_limited"] == 0
    assert len(results.images) == 5 and isinstance(next(iter(results.errors.values())), GenerationFailedError)
    assert [r.request.prompt for r in results.images] == [
        p for i, p in enumerate(prompts(6)) if i not in results.errors
    ]
    # one request a job: the plan came from the first reply's X-RateLimit-Limit, not from an account query
    assert results.stats.webhooks and results.stats.requests == 6 and total["account_requests"] == 0
    assert flux.engine.plan == "pro"


def test_a_plan_the_rate_header_does_not_name_is_asked_for_once(
    pro_box: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(contract, "plan_with_rate", lambda rate: None)  # as for a custom enterprise rate
    before = pro_box.stats()["total"]
    with client(pro_box, tmp_path) as flux:
        results = flux.batch(prompts(4), size="256x256", seed=11, progress=False)
    total = pro_box.stats()["total"]
    assert len(results.images) == 4 and total["rate_limited"] == before["rate_limited"]
    assert total["account_requests"] - before["account_requests"] == 1


def test_a_wrong_key_fails_every_item_after_one_request(pro_box: Sandbox, tmp_path: Path) -> None:
    before = pro_box.stats()["total"]["api_requests"]
    with Flux(api_key="sbx_wrong", base_url=pro_box.base_url, output_dir=tmp_path) as flux:
        results = flux.batch(prompts(5), size="256x256", seed=13, progress=False)
    assert len(results.errors) == 5 and all(isinstance(e, AuthenticationError) for e in results.errors.values())
    assert "sbx_wrong" not in str(results.errors[0])
    assert pro_box.stats()["total"]["api_requests"] - before == 1


def test_a_batch_yields_to_requests_the_same_key_made_elsewhere(tmp_path: Path) -> None:
    """Another program spent 55 of the pro plan's 60 requests a window: the reply headers say so and the
    batch paces itself into the 5 left, instead of sending 10 submissions and meeting 5 refusals."""
    with Sandbox(plan="pro", credits=1000, speed=40) as box:  # a 1.5 s window
        with httpx.Client(base_url=box.base_url, headers={"Authorization": f"Bearer {box.api_key}"}) as other:
            for _ in range(55):
                assert other.post("/graphql", json={"query": "{ account { credits } }"}).status_code == 200
        with client(box, tmp_path) as flux:
            results = flux.batch(prompts(10), size="256x256", seed=12, progress=False)
        total = box.stats()["total"]
    assert len(results.images) == 10 and total["submissions"] == 10
    assert total["rate_limited"] == 0 and results.stats.rate_limited == 0


def test_a_batch_shares_the_plans_job_slots_with_jobs_running_elsewhere(tmp_path: Path) -> None:
    """8 of the pro plan's 10 job slots are taken by another program, which no header tells: the items
    that find no slot are refused with CONCURRENCY_LIMITED, wait as its Retry-After says, and go then."""
    with Sandbox(plan="pro", credits=1000, speed=8) as box:  # jobs of about 1 s
        with httpx.Client(base_url=box.base_url, headers={"Authorization": f"Bearer {box.api_key}"}) as other:
            for i in range(8):
                body = GraphQLTransport().submit(GenerationRequest.build(f"elsewhere {i}", size="256x256")).json
                assert other.post("/graphql", json=body).status_code == 200
        with client(box, tmp_path) as flux:
            results = flux.batch(prompts(6), size="256x256", seed=14, progress=False)
        total = box.stats()["total"]
    assert len(results.images) == 6 and not results.errors
    assert total["jobs_created"] == 8 + 6  # a refused submission is sent again, and accepted once
    # 4 items find no slot at first; each retries when Retry-After says the first slot frees, so at worst
    # 4 + 3 + 2 + 1 refusals as the other program's jobs end one by one
    assert 1 <= results.stats.rate_limited == total["rate_limited"] <= 10


def test_async_batch_gives_the_same_ordered_results(free_box: Sandbox, tmp_path: Path) -> None:
    async def run() -> list:
        async with AsyncFlux(api_key=free_box.api_key, base_url=free_box.base_url, output_dir=tmp_path) as flux:
            return await flux.batch(prompts(4), size="256x256", seed=6, progress=False)

    with ThreadPoolExecutor(1) as pool:  # a fresh thread: no other test's event loop is running there
        results = pool.submit(asyncio.run, run()).result()
    assert [r.request.prompt for r in results] == prompts(4)
    assert free_box.stats()["total"]["rate_limited"] == 0


def test_workers_waiting_for_the_plan_or_a_job_slot_are_woken_by_the_change_not_by_a_timer(
    pro_box: Sandbox, tmp_path: Path
) -> None:
    """A webhook's job done must start the next item at once: no scheduler tick between them. A webhook batch of
    more items than the plan has slots, within its rate, then sleeps not once (every wait is a WaitFor)."""
    steps: list[Step] = []

    def spied(flow: Flow[None]) -> Flow[None]:
        value = None
        while True:
            try:
                step = flow.send(value)
            except StopIteration as stop:
                return stop.value
            steps.append(step)
            value = yield step

    async def main() -> list:
        async with AsyncFlux(api_key=pro_box.api_key, base_url=pro_box.base_url, output_dir=tmp_path) as flux:
            how = BatchOptions(progress=False, webhook_url=True, webhook_secret=pro_box.webhook_secret)
            return await run_async(
                flux.engine, lambda flow: flux.run(spied(flow)), prompts(12), {"size": "256x256"}, how
            )

    slots = contract.PLANS["pro"].concurrent_jobs
    results = asyncio.run(main())
    assert len(results.images) == 12 and pro_box.stats()["total"]["rate_limited"] == 0
    # no timer before a submission: a status read after a late webhook (a loaded machine) may sleep, a worker not
    before_submit = [
        a for a, b in pairwise(steps) if isinstance(a, Sleep) and isinstance(b, Send) and b.call.kind == "submit"
    ]
    assert before_submit == [], [type(s).__name__ for s in steps]
    assert sum(isinstance(s, WaitFor) for s in steps) > 12  # each job's webhook, and the workers beyond 10 slots
    assert slots < 12

"""The client against the real sandbox over loopback: transports, errors, retries, idempotency, safety."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from doitong_nb import (
    AuthenticationError,
    BudgetExceededError,
    GenerationFailedError,
    InsufficientCreditsError,
    InvalidRequestError,
    JobTimeoutError,
    NetworkError,
    NotFoundError,
    RateLimitError,
    UnclearSubmissionError,
)
from doitong_nb._core.request import GenerationRequest
from doitong_nb._runtime.client import AsyncFlux, Flux
from doitong_nb._store.store import Store
from doitong_sandbox import Faults, Sandbox

PROMPT = "A futuristic city with flying cars and neon lights"


def client_for(box: Sandbox, tmp_path: Path, **kwargs) -> Flux:
    kwargs.setdefault("output_dir", tmp_path / "out")
    return Flux(api_key=kwargs.pop("api_key", box.api_key), base_url=box.base_url, **kwargs)


@pytest.mark.parametrize("transport", ["graphql", "rest"])
def test_each_transport_generates_a_full_resolution_file(sandbox: Sandbox, tmp_path: Path, transport: str) -> None:
    with client_for(sandbox, tmp_path, transport=transport) as flux:
        img = flux.generate(PROMPT, size="2048x1024", seed=7)
    assert img.path.exists() and img.path.parent == tmp_path / "out"
    with Image.open(img.path) as image:
        assert image.size == (2048, 1024)
    assert (img.width, img.height, img.seed) == (2048, 1024, 7)
    assert img.credit_cost == img.credits == img.request.estimated_credits
    assert img.metadata["sandbox"] is True
    assert sandbox.stats()["total"]["credits_charged"] == img.credit_cost


def test_generate_image_mutation_reads_its_own_field(sandbox: Sandbox, tmp_path: Path) -> None:
    with client_for(sandbox, tmp_path, mutation="generateImage") as flux:
        img = flux.generate(PROMPT, seed=3)
    assert img.width == 1024 and img.path.exists()


def test_async_client_generates_concurrently(sandbox: Sandbox, tmp_path: Path) -> None:
    async def main() -> list:
        async with AsyncFlux(api_key=sandbox.api_key, base_url=sandbox.base_url, output_dir=tmp_path) as flux:
            return await asyncio.gather(*(flux.generate(PROMPT, seed=s, size="512x512") for s in range(3)))

    with ThreadPoolExecutor(1) as pool:  # a loop of its own, whatever another test left on this thread
        results = pool.submit(asyncio.run, main()).result()
    assert [r.seed for r in results] == [0, 1, 2]
    assert len({r.sha256 for r in results}) == 3


def test_the_async_client_checks_and_stores_images_off_the_event_loop(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decoding a big PNG and writing it with its provenance takes long enough to stall the other flows."""
    stored_on: list[threading.Thread] = []
    put = Store.put

    def recording_put(self: Store, *args: Any) -> Any:
        stored_on.append(threading.current_thread())
        return put(self, *args)

    monkeypatch.setattr(Store, "put", recording_put)

    async def main() -> threading.Thread:
        async with AsyncFlux(api_key=sandbox.api_key, base_url=sandbox.base_url, output_dir=tmp_path) as flux:
            image = await flux.generate(PROMPT, seed=21, size="512x512", output_format="png")
            assert image.path.suffix == ".png" and image.path.exists()
        return threading.current_thread()

    with ThreadPoolExecutor(1) as pool:
        loop_thread = pool.submit(asyncio.run, main()).result()
    assert len(stored_on) == 1 and stored_on[0] is not loop_thread


def test_generate_many_on_the_free_plan_delivers_every_image_with_no_concurrency_error(tmp_path: Path) -> None:
    """The free plan runs one job at a time and 10 requests a minute: 12 images all arrive, in order, and the
    service never refuses one for a job already running (CONCURRENCY_LIMITED) or for the rate."""
    prompts = [f"{PROMPT}, study {i}" for i in range(12)]
    with Sandbox(plan="free", credits=1000, speed=200) as box, client_for(box, tmp_path) as flux:
        results = flux.generate_many(prompts, size="256x256", seed=1, progress=False)
        total = box.stats()["total"]
    assert [r.request.prompt for r in results.images] == prompts and not results.errors
    assert total["rate_limited"] == 0 and results.stats.rate_limited == 0 and total["submissions"] == 12
    assert flux.plan == "free" and flux.session_credits == 12 * 10


def test_identical_request_replays_at_zero_credits(flux: Flux, sandbox: Sandbox) -> None:
    first = flux.generate(PROMPT, seed=1)
    again = flux.generate(PROMPT, seed=1)
    assert (again.replayed, again.credits, again.path) == (True, 0, first.path)
    assert sandbox.stats()["total"]["submissions"] == 1
    fresh = flux.generate(PROMPT, seed=1, refresh=True)
    assert fresh.job_id != first.job_id and sandbox.stats()["total"]["submissions"] == 2


def test_invalid_input_raises_before_any_request(flux: Flux, sandbox: Sandbox) -> None:
    before = sandbox.stats()["total"]["api_requests"]
    with pytest.raises(InvalidRequestError, match="width 1000 is not a multiple of 16; try 992 or 1008"):
        flux.generate(PROMPT, width=1000, height=1024)
    with pytest.raises(InvalidRequestError, match="prompt is empty"):
        flux.generate("   ")
    assert sandbox.stats()["total"]["api_requests"] == before


def test_wrong_key_is_an_authentication_error_without_the_key(sandbox: Sandbox, tmp_path: Path) -> None:
    secret = "sk-live-this-must-never-leak-0123456789"
    with client_for(sandbox, tmp_path, api_key=secret) as flux:
        with pytest.raises(AuthenticationError) as caught:
            flux.generate(PROMPT)
        assert secret not in str(caught.value) + repr(caught.value) + repr(flux)


def test_insufficient_credits_says_required_and_available(tmp_path: Path) -> None:
    with Sandbox(credits=12, speed=1000) as box, client_for(box, tmp_path) as flux:
        with pytest.raises(InsufficientCreditsError) as caught:
            flux.generate(PROMPT, size="2048x2048")
    assert (caught.value.credits_required, caught.value.credits_available) == (30, 12)
    assert "needs 30 credits, 12 left" in str(caught.value)


def test_another_keys_job_is_not_found(sandbox: Sandbox, tmp_path: Path) -> None:
    with client_for(sandbox, tmp_path) as owner:
        job = owner.submit(PROMPT, seed=4)
    with client_for(sandbox, tmp_path, api_key=sandbox.add_key()) as stranger:
        with pytest.raises(NotFoundError):
            stranger.status(job.id)


def test_failed_job_is_refunded_and_reported(tmp_path: Path) -> None:
    with Sandbox(speed=1000, faults=Faults(fail_job=1)) as box, client_for(box, tmp_path) as flux:
        with pytest.raises(GenerationFailedError) as caught:
            flux.generate(PROMPT)
        assert caught.value.job_id and "refunded" in str(caught.value)
        assert flux.session_credits == 0
        assert box.stats()["total"]["credits"] == 1000


def test_a_failed_job_resumed_from_an_earlier_session_is_not_refunded_to_this_one(tmp_path: Path) -> None:
    """Session one paid for the job and stopped waiting; session two finds it failed: its own spend stays 0."""
    with Sandbox(speed=1000, faults=Faults(fail_job=1)) as box:
        with client_for(box, tmp_path) as first, box.jobs_held():  # the job is still running when session one gives up
            with pytest.raises(JobTimeoutError):
                first.run(first.engine.generate(GenerationRequest.build(PROMPT, seed=8), timeout=0.05))
            assert first.session_credits == 20
        with client_for(box, tmp_path) as second, pytest.raises(GenerationFailedError):
            second.generate(PROMPT, seed=8)
        assert second.session_credits == 0 and box.stats()["total"]["submissions"] == 1


def test_a_moderated_prompt_says_to_rephrase_and_a_queued_job_is_waited_for(tmp_path: Path) -> None:
    with Sandbox(speed=200, faults=Faults(moderate_job=1)) as box, client_for(box, tmp_path) as flux:
        with pytest.raises(GenerationFailedError) as caught:
            flux.generate(PROMPT, seed=1)
        assert caught.value.code == "CONTENT_MODERATED" and "rephrase the prompt" in str(caught.value)
        box.faults = Faults(queue_job=1)
        statuses: list[str] = []
        img = flux.generate(PROMPT, seed=2, progress=lambda status, elapsed, detail: statuses.append(status))
        assert img.path.exists() and flux.session_credits == img.credit_cost
        assert statuses[0] == "queued" and "downloading" in statuses


def test_server_errors_and_429s_are_retried(tmp_path: Path) -> None:
    with Sandbox(speed=1000, faults=Faults(error_5xx=2, rate_limit_429=2)) as box, client_for(box, tmp_path) as flux:
        img = flux.generate(PROMPT, seed=5)
        assert img.path.exists()
        assert flux.engine.requests["retries"] >= 4
        assert box.stats()["total"]["credits_charged"] == img.credit_cost


def test_dropped_submission_is_retried_and_charged_once(tmp_path: Path) -> None:
    """Once the service has shown that it honours Idempotency-Key (its answers echo the key), a submission whose
    answer is lost is sent again with the same key: one job, charged once."""
    with Sandbox(speed=1000) as box, client_for(box, tmp_path) as flux:
        first = flux.generate(PROMPT, seed=5)
        box.faults = Faults(drop=1)
        img = flux.generate(PROMPT, seed=6)
        totals = box.stats()["total"]
    assert flux.engine.requests["resent"] == 1 and totals["idempotent_replays"] == 1
    assert totals["jobs_created"] == 2 and totals["credits_charged"] == first.credit_cost + img.credit_cost
    assert flux.session_credits == first.credit_cost + img.credit_cost


def test_a_dropped_first_submission_is_kept_counted_and_resent_on_the_users_word(tmp_path: Path) -> None:
    """Before the service has shown that it honours keys, a lost answer is not resent on a guess: the submission
    is kept and counted as possibly charged; `resume(key, resend=True)` sends it with its key (charged once here,
    where the sandbox honours it)."""
    with Sandbox(speed=1000, faults=Faults(drop=1)) as box, client_for(box, tmp_path) as flux:
        with pytest.raises(UnclearSubmissionError, match="--resend") as caught:
            flux.generate(PROMPT, seed=6)
        assert (
            box.stats()["total"]["submissions"] == 1 and flux.session_credits == box.stats()["total"]["credits_charged"]
        )
        img = flux.resume(caught.value.idempotency_key, resend=True)
        totals = box.stats()["total"]
        assert flux.jobs() == [] and img.path.exists()
    assert totals["jobs_created"] == 1 and totals["credits_charged"] == img.credit_cost == flux.session_credits


def test_truncated_download_is_retried(tmp_path: Path) -> None:
    with Sandbox(speed=1000, faults=Faults(truncate_cdn=1)) as box, client_for(box, tmp_path) as flux:
        img = flux.generate(PROMPT, seed=8)
        assert box.stats()["total"]["cdn_requests"] == 2
    with Image.open(img.path) as image:
        image.load()


def test_cdn_never_sees_the_api_key(flux: Flux, sandbox: Sandbox) -> None:
    flux.generate(PROMPT, seed=9)
    assert sandbox.cdn_requests
    for headers in sandbox.cdn_requests:
        assert all(sandbox.api_key not in value for value in headers.values())
        assert not {"authorization", "x-api-key"} & {name.lower() for name in headers}


def test_budget_refuses_before_sending(sandbox: Sandbox, tmp_path: Path) -> None:
    with client_for(sandbox, tmp_path, max_credits=25) as flux:
        flux.generate(PROMPT, seed=1)  # 20 credits
        with pytest.raises(BudgetExceededError, match="budget"):
            flux.generate(PROMPT, seed=2)
    assert sandbox.stats()["total"]["submissions"] == 1


def test_budget_lets_spending_land_exactly_on_max_credits_and_refuses_one_credit_more(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    with client_for(sandbox, tmp_path, max_credits=40) as flux:
        flux.generate(PROMPT, seed=1)  # 20 credits
        flux.generate(PROMPT, seed=2)  # 20 more: exactly the budget
        with pytest.raises(BudgetExceededError, match="budget"):
            flux.generate(PROMPT, size="256x256", seed=3)  # the cheapest image is one too many
        assert flux.session_credits == 40
    total = sandbox.stats()["total"]
    assert (total["submissions"], total["credits_charged"]) == (2, 40)


def test_rate_limit_error_carries_the_wait(tmp_path: Path) -> None:
    with Sandbox(speed=1, faults=Faults(rate_limit_429=100)) as box, client_for(box, tmp_path, timeout=0.5) as flux:
        with pytest.raises(RateLimitError) as caught:
            flux.account()
        assert box.stats()["total"]["rate_limited"] == 1  # a wait longer than the deadline is not retried
    assert caught.value.retry_after is not None and caught.value.retry_after > 0.5
    assert f"retry in {caught.value.retry_after:.1f} s" in str(caught.value)


def test_status_reads_are_fewer_than_the_docs_two_second_loop(tmp_path: Path) -> None:
    with Sandbox(speed=20) as box, client_for(box, tmp_path) as flux:
        for seed in range(4):
            flux.generate(PROMPT, size="512x512", seed=seed)
        reads = box.stats()["total"]["status_requests"]
    # a job takes ~0.4 s here; the doc's loop (2 s scaled by 20 = 0.1 s) needs ~4 reads a job
    assert reads / 4 < 2.5


@pytest.mark.parametrize("base_url", ["https://api.doitong.invalid", "http://127.0.0.1:9"])
def test_a_host_that_cannot_be_reached_at_first_contact_fails_at_once(tmp_path: Path, base_url: str) -> None:
    """A name that does not resolve or a refused port is a wrong address, not a blip: one attempt, no retries."""
    with Flux(api_key="sk-unreachable-0123", base_url=base_url, output_dir=tmp_path / "out") as flux:
        with pytest.raises(NetworkError) as caught:
            flux.generate(PROMPT, size="256x256")
        assert flux.engine.requests["submit"] == 1 and flux.engine.requests["retries"] == 0
    message = str(caught.value)
    assert base_url.split("//")[1] in message and "DOITONG_BASE_URL" in message and "nothing was" in message


def test_a_dropped_connection_after_first_contact_is_still_retried(tmp_path: Path) -> None:
    with Sandbox(speed=1000, faults=Faults(drop=2)) as box, client_for(box, tmp_path) as flux:
        flux.account()  # first contact made
        img = flux.generate(PROMPT, size="256x256", seed=1)
        assert img.path.exists() and flux.engine.requests["retries"] >= 2


def test_every_client_of_a_process_shares_one_tls_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Making a TLS context reads the CA bundle (25-50 ms): a client with an API and a CDN connection, and the next
    client, must not make one each."""
    import httpx

    from doitong_nb._runtime import client

    made: list[object] = []
    real = httpx.create_ssl_context
    monkeypatch.setattr(httpx, "create_ssl_context", lambda *a, **k: made.append(1) or real(*a, **k))
    client._tls.cache_clear()
    for name in ("a", "b"):
        with Flux(api_key="sbx_unit", base_url="https://api.example.com", output_dir=tmp_path / name):
            pass
    assert len(made) == 1
